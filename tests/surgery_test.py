"""Tests of shrink(): one test per graph pattern, exact outputs, counts by hand."""

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_rbp as rbp
from keras_rbp._keras import keras
from keras_rbp.metrics import layer_stats
from keras_rbp.models import lenet5_caffe, lenet_300_100

L = keras.layers


def _freeze_random(pruned, keep=0.6, seed=0):
    """Freezes every group with a random mask and random theta values."""
    rng = np.random.RandomState(seed)
    groups = rbp.pruning_groups(pruned)
    masks = {name: rng.rand(g.channels) < keep for name, g in groups.items()}
    values = {name: rng.uniform(0.5, 1.5, g.channels).astype("float32") for name, g in groups.items()}
    rbp.freeze(pruned, masks, values)
    return masks


def _outputs(model, inputs, jit):
    if jit:
        return tf.function(lambda x: model(x, training=False), jit_compile=True)(inputs)
    return model(inputs, training=False)


def assert_same_outputs(pruned, small, inputs, jit=False, tolerance=1e-5):
    """The shrunk model's outputs (any structure) equal the pruned model's
    to float32 rounding: within `tolerance` of the largest (at least 1)."""
    expected = tf.nest.flatten(_outputs(pruned, inputs, jit))
    actual = tf.nest.flatten(_outputs(small, inputs, jit))
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= tolerance * max(1.0, np.abs(a).max())


def _counts(small):
    stats = [s for s in layer_stats(small) if s.kind != "selection"]
    return sum(s.params for s in stats), sum(s.macs for s in stats)


def _shrink(model, inputs, jit=False, **prune_kwargs):
    pruned = rbp.prune(model, dataset_size=100, **prune_kwargs)
    masks = _freeze_random(pruned)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, inputs, jit)
    return pruned, small, {name: int(mask.sum()) for name, mask in masks.items()}


def _images(*shape):
    return np.random.RandomState(1).rand(2, *shape).astype("float32")


def test_dense_chain():
    inputs = keras.Input((8,))
    x = L.Dense(16, activation="relu", name="d1")(inputs)
    x = L.Dense(12, activation="tanh", name="d2")(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(x))
    _, small, k = _shrink(model, _images(8))
    params = 8 * k["d1"] + k["d1"] + k["d1"] * k["d2"] + k["d2"] + k["d2"] * 3 + 3
    macs = 8 * k["d1"] + k["d1"] * k["d2"] + k["d2"] * 3
    assert _counts(small) == (params, macs)
    assert "keras_rbp" not in json.dumps(small.get_config(), default=str)


def test_sequential_dense_chain():
    model = keras.Sequential(
        [keras.Input((6,)), L.Dense(10, activation="relu", name="d1"), L.Dropout(0.2), L.Dense(2)]
    )
    _, small, k = _shrink(model, _images(6))
    assert isinstance(small, keras.Sequential)
    assert _counts(small)[1] == 6 * k["d1"] + k["d1"] * 2


def test_conv_chain():
    inputs = keras.Input((10, 10, 3))
    x = L.Conv2D(8, 3, activation="relu", name="c1")(inputs)
    x = L.Conv2D(6, 3, activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(4)(x))
    _, small, k = _shrink(model, _images(10, 10, 3))
    c1, c2 = k["c1"], k["c2"]
    params = 27 * c1 + c1 + 9 * c1 * c2 + c2 + 4 * c2 + 4
    macs = 27 * c1 * 64 + 9 * c1 * c2 * 36 + 4 * c2
    assert _counts(small) == (params, macs)


@pytest.mark.parametrize("recurrent", ["SimpleRNN", "GRU", "LSTM", "Bidirectional"])
def test_a_recurrent_layer_drops_the_kernel_rows_of_removed_filters(recurrent):
    inputs = keras.Input((12, 6))
    x = L.Conv1D(16, 3, activation="relu", name="conv")(inputs)
    if recurrent == "Bidirectional":
        x = L.Bidirectional(L.GRU(8, return_sequences=True), name="rnn")(x)
    else:
        x = getattr(L, recurrent)(8, return_sequences=True, name="rnn")(x)
    x = L.GlobalMaxPooling1D()(L.Dense(12, activation="relu", name="hidden")(x))
    model = keras.Model(inputs, L.Dense(3)(x))
    pruned, small, k = _shrink(model, np.random.RandomState(1).rand(2, 12, 6).astype("float32"))
    assert set(k) == {"conv", "hidden"}
    weights = small.get_layer("rnn").get_weights()
    directions = [weights[: len(weights) // 2], weights[len(weights) // 2 :]] if recurrent == "Bidirectional" else [weights]
    macs = 0
    for kernel, recurrent_kernel, *_ in directions:
        assert kernel.shape[0] == k["conv"] < 16 and recurrent_kernel.shape[0] == 8
        macs += 10 * (kernel.size + recurrent_kernel.size)  # 10 steps: the convolution's output length
    assert next(row for row in rbp.report(model, small).rows if row["layer"] == "rnn")["macs_after"] == macs


def test_conv_bn_relu():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(6, 3, padding="same", use_bias=False, name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.Activation("relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(4)(x))
    _randomise_batchnorm(model)
    pruned, small, k = _shrink(model, _images(8, 8, 3))
    assert set(k) == {"bn1", "bn2"}
    b1, b2 = k["bn1"], k["bn2"]
    params = 27 * b1 + 4 * b1 + 9 * b1 * b2 + 4 * b2 + 4 * b2 + 4
    macs = 27 * b1 * 64 + 9 * b1 * b2 * 64 + 4 * b2
    assert _counts(small) == (params, macs)


def _randomise_batchnorm(model):
    rng = np.random.RandomState(2)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.normal(size=gamma.shape), rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])


@pytest.mark.parametrize("flatten_format", ["channels_last", "channels_first"])
def test_flatten_channels_last(flatten_format):
    _check_flatten("channels_last", flatten_format, _images(6, 6, 2), jit=False)


@pytest.mark.parametrize("flatten_format", ["channels_last", "channels_first"])
def test_flatten_channels_first(flatten_format):
    _check_flatten("channels_first", flatten_format, _images(2, 6, 6), jit=True)


def _check_flatten(data_format, flatten_format, images, jit):
    inputs = keras.Input(images.shape[1:])
    x = L.Conv2D(5, 3, activation="relu", data_format=data_format, name="conv")(inputs)
    x = L.Flatten(data_format=flatten_format, name="flatten")(x)
    x = L.Dense(7, activation="relu", name="fc1")(x)
    model = keras.Model(inputs, L.Dense(3)(x))
    pruned = rbp.prune(model, dataset_size=100, flatten_features=True)
    masks = _freeze_random(pruned)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, images, jit)
    # Position p of the Flatten output holds channel `channel[p]` of the 4x4
    # conv output; Flatten(channels_first) moves axis 1 last before flattening.
    positions = np.arange(80)
    channel = {
        ("channels_last", "channels_last"): positions % 5,
        ("channels_last", "channels_first"): positions // 4 % 5,
        ("channels_first", "channels_last"): positions // 16,
        ("channels_first", "channels_first"): positions % 5,
    }[data_format, flatten_format]
    kept = masks["conv"][channel] & masks["flatten_rbp_noise"]
    assert rbp.kept_channels(pruned)["flatten_rbp_noise"].size == kept.sum()
    # The Flatten output keeps every position of a kept conv channel; the
    # removed features are zero rows of fc1's kernel.
    physical = masks["conv"][channel]
    fc1 = int(masks["fc1"].sum())
    params, macs = _counts(small)
    assert macs == 18 * masks["conv"].sum() * 16 + physical.sum() * fc1 + fc1 * 3
    kernel = small.get_layer("fc1").get_weights()[0]
    assert kernel.shape == (physical.sum(), fc1)
    np.testing.assert_array_equal(np.any(kernel, axis=1), kept[physical])


def _residual(projection):
    inputs = keras.Input((6, 6, 4))
    x = L.Conv2D(8, 1, name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU()(x)
    y = L.Conv2D(8, 3, padding="same", activation="relu", name="branch_a")(x)
    y = L.Conv2D(8, 3, padding="same", name="branch_b")(y)
    y = L.BatchNormalization(name="branch_bn")(y)
    shortcut = x
    if projection:
        shortcut = L.Conv2D(8, 1, name="proj")(x)
        shortcut = L.BatchNormalization(name="proj_bn")(shortcut)
    x = L.ReLU()(L.Add()([shortcut, y]))
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3)(x))
    _randomise_batchnorm(model)
    return model


@pytest.mark.parametrize("projection", [True, False])
def test_residual_coupled_group_removes_what_its_mask_removes(projection):
    """By default the producers of the residual stream share one noise: the
    stream keeps exactly the channels of its mask, with no warning."""
    pruned = rbp.prune(_residual(projection), dataset_size=100)
    producers = ["proj_bn", "branch_bn"] if projection else ["stem_bn", "branch_bn"]
    group = f"{producers[0]}_rbp_noise"
    groups = rbp.pruning_groups(pruned)
    assert groups[group].calls == 2
    assert list(groups) == (["stem_bn", "branch_a", group] if projection else [group, "branch_a"])
    masks = _freeze_random(pruned)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = rbp.shrink(pruned, strict=True)
    assert_same_outputs(pruned, small, _images(6, 6, 4))
    for name in producers:
        assert small.get_layer(name).output.shape[-1] == masks[group].sum(), name
    assert group not in [layer.name for layer in small.layers]


def test_residual_projection():
    pruned = rbp.prune(_residual(True), dataset_size=100, coupled_groups=False)
    masks = _freeze_random(pruned)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, _images(6, 6, 4))
    merged = int((masks["proj_bn"] | masks["branch_bn"]).sum())
    stem, a = int(masks["stem_bn"].sum()), int(masks["branch_a"].sum())
    assert small.get_layer("branch_b").filters == merged
    assert small.get_layer("proj").kernel.shape[-2:] == (stem, merged)
    macs = 36 * (4 * stem + stem * merged + 9 * stem * a + 9 * a * merged) + merged * 3
    assert _counts(small)[1] == macs


def test_residual_identity():
    pruned = rbp.prune(_residual(False), dataset_size=100, coupled_groups=False)
    masks = _freeze_random(pruned)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, _images(6, 6, 4))
    merged = int((masks["stem_bn"] | masks["branch_bn"]).sum())
    a = int(masks["branch_a"].sum())
    assert small.get_layer("stem").filters == merged
    macs = 36 * (4 * merged + 9 * merged * a + 9 * a * merged) + merged * 3
    assert _counts(small)[1] == macs


def test_concat():
    inputs = keras.Input((5, 5, 3))
    a = L.Conv2D(4, 1, activation="relu", name="a")(inputs)
    b = L.Conv2D(5, 1, activation="relu", name="b")(inputs)
    x = L.Concatenate()([a, b])
    x = L.Conv2D(6, 1, activation="relu", name="c")(x)
    x = L.GlobalMaxPooling2D()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    _, small, k = _shrink(model, _images(5, 5, 3))
    assert small.get_layer("c").kernel.shape[-2:] == (k["a"] + k["b"], k["c"])
    macs = 25 * (3 * k["a"] + 3 * k["b"] + (k["a"] + k["b"]) * k["c"]) + 2 * k["c"]
    assert _counts(small)[1] == macs


def test_depthwise():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 1, activation="relu", name="expand")(inputs)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(5, 1, name="project")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    _randomise_batchnorm(model)
    pruned = rbp.prune(model, dataset_size=100)
    masks = _freeze_random(pruned)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, _images(6, 6, 3))
    # Input channel c of the depthwise conv feeds its outputs 2c and 2c+1:
    # it goes only where the BatchNormalization removed both.
    channels = int(masks["dw_bn"].reshape(6, 2).any(1).sum())
    project = int(masks["project"].sum())
    assert small.get_layer("expand").filters == channels
    macs = 36 * (3 * channels + 9 * channels * 2 + 2 * channels * project) + 2 * project
    assert _counts(small)[1] == macs


def test_separable():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 1, activation="relu", name="conv")(inputs)
    x = L.SeparableConv2D(5, 3, depth_multiplier=2, activation="relu", name="sep")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    _, small, k = _shrink(model, _images(6, 6, 3))
    c, s = k["conv"], k["sep"]
    params = 3 * c + c + 9 * c * 2 + 2 * c * s + s + 2 * s + 2
    macs = 36 * 3 * c + 16 * (9 * c * 2 + 2 * c * s) + 2 * s
    assert _counts(small) == (params, macs)


def test_global_pooling():
    inputs = keras.Input((4, 4, 2))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inputs)
    x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Flatten()(x)
    x = L.Dense(5, activation="relu", name="fc")(x)
    model = keras.Model(inputs, L.Dense(3)(x))
    _, small, k = _shrink(model, _images(4, 4, 2))
    assert _counts(small)[1] == 16 * 18 * k["conv"] + k["conv"] * k["fc"] + 3 * k["fc"]


def test_nested():
    inner_in = keras.Input((6, 6, 5))
    y = L.Conv2D(6, 3, activation="relu", name="inner1")(inner_in)
    y = L.Conv2D(4, 3, activation="relu", name="inner2")(y)
    inner = keras.Model(inner_in, y, name="block")
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(5, 1, activation="relu", name="outer")(inputs)
    x = L.GlobalAveragePooling2D()(inner(x))
    model = keras.Model(inputs, L.Dense(2)(x))
    _, small, k = _shrink(model, _images(6, 6, 3))
    block = small.get_layer("block")
    assert block.input.shape[-1] == k["outer"]
    macs = 36 * 3 * k["outer"] + 16 * 9 * k["outer"] * k["inner1"] + 4 * 9 * k["inner1"] * k["inner2"]
    assert _counts(small)[1] == macs + 2 * k["inner2"]


def test_multi_output():
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    x = L.Add()([L.Dense(8, name="da")(a), L.Dense(8, name="db")(b)])
    x = L.Dense(5, activation="relu", name="shared")(L.ReLU()(x))
    model = keras.Model([a, b], [L.Dense(3, name="out1")(x), L.Dense(2, name="out2")(x)])
    inputs = [_images(6), _images(4)]
    _, small, k = _shrink(model, inputs)
    merged = small.get_layer("da").units
    assert merged == small.get_layer("db").units
    assert _counts(small)[1] == 10 * merged + merged * k["shared"] + 5 * k["shared"]


def test_input_features_fold_into_dense_rows():
    model = lenet_300_100(input_shape=(784,))
    pruned = rbp.prune(model, dataset_size=100, input_features=True)
    masks = _freeze_random(pruned)
    images = _images(784)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, images)
    assert small.input.shape[-1] == 784
    assert not any(layer.name.endswith("_select") for layer in small.layers)
    zero_rows = ~np.any(small.get_layer("fc1").get_weights()[0], axis=1)
    np.testing.assert_array_equal(zero_rows, ~masks["image_rbp_noise"])
    kept = rbp.kept_channels(pruned)["image_rbp_noise"]
    np.testing.assert_array_equal(kept, np.flatnonzero(masks["image_rbp_noise"]))
    narrow = rbp.shrink(pruned, keep_input_shape=False)
    assert narrow.input.shape[-1] == kept.size
    np.testing.assert_allclose(narrow(images[:, kept]), small(images), rtol=1e-5, atol=1e-5)
    assert rbp.report(model, small).architecture_after == f"784-{masks['fc1'].sum()}-{masks['fc2'].sum()}"
    expected = f"{kept.size}-{masks['fc1'].sum()}-{masks['fc2'].sum()}"
    assert rbp.report(model, narrow).architecture_after == expected


def test_off_and_active_groups():
    model = lenet5_caffe()
    pruned = rbp.prune(model, dataset_size=100)
    groups = rbp.pruning_groups(pruned)
    groups["conv2"].mode = "active"
    rbp.freeze(pruned, {"fc1": np.arange(500) % 2 == 0})
    with pytest.warns(UserWarning, match="'conv2' is active"):
        small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, _images(28, 28, 1))
    assert [small.get_layer(n).kernel.shape[-1] for n in ("conv1", "conv2", "fc1")] == [20, 50, 250]


def _boundary_model():
    inputs = keras.Input((4, 4, 2))
    x = L.Conv2D(6, 1, activation="relu", name="conv")(inputs)
    x = L.Reshape((16, 6), name="reshape")(x)  # channels stay last: sliced
    x = L.LayerNormalization(name="norm")(x)
    x = L.Flatten()(x)
    return keras.Model(inputs, L.Dense(2)(x))


def test_prune_puts_no_noise_where_every_channel_reaches_a_boundary():
    with pytest.warns(UserWarning, match="no noise on 1 layer.*'conv': LayerNormalization layer 'norm'"):
        with pytest.raises(ValueError, match="has no channels keras_rbp can prune"):  # nothing else to prune
            rbp.prune(_boundary_model(), dataset_size=100)


def test_boundary_keeps_channels_with_warning():
    pruned = rbp.prune(_boundary_model(), dataset_size=100, layers=["conv"])  # named: wrapped all the same
    _freeze_random(pruned)
    with pytest.warns(UserWarning, match="LayerNormalization layer 'norm'"):
        small = rbp.shrink(pruned)
    assert small.get_layer("conv").filters == 6
    assert_same_outputs(pruned, small, _images(4, 4, 2))


def test_boundary_raises_for_strict_group():
    pruned = rbp.prune(_boundary_model(), dataset_size=100, layers=["conv"])
    _freeze_random(pruned)
    with pytest.raises(rbp.ShrinkError, match="group 'conv'.*'norm'"):
        rbp.shrink(pruned, strict=["conv"])
    with pytest.raises(rbp.ShrinkError, match="strict names \\['nope'\\]"):
        rbp.shrink(pruned, strict=["nope"])


def test_user_model_is_left_untouched():
    pruned = rbp.prune(lenet5_caffe(), dataset_size=100, flatten_features=True)
    _freeze_random(pruned)
    before = [w.copy() for w in pruned.get_weights()]
    config = json.dumps(pruned.get_config(), default=str)
    rbp.shrink(pruned)
    assert json.dumps(pruned.get_config(), default=str) == config
    for a, b in zip(before, pruned.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_shared_layer():
    """A Dense called on two inputs (siamese branches) keeps one set of
    channels, the same for both calls."""
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = L.Dense(8, activation="relu", name="shared")
    x = L.Add()([shared(a), shared(b)])
    x = L.Dense(5, activation="relu", name="hidden")(x)
    model = keras.Model([a, b], L.Dense(3, name="out")(x))
    inputs = [_images(6), _images(6) + 1]
    _, small, k = _shrink(model, inputs)
    assert small.get_layer("shared").units == k["shared"]
    assert small.get_layer("hidden").kernel.shape == (k["shared"], k["hidden"])


def test_shared_layer_on_its_own_output():
    """Its output channels are its input channels, which the model input
    holds: all are kept, exactly."""
    inputs = keras.Input((4,))
    dense = L.Dense(4, name="shared")
    model = keras.Model(inputs, L.Dense(2)(dense(dense(inputs))))
    pruned, small, k = _shrink(model, _images(4))
    assert k["shared"] < 4
    assert small.get_layer("shared").units == 4


def _conv_head(x):
    x = L.GlobalAveragePooling2D()(x)
    return L.Dense(2, name="head")(x)


def test_operation_layers():
    """`x * 2.0 + 1.0` between convolutions, a hard-swish written with
    operations, and a per-channel constant: channel-preserving, sliced."""
    inputs = keras.Input((5, 5, 3))
    x = L.Conv2D(6, 1, name="c1")(inputs)
    x = x * 2.0 + 1.0
    x = L.Conv2D(7, 1, name="c2")(x)
    x = x * (L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))
    x = x * np.linspace(0.5, 2.0, 7).astype("float32")
    x = L.Conv2D(4, 1, name="c3")(x)
    model = keras.Model(inputs, _conv_head(x))
    with pytest.warns(UserWarning, match="group 'c1'.*maps 0 to a non-zero value"):
        _, small, k = _shrink(model, _images(5, 5, 3))
    # c1's removed channels become 1.0 (x * 2 + 1): kept; c2's stay zero.
    assert small.get_layer("c1").filters == 6
    assert small.get_layer("c2").filters == k["c2"]
    assert small.get_layer("c3").kernel.shape[-2:] == (k["c2"], k["c3"])


def test_unknown_operation_is_a_boundary():
    inputs = keras.Input((4, 4, 3))
    x = L.Conv2D(6, 1, name="c1")(inputs)
    x = tf.math.cumsum(x, axis=-1) if not hasattr(keras, "ops") else keras.ops.cumsum(x, axis=-1)
    model = keras.Model(inputs, _conv_head(L.Conv2D(4, 1, name="c2")(x)))
    with pytest.warns(UserWarning, match="group 'c1'.*'cumsum'"):
        _, small, k = _shrink(model, _images(4, 4, 3), layers=["c1", "c2"])
    assert small.get_layer("c1").filters == 6
    assert small.get_layer("c2").filters == k["c2"]


@pytest.mark.parametrize("reshape", [False, True])
def test_squeeze_excitation(reshape):
    """The SE scale (B, 1, 1, C) joins the group of the (B, H, W, C) tensor
    it multiplies; the SE's reduce layer shrinks on its own mask."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    if reshape:
        se = L.Reshape((1, 1, 8))(L.GlobalAveragePooling2D()(x))
    else:
        se = L.GlobalAveragePooling2D(keepdims=True)(x)
    se = L.Conv2D(4, 1, activation="relu", name="reduce")(se)
    se = L.Conv2D(8, 1, activation="sigmoid", name="expand")(se)
    x = L.Multiply()([x, se])
    x = L.Conv2D(5, 1, name="project")(x)
    model = keras.Model(inputs, _conv_head(x))
    pruned = rbp.prune(model, dataset_size=100)
    assert pruned.get_layer("conv_rbp_noise").calls == 2  # conv and expand
    rng = np.random.RandomState(3)
    conv_mask = rng.rand(8) < 0.6
    masks = {"conv_rbp_noise": conv_mask, "reduce": np.arange(4) < 2, "project": np.arange(5) < 3}
    rbp.freeze(pruned, masks)
    small = rbp.shrink(pruned, strict=True)
    assert_same_outputs(pruned, small, _images(6, 6, 3))
    kept = int(conv_mask.sum())
    assert small.get_layer("conv").filters == kept
    assert small.get_layer("reduce").kernel.shape[-2:] == (kept, 2)
    assert small.get_layer("expand").kernel.shape[-2:] == (2, kept)
    assert small.get_layer("project").kernel.shape[-2:] == (kept, 3)


def test_grouped_convolution():
    """groups=2: a channel position goes from both groups or neither."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, activation="relu", name="c1")(inputs)
    x = L.Conv2D(6, 3, groups=2, padding="same", activation="relu", name="grouped")(x)
    x = L.Conv2D(4, 1, name="c3")(x)
    model = keras.Model(inputs, _conv_head(x))
    pruned = rbp.prune(model, dataset_size=100)
    c1 = np.array([1, 0, 1, 0, 0, 0, 1, 1], bool)  # positions 0 and 2 of 4 kept in a group
    grouped = np.array([1, 0, 0, 0, 0, 1], bool)  # positions 0 and 2 of 3
    rbp.freeze(pruned, {"c1": c1, "grouped": grouped, "c3": np.ones(4, bool)})
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, _images(6, 6, 3))
    layer = small.get_layer("grouped")
    assert small.get_layer("c1").filters == 6  # positions 0, 2 and 3 in each group
    assert (layer.filters, layer.groups, layer.kernel.shape[-2]) == (4, 2, 3)


def test_depthwise_written_as_grouped_convolution():
    """groups == input channels: whole groups go, as in DepthwiseConv2D."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, activation="relu", name="c1")(inputs)
    x = L.Conv2D(8, 3, groups=4, padding="same", use_bias=False, name="dw")(x)
    x = L.Conv2D(5, 1, name="c3")(x)
    model = keras.Model(inputs, _conv_head(x))
    pruned = rbp.prune(model, dataset_size=100, layers=["c1", "c3"])
    rbp.freeze(pruned, {"c1": np.array([1, 0, 1, 0], bool), "c3": np.ones(5, bool)})
    small = rbp.shrink(pruned, strict=True)
    assert_same_outputs(pruned, small, _images(6, 6, 3))
    layer = small.get_layer("dw")
    assert (layer.filters, layer.groups) == (4, 2)
    assert small.get_layer("c3").kernel.shape[-2] == 4


def test_transposed_convolution():
    inputs = keras.Input((4, 4, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same", activation="relu", name="up")(x)
    x = L.Conv2D(4, 1, name="c3")(x)
    model = keras.Model(inputs, _conv_head(x))
    _, small, k = _shrink(model, _images(4, 4, 3))
    assert small.get_layer("up").kernel.shape[-2:] == (k["up"], k["c1"])
    assert small.get_layer("c3").kernel.shape[-2] == k["up"]
    macs = _counts(small)[1]
    assert macs == 16 * 27 * k["c1"] + 16 * 9 * k["c1"] * k["up"] + 64 * k["up"] * k["c3"] + 2 * k["c3"]


def test_group_normalization_removes_whole_groups():
    inputs = keras.Input((4, 4, 3))
    x = L.Conv2D(8, 1, use_bias=False, name="c1")(inputs)
    x = L.GroupNormalization(groups=4, center=False, name="gn")(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    model = keras.Model(inputs, _conv_head(x))
    pruned = rbp.prune(model, dataset_size=100)
    # Groups (0, 1) and (6, 7) removed whole; channel 2 alone stays.
    c1 = np.array([0, 0, 0, 1, 1, 1, 0, 0], bool)
    rbp.freeze(pruned, {"c1": c1, "c2": np.ones(4, bool)})
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, _images(4, 4, 3))
    assert small.get_layer("c1").filters == 4
    assert small.get_layer("gn").groups == 2


def test_dense_on_feature_maps_mixes_channels():
    """ConvNeXt's inverted bottleneck: Dense layers on (B, H, W, C)."""
    inputs = keras.Input((4, 4, 3))
    x = L.Conv2D(6, 1, name="c1")(inputs)
    x = L.LayerNormalization(name="norm")(x)
    x = L.Dense(12, activation="gelu", name="pw1")(x)
    x = L.Dense(6, name="pw2")(x)
    model = keras.Model(inputs, _conv_head(x))
    with pytest.warns(UserWarning, match="LayerNormalization layer 'norm'"):
        _, small, k = _shrink(model, _images(4, 4, 3))
    assert small.get_layer("pw1").kernel.shape == (6, k["pw1"])
    assert small.get_layer("pw2").kernel.shape == (k["pw1"], k["pw2"])


class ChannelScale(L.Layer):
    """A user layer: one learned scale per channel."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


class ChannelScaleRule(rbp.rules.PerChannelRule):
    def rebuild(self, build, op, ins):
        build.set_layer(op, [op.layer.get_weights()[0][ins[0]]], {})
        return [ins[0]]


def _channel_scale_model():
    inputs = keras.Input((4, 4, 3))
    x = L.Conv2D(6, 1, name="c1")(inputs)
    x = ChannelScale(name="scale")(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    model = keras.Model(inputs, _conv_head(x))
    model.get_layer("scale").set_weights([np.linspace(0.5, 2.0, 6).astype("float32")])
    return model


def test_registered_rule_for_a_custom_layer():
    with pytest.warns(UserWarning, match="ChannelScale layer 'scale'"):
        _, small, _ = _shrink(_channel_scale_model(), _images(4, 4, 3))
    assert small.get_layer("c1").filters == 6
    rbp.register_rule(ChannelScale, ChannelScaleRule())
    try:
        _, small, k = _shrink(_channel_scale_model(), _images(4, 4, 3))
    finally:
        rbp.rules.unregister_rule(ChannelScale)
    assert small.get_layer("c1").filters == k["c1"]
    assert small.get_layer("scale").get_weights()[0].shape == (k["c1"],)
    with pytest.raises(TypeError, match="must be a LayerRule"):
        rbp.register_rule(ChannelScale, "per_channel")
