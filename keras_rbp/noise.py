"""The Dirac-like dropout noise of Recursive Bayesian Pruning.

Each channel c has a keep gate z_c ~ Bernoulli(pi_c), pi_c = sigmoid(phi_c),
relaxed to the moment-matched Gaussian

    theta_c = pi_c + s * sqrt(pi_c (1 - pi_c)) * eps,    eps ~ N(0, 1),

whose variance vanishes at pi_c = 0 and pi_c = 1: the posterior collapses to a
Dirac delta there. The prior is Bernoulli(pi_0) and the KL per channel is

    KL_c = pi_c log(pi_c / pi_0) + (1 - pi_c) log((1 - pi_c) / (1 - pi_0)).

The functions are written with few operations: they run in every training
step, where on small models each operation costs more than its arithmetic.

Every formula of the method lives in this module, as pure functions of the
logits phi written with `keras.ops`, so that they run on every backend.
"""

import math

from keras_rbp._keras import ops, uniform


def keep_probability(logits):
    """pi = sigmoid(phi), the mean of the noise."""
    return ops.sigmoid(logits)


def standard_deviation(logits):
    """sqrt(pi (1 - pi)), computed in log space so that it and its gradient
    stay finite for any logit."""
    # log(pi (1 - pi)) = log sigmoid(phi) + log sigmoid(-phi)
    #                  = -(softplus(phi) + softplus(-phi)).
    return ops.exp(-0.5 * (ops.softplus(logits) + ops.softplus(-logits)))


def sample(logits, eps, scale=1.0):
    """theta = pi + scale * std * eps, the reparametrised sample.

    Args:
        logits: phi, shape (channels,).
        eps: standard normal draws, shape (..., channels).
        scale: the noise scale s that multiplies the standard deviation.
    """
    return keep_probability(logits) + scale * standard_deviation(logits) * eps


def kl_divergence(logits, prior_keep_prob):
    """KL(Bernoulli(pi) || Bernoulli(pi_0)) per channel, stable at both ends."""
    if not 0.0 < prior_keep_prob < 1.0:
        raise ValueError(
            f"prior_keep_prob must be in (0, 1), received: {prior_keep_prob!r}"
        )
    # With log pi = phi - softplus(phi) and log(1 - pi) = -softplus(phi):
    # KL = pi (phi - logit(pi_0)) - softplus(phi) - log(1 - pi_0).
    prior_logit = logit(prior_keep_prob)
    return (
        keep_probability(logits) * (logits - prior_logit)
        - ops.softplus(logits)
        - math.log1p(-prior_keep_prob)
    )


def standard_normal(shape, seed):
    """Standard normal draws of `shape`, (rows, columns), by the Box-Muller
    transform of uniform draws from `seed` (see `keras_rbp._keras.uniform`).
    On CPUs it takes about 60 % of the time of TensorFlow's stateless
    normal, whose Box-Muller is not vectorised."""
    rows, columns = shape
    pairs = (columns + 1) // 2
    draws = uniform([2, rows, pairs], seed)
    for_radius, for_angle = draws[0], draws[1]
    # 1 - u is exact and in (0, 1]. (log1p(-u) would be a chain of two unary
    # ops, which TensorFlow's graph optimiser fuses into a much slower one.)
    radius = ops.sqrt(-2.0 * ops.log(1.0 - for_radius))
    angle = (2.0 * math.pi) * for_angle
    normal = ops.concatenate([radius * ops.cos(angle), radius * ops.sin(angle)], axis=1)
    return normal if 2 * pairs == columns else normal[:, :columns]


def logit(probability):
    """The logit phi with sigmoid(phi) = probability."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), received: {probability!r}")
    return math.log(probability) - math.log1p(-probability)
