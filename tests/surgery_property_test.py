"""Property test: shrink() of small random graphs is exact. Every block is
a supported construct, so a ShrinkError fails the test."""

import warnings

from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np

import keras_rbp as rbp
from keras_rbp._keras import keras
from tests.surgery_test import _freeze_random, assert_same_outputs

L = keras.layers
BLOCKS = ("conv", "conv_bn", "residual", "concat", "depthwise", "separable", "pool",
          "layer_norm", "multiply", "sigmoid", "operations", "squeeze_excitation", "grouped",
          "transposed", "shared")


def _block(kind, x, width, index):
    name = f"b{index}"
    conv = lambda filters, n: L.Conv2D(filters, 3, padding="same", name=f"{name}_{n}")  # noqa: E731
    if kind == "conv":
        return L.ReLU()(conv(width, "conv")(x))
    if kind == "conv_bn":
        return L.ReLU()(L.BatchNormalization(name=f"{name}_bn")(conv(width, "conv")(x)))
    if kind == "residual":
        y = conv(x.shape[-1], "conv")(L.ReLU()(x))
        return L.Add()([x, y])
    if kind == "concat":
        return L.Concatenate()([x, L.ReLU()(conv(width, "conv")(x))])
    if kind == "depthwise":
        return L.ReLU()(L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name=f"{name}_dw")(x))
    if kind == "separable":
        return L.SeparableConv2D(width, 3, padding="same", activation="relu", name=f"{name}_sep")(x)
    if kind == "pool":
        return L.MaxPooling2D(padding="same")(x)
    if kind == "layer_norm":
        return L.LayerNormalization()(x)
    if kind == "multiply":
        return L.Multiply()([x, L.Activation("tanh")(conv(x.shape[-1], "conv")(x))])
    if kind == "operations":  # a hard-swish and an affine map written with operations
        y = conv(width, "conv")(x)
        return y * (L.ReLU(6.0)(y + 3.0) * (1.0 / 6.0)) * 2.0 - 0.5
    if kind == "squeeze_excitation":
        se = L.GlobalAveragePooling2D(keepdims=True)(x)
        se = L.Conv2D(width, 1, activation="relu", name=f"{name}_reduce")(se)
        se = L.Conv2D(x.shape[-1], 1, activation="sigmoid", name=f"{name}_expand")(se)
        return L.Multiply()([x, se])
    if kind == "grouped":
        y = conv(2 * width, "conv")(x)
        return L.Conv2D(2 * width, 3, groups=2, padding="same", activation="relu", name=f"{name}_grouped")(y)
    if kind == "transposed":
        return L.Conv2DTranspose(width, 3, padding="same", activation="relu", name=f"{name}_up")(x)
    if kind == "shared":
        shared = conv(width, "shared")
        return L.Add()([shared(x), shared(L.ReLU()(x))])
    return L.Activation("sigmoid")(conv(width, "conv")(x))


def _model(kinds, widths):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(widths[0], 1, activation="relu", name="stem")(inputs)
    for index, (kind, width) in enumerate(zip(kinds, widths[1:])):
        x = _block(kind, x, width, index)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3)(x))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kinds=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4),
    widths=st.lists(st.integers(1, 6), min_size=5, max_size=5),
    keep=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_random_graphs_shrink_exactly(kinds, widths, keep, seed):
    pruned = rbp.prune(_model(kinds, widths), dataset_size=100)
    _freeze_random(pruned, keep=keep, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = rbp.shrink(pruned)
    images = np.random.RandomState(seed).rand(2, 6, 6, 3).astype("float32")
    assert_same_outputs(pruned, small, images)
    assert small.count_params() <= pruned.count_params()
