"""The magnitude baseline: its channel ranking against numpy, channel by
channel, on every kind of producer, and the channels a budget keeps."""

import numpy as np
import pytest

import keras_rbp as rbp
from conftest import mnist_dir
from keras_rbp import magnitude
from keras_rbp._keras import keras

L = keras.layers


def _l1(array, axis):
    """The L1 norm of each slice of `array` along `axis`, by a loop."""
    moved = np.moveaxis(np.abs(array), axis, 0)
    return np.array([moved[index].sum() for index in range(moved.shape[0])])


def _zoo():
    """Every producer kind: Dense, grouped, transposed, depthwise and
    separable convolutions, BatchNormalization with and without scale, a
    residual stream made by two convolutions, and input pixels read
    through a Flatten."""
    inputs = keras.Input((8, 8, 4), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = L.Conv2D(8, 3, padding="same", groups=2, name="grouped")(x)
    x = L.Conv2DTranspose(6, 3, padding="same", name="transposed")(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="depthwise")(x)
    x = L.SeparableConv2D(10, 3, padding="same", name="separable")(x)
    x = L.Conv2D(6, 1, name="before_bn")(x)
    x = L.BatchNormalization(name="bn")(x)
    y = L.Conv2D(5, 1, name="before_plain_bn")(x)
    y = L.BatchNormalization(scale=False, name="plain_bn")(y)
    left, right = L.Conv2D(7, 1, name="left")(y), L.Conv2D(7, 1, name="right")(y)
    x = L.Activation("relu", name="relu")(L.Add(name="add")([left, right]))
    x = L.Flatten(name="flatten")(L.GlobalAveragePooling2D(name="pool")(x))
    x = L.Dense(9, activation="relu", name="dense")(x)
    outputs = L.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization) and layer.scale:
            gamma, *rest = layer.get_weights()
            layer.set_weights([np.random.default_rng(0).normal(size=gamma.shape).astype("float32")] + rest)
    return model


def test_each_group_is_ranked_by_the_weights_that_make_it():
    model = _zoo()
    pruned = rbp.prune(model, dataset_size=100, method="magnitude")
    groups = rbp.pruning_groups(pruned)
    importance = magnitude.channel_importance(pruned, list(groups))

    def kernel(name, index=0):
        return model.get_layer(name).get_weights()[index]

    depthwise = kernel("depthwise")  # (3, 3, 6, 2): output channel c * 2 + k
    expected = {
        "conv": _l1(kernel("conv"), -1),
        "grouped": _l1(kernel("grouped"), -1),
        "transposed": _l1(kernel("transposed"), -2),
        "depthwise": np.array([np.abs(depthwise[:, :, c, k]).sum() for c in range(6) for k in range(2)]),
        "separable": _l1(kernel("separable", 1), -1),
        "bn": np.abs(kernel("bn")),  # the noise sits after the BatchNormalization
        "plain_bn": _l1(kernel("before_plain_bn"), -1),  # no gamma: the convolution before it
        "left_rbp_noise": _l1(kernel("left"), -1) + _l1(kernel("right"), -1),
        "dense": _l1(kernel("dense"), -1),
    }
    assert sorted(importance) == sorted(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(importance[name], values, rtol=1e-6, err_msg=name)


def test_input_pixels_are_ranked_by_the_weights_that_read_them():
    model = rbp.models.lenet_300_100((784,))
    pruned = rbp.prune(model, dataset_size=100, method="magnitude", input_features=True)
    importance = magnitude.channel_importance(pruned, ["image_rbp_noise"])
    np.testing.assert_allclose(importance["image_rbp_noise"], _l1(model.get_layer("fc1").get_weights()[0], 0),
                               rtol=1e-6)


def test_a_budget_keeps_the_channels_of_largest_norm():
    (x_train, y_train), _ = rbp.datasets.load_mnist(mnist_dir())
    x, y = x_train[:512].reshape(-1, 784), y_train[:512]
    model = rbp.models.lenet_300_100((784,))
    pruned = rbp.prune(model, dataset_size=len(x), method="magnitude", input_features=True)
    pruned.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=0, target_macs=0.2,
                                    max_noise_scale=1.0, verbose=0)
    pruned.fit(x, y, batch_size=128, epochs=schedule.total_epochs(pruned), callbacks=[schedule], verbose=0)
    norms = {
        "image_rbp_noise": _l1(model.get_layer("fc1").get_weights()[0], 0),
        "fc1": _l1(model.get_layer("fc1").get_weights()[0], -1),
        "fc2": _l1(model.get_layer("fc2").get_weights()[0], -1),
    }
    for name, noise in rbp.pruning_groups(pruned).items():
        mask = noise.mask.numpy() > 0
        assert 0 < mask.sum() < mask.size, name
        assert norms[name][mask].min() > norms[name][~mask].max(), name
        np.testing.assert_array_equal(noise.theta(), mask)  # kept channels pass unscaled
    small = rbp.shrink(pruned, keep_input_shape=False)
    assert rbp.report(small, small).totals["macs_after"] <= 0.2 * rbp.report(model, model).totals["macs_after"]


def test_magnitude_without_a_budget_is_refused_before_training():
    pruned = rbp.prune(rbp.models.lenet_300_100(), dataset_size=64, method="magnitude")
    pruned.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.zeros((64, 28, 28, 1), np.float32), np.zeros(64, np.int64)
    with pytest.raises(ValueError, match=r"groups \['fc1', 'fc2'\] use method 'magnitude'.*pass target_macs"):
        pruned.fit(x, y, epochs=5, verbose=0, callbacks=[rbp.RecursivePruning(epochs_per_stage=2, verbose=0)])


def test_a_group_no_weights_rank_is_refused_by_name_before_training():
    # The noise on the 28x28x1 image's one channel is read by a Flatten only.
    pruned = rbp.prune(rbp.models.lenet_300_100(), dataset_size=64, method="magnitude", input_features=True)
    pruned.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.zeros((64, 28, 28, 1), np.float32), np.zeros(64, np.int64)
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=0, target_macs=0.5, verbose=0)
    with pytest.raises(ValueError, match="group 'image_rbp_noise' is made and read by no layer"):
        pruned.fit(x, y, epochs=3, verbose=0, callbacks=[schedule])
    assert pruned.get_layer("image_rbp_noise").mode == "off"
