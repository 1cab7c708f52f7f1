"""Property test: shrink() of small random graphs is exact. Every block is
a supported construct, so a ShrinkError fails the test."""

import warnings

from hypothesis import HealthCheck, example, given, settings, strategies as st
import numpy as np
import pytest

import keras_rbp as rbp
from keras_rbp._keras import keras
from keras_rbp.surgery import ChannelPlan
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


# Blocks whose layers read their input only through a convolution, which
# drops the rows of a removed input channel: every channel of the tensor
# before them that its mask removes can go.
READ_BY_CONVOLUTION = {"conv", "conv_bn", "sigmoid", "operations", "transposed", "grouped", "separable",
                       "shared"}
# Blocks whose output a pruning group of their own makes, and where a
# channel whose theta is 0 stays 0 (ReLU after it): that group's name.
ZERO_PRESERVING_GROUP = {"conv": "{name}_conv", "conv_bn": "{name}_bn", "separable": "{name}_sep",
                         "transposed": "{name}_up", "shared": "{name}_shared"}


def _free_groups(kinds):
    """The groups whose removed channels nothing else needs, worked out from
    the blocks alone: the group makes the tensor, zero stays zero through
    its activation, and the next block reads it only through a convolution
    (or it is the last block, read by the classifier's pooling and Dense)."""
    producers = [("conv", "stem")] + [(kind, ZERO_PRESERVING_GROUP.get(kind, "").format(name=f"b{index}"))
                                      for index, kind in enumerate(kinds)]
    readers = list(kinds) + ["classifier"]
    return {group for (kind, group), reader in zip(producers, readers)
            if group and (reader in READ_BY_CONVOLUTION or reader == "classifier")}


def _depthwise_input_kept(pruned, group):
    """The channels shrink keeps of the tensor a depthwise group reads: a
    depthwise output is made from its input channel and stays with it."""
    plan = ChannelPlan(pruned)
    op = next(op for op in plan.ops if op.name == _channel_layer(group))
    return set(plan.kept(op.inputs[0]).tolist())


def _channel_layer(group):
    """The layer that makes a group's channels: the wrapped layer of the
    same name, or the layer a standalone noise follows."""
    return group[: -len("_rbp_noise")] if group.endswith("_rbp_noise") else group


RANDOM_GRAPHS = given(
    kinds=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4),
    widths=st.lists(st.integers(1, 6), min_size=5, max_size=5),
    keep=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)


# The default run draws 50 graphs; `-m heavy`, 250.
@pytest.mark.parametrize("examples", [50, pytest.param(250, marks=pytest.mark.heavy)])
def test_random_graphs_shrink_exactly(examples):
    check = RANDOM_GRAPHS(_a_random_graph_shrinks_exactly)
    settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))(check)()


@example(kinds=["depthwise", "depthwise"], widths=[1, 1, 1, 1, 1], keep=0.5, seed=653)  # a chain of depthwise
def _a_random_graph_shrinks_exactly(kinds, widths, keep, seed):
    model = _model(kinds, widths)
    pruned = rbp.prune(model, dataset_size=100)
    masks = _freeze_random(pruned, keep=keep, seed=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = rbp.shrink(pruned)
    kept = rbp.kept_channels(pruned)
    images = np.random.RandomState(seed).rand(2, 6, 6, 3).astype("float32")
    assert_same_outputs(pruned, small, images)

    messages = [str(w.message) for w in caught]
    free = _free_groups(kinds)
    multiply_factors = {f"b{index}_conv" for index, kind in enumerate(kinds) if kind == "multiply"}
    removed = 0
    for group, noise in rbp.pruning_groups(pruned).items():
        mask, indices = masks[group], kept[group]
        assert len(mask) == noise.channels
        # The small layer holds exactly the channels the plan keeps (a
        # channel missing that the outputs need fails assert_same_outputs).
        assert small.get_layer(_channel_layer(group)).output.shape[-1] == len(indices), (group, kinds)
        # A channel the mask removes is kept only with a warning that says so,
        # but for two cases shrink leaves unsaid: a depthwise output whose
        # input channel is kept (by its sibling output or by the layers
        # before), and the multiply block's tanh factor where its other
        # factor, the block's input, keeps the channel.
        lost_channels = indices[~mask[indices]]
        lost = len(lost_channels)
        if group.endswith("_dw"):
            input_kept = _depthwise_input_kept(pruned, group)
            lost_channels = [c for c in lost_channels if c // 2 not in input_kept]  # depth_multiplier=2
        if group in multiply_factors:
            lost_channels = []
        if len(lost_channels):
            assert any(f"group {group!r} keeps {lost} channel(s)" in m for m in messages), (group, messages)
        if group in free and len(indices) > 1:  # nothing else needs them: the mask's removed channels go
            assert not lost, f"{group} in {kinds} keeps {indices} of mask {mask.astype(int)}"
        removed += noise.channels - len(indices)
    if removed:
        assert small.count_params() < model.count_params()
    else:
        assert small.count_params() == model.count_params()
