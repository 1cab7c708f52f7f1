"""`RecursivePruning`: the layer-by-layer train-and-prune schedule, as a
Keras callback, and `PruningSummaries` for TensorBoard."""

import logging
import math
import warnings

import tensorflow as tf  # tf.summary, for PruningSummaries

from keras_rbp import _keras
from keras_rbp import distillation
from keras_rbp import magnitude
from keras_rbp import stage_end
from keras_rbp._keras import keras
from keras_rbp.budget import Budget
from keras_rbp.distribute import is_chief
from keras_rbp.plan import Plan, check_int
from keras_rbp.pruning import pruning_groups

WIDTHS = ("share", "posterior")  # how a budget sets each group's kept channels


class _OwnRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about
    Keras's train, test and predict functions: RecursivePruning changes
    which groups draw their noise once a stage, on purpose (see
    `_set_sampling`), and Keras then traces them again."""

    def filter(self, record):
        message = record.getMessage()
        return not ("retracing" in message and any(
            name in message for name in ("_make_function", "make_train_function", "make_test_function",
                                         "make_predict_function")))


tf.get_logger().addFilter(_OwnRetracing())


class RecursivePruning(keras.callbacks.Callback):
    """Trains and prunes the groups of a pruned model, stage after stage.

    The groups (see `pruning_groups`) are visited in topological order,
    `groups_per_stage` at a time. During a stage, the groups of earlier
    stages are frozen (theta = mask * pi_hat), the stage's groups are active
    (stochastic noise and KL, the noise scale rising linearly from 1 to
    `max_noise_scale`), later groups are off; all weights keep training. A
    stage ends when every pi of its groups is within `collapse_tolerance` of
    0 or 1, or after `epochs_per_stage` epochs; then the channels with
    pi < `threshold` are removed, keeping at least `min_channels` (those with
    the largest pi). After the last stage, `finetune_epochs` epochs train with
    every group frozen, then training stops.

    With a budget (`target_macs`, `target_params` or `target_latency_ms`),
    a stage keeps, in order of pi, as many of its channels as fit its share
    of the budget instead of thresholding pi (see `budget.Budget`): the
    share is what the target leaves if every group not yet frozen kept the
    same fraction of its channels, so the last stage fills the rest and the
    shrunk model meets the target to within a channel's cost. Costs are
    counted as `report` counts them on the model `shrink` makes; latency is
    predicted from a per-layer LiteRT table. Groups of method "magnitude"
    rank their channels by weight magnitude (`keras_rbp.magnitude`) instead
    of pi, and need a budget. Each epoch's logs
    carry the target and the expected cost (`rbp_target_<metric>`,
    `rbp_expected_<metric>`: frozen masks, active groups at pi >= 0.5,
    later groups whole; with a latency target, `rbp_latency_correction`,
    the factor measured models have set on the table's prediction).

    The plan's length can be given instead, as `plan_epochs` or
    `plan_steps`: it is then counted in training steps, shared among the
    stages and the fine-tune in the proportions of `epochs_per_stage` and
    `finetune_epochs`, and a stage may end at any step (and still ends at an
    epoch's end if its noise has collapsed). With ``groups_per_stage`` above
    1, a stage visits a block of consecutive groups: a deep network's plan
    then fits a few epochs.

    Only the stage's groups train their logits: an active noise alone sends
    gradients to its parameters (see `RBPNoise`). The others draw no noise
    (`RBPNoise.sampling`, a multiply then), and the model's train function
    is rebuilt when that changes, once a stage; every group draws again when
    fit ends. Which variables train stays the same through the plan, on
    every backend.

    To distill from the unpruned model, fit `distillation.distilled(pruned,
    model)` with this callback: budgets count the pruned model it trains.

    All progress lives in the noises' variables (modes, masks, frozen values,
    epochs and steps in the current mode), so a model saved by
    `ModelCheckpoint` or `BackupAndRestore` (also every N steps, with
    ``save_freq=N``) resumes the plan where it stopped: list those callbacks
    after this one, so that they save the state this one updates.

    Args:
        epochs_per_stage: the most epochs a stage trains.
        finetune_epochs: epochs trained after the last stage.
        groups_per_stage: groups made active together; None puts every group
            in one stage (the all-at-once schedule of SBP and VIBNet).
        threshold: channels whose keep probability pi is below it are removed.
        min_channels: the fewest channels a group keeps.
        collapse_tolerance: a stage ends early once every pi of its groups
            is within this distance of 0 or 1.
        max_noise_scale: the noise scale reached in a stage's last epoch.
        finetune_learning_rate: if set, the optimiser's learning rate during
            the fine-tune.
        target_macs: a MAC budget for the shrunk model: a number of
            multiply-accumulates per example, or a float in (0, 1), the
            fraction of the unpruned model's.
        target_params: a parameter budget, in the same forms.
        target_latency_ms: a latency budget: single-thread LiteRT
            milliseconds per example on this machine (never a fraction),
            predicted from a per-layer table measured when fit starts (see
            `latency.LatencyTable`).
        round_to: with a budget, kept channel counts are multiples of it
            (rounded up where the budget allows, else down), at least
            round_to channels a group.
        widths: with a budget, "share" (each group keeps its share, so
            every group keeps about the same fraction of its channels) or
            "posterior" (each group of a stage keeps at most its channels
            of pi >= threshold, and the budget they leave goes to the
            stage's other groups and to later stages; the last stage fills
            what remains). Groups ranked by weight magnitude always keep
            their share.
        plan_epochs: the length of the whole plan (stages and fine-tune) in
            epochs, a number that need not be whole; None counts the plan
            in `epochs_per_stage` and `finetune_epochs`.
        plan_steps: the same length in training steps.
        check_epochs: raise when fit's epochs cannot complete the plan; pass
            False to run the plan over several fit calls.
        verbose: print a line at each stage change.
    """

    def __init__(
        self,
        epochs_per_stage=5,
        finetune_epochs=5,
        groups_per_stage=1,
        threshold=0.5,
        min_channels=1,
        collapse_tolerance=0.05,
        max_noise_scale=3.0,
        finetune_learning_rate=None,
        target_macs=None,
        target_params=None,
        target_latency_ms=None,
        round_to=1,
        widths="share",
        plan_epochs=None,
        plan_steps=None,
        check_epochs=True,
        verbose=1,
    ):
        super().__init__()
        Plan.of([], groups_per_stage, epochs_per_stage=epochs_per_stage, finetune_epochs=finetune_epochs,
                plan_epochs=plan_epochs, plan_steps=plan_steps)  # checks the arguments
        _check_settings(threshold, min_channels, collapse_tolerance, max_noise_scale, round_to, widths)
        self.epochs_per_stage = epochs_per_stage
        self.finetune_epochs = finetune_epochs
        self.groups_per_stage = groups_per_stage
        self.threshold = threshold
        self.min_channels = min_channels
        self.collapse_tolerance = collapse_tolerance
        self.max_noise_scale = max_noise_scale
        self.finetune_learning_rate = finetune_learning_rate
        self.target = _check_target(target_macs, target_params, target_latency_ms)
        self.round_to = round_to
        self.widths = widths
        self.plan_epochs = plan_epochs
        self.plan_steps = plan_steps
        self.check_epochs = check_epochs
        self.verbose = verbose
        self._last_good_weights = None
        self.budget = None  # the `budget.Budget` of the target, once fit starts
        # One dict a stage ended in this callback's fits: its groups, the
        # channels its noise left undecided and all its channels.
        self.stage_ends = []

    # The plan.

    def plan(self, model):
        """The `Plan` of `model`'s groups, in topological order."""
        return Plan.of(_groups(model), self.groups_per_stage, **self._lengths_given())

    def _lengths_given(self):
        return dict(epochs_per_stage=self.epochs_per_stage, finetune_epochs=self.finetune_epochs,
                    plan_epochs=self.plan_epochs, plan_steps=self.plan_steps)

    def stages(self, model):
        """The plan's stages: a list of stages, each a list of group names."""
        return [list(stage) for stage in self.plan(model).stages]

    @property
    def in_steps(self):
        """Whether the plan is counted in training steps (a plan length was
        given) rather than in epochs."""
        return Plan((), **self._lengths_given()).in_steps

    def lengths(self, model, steps_per_epoch=None):
        """(stage length, fine-tune length): epochs, or steps for a plan
        given by its length (see `Plan.lengths`)."""
        return self.plan(model).lengths(steps_per_epoch)

    def total_epochs(self, model, steps_per_epoch=None):
        """The most epochs the plan needs, from its start: pass it to fit.
        A plan given in steps needs `steps_per_epoch`."""
        return self.plan(model).total_epochs(steps_per_epoch)

    def remaining_epochs(self, model, steps_per_epoch=None):
        """The most epochs the plan still needs from its current state."""
        groups, plan = _groups(model), self.plan(model)
        stages = plan.stages
        stage = self._current_stage(stages, groups)
        if stage is None:
            done = self._done(groups, stages[-1])
        else:
            done = self._done(groups, stages[stage]) if self._is_started(stages[stage], groups) else 0
        return plan.remaining_epochs(stage, done, steps_per_epoch)

    @staticmethod
    def _current_stage(stages, groups):
        """Index of the first stage with a group not frozen; None when all are."""
        for index, stage in enumerate(stages):
            if any(groups[name].mode != "frozen" for name in stage):
                return index
        return None

    @staticmethod
    def _is_started(stage, groups):
        return all(groups[name].mode == "active" for name in stage)

    def _counter(self, noise):
        return noise.mode_steps if self.in_steps else noise.mode_epochs

    def _done(self, groups, names):
        """Epochs or steps the groups `names` have spent in their mode."""
        return min(int(self._counter(groups[name]).numpy()) for name in names)

    # Callback hooks.

    def on_train_begin(self, logs=None):
        _keras.check_strategy(_keras.strategy(self.model), "RecursivePruning")
        groups = _groups(self.model)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            raise RuntimeError(f"RecursivePruning: model {self.model.name!r} was not compiled")
        self._steps_per_epoch = (self.params or {}).get("steps")
        self._noises, self._stages = groups, self.stages(self.model)
        self._lengths = self.lengths(self.model, self._steps_per_epoch)
        if self.target is not None:
            metric, target = self.target
            self.budget = Budget(distillation.student(self.model), metric, target, self.min_channels,
                                 self.round_to)
        ranked = [name for name, noise in groups.items() if noise.ranks_by_weights]
        if ranked and self.budget is None:
            raise ValueError(
                f"RecursivePruning: groups {ranked} use method 'magnitude', which keeps the "
                "channels of largest weight magnitude that a budget allows; pass target_macs, "
                "target_params or target_latency_ms"
            )
        if ranked:
            magnitude.channel_importance(distillation.student(self.model), ranked)  # fails now, not later
        # The optimiser must know every group's logits before a stage leaves
        # some out; it would otherwise be built at the first step, on the
        # first stage's. (tf_keras' legacy optimisers have no build.)
        if hasattr(optimizer, "build") and not getattr(optimizer, "built", False):
            with _keras.strategy_scope(self.model):
                optimizer.build(self.model.trainable_variables)

    def on_epoch_begin(self, epoch, logs=None):
        knows_epochs = self._steps_per_epoch or not self.in_steps
        if self.check_epochs and knows_epochs and self._first_epoch_of_fit(epoch):
            needed = self.remaining_epochs(self.model, self._steps_per_epoch)
            available = self.params["epochs"] - epoch
            if needed > available:
                raise ValueError(
                    f"RecursivePruning: the plan needs up to {needed} more epochs but fit "
                    f"runs {available} (epochs={self.params['epochs']}, from epoch {epoch}); "
                    f"pass epochs={epoch + needed}, or check_epochs=False to run the plan "
                    "over several fit calls"
                )
        self._last_good_weights = self.model.get_weights()
        self._enter()

    def _enter(self):
        """Sets the modes, noise scale and learning rate for the plan's
        current state."""
        groups, stages = self._noises, self._stages
        current = self._current_stage(stages, groups)
        if current is None:
            if self.finetune_learning_rate is not None:
                self.model.optimizer.learning_rate.assign(self.finetune_learning_rate)
        else:
            for stage in stages[current + 1 :]:
                for name in stage:
                    groups[name].mode = "off"
            for name in stages[current]:
                if groups[name].mode != "frozen":
                    groups[name].mode = "active"
            self._ramp_noise(stages[current])
        _set_sampling(self.model, groups, {name: noise.mode == "active" for name, noise in groups.items()})

    def _ramp_noise(self, names):
        """The noise scale of the stage's active groups: from 1 at its start
        to max_noise_scale in its last epoch (or step)."""
        active = [name for name in names if self._noises[name].mode == "active"]
        if not active:
            return
        ramp = self._done(self._noises, active) / max(1, self._lengths[0] - 1)
        scale = 1.0 + (self.max_noise_scale - 1.0) * min(1.0, ramp)
        for name in active:
            self._noises[name].noise_scale.assign(scale)

    def _first_epoch_of_fit(self, epoch):
        first = getattr(self, "_fit_first_epoch", None)
        if first is None or epoch <= first:
            self._fit_first_epoch = epoch
            return True
        return False

    def on_train_end(self, logs=None):
        self._fit_first_epoch = None
        _set_sampling(self.model, self._noises, {name: True for name in self._noises})

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            _keras.sync_variables(self.model)
            current = self._current_stage(self._stages, self._noises)
            where = (
                f"stage {current + 1} (groups {self._stages[current]})"
                if current is not None
                else "the fine-tune"
            )
            if self._last_good_weights is not None:
                self.model.set_weights(self._last_good_weights)
            self.model.stop_training = True
            raise FloatingPointError(
                f"RecursivePruning: the loss became {loss} in {where}, at batch {batch}; "
                "the model holds its weights from the start of that epoch"
            )
        if self.in_steps:
            _keras.sync_variables(self.model)
            self._advance(logs)

    def on_epoch_end(self, epoch, logs=None):
        groups, stages = self._noises, self._stages
        current = self._current_stage(stages, groups)
        if logs is not None:
            logs["rbp_stage"] = len(stages) + 1 if current is None else current + 1
            logs["rbp_kl"] = sum(noise.kl_loss() for noise in groups.values())
        if not self.in_steps:
            self._advance(logs)
        elif current is not None and self._collapsed(stages[current]):
            self._end_stage(current, logs)
            self._enter()
        if logs is not None:
            for name, noise in groups.items():
                logs[f"rbp_kept/{name}"] = stage_end.kept_channels(noise, self.threshold)
            if self.budget is not None:
                metric = self.budget.metric
                logs[f"rbp_target_{metric}"] = float(self.budget.target)
                logs[f"rbp_expected_{metric}"] = float(self.budget.expected(
                    stage_end.frozen_masks(groups),
                    {name: noise.keep_probability() for name, noise in groups.items() if noise.mode == "active"},
                ))
                if self.budget.costs.latency is not None:
                    logs["rbp_latency_correction"] = self.budget.costs.latency.correction

    def _advance(self, logs):
        """Counts an epoch (or a step) of the current stage or the fine-tune,
        and ends the stage or the plan when its length is reached (a stage
        counted in epochs also ends once its noise has collapsed)."""
        groups, stages = self._noises, self._stages
        stage_length, finetune_length = self._lengths
        current = self._current_stage(stages, groups)
        clock = stages[-1] if current is None else stages[current]
        for name in clock:
            self._counter(groups[name]).assign_add(1)
        if current is None:
            if self._done(groups, clock) >= finetune_length:
                self.model.stop_training = True
        elif self._done(groups, clock) >= stage_length or (
            not self.in_steps and self._collapsed(clock)
        ):
            self._end_stage(current, logs)
            if self.in_steps:
                self._enter()
        elif self.in_steps:
            self._ramp_noise(clock)

    def _collapsed(self, names):
        """Whether the noises of groups `names` have all collapsed."""
        return all(stage_end.collapsed(self._noises[name], self.collapse_tolerance) for name in names)

    def _end_stage(self, index, logs):
        groups, stages = self._noises, self._stages
        names, count = stages[index], len(stages)
        undecided, channels = stage_end.undecided([groups[name] for name in names], self.collapse_tolerance)
        decided_by = "by the budget" if self.budget is not None else f"at threshold {self.threshold}"
        undecided_pi = f"pi within ({self.collapse_tolerance}, {1 - self.collapse_tolerance})"
        # With verbose, the stage's line says it (once); else a warning does.
        if undecided and not self.verbose:
            unit = "steps" if self.in_steps else "epochs"
            warnings.warn(
                f"RecursivePruning: stage {index + 1}/{count} ({', '.join(names)}) reached its length "
                f"({self._lengths[0]} {unit}) with {undecided} of {channels} channels undecided "
                f"({undecided_pi}); they are decided {decided_by}; a longer stage or a larger "
                "kl_weight lets the noise collapse",
                stacklevel=2,
            )
        self.stage_ends.append({"stage": index + 1, "groups": list(names), "undecided": undecided,
                                "channels": channels})
        later = [name for stage in stages[index + 1 :] for name in stage]
        masks = stage_end.stage_masks(distillation.student(self.model), groups, names, later, self.budget,
                                      self.threshold, self.min_channels, self.widths)
        for name in names:
            noise, mask = groups[name], masks[name]
            noise.freeze(mask, noise.keep_probability() * mask)
            noise.noise_scale.assign(1.0)
            if self.verbose:
                print(
                    f"RecursivePruning: stage {index + 1}/{count} done: {name} keeps "
                    f"{int(mask.sum())}/{mask.size}{_validation_metric(logs)}"
                    + (f", {undecided} channels undecided ({undecided_pi}, decided {decided_by})"
                       if undecided else "")
                )
        if index + 1 == count and self._lengths[1] == 0:
            self.model.stop_training = True


def _check_settings(threshold, min_channels, collapse_tolerance, max_noise_scale, round_to, widths):
    check_int("min_channels", min_channels, 1)
    check_int("round_to", round_to, 1)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"RecursivePruning: threshold must be in (0, 1), received: {threshold!r}")
    if not 0.0 < collapse_tolerance < 0.5:
        raise ValueError(
            f"RecursivePruning: collapse_tolerance must be in (0, 0.5), received: {collapse_tolerance!r}"
        )
    if not max_noise_scale >= 1.0:
        raise ValueError(f"RecursivePruning: max_noise_scale must be >= 1, received: {max_noise_scale!r}")
    if widths not in WIDTHS:
        raise ValueError(f"RecursivePruning: widths must be one of {WIDTHS}, received: {widths!r}")


def _check_target(target_macs, target_params, target_latency_ms):
    """(metric, target) of the one budget given, or None."""
    targets = (("macs", target_macs), ("params", target_params), ("latency_ms", target_latency_ms))
    given = [(metric, value) for metric, value in targets if value is not None]
    if len(given) > 1:
        raise ValueError(
            "RecursivePruning: give at most one of target_macs, target_params and "
            "target_latency_ms, received " + ", ".join(f"target_{metric}={value!r}" for metric, value in given)
        )
    if not given:
        return None
    metric, value = given[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"RecursivePruning: target_{metric} must be a number > 0, received: {value!r}")
    if metric != "latency_ms" and value == 1:
        raise ValueError(
            f"RecursivePruning: target_{metric} must be a fraction in (0, 1) of the unpruned "
            f"model or a number of {metric} above 1, received: {value!r}"
        )
    if metric == "latency_ms" and not _keras.ON_TENSORFLOW:
        raise ValueError(
            f"RecursivePruning: target_latency_ms={value!r} times the model's layers in LiteRT, "
            "converted by TensorFlow from a model of Keras's TensorFlow backend; the backend is "
            f"{_keras.BACKEND!r}: set KERAS_BACKEND=tensorflow, or give target_macs or target_params"
        )
    return given[0]


def _set_sampling(model, groups, sampling):
    """Sets which groups draw their noise in training, a dict from group name
    to bool; rebuilds the model's train function if that changes."""
    changed = False
    for name, value in sampling.items():
        if groups[name].sampling != value:
            groups[name].sampling = value
            changed = True
    if changed:
        model.make_train_function(force=True)


def _groups(model):
    groups = pruning_groups(model)
    if not groups:
        raise ValueError(
            f"RecursivePruning: model {model.name!r} has no RBP noise; wrap it with "
            "keras_rbp.prune first"
        )
    return groups


def _validation_metric(logs):
    for key in ("val_accuracy", "val_sparse_categorical_accuracy", "val_loss", "loss"):
        if logs and key in logs:
            return f" ({key} {float(logs[key]):.4f})"
    return ""


class PruningSummaries(keras.callbacks.Callback):
    """Writes TensorBoard summaries of the pruning at the end of each epoch:
    kept channels, mean pi and KL per group as scalars, pi as histograms,
    and the target and expected cost of a budgeted `RecursivePruning`
    (listed before this callback). In a multi-worker cluster only the chief
    writes (`keras_rbp.is_chief`); the other workers write nothing.

    Args:
        log_dir: the folder of the TensorBoard event files.
        threshold: the keep threshold used to count kept channels.
    """

    def __init__(self, log_dir, threshold=0.5):
        super().__init__()
        self.log_dir = log_dir
        self.threshold = threshold
        self._writer = None

    def on_train_begin(self, logs=None):
        if self._writer is None and is_chief(_keras.strategy(self.model)):
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            return
        with self._writer.as_default(step=epoch):
            for name, noise in _groups(self.model).items():
                pi = noise.keep_probability()
                tf.summary.scalar(f"rbp/kept_channels/{name}", stage_end.kept_channels(noise, self.threshold))
                tf.summary.scalar(f"rbp/mean_pi/{name}", float(pi.mean()))
                tf.summary.scalar(f"rbp/kl/{name}", noise.kl_loss())
                tf.summary.histogram(f"rbp/pi/{name}", pi)
            for key, value in (logs or {}).items():  # RecursivePruning's budget, if any
                if key.startswith(("rbp_target_", "rbp_expected_", "rbp_latency_")):
                    tf.summary.scalar(f"rbp/budget/{key[len('rbp_'):]}", value)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
