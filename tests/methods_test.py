"""The peer methods' noises (SBP, VIBNet, L0) against independent numpy
computations, and each method (the magnitude baseline too) end to end on
MNIST."""

import math

import numpy as np
import pytest

import keras_rbp as rbp
from conftest import mnist_dir, tensor, to_numpy, value_and_gradients
from keras_rbp import methods
from keras_rbp._keras import IS_KERAS_3, keras, ops

pytestmark = pytest.mark.every_backend

# Far enough in the tails that a correct sampler fails once in 10^5 runs.
Z_SCORE = 4.5
DRAWS = 200_000


def _tensors(**params):
    return {name: tensor(value) for name, value in params.items()}


def _truncated_log_normal_grid(mu, sigma, points=400_001):
    """The density of log theta, N(mu, sigma^2) truncated to SBP's interval,
    on a fine grid: (x, density, dx)."""
    a, b = methods.SBP_LOG_RANGE
    x = np.linspace(max(a, min(mu, b) - 12 * sigma), min(b, mu + 12 * sigma), points)
    log_density = -0.5 * ((x - mu) / sigma) ** 2
    density = np.exp(log_density - log_density.max())
    dx = x[1] - x[0]
    return x, density / (density.sum() * dx), dx


# Wide noises and means above b: their moments overflow or vanish in float32
# unless computed in log space.
SBP_CASES = [(-1.0, 0.5), (-0.3, 1.2), (-3.0, 2.0), (-0.05, 0.05), (-10.0, 20.0), (-2.0, 60.0), (-19.0, 148.0),
             (0.5, 0.3), (2.0, 0.2), (4.0, 0.05)]


@pytest.mark.parametrize("mu, sigma", SBP_CASES)
def test_sbp_kl_mean_and_snr_match_numerical_integrals(mu, sigma):
    params = _tensors(mu=[mu], log_sigma=[math.log(sigma)])
    x, q, dx = _truncated_log_normal_grid(mu, sigma)
    a, b = methods.SBP_LOG_RANGE
    # KL(q || uniform on [a, b]) in log space: the log-uniform prior on theta.
    kl = np.sum(q * np.log(np.maximum(q, 1e-300) * (b - a))) * dx
    mean = np.sum(q * np.exp(x)) * dx
    second = np.sum(q * np.exp(2 * x)) * dx
    snr = mean / math.sqrt(second - mean**2)
    sbp = methods.METHODS["sbp"]
    assert float(sbp.penalty(params, None)[0]) == pytest.approx(kl, rel=1e-3, abs=1e-4)
    assert float(sbp.mean(params)[0]) == pytest.approx(mean, rel=1e-4)
    if methods.WIDE_FLOAT == "float64" or mu < 0:
        # A mean above b leaves a noise whose SNR needs float64, which keras.ops
        # keep on TensorFlow only: elsewhere its score rounds to 1.
        assert float(sbp.keep_score(params)[0]) == pytest.approx(snr / (1 + snr), rel=1e-4)


# SBP's sampler (as published) clips the CDF to [1e-5, 1 - 1e-5]: for a mean
# above b its samples are 1, within sigma^2 / (mu - b) of the mean.
@pytest.mark.parametrize("mu, sigma", [(mu, sigma) for mu, sigma in SBP_CASES if mu < 0])
def test_sbp_samples_have_the_truncated_log_normal_mean(mu, sigma):
    sbp = methods.METHODS["sbp"]
    params = _tensors(mu=[mu], log_sigma=[math.log(sigma)])
    draws = sbp.draw([DRAWS, 1], 34)
    theta = to_numpy(sbp.sample(params, draws, 1.0))[:, 0]
    a, b = methods.SBP_LOG_RANGE
    assert np.all((theta >= math.exp(a)) & (theta <= math.exp(b)))
    expected = float(sbp.mean(params)[0])
    assert abs(theta.mean() - expected) <= Z_SCORE * theta.std() / math.sqrt(DRAWS)


def test_sbp_functions_and_penalty_gradients_are_finite_over_the_parameter_range():
    sbp = methods.METHODS["sbp"]
    low, high = methods.SBP_PARAMETER_RANGE
    mu, log_sigma = np.meshgrid(np.linspace(low, high, 26), np.linspace(low, high, 26))
    params = _tensors(mu=mu.ravel(), log_sigma=log_sigma.ravel())
    penalty, gradients = value_and_gradients(
        lambda mu, log_sigma: ops.sum(sbp.penalty({"mu": mu, "log_sigma": log_sigma}, None)),
        [mu.ravel(), log_sigma.ravel()])
    for value in [penalty, to_numpy(sbp.mean(params)), to_numpy(sbp.keep_score(params)), *gradients]:
        assert np.all(np.isfinite(value))
    assert np.all((to_numpy(sbp.mean(params)) >= 0) & (to_numpy(sbp.mean(params)) <= 1))


def test_sbp_keeps_a_channel_where_its_snr_exceeds_one():
    sbp = methods.METHODS["sbp"]
    # SNR of a log-normal: 1 / sqrt(exp(sigma^2) - 1), 1 at sigma^2 = log 2.
    for sigma, kept in ((0.5, True), (1.2, False)):
        score = float(sbp.keep_score(_tensors(mu=[-8.0], log_sigma=[math.log(sigma)]))[0])
        assert (score > 0.5) == kept


# Channels a float32 probability rounds to 1, in rising order of keep logit.
CERTAIN = {"rbp": dict(logits=[20.0, 25.0, 30.0]), "rbp_relaxed": dict(logits=[20.0, 25.0, 30.0]),
           "vib": dict(mu=[1.0, 1.0, 1.0], log_variance=[-20.0, -25.0, -30.0]),
           "l0": dict(log_alpha=[20.0, 25.0, 30.0])}


@pytest.mark.parametrize("name", list(CERTAIN))
def test_keep_logits_rank_channels_whose_keep_score_rounds_to_one(name):
    method = methods.METHODS[name]
    params = _tensors(**CERTAIN[name])
    np.testing.assert_array_equal(to_numpy(method.keep_score(params)), 1.0)
    assert np.all(np.diff(to_numpy(method.keep_logit(params))) > 0)


def test_vib_penalty_keep_rule_and_samples():
    vib = methods.METHODS["vib"]
    mu = np.array([1.0, 0.3, -0.5, 0.02], "float32")
    log_variance = np.array([-9.0, -1.0, 0.5, -2.0], "float32")
    params = _tensors(mu=mu, log_variance=log_variance)
    variance = np.exp(log_variance.astype("float64"))
    np.testing.assert_allclose(to_numpy(vib.penalty(params, None)), 0.5 * np.log(1 + mu**2 / (variance + 1e-8)),
                               rtol=1e-5)
    log_alpha = np.log(variance) - np.log(mu.astype("float64") ** 2)
    np.testing.assert_array_equal(to_numpy(vib.keep_score(params)) > 0.5, log_alpha < 0)
    np.testing.assert_array_equal(to_numpy(vib.mean(params)), mu)
    theta = to_numpy(vib.sample(params, vib.draw([DRAWS, 4], 56), 2.0))
    std = 2.0 * np.sqrt(variance)
    assert np.all(np.abs(theta.mean(0) - mu) <= Z_SCORE * std / math.sqrt(DRAWS))
    np.testing.assert_allclose(theta.std(0), std, rtol=Z_SCORE * math.sqrt(1 / (2 * DRAWS)))


def _hard_concrete_numpy(log_alpha, u):
    """Louizos et al.'s hard-concrete sample, written again in numpy."""
    gamma, zeta, beta = -0.1, 1.1, 2.0 / 3.0
    s = 1 / (1 + np.exp(-(np.log(u) - np.log(1 - u) + log_alpha) / beta))
    return np.clip(s * (zeta - gamma) + gamma, 0, 1)


def test_l0_gates_match_numpy_and_the_penalty_is_their_probability_of_being_nonzero():
    l0 = methods.METHODS["l0"]
    log_alpha = np.array([-4.0, -2.398, -1.0, 0.0, 2.0], "float32")
    params = _tensors(log_alpha=log_alpha)
    u = l0.draw([DRAWS, 5], 78)
    gates = to_numpy(l0.sample(params, u, 1.0))
    np.testing.assert_allclose(gates, _hard_concrete_numpy(log_alpha, to_numpy(u).astype("float64")), atol=2e-6)
    nonzero = (gates > 0).mean(0)
    probability = to_numpy(l0.penalty(params, None))
    assert np.all(np.abs(nonzero - probability) <= Z_SCORE * np.sqrt(probability * (1 - probability) / DRAWS))
    # The test-time gate, and the keep rule: kept where it is above 0.
    test_gate = np.clip(1 / (1 + np.exp(-log_alpha.astype("float64"))) * 1.2 - 0.1, 0, 1)
    np.testing.assert_allclose(to_numpy(l0.mean(params)), test_gate, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(l0.keep_score(params)) > 0.5, test_gate > 0)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_relaxed_rbp_samples_match_numpy_and_exceed_one_half_with_probability_pi(scale):
    relaxed = methods.METHODS["rbp_relaxed"]
    pi = np.array([0.02, 0.3, 0.5, 0.9, 0.995])
    logits = np.log(pi) - np.log1p(-pi)
    params = _tensors(logits=logits)
    u = relaxed.draw([DRAWS, 5], 34)
    theta = to_numpy(relaxed.sample(params, u, scale))
    u = to_numpy(u).astype("float64")
    expected = 1 / (1 + np.exp(-(logits + np.log(u) - np.log(1 - u)) * scale / methods.RELAXED_TEMPERATURE))
    np.testing.assert_allclose(theta, expected, atol=1e-5)
    assert np.all(np.abs((theta > 0.5).mean(0) - pi) <= Z_SCORE * np.sqrt(pi * (1 - pi) / DRAWS))
    # The gate, its mean at inference and its KL are RBP's Bernoulli ones.
    rbp_method = methods.METHODS["rbp"]
    for name in ("mean", "keep_score"):
        np.testing.assert_allclose(to_numpy(getattr(relaxed, name)(params)), pi, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(relaxed.penalty(params, 0.01)), to_numpy(rbp_method.penalty(params, 0.01)))


def test_relaxed_rbp_samples_become_the_bernoulli_gates_as_the_temperature_falls():
    relaxed = methods.METHODS["rbp_relaxed"]
    params = _tensors(logits=[0.0, 2.0])
    u = relaxed.draw([DRAWS, 2], 56)
    theta = to_numpy(relaxed.sample(params, u, 200.0))  # temperature 0.0025
    assert np.mean(np.minimum(theta, 1 - theta) > 0.01) < 0.01


def test_an_unknown_method_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"RBPNoise 'noise': method must be one of \['l0', 'magnitude', 'rbp', "
                                         r"'rbp_relaxed', 'sbp', 'vib'\], "
                                         r"received: 'dropout'"):
        rbp.RBPNoise(dataset_size=10, method="dropout", name="noise")


@pytest.mark.parametrize("method", sorted(methods.METHODS))
def test_noise_config_round_trip_and_frozen_value(method):
    noise = rbp.RBPNoise(dataset_size=10, method=method, seed=3)
    noise.build((None, 5))
    copy = rbp.RBPNoise.from_config(noise.get_config())
    assert copy.method == method
    for name, value in FREEZE_PARAMETERS[method].items():
        noise._parameter_variables[name].assign(np.asarray(value, "float32") / noise.logit_scale)
    noise.freeze(np.array([1, 0, 1, 1, 0]))
    expected = _inference_mean(method, FREEZE_PARAMETERS[method]) * [1, 0, 1, 1, 0]
    np.testing.assert_allclose(noise.theta(), expected, rtol=1e-4, atol=1e-7)
    # A value given is frozen as it is.
    noise.freeze(np.array([0, 1, 1, 0, 1]), np.array([5.0, 4.0, 3.0, 2.0, 1.0]))
    np.testing.assert_allclose(noise.theta(), [0.0, 4.0, 3.0, 0.0, 1.0])


# Parameters of five channels, and their theta at inference by each method's
# definition, computed here in numpy.
FREEZE_PARAMETERS = {
    "rbp": {"logits": [-2.0, -0.5, 0.0, 1.0, 3.0]},
    "rbp_relaxed": {"logits": [-2.0, -0.5, 0.0, 1.0, 3.0]},
    "sbp": {"mu": [-1.0, -0.3, -3.0, 0.5, -0.05], "log_sigma": np.log([0.5, 1.2, 2.0, 0.3, 0.05]).tolist()},
    "vib": {"mu": [0.3, -0.7, 1.5, 2.0, 0.9], "log_variance": [-3.0] * 5},
    "l0": {"log_alpha": [-3.0, -1.0, 0.0, 1.0, 3.0]},
    "magnitude": {"gate": [0.5, 1.0, 1.5, 2.0, 0.25]},
}


def _inference_mean(method, params):
    if method in ("rbp", "rbp_relaxed"):  # the keep probability pi = sigmoid(phi)
        return 1 / (1 + np.exp(-np.array(params["logits"])))
    if method == "sbp":  # E theta under the truncated log-normal, integrated on a grid
        means = []
        for mu, log_sigma in zip(params["mu"], params["log_sigma"]):
            x, q, dx = _truncated_log_normal_grid(mu, math.exp(log_sigma))
            means.append(np.sum(q * np.exp(x)) * dx)
        return np.array(means)
    if method == "vib":  # the Gaussian's mean
        return np.array(params["mu"])
    if method == "l0":  # the hard-concrete gate at test time, stretched to (-0.1, 1.1) and clipped
        return np.clip(1 / (1 + np.exp(-np.array(params["log_alpha"]))) * 1.2 - 0.1, 0.0, 1.0)
    return np.array(params["gate"])  # magnitude: the gate itself


@pytest.fixture(scope="module")
def lenet_300_100_baseline():
    (x_train, y_train), (x_test, y_test) = rbp.datasets.load_mnist(mnist_dir())
    data = (x_train[:8192], y_train[:8192]), (x_test[:2000], y_test[:2000])
    keras.utils.set_random_seed(0)
    baseline = rbp.models.lenet_300_100()
    baseline.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    baseline.fit(*data[0], batch_size=128, epochs=3, verbose=0)
    return baseline, data


# rbp_relaxed shares RBP's gates, KL and plan; its samples are tested above.
# RBP by default; the other methods are marked heavy.
@pytest.mark.parametrize("method", [method if method == "rbp" else pytest.param(method, marks=pytest.mark.heavy)
                                    for method in sorted(set(methods.METHODS) - {"rbp_relaxed"})])
def test_each_method_prunes_lenet_300_100_to_a_mac_budget_and_shrinks(method, lenet_300_100_baseline, tmp_path):
    baseline, ((x_train, y_train), (x_test, y_test)) = lenet_300_100_baseline
    pruned = rbp.prune(baseline, dataset_size=len(x_train), method=method, kl_weight=10.0, seed=1)
    pruned.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = rbp.RecursivePruning(epochs_per_stage=2, finetune_epochs=1, target_macs=0.3,
                                    max_noise_scale=3.0 if method == "rbp" else 1.0, verbose=0)
    pruned.fit(x_train, y_train, batch_size=128, epochs=schedule.total_epochs(pruned), callbacks=[schedule],
               verbose=0)
    groups = rbp.pruning_groups(pruned)
    assert all(noise.method == method for noise in groups.values())
    kept = {name: int(noise.mask.numpy().sum()) for name, noise in groups.items()}
    assert 0 < kept["fc1"] < 300 and 0 < kept["fc2"] < 100, kept

    path = str(tmp_path / ("pruned.keras" if IS_KERAS_3 else "pruned.h5"))
    pruned.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x_test, verbose=0), pruned.predict(x_test, verbose=0), atol=1e-5)

    small = rbp.shrink(loaded)
    np.testing.assert_allclose(small.predict(x_test, verbose=0), pruned.predict(x_test, verbose=0), atol=1e-4)
    assert rbp.report(baseline, small).totals["macs_after"] <= 0.3 * rbp.report(baseline, baseline).totals["macs_after"]

    def error(model):
        return np.mean(np.argmax(model.predict(x_test, verbose=0), -1) != y_test)

    assert error(small) <= error(baseline) + 0.02, (error(small), error(baseline))
