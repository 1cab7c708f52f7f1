"""Tests of params, MACs, architecture strings and report()."""

import json

import numpy as np
import pytest

import keras_rbp as rbp
from keras_rbp._keras import keras
from keras_rbp.metrics import architecture, layer_stats
from keras_rbp.models import lenet5_caffe, lenet_300_100


def test_lenet5_counts_and_architecture():
    model = lenet5_caffe()
    macs = {s.name: s.macs for s in layer_stats(model)}
    assert macs == {
        "conv1": 25 * 20 * 24 * 24,
        "conv2": 25 * 20 * 50 * 8 * 8,
        "fc1": 800 * 500,
        "logits": 500 * 10,
    }
    assert architecture(model) == "20-50-800-500"
    assert architecture(lenet_300_100()) == "784-300-100"


def test_report_of_a_shrunk_lenet5():
    model = lenet5_caffe()
    pruned = rbp.prune(model, dataset_size=100, flatten_features=True)
    masks = {
        "conv1": np.arange(20) < 5,
        "conv2": np.arange(50) < 9,
        "flatten_rbp_noise": np.ones(800, bool),
        "fc1": np.arange(500) < 21,
    }
    rbp.freeze(pruned, masks)
    small = rbp.shrink(pruned)
    report = rbp.report(model, small)
    assert report.architecture_after == "5-9-144-21"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["architecture_before"] == "20-50-800-500"
    expected_macs = 25 * 5 * 576 + 25 * 5 * 9 * 64 + 144 * 21 + 21 * 10
    assert data["totals"]["macs_after"] == expected_macs
    # By hand: conv1 25 x 20 x 24 x 24, conv2 25 x 20 x 50 x 8 x 8, fc1 800 x 500, logits 500 x 10.
    assert data["totals"]["macs_before"] == 288_000 + 1_600_000 + 400_000 + 5_000
    # Weights and biases: 25 x 20 + 20, 25 x 20 x 50 + 50, 800 x 500 + 500, 500 x 10 + 10; after,
    # 25 x 5 + 5, 25 x 5 x 9 + 9, 144 x 21 + 21, 21 x 10 + 10 (theta folded in, nothing added).
    assert data["totals"]["params_before"] == 520 + 25_050 + 400_500 + 5_010
    assert data["totals"]["params_after"] == 130 + 1_134 + 3_045 + 220
    text = str(report)
    assert "20-50-800-500 -> 5-9-144-21" in text
    assert "conv2" in text and "MACs" in text


def test_a_frozen_one_hot_dense_of_the_user_counts_as_a_layer():
    inputs = rbp._keras.keras.Input((4,))
    dense = rbp._keras.keras.layers.Dense(2, use_bias=False, trainable=False, name="pick")
    model = rbp._keras.keras.Model(inputs, dense(inputs))
    dense.set_weights([np.eye(4, 2, dtype="float32")])  # one non-zero entry per column
    (stats,) = layer_stats(model)
    assert (stats.kind, stats.params, stats.macs) == ("Dense", 8, 8)


def test_shrinks_selection_layer_is_listed_but_not_counted():
    keras = rbp._keras.keras
    inputs = keras.Input((6, 6, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x)))
    pruned = rbp.prune(model, dataset_size=100, input_features=True, layers=lambda layer: False)
    rbp.freeze(pruned, {"image_rbp_noise": np.array([True, False, True])})
    small = rbp.shrink(pruned)  # the convolution reads the 2 kept channels through a selection
    kinds = {s.name: (s.kind, s.macs) for s in layer_stats(small)}
    assert kinds["image_select"][0] == "selection"
    assert rbp.report(model, small).totals["macs_after"] == kinds["conv"][1] + kinds["head"][1] == 16 * 9 * 2 * 4 + 8


def test_report_on_a_model_of_any_input_size_names_the_layer_whose_macs_need_it():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match=r"MACs of layer 'conv' depend on sizes its input shape \(None, None, None, 3\)"):
        rbp.report(model, model)
