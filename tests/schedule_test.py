"""Tests of the RecursivePruning schedule and PruningSummaries."""

import glob
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_rbp as rbp
from keras_rbp._keras import keras
from keras_rbp.methods import METHODS

# The methods whose plan runs without a budget (magnitude needs one).
NOISE_METHODS = sorted(name for name, method in METHODS.items() if not method.ranks_by_weights)
# RBP by default; the peer methods' noises are marked heavy.
RESUMED_METHODS = [method if method == "rbp" else pytest.param(method, marks=pytest.mark.heavy)
                   for method in NOISE_METHODS]

from conftest import mnist_dir

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _small_pruned(seed=0, **prune_kwargs):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            L.Dense(12, activation="relu", name="h1"),
            L.Dense(10, activation="relu", name="h2"),
            L.Dense(8, activation="relu", name="h3"),
            L.Dense(3, name="out"),
        ]
    )
    prune_kwargs.setdefault("initial_keep_prob", 0.6)
    return rbp.prune(model, dataset_size=64, seed=seed, **prune_kwargs)


def _data(n=64, seed=0):
    """Inputs and labels that a small network can learn."""
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(n, 10)).astype("float32")
    y = np.argmax(x @ np.random.RandomState(99).normal(size=(10, 3)), axis=1)
    return x, y


class _ModeRecorder(keras.callbacks.Callback):
    """Records, at each epoch's start, every group's mode and noise scale."""

    def __init__(self):
        super().__init__()
        self.modes, self.scales, self.masks = [], [], []
        self.logits, self.thetas, self.sampling = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        groups = rbp.pruning_groups(self.model)
        self.modes.append([g.mode for g in groups.values()])
        self.scales.append([round(float(g.noise_scale.numpy()), 4) for g in groups.values()])
        self.masks.append([g.mask.numpy().copy() for g in groups.values()])
        self.logits.append([g.scaled_logits.numpy().copy() for g in groups.values()])
        self.thetas.append([g.theta().copy() for g in groups.values()])
        self.sampling.append([g.sampling for g in groups.values()])


def _fit(pruned, schedule, epochs=None, optimizer=None, **kwargs):
    pruned.compile(optimizer or keras.optimizers.SGD(0.0), LOSS)
    x, y = _data()
    recorder = _ModeRecorder()
    history = pruned.fit(
        x, y, batch_size=16, epochs=epochs or schedule.total_epochs(pruned),
        shuffle=False, verbose=0, callbacks=[schedule, recorder], **kwargs
    )
    return recorder, history


def test_stages_switch_modes_in_topological_order():
    pruned = _small_pruned()
    schedule = rbp.RecursivePruning(epochs_per_stage=2, finetune_epochs=1, verbose=0)
    assert schedule.stages(pruned) == [["h1"], ["h2"], ["h3"]]
    assert schedule.total_epochs(pruned) == 7
    recorder, history = _fit(pruned, schedule)
    A, O, F = "active", "off", "frozen"
    assert recorder.modes == [
        [A, O, O], [A, O, O], [F, A, O], [F, A, O], [F, F, A], [F, F, A], [F, F, F]
    ]
    assert recorder.scales[0][0] == 1.0 and recorder.scales[1][0] == 3.0
    assert history.history["rbp_stage"] == [1, 1, 2, 2, 3, 3, 4]
    assert [g.mode for g in rbp.pruning_groups(pruned).values()] == [F, F, F]


def test_only_the_stage_groups_train_their_logits():
    pruned = _small_pruned()
    schedule = rbp.RecursivePruning(epochs_per_stage=2, finetune_epochs=1, verbose=0)
    recorder, _ = _fit(pruned, schedule, optimizer=keras.optimizers.Adam(0.01))
    groups = list(rbp.pruning_groups(pruned).values())
    # Only the stage's groups draw their noise; every group draws again after fit.
    assert recorder.sampling == [[mode == "active" for mode in modes] for modes in recorder.modes]
    assert all(g.sampling for g in groups)
    final_logits = [g.scaled_logits.numpy() for g in groups]
    final_thetas = [g.theta() for g in groups]
    for epoch, modes in enumerate(recorder.modes):
        last = epoch + 1 == len(recorder.modes)
        logits_after = final_logits if last else recorder.logits[epoch + 1]
        thetas_after = final_thetas if last else recorder.thetas[epoch + 1]
        for group, mode in enumerate(modes):
            changed = not np.array_equal(recorder.logits[epoch][group], logits_after[group])
            if mode == "active":
                assert changed, (epoch, group)
            elif mode == "off":  # never trained: Adam has no momentum to carry it
                assert not changed, (epoch, group)
            elif not (epoch + 1 < len(recorder.modes) and recorder.modes[epoch + 1][group] != "frozen"):
                # Frozen: its theta (mask * frozen value) no longer moves.
                np.testing.assert_array_equal(recorder.thetas[epoch][group], thetas_after[group])


def test_masks_are_monotone_and_thresholded_at_pi():
    pruned = _small_pruned()
    groups = rbp.pruning_groups(pruned)
    pis = {}
    for name, noise in groups.items():
        values = np.linspace(-0.3, 0.3, noise.channels).astype("float32")
        noise.scaled_logits.assign(values)  # pi from 0.05 to 0.95; SGD(0) keeps it
        pis[name] = noise.keep_probability()
    recorder, _ = _fit(pruned, rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=0, verbose=0))
    for name, noise in groups.items():
        np.testing.assert_array_equal(noise.mask.numpy(), pis[name] >= 0.5)
        np.testing.assert_allclose(noise.frozen_value.numpy(), pis[name] * (pis[name] >= 0.5))
    for before, after in zip(recorder.masks, recorder.masks[1:]):
        for a, b in zip(before, after):
            assert np.all(b <= a)  # a removed channel never comes back


def test_a_budget_ranks_channels_whose_pi_rounds_to_one_by_their_logits():
    pruned = _small_pruned()
    groups = rbp.pruning_groups(pruned)
    for noise in groups.values():  # phi from 20 up: every pi is 1.0 in float32
        noise.scaled_logits.assign((20.0 + np.arange(noise.channels, dtype="float32")) / noise.logit_scale)
        assert np.all(noise.keep_probability() == 1.0)
    _fit(pruned, rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=0, target_params=0.5, verbose=0))
    for name, noise in groups.items():
        mask = noise.mask.numpy() > 0
        assert 0 < mask.sum() < mask.size, name
        assert mask[-mask.sum():].all(), name  # the channels of largest phi


def test_min_channels_keeps_the_largest_pi_and_warns():
    pruned = _small_pruned(initial_keep_prob=0.1)
    h1 = rbp.pruning_groups(pruned)["h1"]
    h1.scaled_logits.assign(np.linspace(-0.5, -0.2, 12).astype("float32"))
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=0, min_channels=3, verbose=0)
    with pytest.warns(UserWarning, match="group 'h1' would keep 0 of 12 channels; keeping the 3"):
        _fit(pruned, schedule)
    np.testing.assert_array_equal(np.flatnonzero(h1.mask.numpy()), [9, 10, 11])
    assert all(g.mask.numpy().sum() == 3 for g in rbp.pruning_groups(pruned).values())


def test_collapsed_noise_ends_its_stage_early_and_training_stops():
    pruned = _small_pruned()
    for noise in rbp.pruning_groups(pruned).values():
        noise.scaled_logits.assign(np.where(np.arange(noise.channels) % 2, 3.0, -3.0).astype("float32"))
    schedule = rbp.RecursivePruning(epochs_per_stage=4, finetune_epochs=1, verbose=0)
    recorder, history = _fit(pruned, schedule)
    assert history.history["rbp_stage"] == [1, 2, 3, 4]  # one epoch a stage, then the fine-tune
    assert len(recorder.modes) == 4  # fit stopped once the plan was done, not after 13 epochs


def test_a_stage_ending_undecided_says_how_many_channels_were_undecided():
    pruned = _small_pruned()
    noise = rbp.pruning_groups(pruned)["h1"]
    # Two channels collapsed, the other ten at pi = 0.6 (SGD at rate 0 keeps them).
    noise.scaled_logits.assign(np.r_[3.0, -3.0, np.full(10, np.log(1.5) / 10)].astype("float32"))
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=0, verbose=0)
    with pytest.warns(UserWarning) as caught:
        _fit(pruned, schedule)
    messages = [str(w.message) for w in caught]
    assert any("stage 1/3 (h1) reached its length (1 epochs) with 10 of 12 channels undecided" in m
               for m in messages), messages
    assert schedule.stage_ends[0] == {"stage": 1, "groups": ["h1"], "undecided": 10, "channels": 12}
    assert [end["stage"] for end in schedule.stage_ends] == [1, 2, 3]


def test_all_at_once_schedule():
    pruned = _small_pruned()
    schedule = rbp.RecursivePruning(epochs_per_stage=2, finetune_epochs=1, groups_per_stage=None, verbose=0)
    assert schedule.stages(pruned) == [["h1", "h2", "h3"]]
    recorder, _ = _fit(pruned, schedule)
    assert recorder.modes == [["active"] * 3] * 2 + [["frozen"] * 3]


def _train_plan(pruned, schedule, epoch_splits, optimizer=None):
    """Runs the plan over several fit calls, each a (start, end) epoch range."""
    pruned.compile(optimizer or keras.optimizers.Adam(0.01), LOSS)
    x, y = _data(96, seed=1)
    for start, end in epoch_splits:
        pruned.fit(x, y, batch_size=16, initial_epoch=start, epochs=end, shuffle=False,
                   verbose=0, callbacks=[schedule])
    return _state(pruned)


def _state(model):
    return {
        name: (n.mode, n.mask.numpy(), n.frozen_value.numpy())
        for name, n in rbp.pruning_groups(model).items()
    }


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0]
        np.testing.assert_array_equal(a[name][1], b[name][1])
        np.testing.assert_allclose(a[name][2], b[name][2], rtol=1e-6, atol=1e-7)


def _plan():
    return rbp.RecursivePruning(epochs_per_stage=3, finetune_epochs=1, check_epochs=False, verbose=0)


@pytest.mark.heavy
def test_several_fit_calls_equal_one():
    kwargs = dict(kl_weight=0.1, initial_keep_prob=0.7)
    one = _train_plan(_small_pruned(3, **kwargs), _plan(), [(0, 10)])
    several = _train_plan(_small_pruned(3, **kwargs), _plan(), [(0, 2), (2, 4), (4, 10)])
    _assert_same_state(one, several)
    assert any(mask.sum() < mask.size for _, mask, _ in one.values())


@pytest.mark.parametrize("method", RESUMED_METHODS)
def test_checkpoint_mid_stage_resumes_in_a_new_model(tmp_path, method):
    kwargs = dict(kl_weight=0.1, initial_keep_prob=0.7, method=method)
    uninterrupted = _train_plan(_small_pruned(4, **kwargs), _plan(), [(0, 10)])

    first = _small_pruned(4, **kwargs)
    path = str(tmp_path / "checkpoint.keras")
    _train_plan(first, _plan(), [(0, 4)])  # stops inside stage 2
    assert [g.mode for g in rbp.pruning_groups(first).values()] == ["frozen", "active", "off"]
    first.save(path)
    restored = keras.models.load_model(path)
    assert restored is not first
    x, y = _data(96, seed=1)
    restored.fit(x, y, batch_size=16, initial_epoch=4, epochs=10, shuffle=False, verbose=0,
                 callbacks=[_plan()])
    _assert_same_state(uninterrupted, _state(restored))


@pytest.mark.parametrize("method", RESUMED_METHODS)
def test_backup_and_restore_resumes_the_plan(tmp_path, method):
    kwargs = dict(kl_weight=0.1, initial_keep_prob=0.7, method=method)
    uninterrupted = _train_plan(_small_pruned(5, **kwargs), _plan(), [(0, 10)], optimizer=keras.optimizers.SGD(0.1))

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 5:
                raise KeyboardInterrupt

    x, y = _data(96, seed=1)
    backup = str(tmp_path / "backup")

    def run(extra):
        pruned = _small_pruned(5, **kwargs)
        pruned.compile(keras.optimizers.SGD(0.1), LOSS)
        schedule = rbp.RecursivePruning(epochs_per_stage=3, finetune_epochs=1, verbose=0)
        pruned.fit(x, y, batch_size=16, epochs=10, shuffle=False, verbose=0,
                   callbacks=[schedule, keras.callbacks.BackupAndRestore(backup)] + extra)
        return pruned

    with pytest.raises(KeyboardInterrupt):
        run([Interrupt()])
    _assert_same_state(uninterrupted, _state(run([])))


class _StepRecorder(keras.callbacks.Callback):
    """Records, at each training step's start, every group's mode and the
    first group's noise scale."""

    def __init__(self):
        super().__init__()
        self.modes, self.scales = [], []

    def on_train_batch_begin(self, batch, logs=None):
        groups = list(rbp.pruning_groups(self.model).values())
        self.modes.append("".join(g.mode[0] for g in groups))
        self.scales.append(round(float(groups[0].noise_scale.numpy()), 4))


def test_a_plan_in_steps_ends_its_stages_mid_epoch():
    pruned = _small_pruned()
    pruned.compile(keras.optimizers.SGD(0.0), LOSS)  # pi stays at 0.6: no stage collapses
    # Units of 3 + 3 + 3 + 1: stages of int(14 * 3 / 10) = 4 steps, a fine-tune of 2.
    schedule = rbp.RecursivePruning(epochs_per_stage=3, finetune_epochs=1, plan_steps=14, verbose=0)
    assert schedule.lengths(pruned) == (4, 2)
    x, y = _data()  # 4 steps an epoch at batch 16
    recorder = _StepRecorder()
    pruned.fit(x, y, batch_size=16, epochs=schedule.total_epochs(pruned, steps_per_epoch=4),
               shuffle=False, verbose=0, callbacks=[schedule, recorder])
    # a: active, o: off, f: frozen; stage 2 starts at step 4, inside epoch 2.
    assert recorder.modes == ["aoo"] * 4 + ["fao"] * 4 + ["ffa"] * 4 + ["fff"] * 2
    assert recorder.scales[:4] == [1.0, round(1 + 2 / 3, 4), round(1 + 4 / 3, 4), 3.0]


def test_plan_epochs_is_shared_in_the_proportions_of_the_default_plan():
    pruned = _small_pruned()
    schedule = rbp.RecursivePruning(epochs_per_stage=4, finetune_epochs=6, plan_epochs=2.5)
    # 3 groups: 3 x 4 + 6 = 18 units over 2.5 x 100 = 250 steps.
    assert schedule.lengths(pruned, steps_per_epoch=100) == (55, 85)
    assert schedule.total_epochs(pruned) == 3
    with pytest.raises(ValueError, match=r"plan_epochs=2.5 needs the steps of an epoch"):
        schedule.lengths(pruned)
    with pytest.raises(ValueError, match=r"plan_steps=2 is shorter than the plan's 3 stages"):
        rbp.RecursivePruning(plan_steps=2).lengths(pruned)


@pytest.mark.heavy
def test_a_plan_cut_mid_epoch_resumes_from_backup_and_restore(tmp_path):
    kwargs = dict(kl_weight=0.1, initial_keep_prob=0.7)
    # Every batch holds the same examples, so Keras 3, which restarts a
    # restored epoch at its first batch, trains on what tf_keras, which
    # resumes at the saved batch, trains on; the plan must resume at its step.
    x, y = _data(16, seed=1)
    x, y = np.tile(x, (4, 1)), np.tile(y, 4)
    backup = str(tmp_path / "backup")

    class Interrupt(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_begin(self, batch, logs=None):
            if Interrupt.steps == 10:  # inside stage 3 and epoch 3
                raise KeyboardInterrupt
            Interrupt.steps += 1

    def run(callbacks):
        pruned = _small_pruned(5, **kwargs)
        pruned.compile(keras.optimizers.Adam(0.05), LOSS)
        schedule = rbp.RecursivePruning(epochs_per_stage=3, finetune_epochs=1, plan_steps=14, verbose=0)
        steps = _StepRecorder()
        pruned.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0,
                   callbacks=[schedule] + callbacks + [steps])
        return pruned, steps.modes

    uninterrupted, modes = run([])
    assert len(modes) == 14
    with pytest.raises(KeyboardInterrupt):
        run([keras.callbacks.BackupAndRestore(backup, save_freq=1), Interrupt()])
    resumed, modes = run([keras.callbacks.BackupAndRestore(backup, save_freq=1)])
    assert modes == ["ffa"] * 2 + ["fff"] * 2  # the plan's last 4 steps, no more
    _assert_same_state(_state(uninterrupted), _state(resumed))
    assert any(mask.sum() < mask.size for _, mask, _ in _state(resumed).values())


@pytest.mark.heavy
def test_mnist_lenet_300_100_prunes_every_hidden_group():
    (x_train, y_train), (x_test, y_test) = rbp.datasets.load_mnist(mnist_dir())
    keras.utils.set_random_seed(0)
    model = rbp.models.lenet_300_100()
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=3, verbose=0)
    pruned = rbp.prune(model, dataset_size=len(x_train), kl_weight=10.0, initial_keep_prob=0.9)
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    schedule = rbp.RecursivePruning(epochs_per_stage=2, finetune_epochs=1, verbose=0)
    pruned.fit(x_train, y_train, batch_size=128, epochs=schedule.total_epochs(pruned),
               validation_split=0.1, callbacks=[schedule], verbose=0)
    groups = rbp.pruning_groups(pruned)
    kept = {name: int(g.mask.numpy().sum()) for name, g in groups.items()}
    _, accuracy = pruned.evaluate(x_test, y_test, verbose=0)
    print(f"LeNet-300-100 kept {kept}, test accuracy {accuracy:.4f}")
    # Every hidden group loses channels and keeps some, and the small model
    # has exactly those widths and the pruned model's outputs.
    assert list(kept) == ["fc1", "fc2"]
    assert 0 < kept["fc1"] < 300 and 0 < kept["fc2"] < 100, kept
    assert all(g.mode == "frozen" for g in groups.values())
    small = rbp.shrink(pruned)
    assert rbp.report(model, small).architecture_after == f"784-{kept['fc1']}-{kept['fc2']}"
    np.testing.assert_allclose(small.predict(x_test[:500], verbose=0), pruned.predict(x_test[:500], verbose=0),
                               atol=1e-4)
    assert accuracy > 0.97


@pytest.mark.heavy
def test_mnist_resnet_coupled_stream_shrinks_to_its_mask():
    """The stem and both blocks' second BatchNormalization write one
    residual stream: one noise, one stage, and shrink removes exactly what
    its mask removes (here pruned to half the model's MACs)."""
    (x_train, y_train), _ = rbp.datasets.load_mnist(mnist_dir())
    x_train, y_train = x_train[:3000], y_train[:3000]
    keras.utils.set_random_seed(0)
    model = rbp.models.small_resnet(width=12)
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(x_train, y_train, batch_size=128, epochs=1, verbose=0)
    pruned = rbp.prune(model, dataset_size=len(x_train), kl_weight=150.0, cost_aware=True)
    groups = rbp.pruning_groups(pruned)
    assert list(groups) == ["stem_bn_rbp_noise", "block1_bn1", "block2_bn1"]
    assert groups["stem_bn_rbp_noise"].calls == 3
    pruned.compile(keras.optimizers.Adam(3e-3), LOSS)
    schedule = rbp.RecursivePruning(epochs_per_stage=2, finetune_epochs=1, target_macs=0.5, verbose=0)
    pruned.fit(x_train, y_train, batch_size=128, epochs=schedule.total_epochs(pruned),
               callbacks=[schedule], verbose=0)
    kept = int(groups["stem_bn_rbp_noise"].mask.numpy().sum())
    inner = [int(groups[name].mask.numpy().sum()) for name in ("block1_bn1", "block2_bn1")]
    assert 1 <= kept < 12 and all(1 <= width <= 12 for width in inner)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = rbp.shrink(pruned, strict=True)
    for name in ("stem", "block1_conv2", "block2_conv2"):
        assert small.get_layer(name).filters == kept, name
    for name in ("block1_conv1", "block2_conv1"):
        assert small.get_layer(name).filters == int(groups[name.replace("conv", "bn")].mask.numpy().sum())
    np.testing.assert_allclose(small(x_train[:64]), pruned(x_train[:64], training=False), rtol=1e-4, atol=1e-4)
    # The MACs by hand: 3x3 convolutions on 28x28 (the stem and block 1) and
    # 14x14 (block 2) images, the classifier on 7x7 x the stream's channels.
    totals = rbp.report(model, small).totals

    def macs(stream, width1, width2):
        return (28 * 28 * 9 * stream * (1 + 2 * width1) + 14 * 14 * 9 * 2 * stream * width2
                + 7 * 7 * stream * 10)

    assert totals["macs_before"] == macs(12, 12, 12)
    assert totals["macs_after"] == macs(kept, *inner) <= 0.5 * totals["macs_before"]


def _replica_values(strategy, variable):
    """A variable's value on each replica (Keras 3 wraps the tf.Variable in
    a `value` property; tf_keras's is the tf.Variable, `value` a method)."""
    value = getattr(variable, "value", None)
    variable = variable if value is None or callable(value) else value
    return [copy.numpy() for copy in strategy.experimental_local_results(variable)]


def test_mirrored_strategy_runs_the_plan(strategy):
    with strategy.scope():
        pruned = _small_pruned(6)
        pruned.compile(keras.optimizers.SGD(0.0), LOSS)  # pi stays as set: each mask is known
    groups = rbp.pruning_groups(pruned)
    pis = {}
    for name, noise in groups.items():
        noise.scaled_logits.assign(np.linspace(-0.3, 0.3, noise.channels).astype("float32"))
        pis[name] = noise.keep_probability()
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=1, verbose=0)
    recorder = _ModeRecorder()
    x, y = _data()
    history = pruned.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[schedule, recorder])
    A, O, F = "active", "off", "frozen"
    assert recorder.modes == [[A, O, O], [F, A, O], [F, F, A], [F, F, F]]
    assert history.history["rbp_stage"] == [1, 2, 3, 4]
    for name, noise in groups.items():
        # Both replicas hold the mask and theta the plan froze: pi >= 0.5.
        mask = pis[name] >= 0.5
        assert 0 < mask.sum() < mask.size
        masks, values = _replica_values(strategy, noise.mask), _replica_values(strategy, noise.frozen_value)
        assert len(masks) == 2
        for replica_mask, replica_value in zip(masks, values):
            np.testing.assert_array_equal(replica_mask, mask, err_msg=name)
            np.testing.assert_allclose(replica_value, pis[name] * mask, rtol=1e-6, err_msg=name)


def test_pruning_summaries_write_scalars_and_histograms(tmp_path):
    pruned = _small_pruned()
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=0, target_macs=0.5, verbose=0)
    pruned.compile("adam", LOSS)
    x, y = _data()
    pruned.fit(x, y, epochs=3, verbose=0, callbacks=[schedule, rbp.PruningSummaries(str(tmp_path))])
    tags = set()
    for path in glob.glob(os.path.join(str(tmp_path), "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {"rbp/kept_channels/h1", "rbp/mean_pi/h2", "rbp/kl/h3", "rbp/pi/h1",
            "rbp/budget/target_macs", "rbp/budget/expected_macs"} <= tags


def test_stage_change_line_is_printed(capsys):
    pruned = _small_pruned()
    _fit(pruned, rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=0), validation_split=0.25)
    out = capsys.readouterr().out
    assert "RecursivePruning: stage 1/3 done: h1 keeps" in out
    assert "(val_loss " in out


def test_plan_longer_than_fit_is_refused():
    pruned = _small_pruned()
    with pytest.raises(ValueError, match="plan needs up to 7 more epochs but fit runs 5.*pass epochs=7"):
        _fit(pruned, rbp.RecursivePruning(epochs_per_stage=2, finetune_epochs=1), epochs=5)


def test_model_without_noise_is_refused():
    model = keras.Sequential([keras.Input((10,)), L.Dense(3)])
    with pytest.raises(ValueError, match="has no RBP noise; wrap it with keras_rbp.prune"):
        _fit(model, rbp.RecursivePruning())


def test_uncompiled_model_is_refused():
    schedule = rbp.RecursivePruning()
    schedule.set_model(_small_pruned())
    with pytest.raises(RuntimeError, match="was not compiled"):
        schedule.on_train_begin()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(threshold=1.0), "threshold must be in \\(0, 1\\), received: 1.0"),
        (dict(epochs_per_stage=0), "epochs_per_stage must be an integer >= 1, received: 0"),
        (dict(max_noise_scale=0.5), "max_noise_scale must be >= 1, received: 0.5"),
        (dict(widths="pi"), r"widths must be one of \('share', 'posterior'\), received: 'pi'"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rbp.RecursivePruning(**kwargs)


def test_nan_loss_stops_and_keeps_the_last_good_state():
    pruned = _small_pruned()
    x, y = _data()
    x[40:] = np.nan
    pruned.compile("sgd", LOSS)
    before = [w.copy() for w in pruned.get_weights()]
    with pytest.raises(FloatingPointError, match="loss became nan in stage 1 \\(groups \\['h1'\\]\\), at batch 2"):
        pruned.fit(x, y, batch_size=16, epochs=7, shuffle=False, verbose=0,
                   callbacks=[rbp.RecursivePruning(epochs_per_stage=2, finetune_epochs=1)])
    for a, b in zip(before, pruned.get_weights()):
        np.testing.assert_array_equal(a, b)
