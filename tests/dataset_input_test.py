"""Training from a tf.data.Dataset: the dataset size and a repeated dataset
read with steps_per_epoch."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rbp as rbp
from conftest import mnist_dir
from keras_rbp._keras import keras

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    return keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu"), L.Dense(2)])


def _dataset(examples, batch_size):
    x = np.random.RandomState(0).rand(examples, 6).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, np.arange(examples) % 2)).batch(batch_size)


def test_a_finite_batched_dataset_gives_its_number_of_examples():
    pruned = rbp.prune(_model(), dataset_size=_dataset(1000, 128))  # 7 full batches and 104
    (noise,) = rbp.pruning_groups(pruned).values()
    assert noise.dataset_size == 1000


UNCOUNTABLE = {
    "infinite (repeated)": lambda data: data.repeat(),
    "of unknown length": lambda data: data.filter(lambda x, y: tf.reduce_all(y >= 0)),
    "of single examples": lambda data: tf.data.Dataset.from_tensor_slices((np.ones((100, 6)), np.zeros(100))),
}


@pytest.mark.parametrize("message", list(UNCOUNTABLE))
def test_a_dataset_whose_size_cannot_be_counted_is_refused(message):
    with pytest.raises(ValueError, match="dataset_size") as error:
        rbp.prune(_model(), dataset_size=UNCOUNTABLE[message](_dataset(100, 10)))
    assert message in str(error.value)


def test_a_plan_in_steps_needs_the_steps_of_an_epoch():
    pruned = rbp.prune(_model(), dataset_size=100)
    schedule = rbp.RecursivePruning(plan_steps=40)
    with pytest.raises(ValueError, match="remaining_epochs: a plan counted in steps needs steps_per_epoch"):
        schedule.remaining_epochs(pruned)
    assert schedule.remaining_epochs(pruned, steps_per_epoch=10) == 4


@pytest.mark.parametrize("plan", ["epochs", "steps"])
def test_lenet_300_100_prunes_from_a_repeated_dataset_read_with_steps_per_epoch(plan):
    (x_train, y_train), (x_test, y_test) = rbp.datasets.load_mnist(mnist_dir())
    batch_size, steps_per_epoch = 128, 40
    size = batch_size * steps_per_epoch
    dataset = (
        tf.data.Dataset.from_tensor_slices((x_train[:size], y_train[:size]))
        .shuffle(size, seed=0)
        .batch(batch_size)
        .repeat()
    )
    baseline = rbp.models.lenet_300_100()
    baseline.compile(keras.optimizers.Adam(1e-3), LOSS)
    baseline.fit(dataset, epochs=2, steps_per_epoch=steps_per_epoch, verbose=0)
    pruned = rbp.prune(baseline, dataset_size=size, kl_weight=10.0)
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    if plan == "epochs":
        schedule = rbp.RecursivePruning(epochs_per_stage=2, finetune_epochs=1, target_macs=0.3, verbose=0)
    else:
        schedule = rbp.RecursivePruning(plan_steps=180, target_macs=0.3, verbose=0)
    epochs = schedule.total_epochs(pruned, steps_per_epoch)
    assert epochs == 5
    history = pruned.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=[schedule], verbose=0)
    assert len(history.epoch) == 5
    groups = rbp.pruning_groups(pruned)
    assert all(noise.mode == "frozen" for noise in groups.values())
    kept = {name: int(noise.mask.numpy().sum()) for name, noise in groups.items()}
    assert 0 < kept["fc1"] < 300 and 0 < kept["fc2"] < 100, kept
    small = rbp.shrink(pruned)
    totals = rbp.report(baseline, small).totals
    assert totals["macs_after"] <= 0.3 * totals["macs_before"]
    error = np.mean(np.argmax(small.predict(x_test[:2000], verbose=0), -1) != y_test[:2000])
    baseline_error = np.mean(np.argmax(baseline.predict(x_test[:2000], verbose=0), -1) != y_test[:2000])
    assert error <= baseline_error + 0.03, (error, baseline_error)
