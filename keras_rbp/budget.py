"""Budgets: what the model `shrink` would make costs, for any masks, and the
masks of a stage that meet a MAC or parameter target.

Costs are counted as `report` counts them on the model
``shrink(model, keep_input_shape=False)`` makes (MACs of the Dense and
convolution layers, every weight as a parameter), with dependency groups,
input and Flatten features included: the dependency analysis of `shrink`
says which channels each layer keeps, and each weight of a layer scales
with the kept fraction of the channels its dimensions index.
"""

import numpy as np

from keras_rbp._keras import keras
from keras_rbp.dependency import ChannelPlan
from keras_rbp.layers import RBPNoise
from keras_rbp.metrics import layer_stats
from keras_rbp.wrapper import pruning_groups

L = keras.layers

METRICS = ("macs", "params")
FILL_ROUNDS = 16  # channels a stage may skip to fit cheaper ones after them


class CostModel:
    """MACs and parameters of the model `shrink` would make from `model` (a
    pruned model) if its groups kept the channels of given masks."""

    def __init__(self, model):
        self.model = model
        self.groups = pruning_groups(model)
        self.stats = {stats.name: stats for stats in layer_stats(model)}

    def cost(self, masks):
        """{"macs": ..., "params": ...} when each group in `masks` (a dict
        from group name to a boolean array) keeps its True channels and the
        other groups keep all theirs."""
        thetas = {name: np.ones(noise.channels, np.float32) for name, noise in self.groups.items()}
        thetas.update({name: np.asarray(mask, np.float32) for name, mask in masks.items()})
        plan = ChannelPlan(self.model, thetas=thetas)
        producers = {key: op for op in plan.ops for key in op.outputs}
        totals = {"macs": 0.0, "params": 0.0}
        for op in plan.ops:
            stats = self.stats.get(op.name)
            if stats is None or op.call_index or not op.inputs:
                continue
            source = op.inputs[0]
            producer = producers.get(source)
            if isinstance(op.inner, L.Dense) and isinstance(producer and producer.layer, RBPNoise):
                # shrink folds the features' theta into the Dense kernel
                # rows: it reads every channel the noise's input holds.
                source = producer.inputs[0]
            in_full, out_full = plan.tensors[source].channels, plan.tensors[op.outputs[0]].channels
            in_ratio = _physical(plan, producers, source) / in_full if in_full else 1.0
            out_ratio = len(plan.kept(op.outputs[0])) / out_full if out_full else 1.0
            groups = getattr(op.inner, "groups", 1)
            for weight in op.inner.weights:
                totals["params"] += np.prod(weight.shape) * _weight_ratio(
                    tuple(weight.shape), in_full, in_ratio, out_full, out_ratio, groups
                )
            passes = getattr(op.rule, "passes_channels", False)
            totals["macs"] += stats.macs * (out_ratio if passes else in_ratio * out_ratio)
        return {metric: int(round(value)) for metric, value in totals.items()}

    def full(self):
        """The cost with every channel kept: the unpruned model's."""
        return self.cost({})


def _physical(plan, producers, key):
    """How many channels of tensor `key` the shrunk model holds: the kept
    ones, or for a Flatten, every feature of its input's kept channels."""
    producer = producers.get(key)
    if producer is not None and "map" in producer.state:
        return int(np.isin(producer.state["map"], plan.kept(producer.inputs[0])).sum())
    return len(plan.kept(key))


def _weight_ratio(shape, in_full, in_ratio, out_full, out_ratio, groups):
    """The kept fraction of a weight of `shape`: its last two dimensions
    scale with the kept input or output channels they index."""
    ratio, used_in, used_out = 1.0, False, False
    for dim in shape[-2:]:
        if dim == out_full and not used_out:
            ratio, used_out = ratio * out_ratio, True
        elif dim in (in_full, in_full // max(groups, 1)) and not used_in:
            ratio, used_in = ratio * in_ratio, True
    return ratio


def _top(pi, count):
    """A mask of the `count` channels with the largest pi."""
    mask = np.zeros(pi.size, bool)
    mask[np.argsort(-pi, kind="stable")[: min(count, pi.size)]] = True
    return mask


class Budget:
    """A MAC or parameter target, and the masks each stage keeps to meet it.

    A stage keeps its channels in order of pi, as many as fit its share:
    the cost the target leaves if every group not yet frozen (this stage's
    and later ones) kept the same fraction of its channels. Earlier stages
    are frozen as they are, so the last stage fills what remains, and the
    model `shrink` makes meets the target to within one channel's cost.
    Within a stage of several groups (the all-at-once schedule), one pi
    threshold over all of them decides, so the posterior sets how the cut
    is shared among groups.
    """

    def __init__(self, model, metric, target, min_channels=1, round_to=1):
        if metric not in METRICS:
            raise ValueError(f"Budget: metric must be one of {METRICS}, received: {metric!r}")
        self.costs = CostModel(model)
        self.metric = metric
        self.min_channels = min_channels
        self.round_to = round_to
        self.unpruned = self.costs.full()[metric]
        self.target = target * self.unpruned if 0 < target < 1 else target
        groups = self.costs.groups
        least = self.cost({name: _top(np.zeros(n.channels), self._floor(n.channels)) for name, n in groups.items()})
        if self.target < least:
            raise ValueError(
                f"RecursivePruning: target_{metric}={target!r} ({self.target:,.0f}) is below "
                f"{least:,} {metric}, the least possible with min_channels={min_channels}"
                + (f" and round_to={round_to}" if round_to > 1 else "")
                + f" (the unpruned model has {self.unpruned:,})"
            )

    def _floor(self, channels):
        """The fewest channels a group of `channels` keeps."""
        return min(channels, max(self.min_channels, self.round_to))

    def cost(self, masks):
        return self.costs.cost(masks)[self.metric]

    def share_masks(self, frozen, stage, later):
        """The frozen masks, and the `later` groups keeping the fraction of
        their channels that meets the target if the `stage` groups kept it
        too: the rest of the model a stage's share is measured with."""
        pis = {name: np.zeros(self.costs.groups[name].channels) for name in list(stage) + list(later)}
        fraction = _largest(lambda f: self.cost({**frozen, **self._at_fraction(pis, f)}) <= self.target, 0.0, 1.0)
        return {**frozen, **self._at_fraction({name: pis[name] for name in later}, fraction)}

    def _at_fraction(self, pis, fraction):
        """Each group keeping `fraction` of its channels, those of largest pi."""
        return {
            name: _top(pi, max(self._floor(pi.size), self._rounded(pi.size * fraction, pi.size)))
            for name, pi in pis.items()
        }

    def stage_masks(self, frozen, stage, later):
        """Masks for the groups of a stage that meet their share.

        Args:
            frozen: dict from group name to the mask of each frozen group.
            stage: dict from group name to the pi of each group of the stage.
            later: names of the groups of later stages.
        """
        rest = self.share_masks(frozen, stage, later)
        order = sorted(((-pi[c], name, c) for name, pi in stage.items() for c in range(pi.size)))

        def first(channels, n):
            masks = {name: _top(pi, self._floor(pi.size)) for name, pi in stage.items()}
            for _, name, channel in channels[:n]:
                masks[name][channel] = True
            return masks

        # The longest run of channels in order of pi that fits; then, a few
        # times, skip the channel that did not fit and extend the run with
        # cheaper ones after it.
        for _ in range(FILL_ROUNDS):
            count = int(_largest(lambda n: self.cost({**rest, **first(order, int(n))}) <= self.target,
                                 0, len(order), integer=True))
            if count == len(order):
                break
            order = order[:count] + order[count + 1 :]
        masks = first(order, count)
        if self.round_to > 1:
            masks = self._round(masks, stage, rest)
        return masks

    def _rounded(self, count, channels):
        """`count` rounded down to a multiple of round_to (at most `channels`)."""
        return min(channels, int(count) // self.round_to * self.round_to)

    def _round(self, masks, stage, rest):
        """Each group's kept count rounded to a multiple of round_to: up
        where the budget allows it, else down."""
        rounded = {}
        for name, pi in stage.items():
            kept = int(masks[name].sum())
            down = max(self._floor(pi.size), self._rounded(kept, pi.size))
            rounded[name] = _top(pi, down)
        for name, pi in stage.items():
            up = min(pi.size, -(-int(masks[name].sum()) // self.round_to) * self.round_to)
            trial = dict(rounded, **{name: _top(pi, up)})
            if self.cost({**rest, **trial}) <= self.target:
                rounded = trial
        return rounded

    def expected(self, frozen, active):
        """The cost of the frozen masks with active groups at pi >= 0.5 and
        the other groups keeping every channel."""
        return self.cost({**frozen, **{name: pi >= 0.5 for name, pi in active.items()}})


def _largest(fits, low, high, integer=False, steps=30):
    """The largest value in [low, high] for which `fits` holds, by
    bisection (`fits` is monotone); `low` when none does."""
    if fits(high):
        return high
    if not fits(low):
        return low
    for _ in range(steps):
        if (integer and high - low <= 1) or (not integer and high - low < 1e-4):
            break
        middle = (low + high) // 2 if integer else (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low
