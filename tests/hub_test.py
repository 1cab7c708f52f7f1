"""prune() and shrink() on KerasHub models as the user has them: Backbone
and Task classes (Functional subclasses) with composite blocks, built
offline from small configs. Random masks keep about 70 % of each group;
the shrunk model's outputs equal the pruned model's and it holds fewer
parameters. A KerasHub classifier trained on MNIST goes through
`prune_and_export` to LiteRT. Keras 3 only: KerasHub needs it."""

import json

from ai_edge_litert.interpreter import Interpreter
import numpy as np
import pytest

import keras_rbp as rbp
from keras_rbp._keras import IS_KERAS_3, keras
from tests.conftest import mnist_dir
from tests.surgery_test import _freeze_random, assert_same_outputs

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
    "AlbertBackbone": 1.05,  # one encoder layer called at every depth
    "HGNetV2ImageClassifier": 1.5,  # learnable scalar affines, probed as per channel
    "DeepLabV3ImageSegmenter": 1.3,  # a dict of pyramid outputs from a nested model
    "DINOV2Backbone": 1.05,  # Identity layers without a config
    "SigLIPBackbone": 1.05,  # two nested encoders, each with an 'embedding'
    "SAMImageSegmenter": 1.01,  # a nested model called on a dict of inputs
    "SegFormerImageSegmenter": 1.01,  # an encoder layer whose constructor takes no name
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
    assert_same_outputs(pruned, small, hub_models.example_inputs(name), tolerance=1e-4)
    assert model.count_params() / small.count_params() >= SHRINKS[name]
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _rgb32(images):
    """MNIST digits padded to 32x32 and repeated over 3 channels."""
    return np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)


def test_a_hub_image_classifier_trained_on_mnist_prunes_to_half_its_macs_and_runs_in_litert(tmp_path):
    import keras_hub

    (x_train, y_train), (x_test, y_test) = rbp.datasets.load_mnist(mnist_dir())
    x, y, x_val, y_val = _rgb32(x_train[:3000]), y_train[:3000], _rgb32(x_test[:1000]), y_test[:1000]
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(32, 32, 3),  # a fixed size: MACs, and so a MAC budget, need it
    )
    model = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=10, preprocessor=None)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    result = rbp.prune_and_export(
        model, (x, y), (x_val, y_val), output_dir=tmp_path / "out", loss="sparse_categorical_crossentropy",
        target_macs=0.5, plan_epochs=2, batch_size=64, quantize="int8", verbose=0,
    )
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    pruning, totals = summary["pruning"], summary["report"]["totals"]
    assert abs(totals["macs_after"] / (0.5 * totals["macs_before"]) - 1) <= 0.05
    assert pruning["after"] <= pruning["before"] + 0.01, pruning  # within 1 point of the unpruned error
    runner = Interpreter(model_path=str(tmp_path / "out" / "model.tflite")).get_signature_runner()
    name = next(iter(runner.get_input_details()))
    litert = next(iter(runner(**{name: x_val[:64]}).values()))
    np.testing.assert_allclose(litert, result.small.predict(x_val[:64], verbose=0), atol=1e-4)
    assert summary["files"]["model_int8.tflite"]["check"]["value"] >= 0.97  # top-1 agreement with Keras
