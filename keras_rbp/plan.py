"""The recursive plan: which groups train in which stage, and for how long.

A `Plan` is arithmetic over group names and counts, without a model: its
stages, the length of a stage and of the fine-tune (in epochs, or in steps
when the plan's whole length is given), and how much of the plan is left
from a given point. `RecursivePruning` carries a plan out on a model; the
plan's state (the stage reached, the epochs or steps done in it) lives in
the model's noises, so that a checkpoint resumes it.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Plan:
    """Stages of group names and their lengths.

    Attributes:
        stages: a tuple of stages, each a tuple of group names.
        epochs_per_stage: the most epochs a stage trains.
        finetune_epochs: epochs trained after the last stage.
        plan_epochs: the whole plan's length in epochs (a number that need
            not be whole), shared among the stages and the fine-tune in the
            proportions of `epochs_per_stage` and `finetune_epochs`; None
            counts the plan in those epochs.
        plan_steps: the same length in training steps.
    """

    stages: tuple
    epochs_per_stage: int = 5
    finetune_epochs: int = 5
    plan_epochs: float = None
    plan_steps: int = None

    def __post_init__(self):
        check_int("epochs_per_stage", self.epochs_per_stage, 1)
        check_int("finetune_epochs", self.finetune_epochs, 0)
        if self.plan_epochs is not None and self.plan_steps is not None:
            raise ValueError(
                "RecursivePruning: give at most one of plan_epochs and plan_steps, received "
                f"plan_epochs={self.plan_epochs!r}, plan_steps={self.plan_steps!r}"
            )
        if self.plan_steps is not None:
            check_int("plan_steps", self.plan_steps, 1)
        epochs = self.plan_epochs
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0):
            raise ValueError(f"RecursivePruning: plan_epochs must be a number > 0, received: {epochs!r}")
        object.__setattr__(self, "stages", tuple(tuple(stage) for stage in self.stages))

    @classmethod
    def of(cls, names, groups_per_stage=1, **lengths):
        """The plan visiting the groups `names` in order, `groups_per_stage`
        at a time (None: all in one stage), with the `lengths` of `Plan`."""
        if groups_per_stage is not None:
            check_int("groups_per_stage", groups_per_stage, 1)
        names = list(names)
        size = groups_per_stage or max(1, len(names))
        return cls(tuple(tuple(names[i : i + size]) for i in range(0, len(names), size)), **lengths)

    def to_dict(self):
        """Plain data; `Plan(**plan.to_dict())` is an equal plan."""
        return dataclasses.asdict(self)

    @property
    def in_steps(self):
        """Whether the plan is counted in training steps (its length was
        given) rather than in epochs."""
        return self.plan_epochs is not None or self.plan_steps is not None

    def lengths(self, steps_per_epoch=None):
        """(stage length, fine-tune length): epochs, or steps for a plan
        given by its length."""
        if not self.in_steps:
            return self.epochs_per_stage, self.finetune_epochs
        count = len(self.stages)
        if self.plan_steps is not None:
            total, given = self.plan_steps, f"plan_steps={self.plan_steps}"
        elif steps_per_epoch:
            total = int(round(self.plan_epochs * steps_per_epoch))
            given = f"plan_epochs={self.plan_epochs} ({total} steps of {steps_per_epoch} an epoch)"
        else:
            raise ValueError(
                f"RecursivePruning: plan_epochs={self.plan_epochs} needs the steps of an epoch, "
                "which fit does not know for this data; pass plan_steps, or steps_per_epoch to fit"
            )
        if total < count:
            raise ValueError(
                f"RecursivePruning: {given} is shorter than the plan's {count} stages, "
                "which take at least one step each"
            )
        units = count * self.epochs_per_stage + self.finetune_epochs
        stage = max(1, int(total * self.epochs_per_stage / units))
        return stage, (total - count * stage if self.finetune_epochs else 0)

    def total_epochs(self, steps_per_epoch=None):
        """The most epochs the plan needs from its start: pass it to fit.
        A plan given in steps needs `steps_per_epoch`."""
        if not self.in_steps:
            return len(self.stages) * self.epochs_per_stage + self.finetune_epochs
        if self.plan_epochs is not None:
            return math.ceil(self.plan_epochs)
        return math.ceil(self.plan_steps / _steps_per_epoch_given(steps_per_epoch, "total_epochs"))

    def remaining_epochs(self, stage, done, steps_per_epoch=None):
        """The most epochs the plan needs from stage `stage` (an index; None
        for the fine-tune) with `done` epochs or steps of it done."""
        stage_length, finetune_length = self.lengths(steps_per_epoch)
        if stage is None:
            remaining = max(0, finetune_length - done)
        else:
            remaining = (len(self.stages) - stage) * stage_length - done + finetune_length
        if not self.in_steps:
            return remaining
        return math.ceil(remaining / _steps_per_epoch_given(steps_per_epoch, "remaining_epochs"))


def _steps_per_epoch_given(steps_per_epoch, caller):
    if not steps_per_epoch:
        raise ValueError(
            f"RecursivePruning.{caller}: a plan counted in steps needs steps_per_epoch, "
            f"received: {steps_per_epoch!r}"
        )
    return steps_per_epoch


def check_int(name, value, minimum):
    """Raises unless `value` is an int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"RecursivePruning: {name} must be an integer >= {minimum}, received: {value!r}")
