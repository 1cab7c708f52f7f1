"""Budgets: what the model `shrink` would make costs, for any masks, and the
masks of a stage that meet a MAC, parameter or latency target.

Costs are counted as `report` counts them on the model
``shrink(model, keep_input_shape=False)`` makes (MACs of the Dense and
convolution layers, every weight as a parameter), with dependency groups,
input and Flatten features included: the dependency analysis of `shrink`
says which channels each layer keeps, and each weight of a layer scales
with the kept fraction of the channels its dimensions index. Latency is
predicted from a `latency.LatencyTable` measured on the machine at hand.
"""

import numpy as np

from keras_rbp._keras import first_call_shapes, keras
from keras_rbp.dependency import ChannelPlan
from keras_rbp.latency import LatencyTable, LayerSlot, model_latency
from keras_rbp.layers import RBPNoise
from keras_rbp.metrics import layer_stats
from keras_rbp.rules import channel_axis
from keras_rbp.surgery import shrink_as
from keras_rbp.pruning import pruning_groups

L = keras.layers

METRICS = ("macs", "params", "latency_ms")
MEASURED_ROUNDS = 3  # latency: times a stage's masks are measured and chosen again
MEASURED_TOLERANCE = 0.05  # latency: a prediction this close to the measurement stands
MEASURED_TRIES = 3  # latency: times the last group's model is timed before it misses the target


class CostModel:
    """MACs, parameters and, with a `latency.LatencyTable`, the predicted
    latency of the model `shrink` would make from `model` (a pruned model)
    if its groups kept the channels of given masks."""

    def __init__(self, model, latency=None):
        self.model = model
        self.groups = pruning_groups(model)
        self.stats = {stats.name: stats for stats in layer_stats(model)}
        self.latency = latency
        self._graphs = {}  # the model's graphs, read once for every plan

    def cost(self, masks):
        """{"macs": ..., "params": ...} (and "latency_ms") when each group in
        `masks` (a dict from group name to a boolean array) keeps its True
        channels and the other groups keep all theirs."""
        totals = {"macs": 0.0, "params": 0.0}
        ratios = {}
        for op, in_full, in_ratio, out_full, out_ratio in self._layers(masks):
            macs = self.stats[op.name].macs
            scaled = op.rule.scaled_cost(op.inner, macs, in_ratio, out_ratio)
            if scaled is None:
                groups = getattr(op.inner, "groups", 1)
                scaled = (
                    macs * (out_ratio if _passes_channels(op, in_full) else in_ratio * out_ratio),
                    sum(np.prod(weight.shape) * _weight_ratio(
                        tuple(weight.shape), in_full, in_ratio, out_full, out_ratio, groups
                    ) for weight in op.inner.weights),
                )
            totals["macs"] += scaled[0]
            totals["params"] += scaled[1]
            ratios[op.name] = (in_ratio, out_ratio)
        if self.latency is not None:
            totals["latency_ms"] = self.latency.predict(ratios)
        return {metric: value if metric == "latency_ms" else int(round(value))
                for metric, value in totals.items()}

    def full(self):
        """The cost with every channel kept: the unpruned model's."""
        return self.cost({})

    def slots(self):
        """A `latency.LayerSlot` for each layer with MACs: what a
        `LatencyTable` of this model times."""
        floor = {name: np.arange(noise.channels) < 1 for name, noise in self.groups.items()}
        slots = []
        for op, in_full, in_ratio, out_full, out_ratio in self._layers(floor):
            if not self.stats[op.name].macs:
                continue
            input_shape, _ = first_call_shapes(op.layer)
            axis = channel_axis(op.inner)
            slots.append(LayerSlot(
                name=op.name, layer=op.inner, input_shape=tuple(input_shape[1:]),
                axis=axis if axis < 0 else axis - 1, in_channels=in_full, out_channels=out_full,
                in_prunable=in_ratio < 1, out_prunable=out_ratio < 1,
                passes_channels=_passes_channels(op, in_full),
            ))
        return slots

    def _layers(self, masks):
        """(op, input channels, kept fraction, output channels, kept
        fraction) of each layer with weights, with the groups keeping the
        channels of `masks` and the others all theirs."""
        thetas = {name: np.ones(noise.channels, np.float32) for name, noise in self.groups.items()}
        thetas.update({name: np.asarray(mask, np.float32) for name, mask in masks.items()})
        plan = ChannelPlan(self.model, thetas=thetas, graphs=self._graphs)
        producers = {key: op for op in plan.ops for key in op.outputs}
        for op in plan.ops:
            if op.name not in self.stats or op.call_index or not op.inputs:
                continue
            source = op.inputs[0]
            producer = producers.get(source)
            if isinstance(op.inner, L.Dense) and isinstance(producer and producer.layer, RBPNoise):
                # shrink folds the features' theta into the Dense kernel
                # rows: it reads every channel the noise's input holds.
                source = producer.inputs[0]
            in_full, out_full = plan.tensors[source].channels, plan.tensors[op.theta_key].channels
            in_ratio = _physical(plan, producers, source) / in_full if in_full else 1.0
            out_ratio = len(plan.kept(op.theta_key)) / out_full if out_full else 1.0
            yield op, in_full, in_ratio, out_full, out_ratio


def _uniform(groups, fraction):
    """Thetas that keep the first `fraction` of every group's channels."""
    return {name: (np.arange(noise.channels) < max(1, round(fraction * noise.channels))).astype(np.float32)
            for name, noise in groups.items()}


def _format(metric, value):
    return f"{value:.3f} ms" if metric == "latency_ms" else f"{value:,.0f} {metric}"


def _physical(plan, producers, key):
    """How many channels of tensor `key` the shrunk model holds: the kept
    ones, or for a Flatten, every feature of its input's kept channels."""
    producer = producers.get(key)
    if producer is not None and "map" in producer.state:
        return int(np.isin(producer.state["map"], plan.kept(producer.inputs[0])).sum())
    return len(plan.kept(key))


def _passes_channels(op, in_full):
    """Whether each output channel of `op` reads one input channel (a
    depthwise layer, a convolution with a group per input channel), so
    that its MACs scale with its kept outputs alone."""
    groups = getattr(op.inner, "groups", 1)
    return bool(getattr(op.rule, "passes_channels", False)) or 1 < groups == in_full


def _weight_ratio(shape, in_full, in_ratio, out_full, out_ratio, groups):
    """The kept fraction of a weight of `shape`: its last two dimensions
    scale with the kept input or output channels they index (a kernel's
    one input channel a group, with a group per input, stays)."""
    ratio, used_in, used_out = 1.0, False, False
    for dim in shape[-2:]:
        if dim == out_full and not used_out:
            ratio, used_out = ratio * out_ratio, True
        elif dim in (in_full, in_full // max(groups, 1)) and dim > 1 and not used_in:
            ratio, used_in = ratio * in_ratio, True
    return ratio


def _top(score, count):
    """A mask of the `count` channels of largest score."""
    mask = np.zeros(score.size, bool)
    mask[np.argsort(-score, kind="stable")[: min(count, score.size)]] = True
    return mask


class Budget:
    """A MAC, parameter or latency target, and the masks each stage keeps to
    meet it.

    A stage keeps its channels in order of their score (the method's keep
    logit, or weight magnitude), as many as fit its share: the cost the
    target leaves if every group not yet frozen (this stage's
    and later ones) kept the same fraction of its channels. Earlier stages
    are frozen as they are, so the last stage fills what remains, and the
    model `shrink` makes meets the target to within one channel's cost.
    A stage of several groups (a block, or the all-at-once schedule) takes
    them one after the other in the same way. (One order over all of a
    stage's groups, tried first, cut LeNet-5-Caffe's conv1 to one filter
    when pi were still undecided: its channels cost the most and were
    skipped.)

    A MAC or parameter target is a number, or a fraction in (0, 1) of the
    unpruned model's; a latency target is in milliseconds, always (models
    of well under a millisecond are common). A latency budget first
    measures the `LatencyTable` of the model.
    """

    def __init__(self, model, metric, target, min_channels=1, round_to=1):
        if metric not in METRICS:
            raise ValueError(f"Budget: metric must be one of {METRICS}, received: {metric!r}")
        self.costs = CostModel(model)
        if metric == "latency_ms":
            self.costs.latency = LatencyTable(self.costs.slots(), [
                (shrink_as(model, _uniform(self.costs.groups, ratio), keep_input_shape=False), ratio)
                for ratio in (1.0, 0.5)
            ])
        self.metric = metric
        self.measurements = []  # latency: each stage's predicted and measured latency
        self._ratios = []  # latency: measured over the table's prediction, each model timed
        self.min_channels = min_channels
        self.round_to = round_to
        self.unpruned = self.costs.full()[metric]
        fraction = 0 < target < 1 and metric != "latency_ms"
        self.target = target * self.unpruned if fraction else target
        groups = self.costs.groups
        least = self.cost({name: _top(np.zeros(n.channels), self._floor(n.channels)) for name, n in groups.items()})
        if self.target < least:
            rest = self.costs.latency and self.costs.latency.rest_ms
            raise ValueError(
                f"RecursivePruning: target_{metric}={target!r} ({_format(metric, self.target)}) is "
                f"below {_format(metric, least)}, the least possible with min_channels={min_channels}"
                + (f" and round_to={round_to}" if round_to > 1 else "")
                + f" (the unpruned model has {_format(metric, self.unpruned)}"
                + (f"; {rest:.3f} ms of it is the rest of the model, activations, pooling and the "
                   "interpreter's call, which pruning does not shorten" if rest and rest > 0 else "")
                + ")"
            )

    def _floor(self, channels):
        """The fewest channels a group of `channels` keeps."""
        return min(channels, max(self.min_channels, self.round_to))

    def cost(self, masks):
        return self.costs.cost(masks)[self.metric]

    def share_masks(self, frozen, stage, later):
        """The frozen masks, and the `later` groups keeping the fraction of
        their channels that meets the target if the `stage` groups (names)
        kept it too: the rest of the model a stage's share is measured with."""
        if not later:  # the last stage: no fraction to find
            return dict(frozen)
        scores = {name: np.zeros(self.costs.groups[name].channels) for name in list(stage) + list(later)}
        fraction = _largest(lambda f: self.cost({**frozen, **self._at_fraction(scores, f)}) <= self.target, 0.0, 1.0)
        return {**frozen, **self._at_fraction({name: scores[name] for name in later}, fraction)}

    def _at_fraction(self, scores, fraction):
        """Each group keeping `fraction` of its channels, those of largest score."""
        return {
            name: _top(score, max(self._floor(score.size), self._rounded(score.size * fraction, score.size)))
            for name, score in scores.items()
        }

    def stage_masks(self, frozen, stage, later, posterior=None):
        """Masks for the groups of a stage that meet their share.

        Without `posterior`, one group after the other, in topological
        order, each as if it were a stage of its own and the stage's next
        groups were later ones: every group keeps about the same fraction
        of its channels. With `posterior`, the stage's groups are allocated
        together (`_allocated`).

        Args:
            frozen: dict from group name to the mask of each frozen group.
            stage: dict from group name to the channels' scores of each group
                of the stage: the higher, the sooner kept (a method's keep
                logit, or the weights' magnitude).
            later: names of the groups of later stages.
            posterior: dict from group name to the number of channels each
                group's posterior keeps (pi >= threshold): the stage's groups
                then share the budget by `_allocated`.
        """
        if posterior is not None:
            return self._allocated(frozen, stage, later, posterior)
        masks, names = {}, list(stage)
        for index, name in enumerate(names):
            masks[name] = self._group_mask({**frozen, **masks}, name, stage[name], names[index + 1 :] + list(later))
        return masks

    def _allocated(self, frozen, stage, later, posterior):
        """The stage's masks from its posterior: each group keeps the
        channels of largest score, at most what its posterior keeps and at
        most the fraction f of its channels, f the largest that meets the
        target (water-filling), so a group whose posterior keeps few
        channels leaves its budget to the others. A stage with later ones
        spends at most its share (the later groups at the share fraction,
        `share_masks`) and leaves what it does not spend to the later
        stages; the model's last stage fills what remains, past the
        posterior where it keeps less than the target allows. What the
        common fraction leaves unspent then goes to the groups whose next
        channels score highest (`_topped_up`).
        """
        names = list(stage)
        rest = self.share_masks(frozen, names, later)
        caps = {name: min(posterior[name], stage[name].size) for name in names}

        def masks(fraction, past_posterior=False):
            bound = max if past_posterior else min
            return {name: _top(score, max(self._floor(score.size),
                                          self._rounded(bound(caps[name], score.size * fraction), score.size)))
                    for name, score in stage.items()}

        def fits(fraction, past_posterior=False):
            return self.cost({**rest, **masks(fraction, past_posterior)}) <= self.target

        result = masks(_largest(fits, 0.0, 1.0))
        bounds = caps
        if not later and fits(1.0):  # the posterior keeps less than the budget allows
            result = masks(_largest(lambda f: fits(f, True), 0.0, 1.0), True)
            bounds = {name: score.size for name, score in stage.items()}
        result = self._topped_up(rest, result, stage, bounds)
        if self.costs.latency is not None and not later:  # the final model: measured
            last = names[-1]
            result[last] = self._measured_fill({**rest, **result}, last, stage[last])
        return result

    def _topped_up(self, rest, masks, stage, bounds):
        """`masks` with what the common fraction leaves unspent given out:
        round_to more channels at a time to the group whose next channel
        scores highest (the earlier group on a tie), among those under their
        bound (a count of channels) whose step still fits beside `rest`,
        until no step fits.

        Costs only grow as channels are added, so a group whose step misses
        the target is closed for good, and the leading group's steps are
        taken in one bisection: as many as keep it ahead of the runner-up
        and fit."""
        masks = dict(masks)
        order = {name: index for index, name in enumerate(stage)}
        ranked = {name: np.sort(score)[::-1] for name, score in stage.items()}

        def steps_open(name):
            return (bounds[name] - int(masks[name].sum())) // self.round_to

        def rank(name, step=0):  # sorts first: the highest next score, then the earlier group
            return -ranked[name][int(masks[name].sum()) + step * self.round_to], order[name]

        def grown(name, steps):
            return {**rest, **masks, name: _top(stage[name], int(masks[name].sum()) + steps * self.round_to)}

        open_groups = {name for name in stage if steps_open(name) > 0}
        while open_groups:
            leader, *others = sorted(open_groups, key=rank)
            ahead = steps_open(leader)  # the steps the leader takes before the runner-up's turn
            if others:
                ahead = next((step for step in range(1, ahead) if rank(leader, step) > rank(others[0])), ahead)
            steps = int(_largest(lambda n: n == 0 or self.cost(grown(leader, int(n))) <= self.target,
                                 0, ahead, integer=True))
            masks[leader] = grown(leader, steps)[leader]
            if steps < ahead or steps_open(leader) == 0:
                open_groups.discard(leader)  # its next step misses the target, or it is at its bound
        return masks

    def _group_mask(self, frozen, name, score, later):
        """The mask of group `name` that meets its share.

        For a latency target, the model this mask and the share make is
        then converted and timed, the table's prediction is corrected by
        the median ratio of measured to predicted latency over every model
        timed so far, and the mask is chosen again, up to MEASURED_ROUNDS
        times: a layer's latency jumps with its channel count (vector
        widths) in ways no table fit follows. The last group (no `later`
        ones) makes the final model, so it is chosen by measurement alone
        (`_measured_fill`).
        """
        rest = self.share_masks(frozen, [name], later)
        table = self.costs.latency
        if table is not None and not later:
            return self._measured_fill(rest, name, score)
        mask = self._fill(rest, name, score)
        for _ in range(MEASURED_ROUNDS if table is not None else 0):
            proposal = {**rest, name: mask}
            predicted = self.cost(proposal)
            measured = self._measure(name, proposal, predicted)
            if abs(measured / predicted - 1) <= MEASURED_TOLERANCE:
                break
            self._ratios.append(measured / (predicted / table.correction))
            table.correction = float(np.median(self._ratios))
            rest = self.share_masks(frozen, [name], later)
            mask = self._fill(rest, name, score)
        return mask

    def _measure(self, name, masks, predicted):
        """The measured latency of the model `masks` make, recorded."""
        thetas = {group: np.asarray(kept, np.float32) for group, kept in masks.items()}
        measured = model_latency(shrink_as(self.costs.model, thetas, keep_input_shape=False))
        self.measurements.append({"group": name, "predicted_ms": predicted, "measured_ms": measured})
        return measured

    def _measured_fill(self, rest, name, score):
        """The last group's mask: the most channels, in order of score (a
        multiple of round_to), whose final model measures within the
        target, by bisection over measured models. A slow spell of the
        machine only ever adds time, so a model measured over the target
        is timed again, up to MEASURED_TRIES times, and its least time
        counts. The table is then corrected to the chosen model's time,
        so the expected latency that fit logs is the final model's."""
        floor, units = self._floor(score.size), -(-score.size // self.round_to)
        measured, tries = {}, {}  # each unit's least time, and how often it was timed

        def mask(unit):
            return _top(score, max(floor, min(score.size, unit * self.round_to)))

        def fits(unit):
            proposal = {**rest, name: mask(unit)}
            while unit not in measured or (measured[unit] > self.target and tries[unit] < MEASURED_TRIES):
                taken = self._measure(name, proposal, self.cost(proposal))
                measured[unit] = min(taken, measured.get(unit, taken))
                tries[unit] = tries.get(unit, 0) + 1
            return measured[unit] <= self.target

        chosen = _largest(fits, 0, units, integer=True)
        fits(chosen)
        table = self.costs.latency
        table.correction *= measured[chosen] / self.cost({**rest, name: mask(chosen)})
        return mask(chosen)

    def _fill(self, rest, name, score):
        """Group `name` keeps its channels in order of score, as many as fit
        beside `rest` (a group's channels all cost the same); with round_to,
        a multiple of it, rounded up where the budget allows, else down."""
        floor = self._floor(score.size)
        count = int(_largest(lambda n: self.cost({**rest, name: _top(score, max(floor, int(n)))}) <= self.target,
                             0, score.size, integer=True))
        count = max(floor, count)
        if self.round_to == 1:
            return _top(score, count)
        up = _top(score, min(score.size, -(-count // self.round_to) * self.round_to))
        if self.cost({**rest, name: up}) <= self.target:
            return up
        return _top(score, max(floor, self._rounded(count, score.size)))

    def _rounded(self, count, channels):
        """`count` rounded down to a multiple of round_to (at most `channels`)."""
        return min(channels, int(count) // self.round_to * self.round_to)

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
