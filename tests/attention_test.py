"""Attention heads and MLP widths as pruning groups: a functional ViT,
KerasHub's TransformerEncoder and ViTBackbone, their costs and budgets."""

import warnings

import numpy as np
import pytest

import keras_rbp as rbp
from keras_rbp._keras import IS_KERAS_3, keras
from keras_rbp.budget import Budget, CostModel
from keras_rbp.metrics import channel_costs
from tests.surgery_test import assert_same_outputs

L = keras.layers


def _heads(layer):
    return layer.get_config()["num_heads"]


def _random_masks(pruned, seed):
    rng = np.random.RandomState(seed)
    masks = {}
    for name, noise in rbp.pruning_groups(pruned).items():
        order = rng.permutation(noise.channels)
        mask = np.zeros(noise.channels, bool)
        mask[order[: rng.randint(1, noise.channels)]] = True  # keeps 1 to channels - 1
        masks[name] = mask
    return masks


def test_a_functional_vit_prunes_heads_and_mlp_widths_and_shrinks_exactly(tmp_path):
    model = rbp.models.small_vit(dim=32, heads=4, mlp_dim=48)
    pruned = rbp.prune(model, dataset_size=100)
    # The residual stream passes LayerNormalization, so it gets no noise.
    assert {name: noise.channels for name, noise in rbp.pruning_groups(pruned).items()} == {
        "block1_attention": 4, "block1_mlp1": 48, "block2_attention": 4, "block2_mlp1": 48,
    }
    masks = _random_masks(pruned, seed=0)
    rbp.freeze(pruned, masks)
    small = rbp.shrink(pruned)
    x = np.random.RandomState(0).rand(4, 28, 28, 1).astype("float32")
    assert_same_outputs(pruned, small, x)
    for block in (1, 2):
        assert _heads(small.get_layer(f"block{block}_attention")) == masks[f"block{block}_attention"].sum() < 4
        assert small.get_layer(f"block{block}_mlp1").units == masks[f"block{block}_mlp1"].sum() < 48
    result = rbp.export(small, str(tmp_path / "vit"), check_data=x, benchmark=False)
    assert result["files"]["model.tflite"]["check"]["value"] <= 1e-4


def test_a_head_whose_theta_is_zero_contributes_nothing():
    # The pruned model with head 1 frozen to 0 equals the model whose output
    # projection ignores head 1.
    model = rbp.models.small_vit(dim=16, heads=2, mlp_dim=16, blocks=1)
    pruned = rbp.prune(model, dataset_size=100, layers=["block1_attention"])
    rbp.freeze(pruned, {"block1_attention": np.array([True, False])}, {"block1_attention": np.array([1.0, 0.0])})
    attention = model.get_layer("block1_attention")
    weights = attention.get_weights()
    weights[6][1] = 0  # the output kernel, [heads, value_dim, width]
    attention.set_weights(weights)
    x = np.random.RandomState(1).rand(2, 28, 28, 1).astype("float32")
    np.testing.assert_allclose(np.asarray(pruned(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_attention_macs_count_projections_and_products_per_head():
    query, value, mask = keras.Input((5, 12)), keras.Input((7, 10)), keras.Input((5, 7), dtype="bool")
    attention = L.MultiHeadAttention(3, 4, value_dim=6, name="cross")
    model = keras.Model([query, value, mask], attention(attention_mask=mask, value=value, query=query))
    (stats,) = rbp.metrics.layer_stats(model)
    heads, queries, keys, key_dim, value_dim = 3, 5, 7, 4, 6
    expected = heads * (
        queries * 12 * key_dim + keys * 10 * key_dim + keys * 10 * value_dim
        + queries * keys * (key_dim + value_dim) + queries * value_dim * 12
    )
    assert stats.macs == expected


@pytest.mark.parametrize("conv_stem", [0, 8])
def test_the_cost_model_counts_what_report_counts_on_a_shrunk_transformer(conv_stem):
    model = rbp.models.small_vit(dim=32, heads=4, mlp_dim=48, conv_stem=conv_stem)
    pruned = rbp.prune(model, dataset_size=100)
    costs = CostModel(pruned)
    full = rbp.report(model, model).totals
    assert costs.full() == {"macs": full["macs_before"], "params": full["params_before"]}
    masks = _random_masks(pruned, seed=1)
    predicted = costs.cost(masks)
    rbp.freeze(pruned, masks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        totals = rbp.report(model, rbp.shrink(pruned, keep_input_shape=False)).totals
    assert predicted == {"macs": totals["macs_after"], "params": totals["params_after"]}


def test_a_mac_budget_spends_across_convolution_channels_heads_and_mlp_widths():
    model = rbp.models.small_vit(dim=32, heads=4, mlp_dim=64, conv_stem=16)
    pruned = rbp.prune(model, dataset_size=100, cost_aware=True)
    costs = channel_costs(pruned)
    attention_macs = {s.name: s.macs for s in rbp.metrics.layer_stats(pruned)}["block1_attention"]
    assert costs["block1_attention"] == attention_macs / 4
    budget = Budget(pruned, "macs", 0.5)
    groups = rbp.pruning_groups(pruned)
    scores = {name: np.random.RandomState(3).rand(noise.channels) for name, noise in groups.items()}
    masks = budget.stage_masks({}, scores, [])
    assert 0.95 * budget.target <= budget.cost(masks) <= budget.target
    removed = {name: int((~mask).sum()) for name, mask in masks.items()}
    assert removed["stem_bn"] > 0  # convolution channels
    assert removed["block1_attention"] + removed["block2_attention"] > 0  # heads
    assert removed["block1_mlp1"] > 0 and removed["block2_mlp1"] > 0  # MLP widths


@pytest.mark.skipif(not IS_KERAS_3, reason="KerasHub needs Keras 3")
@pytest.mark.parametrize("name", ["TransformerEncoderModel", "ViTBackbone", "BertBackbone"])
def test_kerashub_transformers_prune_heads_and_mlp_widths(name, tmp_path):
    from benchmarks import hub_models

    model = hub_models.build(name)
    pruned = rbp.prune(model, dataset_size=100)
    groups = rbp.pruning_groups(pruned)
    attention = [group for group in groups if isinstance(_find(pruned, group), rbp.RBPHeadWrapper)]
    assert len(attention) == 2 and len(groups) == 4, groups
    masks = _random_masks(pruned, seed=2)
    rbp.freeze(pruned, masks)
    small = rbp.shrink(pruned)
    inputs = hub_models.example_inputs(name)
    assert_same_outputs(pruned, small, inputs, tolerance=1e-4)
    for group in groups:
        layer = _find(small, group)
        width = _heads(layer) if group in attention else layer.units
        assert width == masks[group].sum() < groups[group].channels, group
    result = rbp.export(small, str(tmp_path / name), check_data=inputs, benchmark=False)
    check = result["files"]["model.tflite"]["check"]
    assert check["value"] <= 1e-4 * max(1.0, check["output_scale"])


def _find(model, name):
    for layer in model._flatten_layers(include_self=False):
        if layer.name == name:
            return layer
    raise KeyError(name)


class EncoderBlock(L.Layer):
    """A user's transformer block: one layer whose call runs attention and
    an MLP, as users write them."""

    def __init__(self, dim, heads, mlp_dim, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.mlp_dim = dim, heads, mlp_dim
        self.norm1 = L.LayerNormalization(name="norm1")
        self.attention = L.MultiHeadAttention(heads, dim // heads, name="attention")
        self.norm2 = L.LayerNormalization(name="norm2")
        self.mlp1 = L.Dense(mlp_dim, activation="gelu", name="mlp1")
        self.mlp2 = L.Dense(dim, name="mlp2")

    def call(self, x):
        y = self.norm1(x)
        x = x + self.attention(y, y)
        return x + self.mlp2(self.mlp1(self.norm2(x)))

    def get_config(self):
        return dict(super().get_config(), dim=self.dim, heads=self.heads, mlp_dim=self.mlp_dim)


@pytest.mark.skipif(not IS_KERAS_3, reason="tf_keras records no calls inside a layer: the block stays a boundary")
def test_a_users_transformer_block_is_traced_into_heads_and_mlp_width():
    inputs = keras.Input((10, 16))
    x = EncoderBlock(16, 4, 32, name="block1")(inputs)
    x = EncoderBlock(16, 4, 32, name="block2")(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(L.GlobalAveragePooling1D()(x)))
    pruned = rbp.prune(model, dataset_size=100)
    groups = rbp.pruning_groups(pruned)
    assert {name: noise.channels for name, noise in groups.items()} == {
        "attention": 4, "mlp1": 32, "block2_attention": 4, "block2_mlp1": 32,
    }
    masks = _random_masks(pruned, seed=3)
    rbp.freeze(pruned, masks)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(4, 10, 16).astype("float32"))
    assert _heads(small.get_layer("block2_attention")) == masks["block2_attention"].sum() < 4
    assert small.get_layer("mlp1").units == masks["mlp1"].sum() < 32


def test_an_attention_layer_shared_across_blocks_prunes_and_shrinks_exactly():
    """One MultiHeadAttention and one MLP called by two blocks, each call on
    query and value (ALBERT shares its encoder across depth in this way):
    each shared layer is one group, and its later call's shapes come from
    its own arguments."""
    attention = L.MultiHeadAttention(4, 4, name="attention")
    mlp1, mlp2 = L.Dense(24, activation="relu", name="mlp1"), L.Dense(16, name="mlp2")
    inputs = keras.Input((6, 16))
    x = inputs
    for _ in range(2):
        x = L.Add()([x, attention(x, x)])
        x = L.Add()([x, mlp2(mlp1(x))])
    model = keras.Model(inputs, L.Dense(3, name="out")(L.GlobalAveragePooling1D()(x)))
    pruned = rbp.prune(model, dataset_size=100)
    groups = rbp.pruning_groups(pruned)
    assert {name: noise.channels for name, noise in groups.items()} == {"attention": 4, "mlp1": 24}
    masks = _random_masks(pruned, seed=4)
    rbp.freeze(pruned, masks)
    small = rbp.shrink(pruned)
    assert_same_outputs(pruned, small, np.random.RandomState(0).rand(4, 6, 16).astype("float32"))
    assert _heads(small.get_layer("attention")) == masks["attention"].sum() < 4
    assert small.get_layer("mlp1").units == masks["mlp1"].sum() < 24
