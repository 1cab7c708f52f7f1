"""Tests of params, MACs, architecture strings and report()."""

import json

import numpy as np

import keras_rbp as rbp
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
    assert data["totals"]["macs_before"] == sum(s.macs for s in layer_stats(model))
    text = str(report)
    assert "20-50-800-500 -> 5-9-144-21" in text
    assert "conv2" in text and "MACs" in text
