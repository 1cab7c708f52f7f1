"""Knowledge distillation: the loss against numpy, a teacher that never
trains, and a budgeted recursive plan on MNIST through a distilled model."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rbp as rbp
from keras_rbp._keras import keras
from keras_rbp.distillation import distillation_loss, distilled, output_kinds
from tests.conftest import mnist_dir

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _numpy_loss(student, teacher, temperature):
    def log_softmax(z):
        z = z / temperature
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    p = np.exp(log_softmax(teacher))
    return temperature**2 * np.mean(np.sum(p * (log_softmax(teacher) - log_softmax(student)), -1))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_the_distillation_loss_is_the_softened_kl_times_t_squared(temperature):
    rng = np.random.RandomState(0)
    student, teacher = rng.randn(8, 10) * 3, rng.randn(8, 10) * 3
    actual = float(distillation_loss(tf.constant(student, tf.float32), tf.constant(teacher, tf.float32), temperature))
    np.testing.assert_allclose(actual, _numpy_loss(student, teacher, temperature), rtol=1e-5)
    assert float(distillation_loss(tf.constant(teacher), tf.constant(teacher), temperature)) == pytest.approx(0, abs=1e-6)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _softmax(z):
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


@pytest.mark.parametrize("binary", [False, True])
def test_probabilities_are_distilled_as_their_logits(binary):
    rng = np.random.RandomState(1)
    student, teacher = rng.randn(8, 3) * 3, rng.randn(8, 3) * 3
    if binary:  # each unit two classes, of logits (z, 0)
        pair = lambda z: np.stack([z, np.zeros_like(z)], -1)
        expected = sum(_numpy_loss(pair(student[:, i]), pair(teacher[:, i]), 4.0) for i in range(3))
        to_probabilities = _sigmoid
    else:
        expected = _numpy_loss(student, teacher, 4.0)
        to_probabilities = _softmax
    cases = [(student, teacher, False), (to_probabilities(student), to_probabilities(teacher), True)]
    for s, t, probabilities in cases:
        actual = distillation_loss(tf.constant(s, tf.float32), tf.constant(t, tf.float32), 4.0, probabilities, binary)
        np.testing.assert_allclose(float(actual), expected, rtol=1e-4)


def test_output_kinds_follow_the_output_layers_activation():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5)(inputs)
    outputs = [keras.layers.Dense(3)(hidden), keras.layers.Dense(3, activation="softmax")(hidden),
               keras.layers.Softmax()(hidden), keras.layers.Dense(2, activation="sigmoid")(hidden),
               keras.layers.Dense(1)(hidden)]
    model = keras.Model(inputs, outputs)
    wrapped = keras.Model(inputs, model(inputs)[1])  # a nested model's output layer
    assert output_kinds(model) == [(False, False), (True, False), (True, False), (True, True), (False, True)]
    assert output_kinds(wrapped) == [(True, False)]


def _mnist(count):
    (x, y), (x_test, y_test) = rbp.datasets.load_mnist(mnist_dir())
    return x[:count], y[:count], x_test[:1000], y_test[:1000]


def _trained_lenet(x, y):
    """LeNet-5-Caffe trained one epoch, seeded."""
    keras.utils.set_random_seed(0)
    model = rbp.models.lenet5_caffe()
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return model


def test_a_distilled_fit_trains_the_pruned_model_and_leaves_the_teacher_untouched():
    x, y, _, _ = _mnist(512)
    keras.utils.set_random_seed(0)
    teacher = rbp.models.lenet5_caffe()
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    pruned = rbp.prune(teacher, dataset_size=len(x))
    model = distilled(pruned, teacher, temperature=2.0, weight=0.5)
    assert len(model.trainable_weights) == len(pruned.trainable_weights)  # none of the teacher's
    # The added loss is the weighted distillation term on the batch.
    logits = model(x[:16], training=False)
    expected = 0.5 * _numpy_loss(np.asarray(logits), np.asarray(teacher(x[:16], training=False)), 2.0)
    np.testing.assert_allclose(float(sum(model.losses) - sum(pruned.losses)), expected, rtol=1e-4)
    before = [w.copy() for w in pruned.get_weights()]
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    for a, b in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(before, pruned.get_weights()))


@pytest.mark.heavy  # prune_and_export's distillation test runs the same budgeted plan by default
def test_a_budgeted_plan_on_a_distilled_model_meets_its_target_on_the_pruned_model():
    x, y, x_test, y_test = _mnist(3000)
    teacher = _trained_lenet(x, y)
    pruned = rbp.prune(teacher, dataset_size=len(x), cost_aware=True)
    model = distilled(pruned, teacher)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    schedule = rbp.RecursivePruning(target_macs=0.3, plan_epochs=2, verbose=0)
    model.fit(x, y, batch_size=64, epochs=schedule.total_epochs(model, 47), callbacks=[schedule], verbose=0)
    small = rbp.shrink(pruned)
    totals = rbp.report(teacher, small).totals
    assert 0.95 * 0.3 <= totals["macs_after"] / totals["macs_before"] <= 0.3
    error = np.mean(np.argmax(small.predict(x_test, verbose=0), -1) != y_test)
    assert error < 0.2  # chance is 0.9; the 1-epoch teacher, cut to 30 % of its MACs in 2 epochs


def test_prune_and_export_distils_from_the_users_model():
    x, y, x_test, y_test = _mnist(2000)
    model = _trained_lenet(x, y)
    weights = [w.copy() for w in model.get_weights()]
    result = rbp.prune_and_export(model, (x, y), (x_test, y_test), target_macs=0.5, plan_epochs=1,
                                  distillation_weight=1.0, verbose=0)
    assert result.summary["pruning"]["settings"]["distillation_weight"] == 1.0
    assert 0.95 * 0.5 <= result.report.totals["macs_after"] / result.report.totals["macs_before"] <= 0.5
    assert result.summary["pruning"]["after"] < 0.2
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
