"""The magnitude baseline's ranking of channels (``method="magnitude"``).

A group's channel is ranked by the L1 norm of the filter weights that make
it (Li et al. 2017, "Pruning Filters for Efficient ConvNets"), summed over
the layers that make it (the producers of a residual stream), or by
|gamma| of the BatchNormalization that makes it (network slimming, Liu et
al. 2017). A group that no weighted layer makes (input pixels, flattened
features) is ranked by the L1 norm of the weights that read it. Each layer
class's rule says which weights those are (`rules.LayerRule.output_norms`,
`input_norms`).
"""

import numpy as np

from keras_rbp.dependency import ChannelPlan
from keras_rbp.layers import RBPNoise


def channel_importance(model, names):
    """The magnitude of each channel of the groups `names` of a pruned
    model: a dict from group name to a float array, one entry a channel."""
    plan = ChannelPlan(model)
    producers = {key: op for op in plan.ops for key in op.outputs}
    roots = plan.sets.roots()
    importance = {name: None for name in names}
    for op in plan.ops:
        if op.name not in importance:
            continue
        channels = len(op.theta)
        norms = _made_by(op, producers, channels)
        if norms is None:
            norms = _read_by(plan, roots, roots[plan.tensors[op.outputs[0]].slots])
        if norms is None:
            raise ValueError(
                f"method='magnitude': group {op.name!r} is made and read by no layer whose weights "
                "rank its channels (Dense, convolutions, BatchNormalization with a scale)"
            )
        current = importance[op.name]
        importance[op.name] = norms if current is None else current + norms
    return importance


def _made_by(op, producers, channels):
    """Norms of the weights that make the `channels` channels of a group's
    call: the wrapped layer's, or for a standalone noise (or a wrapped
    BatchNormalization without scale), its input's producer's; or None."""
    norms = None if isinstance(op.layer, RBPNoise) else op.rule.output_norms(op.inner)
    producer = producers.get(op.inputs[0])
    if norms is None and producer is not None:
        norms = producer.rule.output_norms(producer.inner)
    return _checked(norms, channels)


def _read_by(plan, roots, classes):
    """The summed norms of the weights that read the channels `classes`
    (dependency classes, in channel order) wherever a layer reads them in
    that order (after a Flatten of a vector, an activation, a dropout), or
    None."""
    norms = []
    for op in plan.ops:
        tensor = plan.tensors[op.inputs[0]] if op.inputs else None
        if tensor is None or tensor.channels != len(classes) or not np.array_equal(roots[tensor.slots], classes):
            continue
        norm = _checked(op.rule.input_norms(op.inner), len(classes))
        if norm is not None:
            norms.append(norm)
    return np.sum(norms, axis=0) if norms else None


def _checked(norms, channels):
    """`norms` as float64 if it holds one value a channel, else None."""
    if norms is None or np.size(norms) != channels:
        return None
    return np.asarray(norms, np.float64).reshape(-1)
