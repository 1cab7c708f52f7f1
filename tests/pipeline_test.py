"""keras_rbp.pipeline: the whole path as one recipe."""

import dataclasses

import numpy as np
import pytest

from conftest import mnist_dir
from keras_rbp import measures, models, recipes
from keras_rbp._keras import keras


def _recipe(tmp_path, method):
    return recipes.Recipe(
        model="lenet_300_100", dataset="mnist", data_dir=mnist_dir(), train_examples=1024, test_examples=1000,
        pretrain_epochs=2, epochs_per_stage=1, finetune_epochs=1, target_macs=0.3, method=method,
        input_features=True,
        baseline_dir=str(tmp_path / "baselines"),
    )


def test_a_kept_baseline_is_reused_by_every_run_and_method(tmp_path):
    trained = recipes.run(_recipe(tmp_path, "rbp"), verbose=0)
    (path,) = (tmp_path / "baselines").iterdir()
    saved = (path.stat().st_mtime_ns, path.read_bytes())
    loaded = recipes.run(_recipe(tmp_path, "rbp"), verbose=0)
    assert (path.stat().st_mtime_ns, path.read_bytes()) == saved  # read, not written again
    assert loaded["baseline_error"] == trained["baseline_error"]
    assert loaded["kept"] == trained["kept"]
    assert loaded["kept_features"] == trained["kept_features"]  # the same pixels: the same training
    assert loaded["final_error"] == trained["final_error"]

    vib_run = recipes.run(_recipe(tmp_path, "vib"), verbose=0)
    assert list((tmp_path / "baselines").iterdir()) == [path]
    assert vib_run["baseline_error"] == trained["baseline_error"]
    assert vib_run["recipe"]["method"] == "vib"
    totals = vib_run["report"]["totals"]
    assert totals["macs_after"] <= 0.3 * totals["macs_before"]  # pruned to the recipe's target
    # shrink is exact: the small model errs where the pruned one does, on
    # the 1,000 test images.
    assert 1000 * vib_run["final_error"] == pytest.approx(round(1000 * vib_run["final_error"]), abs=1e-9)
    assert abs(vib_run["final_error"] - vib_run["pruned_error"]) <= 0.002

    # A run trains no baseline of its own when one is kept: one whose
    # weights were replaced in the file has the error of those weights.
    baseline = models.lenet_300_100((784,), 10)
    baseline.load_weights(str(path))
    baseline.set_weights([-w for w in baseline.get_weights()])
    baseline.save_weights(str(path))
    (_, _), (x_test, y_test) = recipes.load_data(_recipe(tmp_path, "rbp"))
    expected = float(np.mean(np.argmax(baseline.predict(x_test, verbose=0), -1) != y_test))
    assert expected > trained["baseline_error"] + 0.2
    assert recipes.run_baseline(_recipe(tmp_path, "rbp"), verbose=0)["baseline_error"] == expected


@pytest.mark.heavy
def test_the_validation_error_is_measured_on_the_held_out_training_images(tmp_path):
    recipe = recipes.Recipe(
        model="lenet_300_100", dataset="mnist", data_dir=mnist_dir(), train_examples=1024, test_examples=1000,
        validation_split=0.25, pretrain_epochs=1, epochs_per_stage=1, finetune_epochs=1, target_macs=0.3,
        method="magnitude", input_features=True, baseline_dir=str(tmp_path / "baselines"),
    )
    first = recipes.run(recipe, verbose=0)
    fewer_tests = recipes.run(dataclasses.replace(recipe, test_examples=300), verbose=0)
    errors = 256 * np.array([first["validation_error"], fewer_tests["validation_error"]])
    np.testing.assert_allclose(errors, np.round(errors), atol=1e-9)  # counted on the last 256 images
    assert first["validation_error"] == fewer_tests["validation_error"]
    assert 0 < first["validation_error"] < 0.5


@pytest.mark.heavy
def test_run_baseline_trains_the_baseline_that_run_starts_from(tmp_path):
    recipe = _recipe(tmp_path, "rbp")
    alone = recipes.run_baseline(recipe, verbose=0)
    whole = recipes.run(recipe, verbose=0)
    assert len(list((tmp_path / "baselines").iterdir())) == 1
    assert whole["baseline_error"] == alone["baseline_error"]
    held_out = 1024 - 922  # validation_split 0.1 of 1,024 images
    np.testing.assert_allclose(held_out * alone["validation_error"], round(held_out * alone["validation_error"]),
                               atol=1e-9)
    assert 0 < alone["validation_error"] < 0.5


@pytest.mark.heavy
def test_the_baselines_weight_decay_shrinks_its_weights_and_keeps_it_apart(tmp_path):
    recipe = _recipe(tmp_path, "rbp")
    decayed = dataclasses.replace(recipe, pretrain_weight_decay=10.0)
    for each in (recipe, decayed):
        recipes.run_baseline(each, verbose=0)
    paths = sorted((tmp_path / "baselines").iterdir())
    assert [path.name.endswith("_wd10.weights.h5") for path in paths] == [False, True]
    norms = []
    for path in paths:
        baseline = models.lenet_300_100((784,), 10)
        baseline.load_weights(str(path))
        norms.append(sum(np.abs(w).sum() for w in baseline.get_weights()))
    assert norms[1] < 0.95 * norms[0]  # 16 steps of 1 - 10 x (1e-3 decaying to 1e-4): about 0.91


def _classifiers():
    """Three 3-class models, by how their probabilities are written."""
    inputs = keras.Input((4,))
    softmax_layer = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(3)(inputs)))
    nested = keras.Sequential([keras.Input((4,)), keras.Sequential([keras.layers.Dense(3, activation="softmax")])])
    logits = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    return {"softmax layer": softmax_layer, "nested softmax": nested, "logits": logits}


@pytest.mark.parametrize("kind", ["softmax layer", "nested softmax", "logits"])
def test_a_loss_named_by_the_user_reads_probabilities_wherever_the_softmax_is(kind):
    model = _classifiers()[kind]
    x, y = np.random.default_rng(0).normal(size=(8, 4)).astype("float32"), np.arange(8) % 3
    loss, _ = measures.loss_and_measure(model, "sparse_categorical_crossentropy", None, None, None)
    outputs = np.asarray(model(x))
    probabilities = outputs if kind != "logits" else np.exp(outputs) / np.exp(outputs).sum(-1, keepdims=True)
    expected = -np.mean(np.log(probabilities[np.arange(8), y]))
    np.testing.assert_allclose(float(loss(y, outputs)), expected, rtol=1e-5)
