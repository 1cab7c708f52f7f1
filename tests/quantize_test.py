"""Tests of quantize_aware(): tfmot quantization-aware training in tf_keras
mode, a clear error in Keras 3 mode."""

import os

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import keras_rbp as rbp
from keras_rbp._keras import IS_KERAS_3
from keras_rbp.datasets import load_mnist
from keras_rbp.models import lenet5_caffe

from conftest import mnist_dir
from export_test import trained_and_shrunk


@pytest.mark.skipif(not IS_KERAS_3, reason="the Keras 3 error")
def test_keras3_says_the_route_needs_legacy_keras(tmp_path):
    with pytest.raises(RuntimeError, match="needs Keras 2.*TF_USE_LEGACY_KERAS=1"):
        rbp.quantize_aware(lenet5_caffe(), tmp_path / "qat.tflite", None, None)
    assert not os.path.exists(tmp_path / "qat.tflite")


@pytest.mark.skipif(IS_KERAS_3, reason="tensorflow-model-optimization needs tf_keras")
def test_quantization_aware_training_of_a_shrunk_lenet(tmp_path):
    (x_train, y_train), (x_test, y_test) = load_mnist(mnist_dir())
    _, small = trained_and_shrunk(lenet5_caffe)
    out_path = tmp_path / "qat.tflite"
    result = rbp.quantize_aware(
        small, out_path, (x_train[:2000], y_train[:2000]), (x_test[:1000], y_test[:1000])
    )

    assert os.listdir(tmp_path) == ["qat.tflite"]
    details = Interpreter(model_path=str(out_path)).get_input_details()[0]
    assert details["dtype"] == np.int8
    assert result["qat_int8"]["size_bytes"] == os.path.getsize(out_path)
    assert result["float"]["accuracy"] > 0.8
    # A short fine-tune keeps the accuracy of post-training quantisation.
    for kind in ("qat_int8", "ptq_int8"):
        assert result[kind]["accuracy"] > result["float"]["accuracy"] - 0.03

    with pytest.raises(FileExistsError, match="out_path .*overwrite=True"):
        rbp.quantize_aware(small, out_path, (x_train[:10], y_train[:10]), (x_test[:10], y_test[:10]))


@pytest.mark.skipif(IS_KERAS_3, reason="tensorflow-model-optimization needs tf_keras")
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_data": np.zeros((4, 28, 28, 1))}, "train_data must be a pair"),
        ({"eval_data": (np.zeros((4, 28, 28, 1)), np.zeros(3))}, "eval_data needs as many labels"),
        ({"epochs": 0}, "epochs must be a positive integer, received: 0"),
    ],
)
def test_argument_errors_name_the_argument(tmp_path, kwargs, message):
    data = (np.zeros((4, 28, 28, 1)), np.zeros(4, dtype="int64"))
    arguments = {"train_data": data, "eval_data": data, **kwargs}
    with pytest.raises(ValueError, match=message):
        rbp.quantize_aware(lenet5_caffe(), tmp_path / "qat.tflite", **arguments)
