"""prune() and shrink() on what a Functional model accepts: Functional
subclasses nested at any depth, a user's layer that is neither registered
as serializable nor implements compute_output_shape, a layer whose
get_config raises, PReLU, and a user's prunable rule whose MACs count."""

import numpy as np
import pytest
import tensorflow as tf

import keras_rbp as rbp
from keras_rbp._keras import IS_KERAS_3, keras
from keras_rbp.cloning import LayerCopyError
from tests.conftest import mnist_dir
from tests.surgery_test import _freeze_random, assert_same_outputs

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Linear(L.Layer):
    """A user's dense layer: not registered as serializable, and without
    compute_output_shape."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="w")
        self.b = self.add_weight(shape=(self.units,), initializer="random_normal", name="b")

    def call(self, inputs):
        return inputs @ self.w + self.b

    def get_config(self):
        return dict(super().get_config(), units=self.units)


class BrokenConfig(L.Layer):
    """A third-party layer whose get_config raises (as DeiTEncoder's does)."""

    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gain")

    def call(self, inputs):
        return inputs * self.gain * self.scale

    def get_config(self):
        raise AttributeError(f"{type(self).__name__!r} object has no attribute 'key_dim'")


class Nameless(BrokenConfig):
    """A third-party layer whose constructor takes neither a name nor
    **kwargs, so that its config does not round-trip (as KerasHub's
    SegFormerMultiheadAttention)."""

    def __init__(self, scale=2.0):
        super().__init__(scale=scale)

    def get_config(self):
        return L.Layer.get_config(self)


@pytest.fixture
def linear_rule():
    rbp.register_rule(Linear, rbp.ProducerRule())
    yield
    rbp.rules.unregister_rule(Linear)


class Block(keras.Model):
    """A user's Functional subclass whose config holds its constructor's
    arguments, not a graph (as KerasHub's Backbone classes)."""

    def __init__(self, channels, inner=None, **kwargs):
        inputs = keras.Input((8, 8, channels))
        x = inputs if inner is None else inner(inputs)
        x = L.Conv2D(12, 3, padding="same", activation="relu", name=f"{kwargs['name']}_conv")(x)
        x = L.BatchNormalization(name=f"{kwargs['name']}_bn")(x)
        outputs = L.Conv2D(channels, 1, name=f"{kwargs['name']}_project")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.channels = channels

    def get_config(self):
        return {"channels": self.channels, "name": self.name}


def _nested_subclasses():
    inner = Block(6, name="inner")
    middle = Block(6, inner=inner, name="middle")
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inputs)
    x = middle(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def _width(model, name):
    """The output channels of layer `name` of `model` or a model nested in it."""
    for layer in model.layers:
        if layer.name == name:
            return layer.output.shape[-1]
        if isinstance(layer, keras.Model):
            try:
                return _width(layer, name)
            except KeyError:
                continue
    raise KeyError(name)


def test_functional_subclasses_nested_two_deep_shrink_exactly():
    model = _nested_subclasses()
    pruned = rbp.prune(model, dataset_size=100)
    groups = rbp.pruning_groups(pruned)
    assert {"stem", "middle_bn", "middle_project", "inner_bn", "inner_project"} <= set(groups)
    _freeze_random(pruned, keep=0.6)
    small = rbp.shrink(pruned)
    x = np.random.RandomState(0).rand(2, 8, 8, 3).astype("float32")
    assert_same_outputs(pruned, small, x)
    kept = rbp.kept_channels(pruned)
    assert _width(small, "inner_conv") == len(kept["inner_bn"]) < 12
    assert _width(small, "middle_conv") == len(kept["middle_bn"]) < 12
    assert small.count_params() < model.count_params()


def test_a_functional_subclass_is_copied_not_trained():
    model = _nested_subclasses()
    before = [w.copy() for w in model.get_weights()]
    pruned = rbp.prune(model, dataset_size=8)
    pruned.compile("sgd", LOSS)
    pruned.fit(np.random.rand(8, 8, 8, 3), np.arange(8) % 4, epochs=1, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert isinstance(model.get_layer("middle"), Block)


def test_a_subclassed_model_without_a_graph_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(3)

        def call(self, inputs):
            return self.dense(inputs)

    with pytest.raises(TypeError, match=r"prune: model '.*' is a subclassed model \(Net\)"):
        rbp.prune(Net(), dataset_size=10)


def _with_broken_config(layer):
    inputs = keras.Input((10,))
    x = L.Dense(16, activation="relu", name="fc1")(inputs)
    x = layer(x)
    x = L.Dense(12, activation="relu", name="fc2")(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x))


@pytest.mark.skipif(not IS_KERAS_3, reason="tf_keras records no constructor arguments to copy the layer from")
@pytest.mark.parametrize("make_layer", [lambda: BrokenConfig(name="broken"), Nameless], ids=["raises", "nameless"])
def test_a_layer_whose_config_does_not_round_trip_is_copied_from_its_constructor_arguments(make_layer):
    model = _with_broken_config(make_layer())
    name = model.layers[2].name
    pruned = rbp.prune(model, dataset_size=100)
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(4, 10).astype("float32"))
    # The layer is a boundary: fc1 keeps every channel, fc2 its mask's.
    assert small.get_layer("fc1").units == 16
    assert small.get_layer("fc2").units == int(masks["fc2"].sum()) < 12
    assert type(small.get_layer(name)) is type(model.get_layer(name))
    assert small.get_layer(name) is not model.get_layer(name)


@pytest.mark.skipif(IS_KERAS_3, reason="Keras 3 copies the layer from its constructor arguments")
def test_a_layer_that_cannot_be_copied_raises_one_clear_error():
    model = _with_broken_config(BrokenConfig(name="broken"))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(LayerCopyError, match=r"cannot copy layer 'broken' of class BrokenConfig: .*key_dim"):
        rbp.prune(model, dataset_size=100)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _linear_model(widths=(30, 20), inputs=20, classes=5):
    x = inputs = keras.Input((inputs,))
    for index, width in enumerate(widths):
        x = L.Activation("relu")(Linear(width, name=f"linear{index}")(x))
    return keras.Model(inputs, Linear(classes, name="out")(x))


def test_a_users_prunable_layer_prunes_shrinks_and_costs_its_macs(linear_rule):
    model = _linear_model()
    pruned = rbp.prune(model, dataset_size=100)
    assert list(rbp.pruning_groups(pruned)) == ["linear0", "linear1"]
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(4, 20).astype("float32"))
    kept0, kept1 = int(masks["linear0"].sum()), int(masks["linear1"].sum())
    assert small.get_layer("linear0").units == kept0 < 30
    assert small.get_layer("linear1").units == kept1 < 20
    totals = rbp.report(model, small).totals
    assert totals["macs_before"] == 20 * 30 + 30 * 20 + 20 * 5
    assert totals["macs_after"] == 20 * kept0 + kept0 * kept1 + kept1 * 5


def test_a_mac_budget_spends_a_users_layers(linear_rule):
    (x_train, y_train), _ = rbp.datasets.load_mnist(mnist_dir())
    x_train, y_train = x_train[:3000].reshape(3000, -1), y_train[:3000]
    keras.utils.set_random_seed(0)
    model = _linear_model(widths=(100, 50), inputs=784, classes=10)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(x_train, y_train, batch_size=128, epochs=1, verbose=0)
    pruned = rbp.prune(model, dataset_size=len(x_train))
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    target = 40_000  # of 84,500
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=0, target_macs=target, verbose=0)
    pruned.fit(x_train, y_train, batch_size=128, epochs=schedule.total_epochs(pruned), callbacks=[schedule],
               verbose=0)
    macs = rbp.report(model, rbp.shrink(pruned)).totals["macs_after"]
    assert 0.95 * target <= macs <= target


@pytest.mark.parametrize("shared_axes", [None, [1, 2], [3]], ids=["per_position", "per_channel", "one_for_all_channels"])
def test_prelu_slices_its_alpha(shared_axes):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(10, 3, name="conv")(inputs)
    x = L.PReLU(shared_axes=shared_axes, alpha_initializer=keras.initializers.RandomUniform(0.1, 0.5),
                name="prelu")(x)
    x = L.Conv2D(4, 3, name="conv2")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Flatten()(x)))
    pruned = rbp.prune(model, dataset_size=100)
    rbp.freeze(pruned, {"conv": np.isin(np.arange(10), [0, 2, 3, 7, 9]), "conv2": np.ones(4, bool)},
               {"conv": np.linspace(0.5, 1.5, 10).astype("float32")})
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(2, 6, 6, 3).astype("float32") - 0.5)
    assert small.get_layer("conv").filters == 5
    alpha = model.get_layer("prelu").get_weights()[0]
    expected = alpha if shared_axes == [3] else alpha[..., [0, 2, 3, 7, 9]]
    np.testing.assert_array_equal(small.get_layer("prelu").get_weights()[0], expected)


class ScaledSwish(L.Layer):
    """A user's activation with one learned scalar: acts on each channel alone."""

    def build(self, input_shape):
        self.beta = self.add_weight(shape=(), initializer="ones", name="beta")

    def call(self, inputs):
        return inputs * tf.math.sigmoid(self.beta * inputs)


class ChannelCentering(L.Layer):
    """Subtracts the mean over the channels: mixes them."""

    def call(self, inputs):
        return inputs - tf.reduce_mean(inputs, axis=-1, keepdims=True)


class Apply(L.Layer):
    """Applies a Python function: Keras cannot serialize it, so the layer
    has no config and no recorded constructor arguments; keras_rbp copies
    it attribute by attribute."""

    def __init__(self, function, **kwargs):
        super().__init__(**kwargs)
        self.function = function

    def call(self, inputs):
        return self.function(inputs)


def _conv_through(layer):
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(10, 3, padding="same", name="conv1")(inputs)
    x = layer(x)
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    return keras.Model(inputs, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("make", [lambda: ScaledSwish(name="custom"),
                                  lambda: Apply(tf.nn.relu, name="custom")], ids=["scalar_weight", "no_config"])
def test_a_layer_without_a_rule_that_acts_on_each_channel_passes_them_through(make):
    model = _conv_through(make())
    pruned = rbp.prune(model, dataset_size=100)
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(4, 8, 8, 3).astype("float32") - 0.5)
    assert small.get_layer("conv1").filters == int(masks["conv1"].sum()) < 10
    assert small.get_layer("conv2").kernel.shape[2] == int(masks["conv1"].sum())


def test_a_layer_without_a_rule_that_mixes_channels_is_a_boundary():
    model = _conv_through(ChannelCentering(name="custom"))
    with pytest.warns(UserWarning, match="ChannelCentering layer 'custom' has no rule and does not act on each"):
        pruned = rbp.prune(model, dataset_size=100)
    assert list(rbp.pruning_groups(pruned)) == ["conv2"]  # conv1's channels cannot be removed
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(4, 8, 8, 3).astype("float32") - 0.5)
    assert small.get_layer("conv1").filters == 10
    assert small.get_layer("conv2").filters == int(masks["conv2"].sum()) < 6


def test_a_nested_model_with_a_dict_of_outputs_is_read_in_keras_order():
    # Keras numbers a dict's outputs by sorted key, not in the order written.
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    wide = L.Conv2D(12, 3, padding="same", activation="relu", name="wide")(x)
    narrow = L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="narrow")(wide)
    features = keras.Model(inputs, {"z_first": wide, "a_second": narrow}, name="features")
    images = keras.Input((8, 8, 3))
    maps = features(images)
    pooled = [L.GlobalAveragePooling2D()(maps[key]) for key in ("z_first", "a_second")]
    model = keras.Model(images, L.Dense(3, name="out")(L.Concatenate()(pooled)))
    pruned = rbp.prune(model, dataset_size=100)
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(4, 8, 8, 3).astype("float32"))
    assert _width(small, "wide") == int(masks["wide"].sum()) < 12
    assert _width(small, "narrow") == int(masks["narrow"].sum()) < 4


class TwoHeads(keras.Model):
    """A user's Functional subclass with a dict of outputs."""

    def __init__(self, **kwargs):
        inputs = keras.Input((8, 8, 3))
        x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
        x = L.GlobalAveragePooling2D()(x)
        outputs = {"label": L.Dense(3, name="label")(x), "box": L.Dense(4, name="box")(x)}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)


def test_a_functional_subclass_with_a_dict_of_outputs_keeps_its_dict():
    pruned = rbp.prune(TwoHeads(), dataset_size=100)
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    x = np.random.RandomState(0).rand(4, 8, 8, 3).astype("float32")
    expected, actual = pruned(x), small(x)
    assert type(expected) is dict and type(actual) is dict
    assert sorted(actual) == ["box", "label"]
    for key in actual:
        np.testing.assert_allclose(np.asarray(actual[key]), np.asarray(expected[key]), rtol=1e-5, atol=1e-5)
    assert small.get_layer("conv").filters == int(masks["conv"].sum()) < 8


def test_a_functional_subclass_with_nested_outputs_keeps_their_structure():
    class Pyramid(keras.Model):
        def __init__(self, **kwargs):
            inputs = keras.Input((8, 8, 3))
            x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
            y = L.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="down")(x)
            outputs = {"levels": [L.Conv2D(4, 1, name="p1")(x), L.Conv2D(4, 1, name="p2")(y)], "deep": y}
            super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    pruned = rbp.prune(Pyramid(), dataset_size=100)
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    x = np.random.RandomState(0).rand(2, 8, 8, 3).astype("float32")
    assert_same_outputs(pruned, small, x)
    outputs = small(x)
    assert sorted(outputs) == ["deep", "levels"] and len(outputs["levels"]) == 2
    assert small.get_layer("conv").filters == int(masks["conv"].sum()) < 8


def _two_encoders():
    encoders = []
    for name, width in (("text", 6), ("image", 5)):
        inputs = keras.Input((10,))
        encoders.append(keras.Model(inputs, L.Dense(width, activation="relu", name="embedding")(inputs), name=name))
    inputs = keras.Input((10,))
    x = L.Concatenate()([encoder(inputs) for encoder in encoders])
    return keras.Model(inputs, L.Dense(3, name="out")(x))


@pytest.mark.skipif(not IS_KERAS_3, reason="tf_keras keys a model's calls by its layers' names")
def test_layers_of_one_name_in_two_nested_models_are_told_apart():
    model = _two_encoders()
    pruned = rbp.prune(model, dataset_size=100)
    assert sorted(rbp.pruning_groups(pruned)) == ["embedding", "image_embedding"]
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(4, 10).astype("float32"))
    assert small.get_layer("text").get_layer("embedding").units == int(masks["embedding"].sum()) < 6
    assert small.get_layer("image").get_layer("image_embedding").units == int(masks["image_embedding"].sum()) < 5
    assert model.get_layer("image").get_layer("embedding").units == 5  # the user's model keeps its names


@pytest.mark.skipif(IS_KERAS_3, reason="Keras 3 renames the second layer")
def test_layers_of_one_name_in_two_nested_models_are_refused_under_tf_keras():
    with pytest.raises(ValueError, match="models 'text' and 'image' both hold a layer named 'embedding'"):
        rbp.prune(_two_encoders(), dataset_size=100)


class Mlp(L.Layer):
    """A user's block whose call takes no `training` argument."""

    def __init__(self, hidden, width, **kwargs):
        super().__init__(**kwargs)
        self.expand = L.Dense(hidden, activation="relu", name="expand")
        self.project = L.Dense(width, name="project")

    def call(self, inputs):
        return self.project(self.expand(inputs))


class Residual(L.Layer):
    """A user's block that passes `training` to a block that takes none."""

    def __init__(self, hidden, width, **kwargs):
        super().__init__(**kwargs)
        self.mlp = Mlp(hidden, width, name="mlp")

    def call(self, inputs, training=None):
        return inputs + self.mlp(inputs, training=training)


@pytest.mark.skipif(not IS_KERAS_3, reason="tf_keras records no calls inside a layer: its blocks stay boundaries")
def test_a_users_blocks_are_traced_into_their_sublayers():
    inputs = keras.Input((10,))
    x = L.Dense(8, name="stem")(inputs)
    x = Residual(24, 8, name="block")(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(x))
    pruned = rbp.prune(model, dataset_size=100)
    assert "expand" in rbp.pruning_groups(pruned)
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(4, 10).astype("float32"))
    assert small.get_layer("expand").units == int(masks["expand"].sum()) < 24


def test_a_nested_model_with_a_dict_of_inputs_is_read_in_keras_order():
    # Keras matches a dict of inputs to a model's inputs by sorted key.
    inner_inputs = {"z_wide": keras.Input((6,), name="inner_z"), "a_narrow": keras.Input((4,), name="inner_a")}
    x = L.Concatenate()([L.Dense(5, activation="relu", name=f"{key}_dense")(tensor)
                         for key, tensor in inner_inputs.items()])
    inner = keras.Model(inner_inputs, x, name="inner")
    inputs = {"z_wide": keras.Input((6,), name="z_wide"), "a_narrow": keras.Input((4,), name="a_narrow")}
    model = keras.Model(inputs, L.Dense(3, name="out")(inner(inputs)))
    pruned = rbp.prune(model, dataset_size=100)
    masks = _freeze_random(pruned, keep=0.5)
    small = rbp.shrink(pruned)
    rng = np.random.RandomState(0)
    data = {"z_wide": rng.rand(4, 6).astype("float32"), "a_narrow": rng.rand(4, 4).astype("float32")}
    assert_same_outputs(pruned, small, data)
    for key in ("z_wide", "a_narrow"):
        assert _width(small, f"{key}_dense") == int(masks[f"{key}_dense"].sum()) < 5


def test_a_model_with_nothing_to_prune_is_refused_by_prune():
    inputs = keras.Input((10,))
    outputs = L.Dense(3, name="out")(L.Activation("relu")(inputs))  # only the classifier
    with pytest.raises(ValueError, match="model 'only_a_classifier' has no channels keras_rbp can prune"):
        rbp.prune(keras.Model(inputs, outputs, name="only_a_classifier"), dataset_size=100)


class PositionScaled(L.Layer):
    """A user's block whose call reads its input's length (as a decoder's
    causal mask does): on symbolic inputs of unknown length it cannot be
    traced."""

    def __init__(self, hidden, width, **kwargs):
        super().__init__(**kwargs)
        self.expand = L.Dense(hidden, activation="relu", name="expand")
        self.project = L.Dense(width, name="project")

    def call(self, inputs):
        positions = keras.ops.cast(keras.ops.arange(keras.ops.shape(inputs)[1]), inputs.dtype)
        return self.project(self.expand(inputs)) * positions[None, :, None]


@pytest.mark.skipif(not IS_KERAS_3, reason="tf_keras records no calls inside a layer: its blocks stay boundaries")
def test_prune_names_the_blocks_it_could_not_trace_when_nothing_is_left_to_prune():
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, L.Dense(3, name="out")(PositionScaled(16, 8, name="block")(inputs)))
    with pytest.warns(UserWarning, match="PositionScaled layer 'block' holds layers, but its call cannot be traced"):
        with pytest.raises(ValueError, match=r"layers 'block' \(PositionScaled\) hold others, but their calls could not"):
            rbp.prune(model, dataset_size=100)
