"""`RBPWrapper`: an `RBPNoise` on the pre-activation of a prunable layer;
`RBPHeadWrapper`: one on the heads of a MultiHeadAttention layer."""

from keras_rbp import _keras
from keras_rbp import rules
from keras_rbp._keras import keras, register_serializable
from keras_rbp.layers import RBPNoise

def is_wrappable(layer):
    """Whether RBPWrapper can wrap `layer`: its rule folds a theta into its
    output channels (see `rules.register_rule`)."""
    return rules.rule_for(layer).prunable


def supported_names(batch_normalization=True):
    return ", ".join(
        cls.__name__ for cls in rules.prunable_classes()
        if batch_normalization or not issubclass(cls, keras.layers.BatchNormalization)
    )


@register_serializable(package="keras_rbp")
class RBPWrapper(keras.layers.Wrapper):
    """Puts an `RBPNoise` on the pre-activation of a Dense or Conv layer.

    Computes ``activation(theta * layer(inputs))``: the wrapped layer runs
    without its activation, which the wrapper applies after the noise, so a
    frozen theta can be folded into the layer's kernel and bias. Wrapping a
    BatchNormalization puts the noise on its output.

    Args:
        layer: a layer whose rule is prunable: Dense, Conv1D/2D/3D (grouped
            too), their transposed and separable forms, DepthwiseConv1D/2D,
            BatchNormalization, or a user layer registered so.
        noise: an `RBPNoise` or its config; its `axis` is set from the layer.
        activation: the activation to apply after the noise; by default the
            wrapped layer's own, which is then replaced by "linear".

    Call arguments:
        inputs: the inputs of the wrapped layer.
        training: passed to the wrapped layer and the noise.
        mask: passed to the wrapped layer when given.
    """

    def __init__(self, layer, noise, activation=None, **kwargs):
        if not is_wrappable(layer):
            raise ValueError(
                f"RBPWrapper cannot wrap layer {layer.name!r} of class "
                f"{type(layer).__name__}; supported: {supported_names()}"
            )
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        if activation is None and hasattr(layer, "activation"):
            activation = layer.activation
        if hasattr(layer, "activation"):
            layer.activation = keras.activations.get("linear")
        self.activation = keras.activations.get(activation)
        if isinstance(noise, dict):
            noise = dict(noise, axis=rules.rule_for(layer).noise_axis(layer))
            noise.setdefault("name", f"{layer.name}_rbp_noise")
            noise = RBPNoise(**noise)
        self.noise = noise

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.noise.build(self.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None, mask=None):
        kwargs = {} if mask is None else {"mask": mask}
        outputs = self.layer(inputs, training=training, **kwargs)
        outputs = self.noise(outputs, training=training)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return _keras.output_shapes(self.layer, [input_shape])[0]

    def get_config(self):
        config = super().get_config()
        noise_config = self.noise.get_config()
        config.update(noise=noise_config, activation=keras.activations.serialize(self.activation))
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


@register_serializable(package="keras_rbp")
class RBPHeadWrapper(RBPWrapper):
    """Puts an `RBPNoise` on the heads of a MultiHeadAttention layer.

    The noise multiplies each head's attention output before the output
    projection, one channel per head; the layer's own `call` runs
    otherwise unchanged, so a subclass that overrides it (KerasHub's
    `CachedMultiHeadAttention`) keeps its behaviour.

    Call arguments: those of the wrapped layer.
    """

    def build(self, query_shape, value_shape=None, key_shape=None):
        if not self.layer.built and _keras.IS_KERAS_3:  # tf_keras builds it on its first call
            self.layer.build(query_shape, value_shape or query_shape, key_shape)
        config = self.layer.get_config()
        value_dim = config.get("value_dim") or config["key_dim"]
        self.noise.build(tuple(query_shape[:-1]) + (config["num_heads"], value_dim))
        self._install_noise()
        self.built = True

    def _install_noise(self):
        """Makes the layer's `_compute_attention` (of Keras, tf_keras and
        their subclasses) scale its output by the noise."""
        compute_attention = type(self.layer)._compute_attention.__get__(self.layer)

        def noisy(*args, **kwargs):
            outputs, scores = compute_attention(*args, **kwargs)
            return self.noise(outputs, training=self._training), scores

        object.__setattr__(self.layer, "_compute_attention", noisy)  # not tracked as an attribute

    def call(self, query, value, key=None, training=None, **kwargs):
        object.__setattr__(self, "_training", training)
        if key is not None:
            kwargs["key"] = key
        return self.layer(query, value, training=training, **kwargs)

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return self.layer.compute_output_shape(query_shape, value_shape or query_shape, key_shape)

    def compute_output_spec(self, *args, **kwargs):
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(*args, **kwargs)


def wrap(layer, noise):
    """An `RBPWrapper` (or `RBPHeadWrapper` for an attention layer) of
    `layer` with `noise` (an `RBPNoise` config)."""
    attention = isinstance(layer, keras.layers.MultiHeadAttention)
    return (RBPHeadWrapper if attention else RBPWrapper)(layer, noise)
