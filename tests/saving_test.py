"""Save and load round trips of pruned models, in the active Keras version."""

import os

import numpy as np
import pytest

import keras_rbp as rbp
from keras_rbp._keras import IS_KERAS_3, keras
from keras_rbp.methods import METHODS
from keras_rbp.models import lenet5_caffe

FORMATS = ["keras"] if IS_KERAS_3 else ["savedmodel", "h5"]


def _state(model):
    return [
        (n.name, n.mode, n.mask.numpy(), n.frozen_value.numpy(), *n.parameters().values(),
         float(n.noise_scale.numpy()), n.steps_drawn)
        for n in rbp.pruning_groups(model).values()
    ]


def _save_and_load(model, folder, fmt):
    path = os.path.join(folder, "model." + fmt if fmt != "savedmodel" else "model")
    if fmt == "savedmodel":
        model.save(path, save_format="tf")
    else:
        model.save(path)
    return keras.models.load_model(path)


# RBP in every format; each peer method in the quickest one, marked heavy.
@pytest.mark.parametrize("fmt, method", [(fmt, "rbp") for fmt in FORMATS]
                         + [pytest.param(FORMATS[-1], method, marks=pytest.mark.heavy)
                            for method in sorted(METHODS) if method != "rbp"])
def test_round_trip_keeps_modes_masks_and_logits(tmp_path, fmt, method):
    pruned = rbp.prune(lenet5_caffe(), dataset_size=1000, flatten_features=True, seed=4, method=method)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.rand(16, 28, 28, 1).astype("float32")
    y = np.arange(16) % 10
    noises = list(rbp.pruning_groups(pruned).values())
    noises[0].freeze(np.arange(20) % 3 > 0, np.linspace(0.5, 1.0, 20))
    noises[1].mode = "active"
    noises[1].noise_scale.assign(2.5)
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0)
    loaded = _save_and_load(pruned, str(tmp_path), fmt)

    for expected, got in zip(_state(pruned), _state(loaded)):
        assert expected[:2] == got[:2]
        for a, b in zip(expected[2:], got[2:]):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)
    assert [type(layer).__name__ for layer in loaded.layers] == [
        type(layer).__name__ for layer in pruned.layers
    ]
    # The loaded model's noise keeps working: the same draws as the original.
    loaded.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(pruned.evaluate(x, y, verbose=0), rel=1e-5)
