"""Layer rules: how each layer class's channels flow, slice and fold.

`shrink` follows every channel of every tensor through a model. For each
layer call it asks the rule registered for the layer's class:

- `forward`: which output channels share an index with which input channels
  (the dependency groups), which output channels are exactly zero, and which
  channels must be kept (a boundary);
- `backward`: which input channels the needed output channels read;
- `rebuild`: given the input channels the small model holds, which output
  channels it holds, and the sliced weights and config of the new layer,
  with a frozen theta folded in where the layer carries one.

This module holds the rule API (`LayerRule`, its bases `ProducerRule` and
`PerChannelRule`, `register_rule`); the rules of Keras's layers are in
`layer_rules`, those of operation layers (``x + y``, ``keras.ops.relu6``) in
`operation_rules` and that of MultiHeadAttention in `attention`. The
built-in layers use the same registry that users extend for their own
layers with `register_rule`. A layer whose class has no rule is probed: if
it acts on each channel alone it passes channels through, else it is a
boundary: the channels that feed it are kept, with a warning naming it.
"""

import numpy as np

from keras_rbp._keras import keras, to_numpy

L = keras.layers


class ShrinkError(ValueError):
    """`shrink` cannot remove channels it was asked to remove, or cannot
    rewrite the model; the message names the layer and the reason."""


class LayerRule:
    """The channel behaviour of one layer class; subclass and register it.

    Attributes:
        prunable: whether `prune` may put a noise on the layer's output
            channels; the rule's `rebuild` then folds `op.theta` into them.

    The default methods make the layer a boundary: its input channels are all
    kept and its outputs are new channels that are all kept.
    """

    prunable = False
    # Whether a prunable layer's noise scales its output channels (else
    # channels inside the layer: an attention's heads).
    noise_on_outputs = True
    # Whether the layer keeps every channel of its inputs, so that it may
    # read tensors of unknown width (an attention mask of any length).
    keeps_inputs = False
    # Whether the layer holds nothing sized by its channels, so that each
    # call of a shared layer keeps the channels of its own inputs (a Dropout
    # called on tensors of different widths); otherwise every call keeps
    # what any call keeps.
    stateless = False

    def forward(self, plan, op):
        """Creates the tensors of `op.outputs` with `plan.new` or
        `plan.boundary`, joining slots with `plan.join`."""
        plan.boundary(op, "cannot be sliced channel by channel")

    def backward(self, plan, op):
        """Marks the input channels that the needed output channels read."""
        for tensor in plan.ins(op):
            tensor.needed[:] = True

    def output_norms(self, layer):
        """The L1 norm of the weights that make each output channel (a numpy
        array), which ``method="magnitude"`` ranks channels by; None where
        the layer has no such weights."""
        return None

    def input_norms(self, layer):
        """The L1 norm of the weights that read each channel of the first
        input, or None; ranks the channels no weighted layer makes."""
        return None

    def channel_axis(self, layer):
        """The axis of the layer's output that holds its channels."""
        return 1 if getattr(layer, "data_format", None) == "channels_first" else -1

    def noise_axis(self, layer):
        """The axis a prunable layer's noise multiplies: its channel axis,
        or another of the tensor the noise scales (an attention's heads)."""
        return self.channel_axis(layer)

    def scaled_cost(self, layer, macs, in_ratio, out_ratio):
        """(MACs, parameters) of the layer when it keeps `in_ratio` of its
        input channels and `out_ratio` of the channels its theta scales,
        where `macs` is its full MACs; None (the default) lets a budget
        scale each weight by the kept channels its dimensions index."""
        return None

    def macs(self, layer, input_shape, output_shape):
        """The multiply-accumulates of one call on one example, for the
        shape of its (first) input and of its output (batch axis first); 0
        by default. `report`, `cost_aware` and the budgets count these; a
        budget scales them with the kept fraction of the input and output
        channels."""
        return 0

    def call_alone(self, layer, inputs):
        """Calls `layer` on the tensor `inputs` as its only input, as a
        latency table times it."""
        return layer(inputs)

    def call_macs(self, layer, argument_shapes, output_shape):
        """`macs` for a call whose tensor arguments have `argument_shapes`
        (a dict by the name of the call's parameter, in its order); a layer
        of several inputs (attention) overrides this one instead."""
        return self.macs(layer, next(iter(argument_shapes.values())), output_shape)

    def rebuild(self, build, op, ins):
        """Returns the physical channels (indices into each output's channels)
        of every output; `ins` holds those of every input. Sets the new
        layer's weights and config through `build`."""
        for key, physical in zip(op.inputs, ins):
            if len(physical) != build.plan.tensors[key].channels:
                raise ShrinkError(
                    f"shrink: {type(op.layer).__name__} layer {op.name!r} reads a "
                    "tensor whose channels were removed"
                )
        return [np.arange(build.plan.tensors[key].channels) for key in op.outputs]


# The registered rules, by layer class. `layer_rules` (imported by the
# package) fills it with those of Keras's layers, and maps keras.layers.Layer
# to the rule that probes a layer without one.
_RULES = {}


def register_rule(layer_class, rule):
    """Registers `rule` (a `LayerRule`) for `layer_class` and its subclasses
    that have no rule of their own. A later registration replaces an earlier
    one."""
    if not isinstance(rule, LayerRule):
        raise TypeError(
            f"register_rule: rule for {getattr(layer_class, '__name__', layer_class)!r} "
            f"must be a LayerRule, received {type(rule).__name__}"
        )
    _RULES[layer_class] = rule


def unregister_rule(layer_class):
    """Removes the rule registered for `layer_class`, if any."""
    _RULES.pop(layer_class, None)


def rule_for(layer):
    """The rule of `layer`'s class or its nearest registered base class;
    for a layer class with none, the rule that probes it
    (`layer_rules.UnknownLayerRule`)."""
    registry = _RULES
    for cls in type(layer).__mro__:
        if cls in registry:
            return registry[cls]
    return registry[keras.layers.Layer]


def is_unknown(layer):
    """Whether `layer`'s class has no rule of its own: it is probed."""
    return rule_for(layer) is _RULES[keras.layers.Layer]


BOUNDARY = LayerRule()


class BoundaryRule(LayerRule):
    """A boundary, for the reason given (a LayerNormalization normalises
    each position over all its channels: no channel can go exactly)."""

    def __init__(self, reason):
        self.reason = reason

    def forward(self, plan, op):
        plan.boundary(op, self.reason)


def prunable_classes():
    """The registered layer classes whose rule is prunable."""
    return [cls for cls, rule in _RULES.items() if rule.prunable]


def channel_axis(layer):
    """The axis of `layer`'s output that holds its channels, as its rule says."""
    return rule_for(layer).channel_axis(layer)


def activation_name(activation):
    return getattr(activation, "__name__", str(activation))


MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def _maps_zero_to_zero(function, channels):
    """Per channel, whether `function` maps an all-zero input to zero."""
    return to_numpy(function(np.zeros((1, channels), np.float32))).reshape(-1) == 0


# Layers with a kernel: the noise's theta folds into their output channels.


class ProducerRule(LayerRule):
    """A prunable layer: it makes its output channels from its input
    channels, and `prune` may put a noise on them (`RBPWrapper`), whose
    frozen theta `shrink` folds into the layer's weights, before the
    layer's `activation` attribute if it has one.

    The defaults describe a layer like Dense: its first weight is a kernel
    whose axis -2 reads the input channels and whose last axis makes the
    output channels, its second weight (if any) is a bias with one value
    per output channel, its config holds its width under `width_key`, and
    it costs a kernel's worth of MACs at every output position. Override
    `sliced_weights`, `macs` or `channel_axis` for other layouts.
    """

    prunable = True
    passes_channels = False  # output channel c is made from input channel c only
    width_key = "units"  # the config key of the number of output channels

    def output_slots(self, plan, op, tensor):
        """Slots of the output channels; new ones by default."""
        return None

    def forward(self, plan, op):
        inner = op.inner
        tensor = plan.input_on_axis(op, op.inputs[0], channel_axis(inner))
        if tensor is None and self.passes_channels:
            raise ShrinkError(
                f"shrink: layer {op.name!r} reads channels on axis {channel_axis(inner)}, "
                "which its input does not hold its channels on"
            )
        out = plan.new(op, axis=channel_axis(inner), slots=self.output_slots(plan, op, tensor))
        if op.theta is None:
            op.theta = np.ones(out.channels, np.float32)
        activation = op.activation
        if activation is not None and activation_name(activation) in MIXING_ACTIVATIONS:
            plan.keep(out.slots, f"layer {op.name!r} has a softmax activation over its channels")
            return
        zero_to_zero = activation is None or bool(_maps_zero_to_zero(activation, 1)[0])
        inner_zero = self.zero_from_input(op, tensor) if tensor is not None else False
        zeroed = (op.theta == 0) | inner_zero
        out.zero = zeroed & zero_to_zero
        if tensor is not None and self.passes_channels:
            zero_in = np.repeat(tensor.zero, out.channels // tensor.channels)
            plan.note_zero_lost(out.slots[zero_in & ~out.zero], f"layer {op.name!r} maps 0 to a non-zero value")
        if not zero_to_zero:
            plan.note_zero_lost(
                out.slots[zeroed], f"the activation of layer {op.name!r} maps 0 to a non-zero value"
            )

    def zero_from_input(self, op, tensor):
        return False

    def backward(self, plan, op):
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        if (out.needed & (op.theta != 0)).any():
            tensor.needed[:] = True

    def rebuild(self, build, op, ins):
        in_index = build.input_indices(op, channel_axis(op.inner))
        out_index = self.output_indices(build, op, in_index)
        weights, changes = self.sliced_weights(op.inner, in_index, out_index, op.theta[out_index])
        build.set_layer(op, weights, changes)
        return [out_index]

    def output_indices(self, build, op, in_index):
        return build.plan.kept(op.outputs[0])

    def sliced_weights(self, layer, in_index, out_index, theta):
        """The new layer's weights, keeping input channels `in_index` and
        output channels `out_index`, the latter scaled by `theta`, and the
        changes to its config."""
        kernel, *rest = layer.get_weights()
        bias = [rest[0][out_index] * theta] if rest else []
        return [kernel[..., in_index, :][..., out_index] * theta] + bias, {self.width_key: len(out_index)}

    def macs(self, layer, input_shape, output_shape):
        return _positions(output_shape, self.channel_axis(layer)) * int(np.prod(layer.weights[0].shape))

    def output_norms(self, layer):
        return _slice_norms(layer.get_weights()[0], -1)


def _positions(shape, axis):
    """The number of positions of a tensor of `shape`: every axis but the
    batch and the channel axis."""
    axis = axis % len(shape)
    return int(np.prod([d for i, d in enumerate(shape[1:], 1) if i != axis]))


def _slice_norms(weight, axis):
    """The L1 norm of each slice of `weight` along `axis`."""
    weight = np.abs(np.moveaxis(weight, axis, 0))
    return weight.reshape(weight.shape[0], -1).sum(1)


def _data_format_axis(layer, rank):
    """The channel axis a data_format layer reads, None for the others."""
    if not hasattr(layer, "data_format"):
        return None
    return 1 if layer.data_format == "channels_first" else rank - 1


def _mixes_channels(layer, tensor):
    if isinstance(layer, L.Softmax):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return any(axis % len(tensor.shape) == tensor.axis for axis in axes)
    if isinstance(layer, L.Activation):
        return activation_name(layer.activation) in MIXING_ACTIVATIONS
    return False


# Layers that keep channel indices.


class PerChannelRule(LayerRule):
    """A layer that acts on each channel alone (activations, dropout,
    pooling, padding, cropping, upsampling): output channel c is input
    channel c."""

    stateless = True

    def forward(self, plan, op):
        layer = op.layer
        (tensor,) = plan.ins(op)
        axis = _data_format_axis(layer, len(tensor.shape))
        if axis is not None and plan.input_on_axis(op, op.inputs[0], axis) is None:
            return plan.boundary(op, "reads channels on another axis")
        if _mixes_channels(layer, tensor):
            return plan.boundary(op, "normalises over the channels")
        zero = tensor.zero & self.maps_zero_to_zero(layer, tensor)
        plan.note_zero_lost(tensor.slots[tensor.zero & ~zero], f"layer {op.name!r} maps 0 to a non-zero value")
        out_shape = op.shapes[0]
        if len(out_shape) == 2:
            axis = 1
        elif len(out_shape) == len(tensor.shape):
            axis = tensor.axis
        else:
            return plan.boundary(op, "changes the rank of its input")
        plan.new(op, axis=axis, slots=tensor.slots, zero=zero)

    def maps_zero_to_zero(self, layer, tensor):
        return True

    def backward(self, plan, op):
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        tensor.needed |= out.needed

    def rebuild(self, build, op, ins):
        return [ins[0]]


# The name suffix of the feature selection `shrink` writes for a frozen
# input-feature or Flatten noise: a non-trainable Dense without bias.
SELECTION_SUFFIX = "_select"
