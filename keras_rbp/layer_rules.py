"""The rules of Keras's own layers (see `rules` for what a rule does):
Dense and the convolutions, BatchNormalization and GroupNormalization,
SimpleRNN, GRU and LSTM, per-channel layers, activations, Concatenate,
Flatten, Reshape, the RBP noise, and the probe that decides for a custom
layer without a rule."""

import numpy as np

from keras_rbp import _keras
from keras_rbp import graph as graph_lib
from keras_rbp._keras import keras, to_numpy
from keras_rbp.attention import MultiHeadAttentionRule
from keras_rbp.layers import RBPNoise
from keras_rbp.operation_rules import ElementwiseRule, OperationRule, _along
from keras_rbp.rules import (
    BoundaryRule, LayerRule, PerChannelRule, ProducerRule, ShrinkError, _positions, _slice_norms, channel_axis,
    register_rule,
)

L = keras.layers


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
        full = _evaluate(op, values)
        part = _evaluate(op, np.take(values, subset, axis=axis))
        # Each half of the channels zero in turn: where the output stays zero, 0 maps to 0.
        halves = [_evaluate(op, values * _along(parity != half, shape, axis)) for half in (0, 1)]
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


def _evaluate(op, array):
    """The layer of `op` called in inference on `array` in place of its one
    input tensor, with the call's other arguments where the config records
    them (Keras 3; tf_keras records only a call's input tensors)."""
    args, kwargs = [array], {}
    if graph_lib.is_call_record(op.record):
        args, kwargs = graph_lib.call_arguments(op.record, [array])
        kwargs = {key: value for key, value in kwargs.items() if key not in ("training", "mask")}
    return to_numpy(op.layer(*args, training=False, **kwargs)).astype(np.float64)


class RecurrentRule(LayerRule):
    """SimpleRNN, GRU and LSTM, alone or in a Bidirectional wrapper, read
    each input channel through one row of their input kernel (one a
    direction), so a channel that is zero leaves with its row; their units
    (the recurrent state) all stay. A call given initial states, and a
    layer on channels_first input, stay boundaries."""

    def forward(self, plan, op):
        if isinstance(op.inner, L.Bidirectional) and not isinstance(op.inner.forward_layer, RECURRENT_CLASSES):
            return plan.boundary(op, f"wraps a {type(op.inner.forward_layer).__name__}")
        if len(op.inputs) > 1:
            return plan.boundary(op, "is called with initial states")
        if plan.input_on_axis(op, op.inputs[0], -1) is None:
            return plan.boundary(op, "reads channels on another axis")
        for index in range(len(op.outputs)):
            plan.keep(plan.new(op, index).slots, f"{type(op.inner).__name__} layer {op.name!r} keeps its units")

    def rebuild(self, build, op, ins):
        weights = op.inner.get_weights()
        for index in _input_kernels(op.inner):
            weights[index] = weights[index][build.input_indices(op, -1)]
        changes = {}
        if isinstance(op.inner, L.Bidirectional):  # Keras 3 builds its layers from their configs' input shape
            config = op.inner.get_config()
            changes = {key: {name: value for name, value in config[key].items() if name != "build_config"}
                       for key in ("layer", "backward_layer") if isinstance(config.get(key), dict)}
        build.set_layer(op, weights, changes)
        return [np.arange(build.plan.tensors[key].channels) for key in op.outputs]

    def macs(self, layer, input_shape, output_shape):
        """Each step multiplies its input by the input kernels and its state
        by the recurrent kernels."""
        kernels, recurrent = _kernel_sizes(layer)
        return _positions(input_shape, -1) * (kernels + recurrent)

    def scaled_cost(self, layer, macs, in_ratio, out_ratio):
        kernels, recurrent = _kernel_sizes(layer)
        params = sum(int(np.prod(weight.shape)) for weight in layer.weights)
        return macs * (kernels * in_ratio + recurrent) / (kernels + recurrent), params - kernels * (1 - in_ratio)

    def input_norms(self, layer):
        weights = layer.get_weights()
        return sum(_slice_norms(weights[index], 0) for index in _input_kernels(layer))


def _input_kernels(layer):
    """The indices in `layer.weights` of its input kernels: the first, and
    in a Bidirectional wrapper the backward layer's first too."""
    return [0, len(layer.weights) // 2] if isinstance(layer, L.Bidirectional) else [0]


def _kernel_sizes(layer):
    """The sizes of `layer`'s input kernels and of its recurrent kernels."""
    sizes = [int(np.prod(weight.shape)) for weight in layer.weights]
    kernels = _input_kernels(layer)
    return sum(sizes[index] for index in kernels), sum(sizes[index + 1] for index in kernels)


class ActivationRule(PerChannelRule):
    """Activation, ReLU, LeakyReLU, ELU, Softmax, Rescaling: per channel,
    except a softmax over the channels, which is a boundary."""

    def maps_zero_to_zero(self, layer, tensor):
        shape = [1] + [1 if d is None else d for d in tensor.shape[1:]]
        return bool(np.all(to_numpy(layer(np.zeros(shape, np.float32))) == 0))


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


RECURRENT_CLASSES = _classes("SimpleRNN", "GRU", "LSTM")


def register_builtins():
    """Registers the rules of Keras's layers and operations, and the probe of
    a layer without a rule (for keras.layers.Layer)."""
    register_rule(keras.layers.Layer, UNKNOWN)
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
    register_rule(L.MultiHeadAttention, MultiHeadAttentionRule())
    for cls in RECURRENT_CLASSES + _classes("Bidirectional"):
        register_rule(cls, RecurrentRule())
    for cls in _keras.OPERATION_CLASSES:
        register_rule(cls, OperationRule())
    # Keras 3's layers are operations too: a layer without a rule is an
    # unknown layer (keras.layers.Layer's rule is UNKNOWN), not an operation.


register_builtins()
