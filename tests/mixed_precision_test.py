"""Training, shrink and export under Keras' mixed-precision policies."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_rbp as rbp
from conftest import mnist_dir
from keras_rbp._keras import keras
from keras_rbp.exporting import tflite_outputs

L = keras.layers
POLICIES = {"mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}


@pytest.fixture(params=list(POLICIES))
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def test_noise_multiplies_in_the_compute_dtype_and_keeps_float32_parameters_and_kl(policy):
    noise = rbp.RBPNoise(dataset_size=100, kl_weight=3.0, seed=1)
    x = tf.ones((4, 6), POLICIES[policy])
    noise(x)
    noise.mode = "active"
    assert noise.compute_dtype == POLICIES[policy].name
    assert [v.dtype for v in (noise.scaled_logits, noise.mask, noise.frozen_value, noise.noise_scale)] == [
        tf.float32
    ] * 4
    with tf.GradientTape() as tape:
        outputs = noise(x, training=True)
        (kl,) = noise.losses
        loss = tf.reduce_sum(tf.cast(outputs, tf.float32)) + kl
    assert outputs.dtype == POLICIES[policy]
    assert kl.dtype == tf.float32
    # KL(Bernoulli(0.99) || Bernoulli(0.01)) on each of 6 channels, times
    # kl_weight / dataset_size: the initial keep and prior probabilities.
    pi, prior = 0.99, 0.01
    per_channel = pi * math.log(pi / prior) + (1 - pi) * math.log((1 - pi) / (1 - prior))
    np.testing.assert_allclose(float(kl), 6 * per_channel * 3.0 / 100, rtol=1e-5)
    assert noise.kl_loss() == pytest.approx(float(kl), rel=1e-6)
    assert len(np.unique(outputs.numpy().astype("float32"))) > 1  # sampled
    (gradient,) = tape.gradient(loss, noise.trainable_variables)
    assert gradient.dtype == tf.float32 and np.all(np.isfinite(gradient.numpy()))


def test_a_distilled_fit_runs_in_the_compute_dtype_with_a_float32_loss(policy):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), L.Dense(16, activation="relu"), L.Dense(3)])
    teacher_weights = [w.copy() for w in model.get_weights()]
    pruned = rbp.prune(model, dataset_size=64, seed=1)
    trained = rbp.distilled(pruned, model)
    trained.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.RandomState(0)
    x, y = rng.normal(size=(64, 10)).astype("float32"), rng.randint(0, 3, 64)
    trained(x[:8], training=True)
    (distillation,) = trained.get_layer("distillation").losses
    assert distillation.dtype == tf.float32 and float(distillation) >= 0
    assert trained(x[:8]).dtype == POLICIES[policy]
    history = trained.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for before, after in zip(teacher_weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


# bfloat16 by default; float16, slower on a CPU, is marked heavy.
@pytest.mark.parametrize("policy", [pytest.param("mixed_float16", marks=pytest.mark.heavy), "mixed_bfloat16"],
                         indirect=True)
def test_lenet5_prunes_shrinks_and_exports_a_float32_tflite_file(policy, tmp_path):
    (x_train, y_train), (x_test, _) = rbp.datasets.load_mnist(mnist_dir())
    x_train, y_train, x_test = x_train[:1024], y_train[:1024], x_test[:256]
    model = rbp.models.lenet5_caffe()
    assert model.get_layer("conv1").compute_dtype == POLICIES[policy].name
    pruned = rbp.prune(model, dataset_size=len(x_train), kl_weight=30.0, flatten_features=True, seed=3)
    pruned.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=1, target_macs=0.3, verbose=0)
    history = pruned.fit(x_train, y_train, batch_size=128, epochs=schedule.total_epochs(pruned),
                         callbacks=[schedule], verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(noise.mode == "frozen" for noise in rbp.pruning_groups(pruned).values())
    small = rbp.shrink(pruned)
    totals = rbp.report(model, small).totals
    assert 0.2 * totals["macs_before"] <= totals["macs_after"] <= 0.3 * totals["macs_before"]

    mixed_logits = small.predict(x_test, verbose=0)
    float32_logits = rbp.surgery.float32_copy(small).predict(x_test, verbose=0)
    report = rbp.export(small, tmp_path / "out", representative_data=x_test, quantize=[], benchmark=False)
    check = report["files"]["model.tflite"]["check"]
    assert check["value"] <= check["limit"]
    litert = rbp.exporting.Interpreter(model_path=str(tmp_path / "out" / "model.tflite"))
    litert.allocate_tensors()
    dtypes = {detail["dtype"] for detail in litert.get_tensor_details()}
    assert np.float16 not in dtypes and litert.get_input_details()[0]["dtype"] == np.float32
    np.testing.assert_allclose(tflite_outputs(str(tmp_path / "out" / "model.tflite"), small, [x_test])[0],
                               float32_logits, atol=1e-4)
    # The float32 file agrees with the mixed-precision model up to its rounding.
    assert np.mean(mixed_logits.argmax(1) == float32_logits.argmax(1)) >= 0.97
