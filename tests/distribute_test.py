"""Training under tf.distribute.MirroredStrategy on two logical CPUs."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rbp as rbp
from keras_rbp._keras import keras

L = keras.layers


def _train(strategy, kl_weight, distill=False):
    """One epoch of plain SGD on a deterministic pruned model, or with
    `distill`, on it distilled from the unpruned model."""
    with strategy.scope():
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [keras.Input((10,)), L.Dense(12, activation="relu"), L.Dense(8, activation="relu"), L.Dense(3)]
        )
        pruned = rbp.prune(model, dataset_size=64, kl_weight=kl_weight, initial_keep_prob=0.7, seed=1)
        for noise in rbp.pruning_groups(pruned).values():
            noise.mode = "active"
            noise.noise_scale.assign(0.0)  # deterministic, so replicas can be compared
        trained = rbp.distilled(pruned, model, temperature=2.0) if distill else pruned
        trained.compile(
            keras.optimizers.SGD(0.5),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    rng = np.random.RandomState(0)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = rng.randint(0, 3, 64)
    trained.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return [w.numpy() for w in pruned.trainable_weights]


def test_two_logical_cpus_are_configured():
    assert len(tf.config.list_logical_devices("CPU")) == 2


@pytest.mark.parametrize("kl_weight, distill", [(1.0, False), (200.0, False), (1.0, True)],
                         ids=["kl1", "kl200", "kl1-distilled"])
def test_mirrored_training_counts_the_kl_and_the_distillation_once(strategy, kl_weight, distill):
    assert strategy.num_replicas_in_sync == 2
    single = _train(tf.distribute.get_strategy(), kl_weight, distill)
    mirrored = _train(strategy, kl_weight, distill)
    if distill:  # the distillation term moved the weights
        assert any(not np.allclose(a, b) for a, b in zip(single, _train(tf.distribute.get_strategy(), kl_weight)))
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mirrored_training_samples_noise_and_runs(strategy):
    with strategy.scope():
        pruned = rbp.prune(
            keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu"), L.Dense(2)]),
            dataset_size=32,
            seed=2,
        )
        noise = list(rbp.pruning_groups(pruned).values())[0]
        noise.mode = "active"
        pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = noise.keep_probability()
    history = pruned.fit(np.ones((32, 6)), np.arange(32) % 2, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert noise.steps_drawn == 8  # one draw per global step
    assert not np.allclose(before, noise.keep_probability())
