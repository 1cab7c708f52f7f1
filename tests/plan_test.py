"""The recursive plan's arithmetic, without a model: stages, lengths in
epochs and in steps, what is left from a point, and its plain-data form."""

import json

import pytest

from keras_rbp.plan import Plan

NAMES = ["conv1", "conv2", "fc1", "fc2", "fc3"]


def test_groups_are_visited_in_order_a_few_at_a_time():
    assert Plan.of(NAMES, 2).stages == (("conv1", "conv2"), ("fc1", "fc2"), ("fc3",))
    assert Plan.of(NAMES, None).stages == (tuple(NAMES),)
    assert Plan.of(NAMES).stages == tuple((name,) for name in NAMES)


def test_a_plan_in_epochs_runs_each_stage_then_the_fine_tune():
    plan = Plan.of(NAMES[:3], epochs_per_stage=4, finetune_epochs=2)
    assert not plan.in_steps
    assert plan.lengths() == (4, 2)
    assert plan.total_epochs() == 14
    assert plan.remaining_epochs(0, 0) == 14
    assert plan.remaining_epochs(1, 3) == 7  # stage 2 with 3 of its 4 epochs done: 1 + 4 + 2
    assert plan.remaining_epochs(None, 1) == 1
    assert plan.remaining_epochs(None, 5) == 0


def test_a_plan_of_given_length_shares_its_steps_as_the_epochs_say():
    # 3 stages of 5 and a fine-tune of 5: 100 steps give 25 a stage and 25 to the fine-tune.
    by_steps = Plan.of(NAMES[:3], epochs_per_stage=5, finetune_epochs=5, plan_steps=100)
    by_epochs = Plan.of(NAMES[:3], epochs_per_stage=5, finetune_epochs=5, plan_epochs=2.5)
    assert by_steps.in_steps and by_epochs.in_steps
    assert by_steps.lengths() == (25, 25)
    assert by_epochs.lengths(steps_per_epoch=40) == (25, 25)
    assert by_steps.total_epochs(steps_per_epoch=30) == 4
    assert by_epochs.total_epochs() == 3
    assert by_steps.remaining_epochs(2, 10, steps_per_epoch=30) == 2  # 15 + 25 steps left
    assert Plan.of(NAMES[:3], epochs_per_stage=5, finetune_epochs=0, plan_steps=100).lengths() == (33, 0)


def test_a_plan_in_steps_needs_the_steps_of_an_epoch_and_a_step_a_stage():
    with pytest.raises(ValueError, match="plan_epochs=2.5 needs the steps of an epoch"):
        Plan.of(NAMES, plan_epochs=2.5).lengths()
    with pytest.raises(ValueError, match="total_epochs: a plan counted in steps needs steps_per_epoch"):
        Plan.of(NAMES, plan_steps=100).total_epochs()
    with pytest.raises(ValueError, match=r"plan_steps=4 is shorter than the plan's 5 stages"):
        Plan.of(NAMES, plan_steps=4).lengths()


@pytest.mark.parametrize("arguments, message", [
    (dict(epochs_per_stage=0), "epochs_per_stage must be an integer >= 1, received: 0"),
    (dict(finetune_epochs=-1), "finetune_epochs must be an integer >= 0, received: -1"),
    (dict(plan_epochs=2, plan_steps=10), "give at most one of plan_epochs and plan_steps"),
    (dict(plan_epochs=0), "plan_epochs must be a number > 0, received: 0"),
    (dict(plan_steps=True), "plan_steps must be an integer >= 1, received: True"),
])
def test_bad_lengths_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        Plan.of(NAMES, **arguments)


def test_groups_per_stage_is_checked():
    with pytest.raises(ValueError, match="groups_per_stage must be an integer >= 1, received: 0"):
        Plan.of(NAMES, 0)


def test_a_plan_is_plain_data():
    plan = Plan.of(NAMES, 2, epochs_per_stage=3, finetune_epochs=1, plan_steps=90)
    assert Plan(**json.loads(json.dumps(plan.to_dict()))) == plan
