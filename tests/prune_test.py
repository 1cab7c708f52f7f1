"""Tests of prune() on Sequential, Functional, nested and multi-I/O models."""

import numpy as np
import pytest

import keras_rbp as rbp
from keras_rbp._keras import keras
from keras_rbp.layers import RBPNoise
from keras_rbp.models import lenet5_caffe, lenet_300_100
from keras_rbp.wrapper import RBPWrapper

L = keras.layers


def _wrapped_names(model):
    return sorted(layer.name for layer in model.layers if isinstance(layer, RBPWrapper))


def _assert_same_outputs(model, pruned, inputs):
    expected = model(inputs)
    outputs = pruned(inputs)
    for a, b in zip(_as_list(expected), _as_list(outputs)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _sequential():
    return keras.Sequential(
        [
            keras.Input((12,)),
            L.Dense(16, activation="relu", name="hidden1"),
            L.Dropout(0.1),
            L.Dense(8, activation="relu", name="hidden2"),
            L.Dense(3, activation="softmax", name="classifier"),
        ]
    )


def test_sequential_wraps_hidden_layers_and_leaves_classifier():
    model = _sequential()
    pruned = rbp.prune(model, dataset_size=100)
    assert isinstance(pruned, keras.Sequential)
    assert _wrapped_names(pruned) == ["hidden1", "hidden2"]
    assert type(pruned.get_layer("classifier")) is L.Dense
    _assert_same_outputs(model, pruned, np.random.rand(5, 12).astype("float32"))


def test_user_model_is_left_untouched():
    model = _sequential()
    before = [w.copy() for w in model.get_weights()]
    pruned = rbp.prune(model, dataset_size=100)
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    pruned.fit(np.random.rand(8, 12), np.arange(8) % 3, epochs=1, verbose=0)
    assert not any(isinstance(layer, RBPWrapper) for layer in model.layers)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("hidden1").activation is keras.activations.get("relu")


def test_functional_lenet5_with_flatten_features():
    model = lenet5_caffe()
    pruned = rbp.prune(model, dataset_size=100, flatten_features=True)
    assert _wrapped_names(pruned) == ["conv1", "conv2", "fc1"]
    assert isinstance(pruned.get_layer("flatten_rbp_noise"), RBPNoise)
    assert [n.channels for n in rbp.pruning_groups(pruned).values()] == [20, 50, 800, 500]
    _assert_same_outputs(model, pruned, np.random.rand(2, 28, 28, 1).astype("float32"))


def test_input_features_noise_on_each_input():
    model = lenet_300_100(input_shape=(784,))
    pruned = rbp.prune(model, dataset_size=100, input_features=True)
    assert [n.channels for n in rbp.pruning_groups(pruned).values()] == [784, 300, 100]
    _assert_same_outputs(model, pruned, np.random.rand(2, 784).astype("float32"))


def _multi_io():
    a = keras.Input((6,), name="a")
    b = keras.Input((5, 5, 2), name="b")
    x = L.Dense(7, activation="relu", name="dense_a")(a)
    y = L.Conv2D(4, 3, name="conv_b")(b)
    y = L.BatchNormalization(name="bn_b")(y)
    y = L.ReLU(name="relu_b")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dense(7, name="dense_b")(y)
    merged = L.Add(name="add")([x, L.Dense(7, name="proj")(y)])
    out1 = L.Dense(2, name="out1")(merged)
    out2 = L.Dense(3, activation="sigmoid", name="out2")(y)
    return keras.Model([a, b], [out1, out2], name="multi_io")


def test_multi_input_multi_output_and_batchnorm_placement():
    model = _multi_io()
    pruned = rbp.prune(model, dataset_size=100)
    # conv_b's noise sits after its BatchNormalization; the two heads are
    # left alone. dense_a and proj, which the Add joins, share one noise
    # called after each; dense_a's relu moves after it.
    assert _wrapped_names(pruned) == ["bn_b", "dense_b"]
    assert type(pruned.get_layer("conv_b")) is L.Conv2D
    shared = pruned.get_layer("dense_a_rbp_noise")
    assert shared.calls == 2 and list(rbp.pruning_groups(pruned)) == ["bn_b", "dense_a_rbp_noise", "dense_b"]
    assert pruned.get_layer("dense_a").activation is keras.activations.get("linear")
    assert pruned.get_layer("dense_a_activation").activation is keras.activations.get("relu")
    inputs = [np.random.rand(3, 6).astype("float32"), np.random.rand(3, 5, 5, 2).astype("float32")]
    _assert_same_outputs(model, pruned, inputs)


def test_batchnorm_placement_can_be_turned_off():
    pruned = rbp.prune(_multi_io(), dataset_size=100, noise_after_batchnorm=False, coupled_groups=False)
    assert _wrapped_names(pruned) == ["conv_b", "dense_a", "dense_b", "proj"]


def test_nested_model():
    inner = keras.Sequential(
        [keras.Input((10,)), L.Dense(12, activation="relu", name="inner1"), L.Dense(6, name="inner2")],
        name="block",
    )
    inputs = keras.Input((10,))
    x = inner(inputs)
    x = L.Dense(5, activation="relu", name="outer")(x)
    outputs = L.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    pruned = rbp.prune(model, dataset_size=100)
    block = pruned.get_layer("block")
    assert _wrapped_names(block) == ["inner1", "inner2"]
    assert _wrapped_names(pruned) == ["outer"]
    assert len(rbp.pruning_groups(pruned)) == 3
    _assert_same_outputs(model, pruned, np.random.rand(4, 10).astype("float32"))


def test_nested_model_that_produces_the_output_keeps_its_classifier():
    inner = keras.Sequential(
        [keras.Input((10,)), L.Dense(12, name="inner1"), L.Dense(4, name="inner_head")], name="block"
    )
    inputs = keras.Input((10,))
    model = keras.Model(inputs, inner(L.Dense(10, name="pre")(inputs)))
    pruned = rbp.prune(model, dataset_size=100)
    assert _wrapped_names(pruned.get_layer("block")) == ["inner1"]
    assert _wrapped_names(pruned) == ["pre"]


def test_layers_by_name_include_the_classifier_when_asked():
    pruned = rbp.prune(_sequential(), dataset_size=100, layers=["hidden2", "classifier"])
    assert _wrapped_names(pruned) == ["classifier", "hidden2"]


def test_layers_by_predicate():
    pruned = rbp.prune(lenet5_caffe(), dataset_size=100, layers=lambda layer: isinstance(layer, L.Conv2D))
    assert _wrapped_names(pruned) == ["conv1", "conv2"]


def test_options_reach_every_noise():
    pruned = rbp.prune(_sequential(), dataset_size=321, kl_weight=4.0, prior_keep_prob=0.1, seed=9)
    noises = list(rbp.pruning_groups(pruned).values())
    assert {n.dataset_size for n in noises} == {321}
    assert {n.kl_weight for n in noises} == {4.0}
    assert {n.prior_keep_prob for n in noises} == {0.1}
    assert len({n.seed for n in noises}) == len(noises)
    again = rbp.pruning_groups(rbp.prune(_sequential(), dataset_size=321, seed=9)).values()
    assert [n.seed for n in again] == [n.seed for n in noises]


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(3)

    def call(self, inputs):
        return self.dense(inputs)


def test_subclassed_model_is_refused():
    model = _Subclassed()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(TypeError, match="subclassed model .*_Subclassed.*Sequential and Functional"):
        rbp.prune(model, dataset_size=10)


def test_unprunable_layer_requested_by_name_is_refused():
    with pytest.raises(ValueError, match="layer 'pool1' of class MaxPooling2D cannot be pruned; supported: Dense"):
        rbp.prune(lenet5_caffe(), dataset_size=10, layers=["pool1"])


def test_unknown_layer_name_is_refused():
    with pytest.raises(ValueError, match="'nope', which model 'lenet5_caffe' lacks"):
        rbp.prune(lenet5_caffe(), dataset_size=10, layers=["nope"])


def test_bad_dataset_size_and_double_pruning_are_refused():
    with pytest.raises(ValueError, match="dataset_size must be a positive integer, received: -5"):
        rbp.prune(_sequential(), dataset_size=-5)
    with pytest.raises(ValueError, match="prior_keep_prob must be in \\(0, 1\\), received: 2.0"):
        rbp.prune(_sequential(), dataset_size=5, prior_keep_prob=2.0)
    pruned = rbp.prune(_sequential(), dataset_size=5)
    with pytest.raises(ValueError, match="already pruned"):
        rbp.prune(pruned, dataset_size=5)


def test_pruning_groups_are_named_and_in_topological_order():
    pruned = rbp.prune(lenet5_caffe(), dataset_size=100, flatten_features=True)
    assert list(rbp.pruning_groups(pruned)) == ["conv1", "conv2", "flatten_rbp_noise", "fc1"]


def test_freeze_sets_masks_and_values():
    pruned = rbp.prune(_sequential(), dataset_size=100)
    mask = np.arange(16) % 2 == 0
    rbp.freeze(pruned, {"hidden1": mask}, {"hidden1": np.full(16, 0.5)})
    groups = rbp.pruning_groups(pruned)
    assert groups["hidden1"].mode == "frozen" and groups["hidden2"].mode == "off"
    np.testing.assert_array_equal(groups["hidden1"].theta(), 0.5 * mask)
    rbp.freeze(pruned, {"hidden2": np.ones(8, bool)})
    np.testing.assert_allclose(groups["hidden2"].theta(), groups["hidden2"].keep_probability())
    with pytest.raises(ValueError, match="no pruning group 'classifier'; its groups are"):
        rbp.freeze(pruned, {"classifier": np.ones(3, bool)})


def test_cost_aware_prior_weighs_groups_by_macs_per_channel():
    pruned = rbp.prune(lenet5_caffe(), dataset_size=100, flatten_features=True, cost_aware=True)
    # MACs per channel, counted by hand: own MACs plus those of the readers.
    per_channel = {
        "conv1": (24 * 24 * 25 * 1 * 20 + 8 * 8 * 25 * 20 * 50) / 20,
        "conv2": (8 * 8 * 25 * 20 * 50 + 800 * 500) / 50,
        "flatten_rbp_noise": 800 * 500 / 800,
        "fc1": (800 * 500 + 500 * 10) / 500,
    }
    mean = sum(per_channel.values()) / 4
    costs = {name: noise.cost for name, noise in rbp.pruning_groups(pruned).items()}
    assert costs == pytest.approx({name: value / mean for name, value in per_channel.items()})
    noise = rbp.pruning_groups(pruned)["conv1"]
    noise.mode = "active"
    assert noise.kl_loss() == pytest.approx(costs["conv1"] * noise.kl_weight * float(
        np.sum(rbp.noise.kl_divergence(noise.logits, noise.prior_keep_prob))) / 100, rel=1e-5)


def test_coupled_group_costs_every_producer_and_reader_once():
    inputs = keras.Input((6, 6, 4))
    x = L.ReLU()(L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 1, name="stem")(inputs)))
    y = L.BatchNormalization(name="branch_bn")(L.Conv2D(8, 3, padding="same", name="branch")(x))
    outputs = L.Dense(3)(L.GlobalAveragePooling2D()(L.Add()([x, y])))
    pruned = rbp.prune(keras.Model(inputs, outputs), dataset_size=100)
    assert list(rbp.pruning_groups(pruned)) == ["stem_bn_rbp_noise"]
    # Producers stem and branch, readers branch and the Dense, per channel.
    macs = 36 * 4 * 8 + 36 * 9 * 8 * 8 + 36 * 9 * 8 * 8 + 8 * 3
    assert rbp.metrics.channel_costs(pruned) == {"stem_bn_rbp_noise": pytest.approx(macs / 8)}


def test_a_shared_layer_noise_adds_one_kl_over_its_calls():
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = L.Dense(8, activation="relu", name="shared")
    x = L.Concatenate()([shared(a), shared(b)])
    model = keras.Model([a, b], L.Dense(3, name="out")(x))
    pruned = rbp.prune(model, dataset_size=100)
    noise = rbp.pruning_groups(pruned)["shared"]
    assert noise.calls == 2
    noise.mode = "active"
    pruned([np.ones((2, 6), "float32")] * 2, training=True)
    assert float(sum(pruned.losses)) == pytest.approx(noise.kl_loss(), rel=1e-6)
    assert noise.kl_loss() == pytest.approx(noise.kl_weight * float(
        np.sum(rbp.noise.kl_divergence(noise.logits, noise.prior_keep_prob))) / 100, rel=1e-5)


def test_cost_aware_prices_a_group_without_macs_as_the_cheapest():
    x, z = keras.Input((4,), name="x"), keras.Input((3,), name="z")
    model = keras.Model([x, z], [L.Dense(2, name="out")(x), L.ReLU(name="passthrough")(z)])
    pruned = rbp.prune(model, dataset_size=100, input_features=True, cost_aware=True)
    costs = {name: noise.cost for name, noise in rbp.pruning_groups(pruned).items()}
    # x's pixels carry 2 MACs each, z's none: z is priced like x, not free.
    assert costs == {"x_rbp_noise": pytest.approx(2.0), "z_rbp_noise": pytest.approx(2.0)}


def test_cost_aware_without_any_macs_keeps_the_plain_prior():
    z = keras.Input((3,), name="z")
    model = keras.Model(z, L.ReLU(name="passthrough")(z))
    with pytest.warns(UserWarning, match="no pruning group carries MACs; every group keeps cost 1"):
        pruned = rbp.prune(model, dataset_size=100, input_features=True, cost_aware=True)
    assert [noise.cost for noise in rbp.pruning_groups(pruned).values()] == [1.0]
