"""The Dirac-like dropout noise of Recursive Bayesian Pruning.

Each channel c has a keep gate z_c ~ Bernoulli(pi_c), pi_c = sigmoid(phi_c),
relaxed to the moment-matched Gaussian

    theta_c = pi_c + s * sqrt(pi_c (1 - pi_c)) * eps,    eps ~ N(0, 1),

whose variance vanishes at pi_c = 0 and pi_c = 1: the posterior collapses to a
Dirac delta there. The prior is Bernoulli(pi_0) and the KL per channel is

    KL_c = pi_c log(pi_c / pi_0) + (1 - pi_c) log((1 - pi_c) / (1 - pi_0)).

Every formula of the method lives in this module, as pure TensorFlow
functions of the logits phi.
"""

import math

import tensorflow as tf


def keep_probability(logits):
    """pi = sigmoid(phi), the mean of the noise."""
    return tf.sigmoid(logits)


def standard_deviation(logits):
    """sqrt(pi (1 - pi)), computed in log space so that it and its gradient
    stay finite for any logit."""
    log_variance = tf.math.log_sigmoid(logits) + tf.math.log_sigmoid(-logits)
    return tf.exp(0.5 * log_variance)


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
    pi = keep_probability(logits)
    log_pi = tf.math.log_sigmoid(logits)
    log_one_minus_pi = tf.math.log_sigmoid(-logits)
    return pi * (log_pi - math.log(prior_keep_prob)) + (1.0 - pi) * (
        log_one_minus_pi - math.log1p(-prior_keep_prob)
    )


def logit(probability):
    """The logit phi with sigmoid(phi) = probability."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), received: {probability!r}")
    return math.log(probability) - math.log1p(-probability)
