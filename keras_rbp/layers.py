"""The `RBPNoise` layer: a channel-wise Dirac-like dropout noise."""

import random

from keras_rbp import _keras
from keras_rbp import methods as methods_lib
from keras_rbp._keras import NO_AUTOCAST, ONLY_FIRST_REPLICA, keras, ops, register_serializable, to_numpy

MODES = ("off", "active", "frozen")
OFF, ACTIVE, FROZEN = range(3)


@register_serializable(package="keras_rbp")
class RBPNoise(keras.layers.Layer):
    """Multiplies each channel of its input by a learned Dirac-like noise.

    The noise theta_c has mean pi_c = sigmoid(phi_c) and standard deviation
    s * sqrt(pi_c (1 - pi_c)); it is drawn per example and per channel and
    shared over spatial positions. `method` chooses another method's noise
    instead (SBP, VIBNet, L0: see `keras_rbp.methods`), or none (the
    magnitude baseline); pi is then the method's keep score. The layer has
    three modes, held in a variable so that they switch without
    recompiling the model:

    - ``"off"``: theta = 1 and no KL; the layer is the identity.
    - ``"active"``: theta is sampled in training and equal to its mean
      (RBP: pi) at inference; the KL against the Bernoulli(pi_0) prior (or
      the method's penalty), times ``kl_weight * cost / dataset_size``, is
      added with `add_loss`.
    - ``"frozen"``: theta = mask * frozen value, deterministic, no KL, no
      gradient to the logits.

    Only an active noise sends gradients to its parameters; a frozen one's
    theta no longer depends on them. Its attribute `sampling` (True by
    default, not saved) turned off makes it act as a non-trainable noise
    (below) while its variables stay trainable: `RecursivePruning` turns it
    off for the groups outside the current stage, whose theta is then a
    multiply, and rebuilds the model's train function once a stage.

    One noise can be called at several places (the producers of a residual
    stream, see `prune`'s ``coupled_groups``): every call multiplies by the
    same theta, drawn once a training step, and the calls together add one
    KL. The draws come from a `keras.random.SeedGenerator` (Keras 3; its
    state is saved with the weights, so a resumed run draws on) or a step
    counter (tf_keras).

    The layer adds one loss term a call, which is zero unless active. Its
    variables also hold `mode_epochs` and `mode_steps`, the epochs and
    training steps spent in the current mode, which `RecursivePruning`
    counts, so that checkpoints carry its progress.

    A layer that is not trainable (``layer.trainable = False``) computes
    theta as at inference, in training too, and its loss term is 0, like a
    non-trainable BatchNormalization; its logits are not updated. The flag
    is not part of the config.

    Args:
        dataset_size: number of training examples N; the KL is divided by it.
        axis: the channel axis of the input: -1 for channels_last, 1 for
            channels_first.
        kl_weight: multiplies the KL term.
        prior_keep_prob: pi_0, the prior probability that a channel is kept.
        initial_keep_prob: pi of every channel before training.
        logit_scale: phi = logit_scale * v for the trainable variable v, so
            that the optimiser moves phi logit_scale times faster than the
            weights.
        cost: extra weight of this layer's KL (the cost-aware prior).
        calls: the number of places the model calls this layer; each call
            adds 1/calls of the KL and they share one draw a step.
        method: the noise, one of `keras_rbp.methods.METHODS`: "rbp",
            "rbp_relaxed", "sbp", "vib", "l0", or "magnitude" (no noise:
            a budget keeps the channels of largest weight magnitude). Its
            parameters are the variables ``scaled_<parameter>``, each
            logit_scale times smaller than the parameter (RBP:
            ``scaled_logits``).
        seed: integer seed of the noise; drawn at random when None and then
            kept in the config.

    Call arguments:
        inputs: a tensor with the channel axis given by `axis`.
        training: whether to sample the noise (active mode only).
    """

    def __init__(
        self,
        dataset_size,
        axis=-1,
        kl_weight=1.0,
        prior_keep_prob=0.01,
        initial_keep_prob=0.99,
        logit_scale=10.0,
        cost=1.0,
        calls=1,
        seed=None,
        method="rbp",
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = self.name
        try:
            self._method = methods_lib.get(method)
        except ValueError as error:
            raise ValueError(f"RBPNoise {name!r}: {error}") from None
        self.method = method
        if not isinstance(dataset_size, int) or dataset_size <= 0:
            raise ValueError(
                f"RBPNoise {name!r}: dataset_size must be a positive integer, "
                f"received: {dataset_size!r}"
            )
        for arg, value in (
            ("prior_keep_prob", prior_keep_prob),
            ("initial_keep_prob", initial_keep_prob),
        ):
            if not 0.0 < value < 1.0:
                raise ValueError(
                    f"RBPNoise {name!r}: {arg} must be in (0, 1), received: {value!r}"
                )
        for arg, value in (
            ("kl_weight", kl_weight),
            ("logit_scale", logit_scale),
            ("cost", cost),
        ):
            if not value > 0:
                raise ValueError(
                    f"RBPNoise {name!r}: {arg} must be positive, received: {value!r}"
                )
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
            raise ValueError(
                f"RBPNoise {name!r}: calls must be a positive integer, received: {calls!r}"
            )
        self.dataset_size = dataset_size
        self.calls = calls
        self.axis = int(axis)
        self.kl_weight = float(kl_weight)
        self.prior_keep_prob = float(prior_keep_prob)
        self.initial_keep_prob = float(initial_keep_prob)
        self.logit_scale = float(logit_scale)
        self.cost = float(cost)
        self.seed = random.randrange(2**31) if seed is None else int(seed)
        self.sampling = True

    def build(self, input_shape):
        channels = input_shape[self.axis % len(input_shape)]
        if channels is None:
            raise ValueError(
                f"RBPNoise {self.name!r}: the channel axis {self.axis} of input "
                f"shape {tuple(input_shape)} must be known"
            )
        constant = keras.initializers.Constant
        # Every variable stays float32 under a mixed-precision policy: the
        # noise and its KL are computed in float32, and only its product with
        # the input runs in the compute dtype.
        self._parameter_variables = {}
        for parameter, value in self._method.initial_values(self.initial_keep_prob).items():
            variable = self.add_weight(
                name=f"scaled_{parameter}",
                shape=(channels,),
                dtype="float32",
                initializer=constant(value / self.logit_scale),
                trainable=self._method.trainable,
                **NO_AUTOCAST,
            )
            setattr(self, f"scaled_{parameter}", variable)
            self._parameter_variables[parameter] = variable
        self.mode_variable = self.add_weight(
            name="mode", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.mask = self.add_weight(
            name="mask", shape=(channels,), dtype="float32", initializer="ones", trainable=False,
            **NO_AUTOCAST,
        )
        self.frozen_value = self.add_weight(
            name="frozen_value", shape=(channels,), dtype="float32", initializer="ones", trainable=False,
            **NO_AUTOCAST,
        )
        self.noise_scale = self.add_weight(
            name="noise_scale", shape=(), dtype="float32", initializer="ones", trainable=False,
            **NO_AUTOCAST,
        )
        self.mode_epochs = self.add_weight(
            name="mode_epochs", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.mode_steps = self.add_weight(
            name="mode_steps", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        if _keras.IS_KERAS_3:
            self.seed_generator = _keras.StepSeedGenerator(self.seed, self.calls, name="seed_generator")
        else:
            self.noise_step = self.add_weight(
                name="noise_step",
                shape=(),
                dtype="int64",
                initializer="zeros",
                trainable=False,
                aggregation=ONLY_FIRST_REPLICA,
            )
        self.built = True

    @property
    def channels(self):
        return int(self.mask.shape[0])

    @property
    def steps_drawn(self):
        """How many training steps have drawn this noise (each draws once,
        however many calls it has)."""
        counter = self.seed_generator.state.numpy()[1] if _keras.IS_KERAS_3 else self.noise_step.numpy()
        return int(counter) // self.calls

    @property
    def collapses(self):
        """Whether the noise is Dirac-like: its keep score goes to 0 or 1 as
        it decides (RBP), so a stage may end once every channel has."""
        return self._method.collapses

    @property
    def ranks_by_weights(self):
        """Whether a budget ranks the channels by weight magnitude
        (`keras_rbp.magnitude`) rather than by `keep_probability`."""
        return self._method.ranks_by_weights

    def parameters(self):
        """The method's parameters, a dict of float32 tensors (channels,)."""
        return {name: self.logit_scale * ops.convert_to_tensor(variable)
                for name, variable in self._parameter_variables.items()}

    @property
    def logits(self):
        """phi, the logits of RBP's keep probabilities."""
        return self.parameters()["logits"]

    def keep_probability(self):
        """pi per channel, as a numpy array: the keep probability of RBP, the
        keep score of another method (above 0.5 where it keeps a channel)."""
        return to_numpy(self._method.keep_score(self.parameters()))

    def keep_logit(self):
        """The method's unbounded keep score per channel (RBP: phi), as a
        numpy array: it ranks the channels whose pi rounds to 1."""
        return to_numpy(self._method.keep_logit(self.parameters()))

    @property
    def mode(self):
        return MODES[int(self.mode_variable.numpy())]

    @mode.setter
    def mode(self, mode):
        """Sets the mode; a change of mode restarts `mode_epochs` and
        `mode_steps` at 0."""
        if mode not in MODES:
            raise ValueError(
                f"RBPNoise {self.name!r}: mode must be one of {MODES}, "
                f"received: {mode!r}"
            )
        if mode != self.mode:
            self.mode_variable.assign(MODES.index(mode))
            self.mode_epochs.assign(0)
            self.mode_steps.assign(0)

    def freeze(self, mask, value=None):
        """Freezes theta to mask * value (value defaults to the current pi)."""
        mask = ops.cast(ops.convert_to_tensor(mask), "float32")
        if mask.shape != (self.channels,):
            raise ValueError(
                f"RBPNoise {self.name!r}: mask must have shape ({self.channels},), "
                f"received shape {tuple(mask.shape)}"
            )
        if value is None:
            value = self._method.mean(self.parameters())
        self.mask.assign(mask)
        self.frozen_value.assign(ops.cast(value, "float32"))
        self.mode = "frozen"

    def kl_loss(self):
        """The loss its calls add now together, as a float (0 unless active)."""
        active = ops.equal(ops.convert_to_tensor(self.mode_variable), ACTIVE)
        return self.calls * float(to_numpy(self._kl_term(self.parameters(), active)))

    def theta(self):
        """The deterministic theta of the current mode, shape (channels,), as
        a numpy array."""
        theta = self._deterministic_theta(ops.convert_to_tensor(self.mode_variable), self.parameters())
        return to_numpy(theta)

    def _deterministic_theta(self, mode, params):
        """theta of `mode`: 1 when off, the method's mean (RBP: pi) when
        active, mask * frozen value when frozen. Selected with `where`, not
        control flow, which would cost more than the noise itself."""
        mean = self._method.mean(params)
        frozen = ops.where(ops.equal(mode, FROZEN), self.mask * self.frozen_value, 1.0)
        return ops.where(ops.equal(mode, ACTIVE), mean, frozen)

    def _seed(self):
        """The seed of this training step's draws, the same for the `calls`
        calls of one step and different for each replica."""
        if _keras.IS_KERAS_3:
            return self.seed_generator
        index, replicas = _keras.replica()
        step = self.noise_step.read_value()  # before the update
        self.noise_step.assign_add(1)
        counter = (step // self.calls) * replicas + ops.cast(index, "int64")
        return ops.stack([ops.convert_to_tensor(self.seed, "int64"), counter])

    def _broadcast(self, theta, rank):
        """Reshapes theta, (channels,) or (batch, channels), onto the input."""
        shape = [1] * rank
        shape[self.axis % rank] = self.channels
        if len(theta.shape) == 2:
            shape[0] = -1
        return ops.reshape(theta, shape)

    def _scale(self, inputs, theta):
        return inputs * ops.cast(self._broadcast(theta, len(inputs.shape)), inputs.dtype)

    def call(self, inputs, training=None):
        mode = ops.convert_to_tensor(self.mode_variable)
        params = self.parameters()
        deterministic = self._deterministic_theta(mode, params)
        if not (self.trainable and self.sampling):  # sampling: off outside the plan's stage
            self.add_loss(ops.convert_to_tensor(0.0))
            return self._scale(inputs, ops.stop_gradient(deterministic))
        active = ops.equal(mode, ACTIVE)
        self.add_loss(self._kl_term(params, active))
        if not training:
            return self._scale(inputs, deterministic)
        # Sampled in every mode, and selected: control flow on the mode
        # would cost more than the draws, and JAX allows no seed update in
        # a branch.
        draws = self._method.draw([ops.shape(inputs)[0], self.channels], self._seed())
        sampled = self._method.sample(params, draws, self.noise_scale)
        return self._scale(inputs, ops.where(active, sampled, ops.stop_gradient(deterministic)))

    def _kl_term(self, params, active):
        kl_per_channel = self._method.penalty(params, self.prior_keep_prob)
        scale = self.kl_weight * self.cost / (self.dataset_size * self.calls)
        return ops.where(active, scale * ops.sum(kl_per_channel), 0.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def _saved_variables(self):
        """The variables a saved model holds: the weights, and under Keras 3
        the seed generator's state, which Keras leaves out of a layer's
        saved state."""
        weights = _keras.own_variables(self)
        return weights + [self.seed_generator.state] if hasattr(self, "seed_generator") else weights

    def save_own_variables(self, store):
        for index, variable in enumerate(self._saved_variables()):
            store[f"{index}"] = variable

    def load_own_variables(self, store):
        variables = self._saved_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"RBPNoise {self.name!r}: the file holds {len(store.keys())} variables for this "
                f"layer, which has {len(variables)}"
            )
        for index, variable in enumerate(variables):
            variable.assign(store[f"{index}"])

    def get_config(self):
        config = super().get_config()
        # Who trains the logits is decided by RecursivePruning per stage, not
        # saved: a model saved in a stage must load with every group trainable.
        config.pop("trainable", None)
        config.update(
            dataset_size=self.dataset_size,
            axis=self.axis,
            kl_weight=self.kl_weight,
            prior_keep_prob=self.prior_keep_prob,
            initial_keep_prob=self.initial_keep_prob,
            logit_scale=self.logit_scale,
            cost=self.cost,
            calls=self.calls,
            seed=self.seed,
            method=self.method,
        )
        return config
