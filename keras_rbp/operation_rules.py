"""The rules of merges and operation layers: Add, Multiply and kin, and
Keras 3's operation layers or tf_keras's TFOpLambda (``x + 3.0``,
``x * y``, ``keras.ops.relu6(x)``, reductions) found by evaluating them."""

import numpy as np

from keras_rbp import _keras
from keras_rbp import graph as graph_lib
from keras_rbp._keras import keras, to_numpy
from keras_rbp.rules import LayerRule, ShrinkError

L = keras.layers


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
        out = to_numpy(self.rule.evaluate(self.op, arrays)).astype(np.float64)
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
