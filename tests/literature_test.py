"""The peers' MACs in keras_rbp's convention: `benchmarks.literature.macs`
counts as `report` does."""

import pytest

import keras_rbp as rbp
from benchmarks.literature import macs, published_macs


@pytest.mark.parametrize("model", ["lenet_300_100", "lenet5_caffe"])
def test_macs_of_the_unpruned_architecture_equal_reports_count(model):
    network = getattr(rbp.models, model)()
    summary = rbp.report(network, network)
    assert macs(model, summary.architecture_before) == summary.totals["macs_before"]


def test_published_peers_in_keras_rbp_convention():
    # The figures the project compares with (the sources print 217K, 158K, 1.3M
    # and RigL's 19,100 FLOPs).
    assert published_macs("lenet5_caffe", "SBP") == 212_802
    assert published_macs("lenet5_caffe", "BC-GHS") == 153_376
    assert published_macs("lenet5_caffe", "L0") == 1_113_410
    assert published_macs("lenet_300_100", "VIBNet") == 9_560
