"""The channel noises of the Bayesian pruning methods keras_rbp offers.

Each method multiplies channel c by a random theta_c and adds a penalty per
channel; `RBPNoise(method=...)` holds its parameters and `prune(method=...)`
places it. A method gives, as pure functions of its parameters (float32
tensors of shape (channels,)) written with `keras.ops`:

- `draw(shape, seed)`: the standard random numbers of one training step
  (`seed` as `keras_rbp._keras.uniform` takes it);
- `sample(params, draws, scale)`: theta per example and channel, with the
  spread of the noise multiplied by `scale` (the noise-scale ramp of
  `RecursivePruning`; 1 is the method as published);
- `mean(params)`: the deterministic theta used at inference;
- `penalty(params, prior_keep_prob)`: the KL (or expected L0) per channel,
  which the layer multiplies by kl_weight * cost / dataset_size;
- `keep_logit(params)`: a score that is above 0 exactly where the method's
  own rule keeps the channel, unbounded, so that it ranks channels that a
  probability rounds to 1 in float32; budgets rank by it;
- `keep_score(params)`: sigmoid(keep_logit), in [0, 1]; thresholds read it;
- `collapses`: whether the score goes to 0 or 1 as the noise decides (RBP's
  Dirac-like noise), so that a stage can end early once every channel has;
- `ranks_by_weights`: whether the channels are ranked by the weights'
  magnitude (`keras_rbp.magnitude`) instead of the keep score, which a
  budget then cuts;
- `trainable`: whether training updates the parameters.

Every method draws its noise per example and channel (SBP's and L0's
published code draw one vector per minibatch), and its penalty is per
channel, weighted by `cost` (L0 weighs each gate by its group's parameter
count, VIBNet by the feature map's area; `cost_aware` plays that part here).

- "rbp": Recursive Bayesian Pruning (Zhou et al. 2019) as reconstructed in
  `keras_rbp.noise`: Gaussian theta with Bernoulli(pi) moments, Bernoulli KL.
- "rbp_relaxed": RBP's Bernoulli(pi) gates and KL with relaxed-Bernoulli
  (Concrete, Maddison et al. 2017) samples instead of the moment-matched
  Gaussian: theta = sigmoid((phi + log u - log(1 - u)) / t), u ~ U(0, 1).
  P(theta > 1/2) = pi at every temperature t, and as t -> 0 the samples
  become the Bernoulli gates whose KL the penalty is (Concrete dropout, Gal
  et al. 2017), so the objective tends to a proper bound. The noise scale
  s divides the temperature: t = RELAXED_TEMPERATURE / s.
- "sbp": Structured Bayesian Pruning (Neklyudov et al. 2017; code
  necludov/group-sparsity-sbp, nets/layers.py): log theta ~ N(mu, sigma^2)
  truncated to [-20, 0], a log-uniform prior on the same interval, kept
  where the signal-to-noise ratio E theta / std theta exceeds 1. Its
  moments and KL are computed in log space: a noise that the prior has
  widened (sigma up to e^5) puts them far in the normal's tails.
- "vib": VIBNet (Dai et al. 2018; code zhuchen03/VIBNet, ib_layers.py):
  theta ~ N(mu, sigma^2), penalty 0.5 log(1 + mu^2 / sigma^2), kept where
  log alpha = log(sigma^2 / mu^2) < 0.
- "l0": L0 regularisation (Louizos et al. 2018; code
  AMLab-Amsterdam/L0_regularization, l0_layers.py): hard-concrete gates
  with beta = 2/3, gamma = -0.1, zeta = 1.1, penalty P(gate != 0), kept
  where the test-time gate is above 0.
- "magnitude": no noise and no penalty (theta = 1) while a stage trains;
  at its end a budget keeps the channels of largest weight norm (Li et al.
  2017) or BatchNormalization |gamma| (Liu et al. 2017), see
  `keras_rbp.magnitude`, and the later stages and the fine-tune retrain.
"""

import math

from keras_rbp import noise as rbp_noise
from keras_rbp._keras import ON_TENSORFLOW, erfc, ops, uniform

# SBP's truncation of log theta, and its clip of mu and log sigma.
SBP_LOG_RANGE = (-20.0, 0.0)
SBP_PARAMETER_RANGE = (-20.0, 5.0)
# rbp_relaxed's temperature at noise scale 1.
RELAXED_TEMPERATURE = 0.5
# L0's hard-concrete stretch (gamma, zeta) and temperature beta.
L0_GAMMA, L0_ZETA, L0_BETA = -0.1, 1.1, 2.0 / 3.0
_UNIFORM_EPSILON = 1e-6
# float64 where the backend computes in it: keras.ops on JAX (without x64)
# and PyTorch bring float64 back to float32, wholly or in part.
WIDE_FLOAT = "float64" if ON_TENSORFLOW else "float32"


def _normal_cdf(x):
    return 0.5 * erfc(-x / math.sqrt(2.0))


def _log_normal_cdf_scaled(x):
    """log Phi(x) + x^2 / 2 for x <= 0, free of the cancellation of the two
    terms far in the lower tail: erfc above -10, below it the asymptotic
    series of Mills' ratio (relative error under 1e-7)."""
    cut = ops.full_like(x, -10.0)  # a tensor: PyTorch's keras.ops compare with a number in float32
    near, far = ops.maximum(x, cut), ops.minimum(x, cut)  # both branches finite, and their gradients
    s = 1.0 / ops.square(far)
    series = 1.0 - s * (1.0 - s * (3.0 - s * (15.0 - 105.0 * s)))
    log_far = -ops.log(-far) - 0.5 * math.log(2.0 * math.pi) + ops.log(series)
    return ops.where(x > cut, ops.log(_normal_cdf(near)) + 0.5 * ops.square(near), log_far)


def _log_cdf_difference(upper, lower):
    """log(Phi(upper) - Phi(lower)), plus upper^2 / 2 where upper < 0, for
    lower < upper and lower <= 0. Far in the lower tail both CDFs are about
    exp(-x^2 / 2); the result leaves upper's factor out, and the callers
    cancel it analytically."""
    negative = upper < 0.0
    zero = ops.zeros_like(upper)
    below, above = ops.minimum(upper, zero), ops.maximum(upper, zero)
    log_above = ops.log(_normal_cdf(above))
    scaled_upper, scaled_lower = _log_normal_cdf_scaled(below), _log_normal_cdf_scaled(lower)
    # log Phi(lower) - log Phi(upper) <= 0
    gap = ops.where(negative, scaled_lower - scaled_upper - 0.5 * (lower - below) * (lower + below),
                   scaled_lower - 0.5 * ops.square(lower) - log_above)
    return ops.where(negative, scaled_upper, log_above) + ops.log1p(-ops.exp(gap))


def _half_square_below_zero(x):
    """x^2 / 2 where x < 0, else 0: the factor _log_cdf_difference leaves out."""
    return ops.where(x < 0.0, 0.5 * ops.square(x), ops.zeros_like(x))


def _minus_half_square_above_zero(x):
    """-x^2 / 2 + _half_square_below_zero(x), without rounding."""
    return ops.where(x < 0.0, ops.zeros_like(x), -0.5 * ops.square(x))


def _uniform(shape, seed):
    """Uniform draws in (eps, 1 - eps)."""
    return uniform(shape, seed, minval=_UNIFORM_EPSILON, maxval=1.0 - _UNIFORM_EPSILON)


class Method:
    """The attributes every method has; its class gives the functions."""

    name = None
    collapses = False
    ranks_by_weights = False
    trainable = True
    parameters = ()

    def keep_score(self, params):
        return ops.cast(ops.sigmoid(self.keep_logit(params)), "float32")


class RBP(Method):
    """Recursive Bayesian Pruning's Dirac-like noise (`keras_rbp.noise`)."""

    name = "rbp"
    collapses = True
    parameters = ("logits",)

    def initial_values(self, initial_keep_prob):
        return {"logits": rbp_noise.logit(initial_keep_prob)}

    def draw(self, shape, seed):
        return rbp_noise.standard_normal(shape, seed)

    def sample(self, params, draws, scale):
        return rbp_noise.sample(params["logits"], draws, scale)

    def mean(self, params):
        return rbp_noise.keep_probability(params["logits"])

    def penalty(self, params, prior_keep_prob):
        return rbp_noise.kl_divergence(params["logits"], prior_keep_prob)

    def keep_logit(self, params):
        return params["logits"]


class RelaxedRBP(RBP):
    """RBP's gates and KL with relaxed-Bernoulli samples; theta is pi at
    inference, the Bernoulli gate's mean."""

    name = "rbp_relaxed"

    def draw(self, shape, seed):
        return _uniform(shape, seed)

    def sample(self, params, draws, scale):
        logistic = ops.log(draws) - ops.log1p(-draws)
        return ops.sigmoid((params["logits"] + logistic) * (scale / RELAXED_TEMPERATURE))


class SBP(Method):
    """Structured Bayesian Pruning: truncated log-normal noise."""

    name = "sbp"
    parameters = ("mu", "log_sigma")

    def initial_values(self, initial_keep_prob):
        del initial_keep_prob  # SBP starts every channel at mu = 0, log sigma = -5
        return {"mu": 0.0, "log_sigma": -5.0}

    @staticmethod
    def _standardised(params):
        """(mu, sigma, alpha, beta, log Z + h) of the truncated normal of
        log theta, h = beta^2 / 2 where beta < 0 (see _log_cdf_difference).
        A wide noise (sigma up to e^5) or a mean above b puts these far in
        the tails, so every CDF difference is kept in log space; mu >= a,
        so alpha <= 0."""
        low, high = SBP_PARAMETER_RANGE
        mu = ops.clip(params["mu"], low, high)
        sigma = ops.exp(ops.clip(params["log_sigma"], low, high))
        a, b = SBP_LOG_RANGE
        alpha, beta = (a - mu) / sigma, (b - mu) / sigma
        return mu, sigma, alpha, beta, _log_cdf_difference(beta, alpha)

    def draw(self, shape, seed):
        return _uniform(shape, seed)

    def sample(self, params, draws, scale):
        """exp of the truncated normal's inverse CDF at a uniform draw, with
        sigma times `scale` (SBP's sample_truncated_normal)."""
        mu, sigma, _, _, _ = self._standardised(params)
        sigma = sigma * scale
        a, b = SBP_LOG_RANGE
        alpha, beta = (a - mu) / sigma, (b - mu) / sigma
        low, high = _normal_cdf(alpha), _normal_cdf(beta)
        gamma = ops.clip(low + draws * (high - low), 1e-5, 1.0 - 1e-5)
        log_theta = math.sqrt(2.0) * ops.erfinv(2.0 * gamma - 1.0) * sigma + mu
        return ops.exp(ops.clip(log_theta, a, b))

    def _log_moment(self, params, k):
        """log E theta^k = k mu + k^2 sigma^2 / 2 + log(Phi(beta - k sigma)
        - Phi(alpha - k sigma)) - log Z, with the quadratic terms cancelled:
        k mu + k^2 sigma^2 / 2 - (beta - k sigma)^2 / 2 = k b - beta^2 / 2."""
        mu, sigma, alpha, beta, log_z_scaled = self._standardised(params)
        upper = beta - k * sigma
        b = SBP_LOG_RANGE[1]
        quadratic = ops.where(upper >= 0.0, k * mu + 0.5 * k**2 * ops.square(sigma),
                             k * b + _minus_half_square_above_zero(beta))
        return quadratic + _log_cdf_difference(upper, alpha - k * sigma) - log_z_scaled

    def mean(self, params):
        """E theta = exp(mu + sigma^2 / 2) (Phi(sigma - alpha) - Phi(sigma - beta)) / Z."""
        return ops.exp(self._log_moment(params, 1))

    def penalty(self, params, prior_keep_prob):
        """KL against the log-uniform prior on [a, b]: log(b - a) - log(2 pi e) / 2
        - log sigma - log Z - (alpha phi(alpha) - beta phi(beta)) / (2 Z)."""
        del prior_keep_prob  # the log-uniform prior has no parameter
        _, sigma, alpha, beta, log_z_scaled = self._standardised(params)
        a, b = SBP_LOG_RANGE
        h = _half_square_below_zero(beta)
        log_z = log_z_scaled - h
        # phi(x) / Z = exp(-x^2 / 2 + h - log(2 pi) / 2 - log Z_scaled), with
        # -alpha^2 / 2 = -(alpha - beta) (alpha + beta) / 2 - beta^2 / 2.
        log_beta_ratio = -0.5 * math.log(2.0 * math.pi) - log_z_scaled + _minus_half_square_above_zero(beta)
        alpha_ratio = ops.exp(log_beta_ratio - 0.5 * (alpha - beta) * (alpha + beta))
        beta_ratio = ops.exp(log_beta_ratio)
        tails = alpha * alpha_ratio - beta * beta_ratio
        return math.log(b - a) - 0.5 * math.log(2.0 * math.pi * math.e) - ops.log(sigma) - log_z - 0.5 * tails

    def keep_logit(self, params):
        """log SNR, SNR = E theta / std theta = 1 / sqrt(E theta^2 / (E theta)^2
        - 1), in float64 (`WIDE_FLOAT`) from the log moments (a vanishing noise: about 345);
        its sigmoid is SNR / (1 + SNR)."""
        params = {name: ops.cast(value, WIDE_FLOAT) for name, value in params.items()}
        excess = ops.expm1(self._log_moment(params, 2) - 2.0 * self._log_moment(params, 1))
        return -0.5 * ops.log(ops.maximum(excess, ops.full_like(excess, 1e-300)))


class VIB(Method):
    """VIBNet's Gaussian noise with the information-bottleneck penalty."""

    name = "vib"
    parameters = ("mu", "log_variance")

    def initial_values(self, initial_keep_prob):
        del initial_keep_prob  # VIBNet starts at mu = 1, log sigma^2 = -9
        return {"mu": 1.0, "log_variance": -9.0}

    def draw(self, shape, seed):
        return rbp_noise.standard_normal(shape, seed)

    def sample(self, params, draws, scale):
        return params["mu"] + scale * ops.exp(0.5 * params["log_variance"]) * draws

    def mean(self, params):
        return params["mu"]

    def penalty(self, params, prior_keep_prob):
        """0.5 log(1 + mu^2 / sigma^2) (VIBNet's kl_closed_form)."""
        del prior_keep_prob
        return 0.5 * ops.log1p(ops.square(params["mu"]) / (ops.exp(params["log_variance"]) + 1e-8))

    def keep_logit(self, params):
        """-log alpha, log alpha = log sigma^2 - log mu^2."""
        return ops.log(ops.square(params["mu"]) + 1e-8) - params["log_variance"]


class L0(Method):
    """L0 regularisation with hard-concrete gates."""

    name = "l0"
    parameters = ("log_alpha",)

    def initial_values(self, initial_keep_prob):
        """log alpha = log(1 - d) - log d for the initial drop rate d."""
        return {"log_alpha": rbp_noise.logit(initial_keep_prob)}

    def draw(self, shape, seed):
        return _uniform(shape, seed)

    def sample(self, params, draws, scale):
        """min(1, max(0, s (zeta - gamma) + gamma)), s = sigmoid((log u -
        log(1 - u) + log alpha) / beta). The gate has no spread parameter:
        `scale` does not apply."""
        del scale
        s = ops.sigmoid((ops.log(draws) - ops.log1p(-draws) + params["log_alpha"]) / L0_BETA)
        return ops.clip(s * (L0_ZETA - L0_GAMMA) + L0_GAMMA, 0.0, 1.0)

    def mean(self, params):
        """The test-time gate min(1, max(0, sigmoid(log alpha) (zeta - gamma) + gamma))."""
        return ops.clip(ops.sigmoid(params["log_alpha"]) * (L0_ZETA - L0_GAMMA) + L0_GAMMA, 0.0, 1.0)

    def penalty(self, params, prior_keep_prob):
        """P(gate != 0) = sigmoid(log alpha - beta log(-gamma / zeta))."""
        del prior_keep_prob
        return ops.sigmoid(params["log_alpha"] - L0_BETA * math.log(-L0_GAMMA / L0_ZETA))

    def keep_logit(self, params):
        """log alpha - logit(-gamma / (zeta - gamma)): 0 where the test-time
        gate leaves 0, at log alpha = -log 11."""
        return params["log_alpha"] - rbp_noise.logit(-L0_GAMMA / (L0_ZETA - L0_GAMMA))


class Magnitude(Method):
    """The non-Bayesian baseline: a constant gate of 1, which a budget
    closes on the channels of smallest weight magnitude."""

    name = "magnitude"
    ranks_by_weights = True
    trainable = False
    parameters = ("gate",)

    def initial_values(self, initial_keep_prob):
        del initial_keep_prob  # every channel is kept until the budget cuts
        return {"gate": 1.0}

    def draw(self, shape, seed):
        del seed
        return ops.zeros(shape)

    def sample(self, params, draws, scale):
        del scale
        return params["gate"] + draws

    def mean(self, params):
        return params["gate"]

    def penalty(self, params, prior_keep_prob):
        del prior_keep_prob
        return ops.zeros_like(params["gate"])

    def keep_logit(self, params):
        """+inf: a budget ranks by weight magnitude instead."""
        return ops.full_like(params["gate"], math.inf)


METHODS = {method.name: method for method in (RBP(), RelaxedRBP(), SBP(), VIB(), L0(), Magnitude())}


def get(name):
    """The method called `name`; a clear error for any other value."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, received: {name!r}")
    return METHODS[name]
