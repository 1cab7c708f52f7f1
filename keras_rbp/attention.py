"""Attention heads as a pruning group: the rule of MultiHeadAttention.

A `MultiHeadAttention` layer (Keras's, or a subclass such as KerasHub's
`CachedMultiHeadAttention`) gets one noise channel per head, which
multiplies that head's attention output before the output projection
(`wrapper.RBPHeadWrapper`). Its output is a sum over heads of their
projections, so a head whose theta is 0 adds nothing: `shrink` slices the
query, key, value (and gate) projections and the output projection by
head, folds each kept head's theta into its value projection (the
attention output is linear in the values) and lowers `num_heads`.

The layer reads every channel of its query, key and value, and its output
width (a transformer's residual stream) stays as it is.
"""

import numpy as np

from keras_rbp._keras import to_numpy
from keras_rbp.rules import LayerRule, ShrinkError

HEADS = "heads"  # the last item of the key of a call's heads tensor


class MultiHeadAttentionRule(LayerRule):
    """MultiHeadAttention: prunable by head."""

    prunable = True
    noise_on_outputs = False
    keeps_inputs = True
    width_key = "num_heads"

    def noise_axis(self, layer):
        return -2  # of the attention output, [batch, positions..., heads, value_dim]

    def forward(self, plan, op):
        for tensor in plan.ins(op):
            plan.keep(tensor.slots, f"MultiHeadAttention layer {op.name!r} reads every channel of its inputs")
        heads = layer_heads(op.inner)
        if op.theta is None:
            op.theta = np.ones(heads, np.float32)
        key = op.outputs[0][:3] + (HEADS,)
        first = op.outputs[0][:2] + (0, HEADS)
        slots = plan.tensors[first].slots if first in plan.tensors else None
        plan.add_tensor(key, (None, heads), slots=slots, zero=op.theta == 0)
        op.state["theta_key"] = key
        for index in range(len(op.outputs)):
            out = plan.new(op, index)
            plan.keep(out.slots, f"the output width of MultiHeadAttention layer {op.name!r} stays")
        if len(op.outputs) > 1:
            plan.keep(plan.tensors[key].slots, f"MultiHeadAttention layer {op.name!r} returns its attention scores")

    def backward(self, plan, op):
        heads = plan.tensors[op.state["theta_key"]]
        heads.needed[:] = any(tensor.needed.any() for tensor in plan.outs(op))
        if (heads.needed & (op.theta != 0)).any():
            for tensor in plan.ins(op):
                tensor.needed[:] = True

    def rebuild(self, build, op, ins):
        layer = op.inner
        for key, physical in zip(op.inputs, ins):
            if len(physical) != build.plan.tensors[key].channels:
                raise ShrinkError(
                    f"shrink: MultiHeadAttention layer {op.name!r} reads a tensor whose channels were removed"
                )
        kept = build.plan.kept(op.state["theta_key"])
        build.set_layer(op, _sliced_weights(layer, kept, op.theta[kept]), {self.width_key: len(kept)})
        return [np.arange(build.plan.tensors[key].channels) for key in op.outputs]

    def call_alone(self, layer, inputs):
        return layer(inputs, inputs)  # self-attention

    def call_macs(self, layer, argument_shapes, output_shape):
        query_shape = argument_shapes["query"]
        return attention_macs(layer, query_shape, argument_shapes.get("value", query_shape), layer_heads(layer))

    def scaled_cost(self, layer, macs, in_ratio, out_ratio):
        """MACs and parameters with `out_ratio` of the heads kept: all but
        the output projection's bias are per head."""
        output_bias = _projection_weights(layer)["output"][1:]
        fixed = sum(int(np.prod(weight.shape)) for weight in output_bias)
        params = sum(int(np.prod(weight.shape)) for weight in layer.weights)
        return macs * out_ratio, (params - fixed) * out_ratio + fixed

    def output_norms(self, layer):
        kernel = _projection_weights(layer)["output"][0]
        return np.abs(to_numpy(kernel)).reshape(kernel.shape[0], -1).sum(1)


def layer_heads(layer):
    """The number of heads of a MultiHeadAttention layer."""
    return int(layer.get_config()["num_heads"])


def attention_macs(layer, query_shape, value_shape, heads):
    """The MACs of one call on one example with `heads` heads: the query,
    key, value (and gate) projections, the attention scores and their
    product with the values (each grows with the query positions times the
    key positions attended), and the output projection."""
    config = layer.get_config()
    key_dim = int(config["key_dim"])
    value_dim = int(config.get("value_dim") or key_dim)
    queries = _positions(query_shape)
    keys = _positions(value_shape)
    axes = config.get("attention_axes")
    attended = keys if axes is None else int(np.prod([value_shape[axis] for axis in np.atleast_1d(axes)]))
    query_in, value_in = query_shape[-1], value_shape[-1]
    output_width = int(np.prod(_projection_weights(layer)["output"][0].shape[2:]))
    per_head = (
        queries * query_in * key_dim  # query
        + keys * value_in * key_dim  # key (of the value's width, as Keras builds it by default)
        + keys * value_in * value_dim  # value
        + queries * attended * (key_dim + value_dim)  # scores, and their product with the values
        + queries * value_dim * output_width  # output projection
    )
    if config.get("use_gate"):
        per_head += queries * query_in * value_dim
    return heads * per_head


def _positions(shape):
    return int(np.prod([size for size in shape[1:-1]]))


def _projection_weights(layer):
    """The weights of each projection of a built MultiHeadAttention layer,
    by role ("query", "key", "value", "gate", "output"), kernel first:
    the EinsumDense sublayers that Keras 3 and tf_keras both name
    ``_<role>_dense`` (Keras 3 has no public name for the gate's)."""
    found = {}
    for role in ("query", "key", "value", "gate", "output"):
        sublayer = getattr(layer, f"_{role}_dense", None)
        if sublayer is not None:
            found[role] = sublayer.weights
    return found


def _sliced_weights(layer, kept, theta):
    """The layer's weights with heads `kept`, each kept head's value
    projection scaled by its theta; in the layer's weight order."""
    new = {}
    for role, weights in _projection_weights(layer).items():
        for index, weight in enumerate(weights):
            value = to_numpy(weight)
            if role == "output":
                value = value[kept] if index == 0 else value  # kernel [heads, value_dim, width]
            else:
                axis = 1 if index == 0 else 0  # kernel [width, heads, dim], bias [heads, dim]
                value = np.take(value, kept, axis=axis)
                if role == "value":
                    value = value * np.expand_dims(theta, -1)
            new[id(weight)] = value
    return [new[id(weight)] for weight in layer.weights]
