"""Tests of the Dirac-like noise formulas."""

import math

import numpy as np
import pytest

from conftest import tensor, to_numpy, value_and_gradients
from keras_rbp import noise
from keras_rbp._keras import ops


pytestmark = pytest.mark.every_backend

# Statistical checks allow 4.5 standard errors: each fails for about 1 seed
# in 150,000, so a test of two of them passes for more than 99.99 % of seeds
# (test_moment_checks_pass_for_almost_every_seed counts them).
STANDARD_ERRORS = 4.5


def moments_match(theta, mean, variance):
    """Whether samples `theta` (Gaussian) have this mean and variance, to
    STANDARD_ERRORS standard errors of each estimate."""
    n = theta.size
    mean_error = math.sqrt(variance / n)
    variance_error = variance * math.sqrt(2.0 / (n - 1))
    return (abs(theta.mean() - mean) <= STANDARD_ERRORS * mean_error
            and abs(theta.var(ddof=1) - variance) <= STANDARD_ERRORS * variance_error)


def _theta(pi, n, seed):
    eps = tensor(np.random.RandomState(seed).standard_normal([n, 1]))
    return to_numpy(noise.sample(tensor([noise.logit(pi)]), eps))


@pytest.mark.parametrize("pi", [0.05, 0.3, 0.5, 0.9])
def test_sample_moments_match_bernoulli(pi):
    assert moments_match(_theta(pi, 100_000, 1), pi, pi * (1 - pi))


def test_moment_checks_pass_for_almost_every_seed():
    failures = sum(not moments_match(_theta(0.05, 20_000, seed), 0.05, 0.05 * 0.95) for seed in range(500))
    assert failures <= 1  # 500 seeds at 1 in 75,000 each: a second failure is 1 in 10^5
    biased = sum(not moments_match(_theta(0.05, 20_000, seed) + 0.01, 0.05, 0.05 * 0.95) for seed in range(20))
    assert biased == 20  # and a mean off by 0.01 (6.5 standard errors) fails every time


def test_sample_scale_multiplies_standard_deviation():
    logits = tensor([0.7])
    eps = tensor(np.random.RandomState(34).standard_normal([100_000, 1]))
    ratio = to_numpy(noise.sample(logits, eps, 2.5)).std() / to_numpy(noise.sample(logits, eps)).std()
    assert ratio == pytest.approx(2.5, rel=1e-4)


def test_kl_equals_closed_form():
    logits = np.array([-30.0, -4.0, -0.3, 0.0, 1.2, 6.0, 30.0], dtype=np.float64)
    pi0 = 0.01
    pi = 1.0 / (1.0 + np.exp(-logits))
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(pi > 0, pi * np.log(pi / pi0), 0.0) + np.where(
            pi < 1, (1 - pi) * np.log((1 - pi) / (1 - pi0)), 0.0
        )
    got = to_numpy(noise.kl_divergence(tensor(logits), pi0))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_standard_deviation_is_sqrt_of_bernoulli_variance():
    values = np.array([-8.0, -1.0, 0.0, 2.0, 8.0])
    logits = tensor(values)
    pi = 1.0 / (1.0 + np.exp(-values))
    np.testing.assert_allclose(
        to_numpy(noise.standard_deviation(logits)), np.sqrt(pi * (1 - pi)), rtol=1e-5
    )


@pytest.mark.parametrize("value", [-30.0, 30.0, -100.0, 100.0])
def test_gradients_are_finite_at_extreme_logits(value):
    eps = tensor([[0.7], [-1.3]])

    def loss(logits):
        return ops.sum(noise.sample(logits, eps, 3.0)) + ops.sum(noise.kl_divergence(logits, 0.01))

    value, (grad,) = value_and_gradients(loss, [value])
    assert np.all(np.isfinite(grad))
    assert np.isfinite(value)


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="prior_keep_prob must be in"):
        noise.kl_divergence(tensor([0.0]), 1.5)
    with pytest.raises(ValueError, match="received: 0.0"):
        noise.logit(0.0)


def test_standard_normal_is_standard_normal():
    eps = to_numpy(noise.standard_normal([20_000, 5], 78))
    assert eps.shape == (20_000, 5)  # an odd number of columns
    assert moments_match(eps.ravel(), 0.0, 1.0)
    # Kolmogorov-Smirnov distance to the N(0, 1) CDF; 1.95 / sqrt(n) is its
    # 0.1 % critical value.
    values = np.sort(eps.ravel())
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(values / math.sqrt(2.0)))
    empirical = np.arange(1, values.size + 1) / values.size
    assert np.max(np.abs(empirical - cdf)) < 1.95 / math.sqrt(values.size)
    # Columns are not correlated with each other (the two halves of a pair).
    assert np.max(np.abs(np.corrcoef(eps.T) - np.eye(5))) < 0.03


def test_standard_normal_is_reproducible_per_seed():
    def draw(seed):
        return to_numpy(noise.standard_normal([4, 6], seed))

    np.testing.assert_array_equal(draw(12), draw(12))
    assert not np.allclose(draw(12), draw(13))
