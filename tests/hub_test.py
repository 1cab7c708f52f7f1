"""prune() and shrink() on KerasHub models as the user has them: Backbone
and Task classes (Functional subclasses) with composite blocks, built
offline from small configs. Random masks keep about 70 % of each group;
the shrunk model's outputs equal the pruned model's and it holds fewer
parameters. Keras 3 only: KerasHub needs it."""

import numpy as np
import pytest

import keras_rbp as rbp
from keras_rbp._keras import IS_KERAS_3, keras
from tests.surgery_test import _freeze_random

pytestmark = pytest.mark.skipif(not IS_KERAS_3, reason="KerasHub needs Keras 3")

# One model of each family that shrinks exactly, with the parameter ratio
# it reaches (benchmarks/hub_models.py builds them).
SHRINKS = {
    "ResNetImageClassifier": 1.5,
    "CSPNetBackbone": 1.3,
    "XceptionBackbone": 1.3,
    "EfficientNetBackbone": 1.5,
    "MobileNetImageClassifier": 1.5,
    "DenseNetBackbone": 1.1,
    "VGGBackbone": 1.3,
    "ViTBackbone": 1.05,
    "TransformerEncoderModel": 1.05,
    "HGNetV2ImageClassifier": 1.5,  # learnable scalar affines, probed as per channel
    "DeepLabV3ImageSegmenter": 1.3,  # a dict of pyramid outputs from a nested model
    "DINOV2Backbone": 1.05,  # Identity layers without a config
    "SigLIPBackbone": 1.05,  # two nested encoders, each with an 'embedding'
    "SAMImageSegmenter": 1.01,  # a nested model called on a dict of inputs
}


@pytest.mark.parametrize("name", sorted(SHRINKS))
def test_hub_model_shrinks_exactly(name):
    from benchmarks import hub_models

    model = hub_models.build(name)
    before = [w.copy() for w in model.get_weights()]
    pruned = rbp.prune(model, dataset_size=1000)
    groups = rbp.pruning_groups(pruned)
    assert groups, name
    _freeze_random(pruned, keep=0.7)
    small = rbp.shrink(pruned)
    inputs = hub_models.example_inputs(name)
    expected = keras.tree.flatten(pruned(inputs, training=False))
    actual = keras.tree.flatten(small(inputs, training=False))
    for a, b in zip(expected, actual):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
    assert model.count_params() / small.count_params() >= SHRINKS[name]
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
