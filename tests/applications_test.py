"""prune() and shrink() on every Keras Application (weights=None, small
inputs, random masks keeping about 70 %): exact outputs, the channel counts
the masks and dependency groups imply, at least 1.3x fewer parameters, and
a file that loads back without keras_rbp.

Two models run by default, between them residual projections with
BatchNormalization, depthwise convolutions, squeeze-and-excitation and a
hard-swish written with operations; the other constructors are marked `heavy`
(`python -m pytest -n 2 -m heavy tests/applications_test.py`: about 15
minutes a Keras mode on 2 cores).
"""

import json
import os
import warnings

import numpy as np
import pytest

import keras_rbp as rbp
from benchmarks.applications import APPLICATIONS, build_application
from keras_rbp._keras import IS_KERAS_3, keras
from keras_rbp.graph import graph_of
from tests.surgery_test import _freeze_random, assert_same_outputs

DEFAULT = {"MobileNetV3Small", "ResNet50"}
# The warning that says why some masked channels stay: NASNet's many Add
# merges keep the union of their inputs' random masks (its parameters still
# fall 1.7x); RegNet's grouped convolutions keep the union over their groups.
WARNINGS = {
    "NASNetMobile": "merges them with channels that another input keeps",
    "RegNetX002": "removes a channel position from every group or from none",
}
# Models whose parameters stay within 1.3x: RegNet, for the reason above.
BOUNDED = {"RegNetX002"}


def _find_layer(model, name):
    """Layer `name` of `model` or of a model nested in it."""
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            found = _find_layer(layer, name)
            if found is not None:
                return found
    return None


def _channel_layer(model, group):
    """The layer of a pruned model that makes the channels of `group`: its
    RBPWrapper, or the layer a standalone noise's first call reads."""
    node = graph_of(model).layers.get(group)
    if node is not None:
        return node.calls[0][0].layer if node.class_name == "RBPNoise" else group
    for layer in model.layers:
        if isinstance(layer, keras.Model) and _find_layer(layer, group) is not None:
            return _channel_layer(layer, group)
    raise AssertionError(f"no group {group!r}")


@pytest.mark.parametrize("name", [name if name in DEFAULT else pytest.param(name, marks=pytest.mark.heavy)
                                  for name in APPLICATIONS])
def test_application(name, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, size = build_application(name)
        pruned = rbp.prune(model, dataset_size=1000)
        masks = _freeze_random(pruned, keep=0.7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = rbp.shrink(pruned)
        kept = rbp.kept_channels(pruned)
    images = np.random.RandomState(0).rand(2, size, size, 3).astype("float32") * 255
    assert_same_outputs(pruned, small, images)
    messages = [str(w.message) for w in caught]
    for group, noise in rbp.pruning_groups(pruned).items():
        # The small layer holds the channels the plan keeps; a channel the
        # group's mask removes is kept only with a warning that says why.
        channels = _find_layer(small, _channel_layer(pruned, group)).output.shape[noise.axis]
        assert channels == len(kept[group]), group
        lost = int(np.isin(kept[group], np.flatnonzero(~masks[group])).sum())
        if lost:
            assert any(f"group {group!r} keeps {lost} channel(s)" in m for m in messages), group
    ratio = model.count_params() / small.count_params()
    if name in WARNINGS:
        assert any(WARNINGS[name] in m for m in messages), name
    if name in BOUNDED:
        assert ratio > 1.0, f"{name}: parameters fell only {ratio:.2f}x"
    else:
        assert ratio >= 1.3, f"{name}: parameters fell only {ratio:.2f}x"
    assert "keras_rbp" not in json.dumps(small.get_config(), default=str)
    # tf_keras's own .keras format fails to load its ConvNeXt, shrunk or not.
    path = os.path.join(tmp_path, "small.keras" if IS_KERAS_3 else "small.h5")
    small.save(path)
    # Application-private layers (ConvNeXt's LayerScale) only: passing Keras's
    # own Add would turn an `x + 3.0` operation into an Add layer.
    custom_objects = {
        type(layer).__name__: type(layer)
        for layer in small.layers
        if getattr(keras.layers, type(layer).__name__, None) is not type(layer)
    }
    loaded = keras.models.load_model(path, compile=False, custom_objects=custom_objects)
    np.testing.assert_allclose(loaded(images), small(images), rtol=1e-5, atol=1e-6)
