"""The whole path on the Keras 3 backend this run uses (KERAS_BACKEND:
TensorFlow, JAX or PyTorch): prune, plan, shrink, report, save and load,
and files that move between backends."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_rbp as rbp
from keras_rbp import _keras
from keras_rbp._keras import keras
from conftest import mnist_dir

pytestmark = [pytest.mark.every_backend, pytest.mark.skipif(not _keras.IS_KERAS_3, reason="Keras 3 backends")]

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BACKENDS = ("tensorflow", "jax", "torch")


def _mnist(examples):
    (x, y), (x_test, y_test) = rbp.datasets.load_mnist(mnist_dir())
    return x[:examples], y[:examples], x_test[:500], y_test[:500]


def _masks(pruned):
    return {name: noise.mask.numpy() > 0 for name, noise in rbp.pruning_groups(pruned).items()}


def _random_masks(pruned, seed):
    """Freezes every group to a random mask that keeps 1 to channels - 1."""
    rng = np.random.RandomState(seed)
    for noise in rbp.pruning_groups(pruned).values():
        mask = np.zeros(noise.channels, bool)
        mask[rng.permutation(noise.channels)[: rng.randint(1, noise.channels)]] = True
        noise.freeze(mask, rng.uniform(0.5, 1.5, noise.channels).astype("float32"))


def _assert_same_outputs(expected, actual, tolerance=1e-5):
    expected, actual = np.asarray(expected), np.asarray(actual)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale)


def _lenet5_plan(seed, callbacks=(), epochs=None, examples=1200):
    """LeNet-5-Caffe, trained an epoch, then a recursive plan to 30 % of its
    MACs; returns the baseline and the pruned model."""
    x, y, _, _ = _mnist(examples)
    keras.utils.set_random_seed(seed)
    model = rbp.models.lenet5_caffe()
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
    pruned = rbp.prune(model, dataset_size=len(x), seed=seed)
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=1, target_macs=0.3, verbose=0)
    pruned.fit(x, y, batch_size=64, epochs=epochs or schedule.total_epochs(pruned), shuffle=False, verbose=0,
               callbacks=[schedule, *callbacks])
    return model, pruned


def test_prune_plan_shrink_report_save_and_load(tmp_path):
    model, pruned = _lenet5_plan(seed=0)
    assert all(noise.mode == "frozen" for noise in rbp.pruning_groups(pruned).values())
    small = rbp.shrink(pruned)
    _, _, x_test, _ = _mnist(0)
    _assert_same_outputs(pruned.predict(x_test, verbose=0), small.predict(x_test, verbose=0))
    totals = rbp.report(model, small).totals
    target = 0.3 * totals["macs_before"]
    assert 0.994 * target <= totals["macs_after"] <= target  # within 0.6 % of the target, from below
    path = str(tmp_path / "small.keras")
    small.save(path)
    _assert_same_outputs(small.predict(x_test, verbose=0), keras.models.load_model(path).predict(x_test, verbose=0), 0)
    # The pruned model saves and loads with its noises, masks and seeds.
    pruned.save(str(tmp_path / "pruned.keras"))
    loaded = keras.models.load_model(str(tmp_path / "pruned.keras"))
    assert {name: mask.tolist() for name, mask in _masks(loaded).items()} == {
        name: mask.tolist() for name, mask in _masks(pruned).items()}


def test_a_seed_gives_the_same_masks_and_a_killed_plan_resumes_to_them(tmp_path):
    _, uninterrupted = _lenet5_plan(seed=3, examples=600)
    _, again = _lenet5_plan(seed=3, examples=600)
    expected = _masks(uninterrupted)
    assert {k: v.tolist() for k, v in _masks(again).items()} == {k: v.tolist() for k, v in expected.items()}

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:  # inside stage 3 of 3
                raise KeyboardInterrupt

    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        _lenet5_plan(seed=3, examples=600, callbacks=[keras.callbacks.BackupAndRestore(backup), Kill()])
    _, resumed = _lenet5_plan(seed=3, examples=600, callbacks=[keras.callbacks.BackupAndRestore(backup)])
    assert {k: v.tolist() for k, v in _masks(resumed).items()} == {k: v.tolist() for k, v in expected.items()}


def _hub_resnet():
    import keras_hub  # noqa: PLC0415  (the test extra's)

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(32, 32, 3))
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=10, preprocessor=None)


@pytest.mark.parametrize("build", [
    lambda: keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), weights=None, classes=10),
    _hub_resnet,
    lambda: rbp.models.small_vit(dim=32, heads=4, mlp_dim=48),
], ids=["MobileNetV3Small", "KerasHub_ResNet", "small_vit"])
def test_random_masks_shrink_exactly(build):
    model = build()
    pruned = rbp.prune(model, dataset_size=100)
    _random_masks(pruned, seed=0)
    small = rbp.shrink(pruned)
    shape = (8,) + tuple(model.inputs[0].shape[1:])
    x = np.random.RandomState(1).uniform(0, 1, shape).astype("float32")
    _assert_same_outputs(pruned.predict(x, verbose=0), small.predict(x, verbose=0))
    assert small.count_params() < model.count_params()


@pytest.mark.skipif(_keras.ON_TENSORFLOW, reason="LiteRT timing runs on the TensorFlow backend")
def test_a_latency_budget_names_the_backend_it_needs():
    with pytest.raises(ValueError, match=f"target_latency_ms=2.0 .* the backend is '{_keras.BACKEND}'"):
        rbp.RecursivePruning(target_latency_ms=2.0)


def test_a_shrunk_model_loads_under_every_other_backend(tmp_path):
    model = rbp.models.lenet5_caffe()
    pruned = rbp.prune(model, dataset_size=100)
    _random_masks(pruned, seed=2)
    small = rbp.shrink(pruned)
    path, inputs = str(tmp_path / "small.keras"), str(tmp_path / "inputs.npy")
    small.save(path)
    x = np.random.RandomState(0).uniform(0, 1, (16, 28, 28, 1)).astype("float32")
    np.save(inputs, x)
    expected = small.predict(x, verbose=0)
    outputs = str(tmp_path / "outputs.npy")
    script = textwrap.dedent(f"""
        import numpy as np, keras
        np.save({outputs!r}, keras.models.load_model({path!r}).predict(np.load({inputs!r}), verbose=0))
    """)
    others = [backend for backend in BACKENDS if backend != _keras.BACKEND and _installed(backend)]
    assert others, "no other Keras backend is installed"
    for backend in others:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                                env=dict(os.environ, KERAS_BACKEND=backend))
        assert result.returncode == 0, result.stderr[-2000:]
        _assert_same_outputs(expected, np.load(outputs), 1e-6)


def _installed(backend):
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0
