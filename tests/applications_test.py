"""shrink() on Keras Applications (weights=None, small inputs): exact
outputs, fewer parameters, and a file that loads back without keras_rbp."""

import json
import os
import warnings

import numpy as np
import pytest

import keras_rbp as rbp
from keras_rbp._keras import keras
from tests.surgery_test import _freeze_random, assert_same_outputs

APPLICATIONS = {
    "vgg16": lambda: keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=10),
    "resnet50": lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10),
    "mobilenet_v2": lambda: keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10
    ),
    "densenet121": lambda: keras.applications.DenseNet121(
        weights=None, input_shape=(32, 32, 3), classes=10
    ),
    "efficientnet_b0": lambda: keras.applications.EfficientNetB0(
        weights=None, input_shape=(32, 32, 3), classes=10
    ),
}


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_application(name, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = APPLICATIONS[name]()
        pruned = rbp.prune(model, dataset_size=1000)
        _freeze_random(pruned, keep=0.7)
        small = rbp.shrink(pruned)
    images = np.random.RandomState(0).rand(2, 32, 32, 3).astype("float32") * 255
    assert_same_outputs(pruned, small, images)
    assert small.count_params() < model.count_params()
    assert "keras_rbp" not in json.dumps(small.get_config(), default=str)
    if hasattr(small, "export"):
        path = os.path.join(tmp_path, "small.keras")
    else:
        path = os.path.join(tmp_path, "small.h5")
    small.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded(images), small(images), rtol=1e-5, atol=1e-6)
