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

The built-in layers use the same registry that users extend for their own
layers with `register_rule`. A layer whose class has no rule is probed: if
it acts on each channel alone it passes channels through, else it is a
boundary: the channels that feed it are kept, with a warning naming it.
"""

import numpy as np

from keras_rbp import _keras
from keras_rbp import graph as graph_lib
from keras_rbp._keras import keras
from keras_rbp.layers import RBPNoise

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

    def call_macs(self, layer, input_shapes, output_shape):
        """`macs` for a call with the shapes of all its input tensors; a
        layer of several inputs (attention) overrides this one instead."""
        return self.macs(layer, input_shapes[0], output_shape)

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
    `UNKNOWN` for a class with none."""
    for cls in type(layer).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return UNKNOWN


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
    return np.asarray(function(np.zeros((1, channels), np.float32))).reshape(-1) == 0


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


class DenseConvRule(ProducerRule):
    """Dense and Conv1D/2D/3D, grouped convolutions included. A Dense on a
    tensor of rank above 2 mixes its last axis like a 1x1 convolution.

    A grouped convolution (``groups`` > 1) reads input group g only into
    output group g. With one input channel a group (a depthwise convolution
    written as a grouped one), output channels follow their input channel
    as in DepthwiseConv2D and whole groups are removed; otherwise a channel
    position is removed from every group or from none.
    """

    def output_slots(self, plan, op, tensor):
        groups = getattr(op.inner, "groups", 1)
        if groups == 1:
            return None
        if tensor is None:
            raise ShrinkError(
                f"shrink: grouped convolution {op.name!r} reads channels on another "
                "axis than the one its input holds them on"
            )
        out_channels = op.shapes[0][channel_axis(op.inner)]
        if tensor.channels == groups:
            return plan.repeat_slots(tensor.slots, out_channels // groups)
        plan.join_positions(tensor.slots, groups)
        slots = plan.fresh(out_channels)
        plan.join_positions(slots, groups)
        reason = f"grouped convolution {op.name!r} removes a channel position from every group or from none"
        plan.note_zero_lost(tensor.slots, reason)
        plan.note_zero_lost(slots, reason)
        return slots

    def zero_from_input(self, op, tensor):
        groups = getattr(op.inner, "groups", 1)
        if groups == 1 or tensor.channels != groups or op.inner.use_bias:
            return False
        return np.repeat(tensor.zero, op.shapes[0][channel_axis(op.inner)] // groups)

    def backward(self, plan, op):
        groups = getattr(op.inner, "groups", 1)
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        needed = out.needed & (op.theta != 0)
        if groups > 1 and tensor.channels == groups:
            tensor.needed |= needed.reshape(groups, -1).any(1)
        elif needed.any():
            tensor.needed[:] = True

    def output_indices(self, build, op, in_index):
        groups = getattr(op.inner, "groups", 1)
        tensor = build.plan.tensors[op.inputs[0]]
        if groups > 1 and tensor.channels == groups:
            per_group = op.shapes[0][channel_axis(op.inner)] // groups
            return (in_index[:, None] * per_group + np.arange(per_group)).reshape(-1)
        return build.plan.kept(op.outputs[0])

    def sliced_weights(self, layer, in_index, out_index, theta):
        weights = layer.get_weights()
        bias = [weights[-1][out_index] * theta] if layer.use_bias else []
        kernel = weights[0]
        changes = {"units" if isinstance(layer, L.Dense) else "filters": len(out_index)}
        groups = getattr(layer, "groups", 1)
        if groups > 1 and kernel.shape[-2] == 1:
            changes["groups"] = len(in_index)
        elif groups > 1:
            kernel = kernel[..., in_index[: len(in_index) // groups] % kernel.shape[-2], :]
        else:
            kernel = kernel[..., in_index, :]
        return [kernel[..., out_index] * theta] + bias, changes

    def input_norms(self, layer):
        return None if getattr(layer, "groups", 1) > 1 else _slice_norms(layer.get_weights()[0], -2)


class TransposedConvRule(ProducerRule):
    """Conv1DTranspose, Conv2DTranspose, Conv3DTranspose: the kernel holds
    output channels before input channels, and is applied once per input
    position."""

    def macs(self, layer, input_shape, output_shape):
        return _positions(input_shape, self.channel_axis(layer)) * int(np.prod(layer.weights[0].shape))

    def sliced_weights(self, layer, in_index, out_index, theta):
        weights = layer.get_weights()
        bias = [weights[-1][out_index] * theta] if layer.use_bias else []
        kernel = weights[0][..., out_index, :][..., in_index]
        kernel = kernel * theta.reshape(-1, 1)
        return [kernel] + bias, {"filters": len(out_index)}

    def output_norms(self, layer):
        return _slice_norms(layer.get_weights()[0], -2)


class DepthwiseRule(ProducerRule):
    """DepthwiseConv1D/2D: output channel c*m+k reads input channel c only."""

    passes_channels = True

    def output_slots(self, plan, op, tensor):
        return plan.repeat_slots(tensor.slots, op.inner.depth_multiplier)

    def zero_from_input(self, op, tensor):
        return np.repeat(tensor.zero, op.inner.depth_multiplier) & (not op.inner.use_bias)

    def backward(self, plan, op):
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        tensor.needed |= (out.needed & (op.theta != 0)).reshape(tensor.channels, -1).any(1)

    def output_indices(self, build, op, in_index):
        multiplier = op.inner.depth_multiplier
        return (in_index[:, None] * multiplier + np.arange(multiplier)).reshape(-1)

    def sliced_weights(self, layer, in_index, out_index, theta):
        weights = layer.get_weights()
        bias = [weights[-1][out_index] * theta] if layer.use_bias else []
        kernel = weights[0][..., in_index, :]
        return [kernel * theta.reshape(kernel.shape[-2:])] + bias, {}

    def output_norms(self, layer):
        kernel = np.abs(layer.get_weights()[0])  # (..., in, multiplier): channel c * m + k
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1]).sum(0)


class SeparableConvRule(ProducerRule):
    """SeparableConv1D/2D: a depthwise part sliced on its input channels and
    a pointwise part sliced on both."""

    def macs(self, layer, input_shape, output_shape):
        kernels = sum(int(np.prod(weight.shape)) for weight in layer.weights[:2])
        return _positions(output_shape, self.channel_axis(layer)) * kernels

    def sliced_weights(self, layer, in_index, out_index, theta):
        weights = layer.get_weights()
        bias = [weights[-1][out_index] * theta] if layer.use_bias else []
        depthwise = weights[0][..., in_index, :]
        multiplier = depthwise.shape[-1]
        rows = (in_index[:, None] * multiplier + np.arange(multiplier)).reshape(-1)
        pointwise = weights[1][..., rows, :][..., out_index] * theta
        return [depthwise, pointwise] + bias, {"filters": len(out_index)}

    def output_norms(self, layer):
        return _slice_norms(layer.get_weights()[1], -1)


class BatchNormalizationRule(ProducerRule):
    """BatchNormalization: per channel; theta folds into gamma and beta."""

    passes_channels = True

    def channel_axis(self, layer):
        axis = layer.axis
        return int(axis[0] if isinstance(axis, (list, tuple)) else axis)

    def macs(self, layer, input_shape, output_shape):
        return 0

    def output_slots(self, plan, op, tensor):
        return tensor.slots

    def backward(self, plan, op):
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        tensor.needed |= out.needed & (op.theta != 0)

    def output_indices(self, build, op, in_index):
        return in_index

    def sliced_weights(self, layer, in_index, out_index, theta):
        names = (["gamma"] if layer.scale else []) + (["beta"] if layer.center else [])
        values = dict(zip(names + ["moving_mean", "moving_variance"], layer.get_weights()))
        sliced = {name: value[in_index] for name, value in values.items()}
        changes = {}
        if "gamma" in sliced:
            sliced["gamma"] = sliced["gamma"] * theta
        elif np.any(theta != 1):
            sliced["gamma"] = theta
            changes["scale"] = True
        if "beta" in sliced:
            sliced["beta"] = sliced["beta"] * theta
        order = ["gamma", "beta", "moving_mean", "moving_variance"]
        return [sliced[name] for name in order if name in sliced], changes

    def output_norms(self, layer):
        """|gamma| (network slimming); None without a scale."""
        return np.abs(layer.get_weights()[0]) if layer.scale else None


class GroupNormalizationRule(LayerRule):
    """GroupNormalization: the channels of one group are normalised together,
    so a group is removed whole or not at all."""

    def channel_axis(self, layer):
        return int(layer.axis)

    def forward(self, plan, op):
        layer = op.layer
        tensor = plan.input_on_axis(op, op.inputs[0], layer.axis)
        if tensor is None:
            return plan.boundary(op, "normalises another axis than its input's channels")
        plan.join_within(tensor.slots, layer.groups)
        beta = _group_norm_weights(layer).get("beta")
        group_zero = np.repeat(tensor.zero.reshape(layer.groups, -1).all(1), tensor.channels // layer.groups)
        zero = group_zero & (beta == 0 if beta is not None else True)
        plan.note_zero_lost(tensor.slots[tensor.zero & ~zero], f"layer {op.name!r} normalises a group of channels as a whole")
        plan.new(op, axis=tensor.axis, slots=tensor.slots, zero=zero)

    def backward(self, plan, op):
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        tensor.needed |= out.needed

    def rebuild(self, build, op, ins):
        layer = op.layer
        tensor = build.plan.tensors[op.inputs[0]]
        weights = _group_norm_weights(layer)
        build.set_layer(
            op,
            [weights[name][ins[0]] for name in ("gamma", "beta") if name in weights],
            {"groups": len(ins[0]) * layer.groups // tensor.channels},
        )
        return [ins[0]]


def _group_norm_weights(layer):
    names = (["gamma"] if layer.scale else []) + (["beta"] if layer.center else [])
    return dict(zip(names, layer.get_weights()))


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


class UnknownLayerRule(PerChannelRule):
    """A layer class without a rule (a user's or a library's custom layer):
    a boundary, unless evaluating it shows that it acts on each channel
    alone. That holds when it takes one tensor and returns one of the same
    shape, holds no weight sized by the channels, and, on random inputs,
    its output on any subset of the channels is its full output's subset
    (a learnable scalar scale, a custom activation). It then follows
    `PerChannelRule`, with the channels it maps 0 to 0 found the same way."""

    def forward(self, plan, op):
        ins = plan.ins(op)
        probe = _per_channel_probe(op, ins[0]) if len(ins) == 1 and len(op.outputs) == 1 else None
        if probe is None:  # the op's rule becomes BOUNDARY
            return plan.boundary(op, "has no rule and does not act on each channel alone")
        (tensor,) = ins
        zero = tensor.zero & probe
        plan.note_zero_lost(tensor.slots[tensor.zero & ~zero], f"layer {op.name!r} maps 0 to a non-zero value")
        plan.new(op, axis=tensor.axis, slots=tensor.slots, zero=zero)


UNKNOWN = UnknownLayerRule()


def _per_channel_probe(op, tensor):
    """Per channel, whether `op`'s layer maps a zero channel to zero, where
    the layer acts on each channel alone (see `UnknownLayerRule`); else None."""
    channels, axis = tensor.channels, tensor.axis
    if channels < 2 or tuple(op.shapes[0]) != tuple(tensor.shape):
        return None
    if any(channels in tuple(weight.shape) and int(np.prod(weight.shape)) > 1 for weight in op.layer.weights):
        return None
    rng = np.random.RandomState(0)
    shape = [2] + [3 if size is None else size for size in tensor.shape[1:]]
    values = rng.uniform(-1, 1, shape).astype(np.float32)
    subset = np.sort(rng.choice(channels, max(1, channels // 2), replace=False))
    parity = np.arange(channels) % 2
    try:
        full = _call_alone(op, values)
        part = _call_alone(op, np.take(values, subset, axis=axis))
        # Each half of the channels zero in turn: where the output stays zero, 0 maps to 0.
        halves = [_call_alone(op, values * _along(parity != half, shape, axis)) for half in (0, 1)]
    except Exception:  # noqa: BLE001 - a layer that cannot take other widths stays a boundary
        return None
    expected = np.take(full, subset, axis=axis)
    scale = max(1.0, np.abs(full).max(initial=0))
    if full.shape != values.shape or part.shape != expected.shape or np.abs(part - expected).max() > 1e-5 * scale:
        return None
    maps_zero = np.zeros(channels, bool)
    for half, out in zip((0, 1), halves):
        maps_zero |= (parity == half) & np.all(np.moveaxis(out, axis, -1).reshape(-1, channels) == 0, axis=0)
    return maps_zero


def _call_alone(op, array):
    """The layer of `op` called in inference on `array` in place of its one
    input tensor, with the call's other arguments where the config records
    them (Keras 3; tf_keras records only a call's input tensors)."""
    args, kwargs = [array], {}
    if graph_lib.is_call_record(op.record):
        args, kwargs = graph_lib.call_arguments(op.record, [array])
        kwargs = {key: value for key, value in kwargs.items() if key not in ("training", "mask")}
    return np.asarray(op.layer(*args, training=False, **kwargs), np.float64)


class ActivationRule(PerChannelRule):
    """Activation, ReLU, LeakyReLU, ELU, Softmax, Rescaling: per channel,
    except a softmax over the channels, which is a boundary."""

    def maps_zero_to_zero(self, layer, tensor):
        shape = [1] + [1 if d is None else d for d in tensor.shape[1:]]
        return bool(np.all(np.asarray(layer(np.zeros(shape, np.float32))) == 0))


class PReLURule(ActivationRule):
    """PReLU: per channel, its alpha sliced with the channels it holds one
    value for (none where `shared_axes` covers the channels)."""

    stateless = False

    def rebuild(self, build, op, ins):
        (alpha,) = op.layer.get_weights()
        tensor = build.plan.tensors[op.inputs[0]]
        axis = tensor.axis - 1  # alpha has no batch axis
        if alpha.shape[axis] == tensor.channels:
            alpha = np.take(alpha, ins[0], axis=axis)
        build.set_layer(op, [alpha], {})
        return [ins[0]]


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


class ElementwiseRule(LayerRule):
    """Merges and operations that combine their inputs channel by channel:
    Add, Subtract, Multiply, Average, Maximum, Minimum, and operation layers
    such as ``x + y``, ``x * 3.0`` or ``keras.ops.relu6(x)``.

    Inputs of shape (B, ..., C) and broadcast inputs of shape
    (B, 1, ..., 1, C) or (B, C) (a squeeze-and-excitation scale) join one
    dependency group. Constants are scalars or hold one value a channel
    (sliced with the channels); any other input makes the layer a boundary.
    Zeros and needed channels are found by evaluating the layer on a few
    inputs, so any elementwise function is followed exactly.
    """

    stateless = True

    def forward(self, plan, op):
        ins = plan.ins(op)
        out_shape = op.shapes[0]
        main = next((t for t in ins if len(t.shape) == len(out_shape)
                     and t.shape[t.axis] == out_shape[t.axis]), None)
        if main is None:
            return plan.boundary(op, "broadcasts its inputs to a shape none of them has")
        axis, channels = main.axis, main.channels
        for tensor in ins:
            if not _broadcasts_on_channels(tensor.shape, tensor.axis, out_shape, axis):
                return plan.boundary(op, f"broadcasts an input of shape {tensor.shape} over its channels")
        for constant in self.constants(plan, op):
            if _constant_channel_axis(constant.shape, out_shape, axis) is False:
                return plan.boundary(op, f"combines its channels with a constant of shape {constant.shape}")
        for tensor in ins:
            if tensor is not main:
                plan.join(main.slots, tensor.slots)
        probe = _Probe(self, op, ins, axis, channels)
        zero = probe.zero()
        reason = (f"layer {op.name!r} maps 0 to a non-zero value" if len(ins) == 1
                  else f"layer {op.name!r} merges them with channels that another input keeps")
        for tensor in ins:
            plan.note_zero_lost(tensor.slots[tensor.zero & ~zero], reason)
        op.state["reads"] = probe.reads()
        plan.new(op, axis=axis, slots=main.slots, zero=zero)

    def constants(self, plan, op):
        """The constant operands of the call, as numpy arrays."""
        return []

    def evaluate(self, op, arrays):
        """The layer's output for input arrays given in the order of `op.inputs`."""
        return op.layer(arrays if len(arrays) > 1 else arrays[0])

    def backward(self, plan, op):
        (out,) = plan.outs(op)
        for tensor, reads in zip(plan.ins(op), op.state["reads"]):
            tensor.needed |= out.needed & reads

    def rebuild(self, build, op, ins):
        first = ins[0]
        if any(not np.array_equal(first, other) for other in ins[1:]):
            raise ShrinkError(
                f"shrink: layer {op.name!r} merges tensors that keep different "
                "channels (a model input or Flatten output with removed features)"
            )
        return [first]


def _broadcasts_on_channels(shape, axis, out_shape, out_axis):
    """Whether a tensor of `shape` with channels on `axis` broadcasts to
    `out_shape` with its channels on `out_axis` (aligned from the right)."""
    offset = len(out_shape) - len(shape)
    if offset < 0 or axis + offset != out_axis or shape[axis] != out_shape[out_axis]:
        return False
    return all(d in (1, o) for i, (d, o) in enumerate(zip(shape, out_shape[offset:])) if i not in (0, axis))


def _constant_channel_axis(shape, out_shape, out_axis):
    """None for a scalar constant, the constant's axis that holds one value
    a channel, or False for any other constant."""
    if int(np.prod(shape)) == 1:
        return None
    offset = len(out_shape) - len(shape)
    axis = out_axis - offset
    if offset < 0 or axis < 0 or shape[axis] != out_shape[out_axis]:
        return False
    if any(d != 1 for i, d in enumerate(shape) if i != axis):
        return False
    return axis


class _Probe:
    """Evaluates an elementwise layer on small inputs (every axis but the
    channels of size 1) to learn, per channel, which outputs are exactly
    zero and which inputs the output depends on."""

    def __init__(self, rule, op, ins, axis, channels):
        self.rule, self.op, self.ins = rule, op, ins
        self.shapes = [_probe_shape(t.shape, t.axis) for t in ins]
        self.out_axis, self.channels = axis, channels
        self.rng = np.random.RandomState(0)

    def _run(self, arrays):
        out = np.asarray(self.rule.evaluate(self.op, arrays), np.float64)
        return np.moveaxis(out, self.out_axis, -1).reshape(-1, self.channels)

    def _inputs(self, replace=None):
        arrays = []
        for index, (tensor, shape) in enumerate(zip(self.ins, self.shapes)):
            values = self.rng.uniform(0.5, 1.5, shape).astype(np.float32)
            if index != replace:
                values *= _along(~tensor.zero, shape, tensor.axis)
            arrays.append(values)
        return arrays

    def zero(self):
        outputs = [self._run(self._inputs()) for _ in range(2)]
        return np.all([np.all(out == 0, axis=0) for out in outputs], axis=0)

    def reads(self):
        reads = []
        for index in range(len(self.ins)):
            first, second = self._inputs(index), self._inputs(index)
            for arrays in (first, second):
                arrays[:index] = first[:index]
                arrays[index + 1:] = first[index + 1:]
            reads.append(np.any(self._run(first) != self._run(second), axis=0))
        return reads


def _probe_shape(shape, axis):
    return [shape[axis] if i == axis else 1 for i in range(len(shape))]


def _along(values, shape, axis):
    view = [1] * len(shape)
    view[axis] = len(values)
    return values.reshape(view).astype(np.float32)


class OperationRule(ElementwiseRule):
    """Operation layers: Keras 3's ``x + 3.0``, ``keras.ops.*`` calls and
    tf_keras's TFOpLambda. Elementwise functions (`ELEMENTWISE_OPERATIONS`)
    follow `ElementwiseRule`; any other operation is a boundary."""

    def forward(self, plan, op):
        name = _keras.operation_name(op.layer)
        if name in REDUCTIONS:
            return self._reduction(plan, op)
        if name not in ELEMENTWISE_OPERATIONS:
            return plan.boundary(op, f"is the operation {name!r}, which keras_rbp does not slice")
        super().forward(plan, op)

    def _reduction(self, plan, op):
        """A mean, sum, max or min over axes other than the channels (the
        squeeze of a squeeze-and-excitation block) keeps each channel."""
        (tensor,) = plan.ins(op)
        axes, keepdims = _reduction_axes(op, len(tensor.shape))
        if axes is None or tensor.axis in axes:
            return plan.boundary(op, "reduces over the channels")
        axis = tensor.axis if keepdims else tensor.axis - sum(a < tensor.axis for a in axes)
        op.state["reduction"] = True
        plan.new(op, axis=axis, slots=tensor.slots, zero=tensor.zero)

    def backward(self, plan, op):
        if not op.state.get("reduction"):
            return super().backward(plan, op)
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        tensor.needed |= out.needed

    def constants(self, plan, op):
        return graph_lib.call_constants(op.record)

    def evaluate(self, op, arrays):
        args, kwargs = graph_lib.call_arguments(op.record, arrays)
        return op.layer(*args, **kwargs)

    def rebuild(self, build, op, ins):
        if op.state.get("reduction"):
            return [ins[0]]
        (physical,) = super().rebuild(build, op, ins)
        out_shape, axis = op.shapes[0], build.plan.tensors[op.outputs[0]].axis

        def sliced(value):
            constant_axis = _constant_channel_axis(value.shape, out_shape, axis)
            return value if constant_axis is None else np.take(value, physical, axis=constant_axis)

        build.set_call(op, graph_lib.map_call_constants(op.record, sliced))
        return [physical]


def _reduction_axes(op, rank):
    """The axes (non-negative, a set; None for every axis) a reduction
    operation reduces, and whether it keeps them: Keras 3's operations hold
    them as attributes, tf_keras's TFOpLambda in its call's arguments."""
    layer = op.layer
    if hasattr(layer, "axis") and hasattr(layer, "keepdims"):
        axis, keepdims = layer.axis, layer.keepdims
    else:
        args, kwargs = graph_lib.call_arguments(op.record, [None] * len(op.inputs))
        axis = kwargs.get("axis", args[1] if len(args) > 1 else None)
        keepdims = kwargs.get("keepdims", args[2] if len(args) > 2 else False)
    if axis is None:
        return None, bool(keepdims)
    return {int(a) % rank for a in np.atleast_1d(axis)}, bool(keepdims)


REDUCTIONS = frozenset("mean reduce_mean sum reduce_sum max reduce_max min reduce_min".split())

ELEMENTWISE_OPERATIONS = frozenset(
    "add subtract multiply divide true_divide truediv floor_divide floordiv maximum "
    "minimum power pow squared_difference negative abs square sqrt rsqrt exp log "
    "reciprocal sign floor ceil round clip clip_by_value cast identity relu relu6 "
    "sigmoid hard_sigmoid hard_silu hard_swish silu swish gelu elu selu leaky_relu "
    "softplus softsign tanh mish log_sigmoid".split()
)


class ConcatenateRule(LayerRule):
    """Concatenate: on the channel axis, output channels are the inputs'
    channels at their offsets; on another axis, the inputs share channels."""

    stateless = True

    def forward(self, plan, op):
        ins = plan.ins(op)
        first = ins[0]
        axis = op.layer.axis % len(first.shape)
        if any(t.axis != first.axis for t in ins):
            return plan.boundary(op, "joins tensors of different channel axes")
        if axis == first.axis:
            plan.new(op, axis=axis, slots=np.concatenate([t.slots for t in ins]),
                     zero=np.concatenate([t.zero for t in ins]))
        else:
            for tensor in ins[1:]:
                plan.join(first.slots, tensor.slots)
            plan.new(op, axis=first.axis, slots=first.slots, zero=np.stack([t.zero for t in ins]).all(0))

    def backward(self, plan, op):
        (out,), ins = plan.outs(op), plan.ins(op)
        if out.channels == ins[0].channels:
            for tensor in ins:
                tensor.needed |= out.needed
        else:
            offsets = np.cumsum([t.channels for t in ins])[:-1]
            for tensor, part in zip(ins, np.split(out.needed, offsets)):
                tensor.needed |= part

    def rebuild(self, build, op, ins):
        tensors = [build.plan.tensors[key] for key in op.inputs]
        if build.plan.tensors[op.outputs[0]].channels == tensors[0].channels:
            return ElementwiseRule.rebuild(self, build, op, ins)
        offsets = np.cumsum([0] + [t.channels for t in tensors[:-1]])
        return [np.concatenate([p + o for p, o in zip(ins, offsets)])]


class FlattenRule(LayerRule):
    """Flatten: position p of the output holds one channel of the input."""

    stateless = True

    def forward(self, plan, op):
        (tensor,) = plan.ins(op)
        op.state["map"] = _flatten_map(op.layer, tensor)
        if len(tensor.shape) == 2:
            plan.new(op, slots=tensor.slots, zero=tensor.zero)
        else:
            plan.new(op, zero=tensor.zero[op.state["map"]])
            plan.flattens.append(op)

    def backward(self, plan, op):
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        np.logical_or.at(tensor.needed, op.state["map"], out.needed)

    def rebuild(self, build, op, ins):
        flatten_map = op.state["map"]
        if len(build.plan.tensors[op.inputs[0]].shape) == 2:
            return [ins[0]]
        return [np.flatnonzero(np.isin(flatten_map, ins[0]))]


def _flatten_map(layer, tensor):
    """The input channel of each position of a Flatten's output."""
    rank = len(tensor.shape)
    if rank == 2:
        return np.arange(tensor.channels)
    dims = tensor.shape[1:]
    if any(d is None for d in dims):
        raise ShrinkError(f"shrink: Flatten {layer.name!r} has an input of unknown shape {tensor.shape}")
    shape = [1] * (rank - 1)
    shape[tensor.axis - 1] = tensor.channels
    channel = np.broadcast_to(np.arange(tensor.channels).reshape(shape), dims)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        channel = np.moveaxis(channel, 0, -1)
    return np.ascontiguousarray(channel).reshape(-1)


class ReshapeRule(LayerRule):
    """Reshape that keeps the channels last, or only inserts or removes
    axes of size 1; any other Reshape is a boundary."""

    def forward(self, plan, op):
        (tensor,) = plan.ins(op)
        axis = _reshaped_channel_axis(tensor, op.shapes[0])
        if axis is None:
            return plan.boundary(op, "mixes channels with other axes")
        plan.new(op, axis=axis, slots=tensor.slots, zero=tensor.zero)

    def backward(self, plan, op):
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        tensor.needed |= out.needed

    def rebuild(self, build, op, ins):
        tensor = build.plan.tensors[op.outputs[0]]
        target_shape = list(tensor.shape[1:])
        target_shape[tensor.axis - 1] = len(ins[0])
        build.set_layer(op, op.layer.get_weights(), {"target_shape": target_shape})
        return [ins[0]]


def _reshaped_channel_axis(tensor, out_shape):
    other_dims = [d for i, d in enumerate(tensor.shape[1:], 1) if i != tensor.axis]
    out_dims = list(out_shape[1:])
    if tensor.axis == len(tensor.shape) - 1 and out_dims[-1] == tensor.channels and None not in out_dims:
        return len(out_shape) - 1
    if any(d != 1 for d in other_dims) or out_dims.count(tensor.channels) != 1:
        return None
    axis = out_dims.index(tensor.channels)
    if any(d != 1 for i, d in enumerate(out_dims) if i != axis):
        return None
    return axis + 1


# The name suffix of the feature selection `shrink` writes for a frozen
# input-feature or Flatten noise: a non-trainable Dense without bias.
SELECTION_SUFFIX = "_select"


class NoiseRule(LayerRule):
    """A standalone `RBPNoise`: channel c is input channel c times theta_c.
    After a prunable layer it alone reads (a coupled group's noise), theta
    folds into that layer; on input and Flatten features, into the kernel
    rows of Dense readers, or else it becomes a selection layer."""

    def forward(self, plan, op):
        tensor = plan.input_on_axis(op, op.inputs[0], op.layer.axis)
        if tensor is None:
            raise ShrinkError(
                f"shrink: RBPNoise {op.name!r} has axis {op.layer.axis}, which is not "
                "the channel axis of its input"
            )
        plan.new(op, axis=tensor.axis, slots=tensor.slots, zero=tensor.zero | (op.theta == 0))

    def backward(self, plan, op):
        (out,), (tensor,) = plan.outs(op), plan.ins(op)
        tensor.needed |= out.needed & (op.theta != 0)

    def rebuild(self, build, op, ins):
        if op.state.get("folded"):
            build.drop_layer(op)
            return [ins[0]]
        return [build.select_features(op, ins[0])]


def _classes(*names):
    return tuple(getattr(L, name) for name in names if hasattr(L, name))


def _register_builtins():
    for cls in _classes("Dense", "Conv1D", "Conv2D", "Conv3D"):
        register_rule(cls, DenseConvRule())
    for cls in _classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        register_rule(cls, TransposedConvRule())
    for cls in _classes("DepthwiseConv1D", "DepthwiseConv2D"):
        register_rule(cls, DepthwiseRule())
    for cls in _classes("SeparableConv1D", "SeparableConv2D"):
        register_rule(cls, SeparableConvRule())
    register_rule(L.BatchNormalization, BatchNormalizationRule())
    for cls in _classes("GroupNormalization"):
        register_rule(cls, GroupNormalizationRule())
    for cls in _classes(
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
        "Identity",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
        "Cropping1D", "Cropping2D", "Cropping3D",
        "UpSampling1D", "UpSampling2D", "UpSampling3D",
    ):
        register_rule(cls, PerChannelRule())
    for cls in _classes("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax"):
        register_rule(cls, ActivationRule())
    register_rule(L.PReLU, PReLURule())
    for cls in _classes("Add", "Subtract", "Average", "Maximum", "Minimum", "Multiply"):
        register_rule(cls, ElementwiseRule())
    register_rule(L.Concatenate, ConcatenateRule())
    for cls in _classes("LayerNormalization", "UnitNormalization", "RMSNormalization"):
        register_rule(cls, BoundaryRule("normalises over its channels, which it cannot lose exactly"))
    register_rule(L.Flatten, FlattenRule())
    register_rule(L.Reshape, ReshapeRule())
    register_rule(RBPNoise, NoiseRule())
    from keras_rbp.attention import MultiHeadAttentionRule  # it subclasses LayerRule, defined above

    register_rule(L.MultiHeadAttention, MultiHeadAttentionRule())
    for cls in _keras.OPERATION_CLASSES:
        register_rule(cls, OperationRule())
    # Keras 3's layers are operations too: a layer without a rule is an
    # unknown layer, not an operation.
    register_rule(keras.layers.Layer, UNKNOWN)


_register_builtins()
