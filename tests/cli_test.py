"""End-to-end tests of the keras-rbp command line, in a subprocess, and of
`prune_and_export`, which its prune command runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ai_edge_litert.interpreter import Interpreter
from conftest import mnist_dir
from keras_rbp import errors, pipeline
from keras_rbp._keras import IS_KERAS_3, keras
from keras_rbp.datasets import load_mnist
from keras_rbp.models import lenet5_caffe

from export_test import mnist_subset, trained_pruned

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The formats a model saved during training comes in, per Keras version.
MODEL_FILE = "pruned.keras" if IS_KERAS_3 else "pruned_savedmodel"
SMALL_FILE = "small.keras" if IS_KERAS_3 else "small.h5"


def keras_rbp(*args, cwd):
    """Runs `python -m keras_rbp` with `args`; returns the completed process."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "keras_rbp", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(process, *fragments):
    assert process.returncode != 0
    assert "Traceback" not in process.stderr
    last_line = process.stderr.strip().splitlines()[-1]
    assert last_line.startswith("keras-rbp"), process.stderr
    for fragment in fragments:
        assert fragment in last_line


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with a pruned LeNet-5 saved during training and MNIST input
    files."""
    folder = tmp_path_factory.mktemp("cli")
    _, pruned = trained_pruned(lenet5_caffe)
    pruned.save(str(folder / MODEL_FILE))
    x_train, _, x_test = mnist_subset()
    np.save(folder / "representative.npy", x_train[:256])
    np.save(folder / "check.npy", x_test[:500])
    return folder


def test_shrink_saves_a_plain_model_and_prints_the_report(workdir):
    process = keras_rbp("shrink", f"--model={MODEL_FILE}", f"--output={SMALL_FILE}", cwd=workdir)
    assert process.returncode == 0, process.stderr
    assert "20-50-800-500 -> 15-37-592-375" in process.stdout
    assert os.path.exists(workdir / SMALL_FILE)


def test_export_writes_checked_files(workdir):
    process = keras_rbp(
        "export", f"--model={MODEL_FILE}", "--output_dir=out",
        "--representative_data=representative.npy", "--check_data=check.npy",
        "--quantize=dynamic_range,int8", cwd=workdir,
    )
    assert process.returncode == 0, process.stderr
    assert sorted(os.listdir(workdir / "out")) == sorted(
        ["saved_model", "model.tflite", "model_dynamic_range.tflite", "model_int8.tflite", "report.json"]
    )
    with open(workdir / "out" / "report.json", encoding="utf-8") as file:
        report = json.load(file)
    assert report["files"]["model_int8.tflite"]["check"]["value"] >= 0.98
    # The command prints the speed-up the report holds (its value is timed
    # by benchmarks/tflite_speedup.py; export_test checks its arithmetic).
    assert set(report["speedup"]) == {"single_thread", "multi_thread"}
    assert report["report"]["architecture_before"] == "20-50-800-500"  # timed against the unpruned model
    speedup = report["speedup"]["single_thread"]
    assert f"speed-up over the unpruned model: {speedup:.2f}x single-thread" in process.stdout
    for name, entry in report["files"].items():
        if name.endswith(".tflite"):
            assert f"{entry['latency_ms']['single_thread']:.3f} ms single-thread" in process.stdout, name

    again = keras_rbp("export", f"--model={MODEL_FILE}", "--output_dir=out", cwd=workdir)
    assert_one_line_error(again, "--output_dir='out' exists", "--overwrite")


def test_report_writes_json(workdir):
    process = keras_rbp("report", f"--model={MODEL_FILE}", "--output=report.json", cwd=workdir)
    assert process.returncode == 0, process.stderr
    assert "20-50-800-500 -> 15-37-592-375" in process.stdout
    with open(workdir / "report.json", encoding="utf-8") as file:
        assert json.load(file)["architecture_after"] == "15-37-592-375"


ERROR_CASES = {
    "missing_file": (["shrink", "--model=missing.keras", "--output=x.keras"], ["--model='missing.keras': no such file"]),
    "unreadable_file": (["report", "--model=corrupt.keras"], ["--model='corrupt.keras': cannot read a Keras model"]),
    "no_wrappers": (["report", "--model=" + ("plain.keras" if IS_KERAS_3 else "plain.h5")], ["has no RBP wrappers"]),
    "unknown_flag": (["export", "--model=x.keras", "--no_such_flag=1"], ["Unknown command line flag 'no_such_flag'"]),
    "unknown_command": (["compress", "--model=x.keras"], ["expected one command of prune, shrink, export, report"]),
}


@pytest.fixture(scope="module")
def error_dir(tmp_path_factory):
    """A folder with a plain model and a corrupt model file; no data."""
    folder = tmp_path_factory.mktemp("cli_errors")
    lenet5_caffe().save(str(folder / ("plain.keras" if IS_KERAS_3 else "plain.h5")))
    (folder / "corrupt.keras").write_bytes(b"not a model")
    return folder


# Each case starts a process; two run by default, the others are marked heavy
# (test_verbose_prints_the_traceback_before_the_line reads the corrupt file).
DEFAULT_ERROR_CASES = {"missing_file", "no_wrappers"}


@pytest.mark.parametrize("case", [case if case in DEFAULT_ERROR_CASES else pytest.param(case, marks=pytest.mark.heavy)
                                  for case in ERROR_CASES])
def test_errors_are_one_line_without_traceback(error_dir, case):
    args, fragments = ERROR_CASES[case]
    assert_one_line_error(keras_rbp(*args, cwd=error_dir), *fragments)


def test_verbose_prints_the_traceback_before_the_line(error_dir):
    process = keras_rbp("report", "--model=corrupt.keras", "--verbose", cwd=error_dir)
    assert process.returncode != 0
    assert "Traceback" in process.stderr
    assert process.stderr.strip().splitlines()[-1].startswith("keras-rbp report: error: --model='corrupt.keras'")


# keras-rbp prune: a user's trained model and data.

PRUNE_FILES = ["model.tflite", "model_int8.tflite", "pruned.keras", "pruning.png", "report.json", "report.txt",
               "saved_model", "small.keras"]
TRAIN, VALIDATION = 2000, 500  # MNIST examples


def small_convnet():
    """A LeNet-like network small enough for a test's plan: 8-16-256-32."""
    layers = keras.layers
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 5, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 5, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    return keras.Model(inputs, layers.Dense(10, name="logits")(x), name="small_convnet")


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """What a user brings: a trained model saved as base.keras, MNIST arrays
    in train.npz and val.npz, a folder of PNG images in class subfolders,
    and the same arrays in memory."""
    folder = tmp_path_factory.mktemp("user")
    (x_train, y_train), (x_test, y_test) = load_mnist(mnist_dir())
    x, y, x_val, y_val = x_train[:TRAIN], y_train[:TRAIN], x_test[:VALIDATION], y_test[:VALIDATION]
    keras.utils.set_random_seed(0)
    model = small_convnet()
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    model.save(str(folder / "base.keras"))
    np.savez(folder / "train.npz", x=x, y=y)
    np.savez(folder / "val.npz", x=x_val, y=y_val)
    np.savez(folder / "rgb.npz", x=np.zeros((8, 32, 32, 3), "float32"), y=np.zeros(8, "int64"))
    for i in range(120):
        os.makedirs(folder / "images" / str(y[i]), exist_ok=True)
        png = tf.io.encode_png(tf.constant(np.round(255 * x[i]).astype("uint8")))
        (folder / "images" / str(y[i]) / f"{i}.png").write_bytes(png.numpy())
    return folder, model, (x, y), (x_val, y_val)


def litert_outputs(path, x):
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    name = next(iter(runner.get_input_details()))
    return next(iter(runner(**{name: x}).values()))


def test_prune_writes_a_checked_folder_that_meets_the_budget(user_files):
    folder, _, _, (x_val, _) = user_files
    process = keras_rbp(
        "prune", "--model=base.keras", "--train_data=train.npz", "--validation_data=val.npz",
        "--loss=sparse_categorical_crossentropy", "--target_macs=0.5", "--plan_epochs=4", "--batch_size=64",
        "--quantize=int8", "--output_dir=out", cwd=folder,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = folder / "out"
    assert sorted(os.listdir(out)) == PRUNE_FILES
    assert sorted(p for p in os.listdir(folder) if p.startswith(".")) == []  # no temporary or work folder left
    summary = json.loads((out / "report.json").read_text())
    pruning, totals = summary["pruning"], summary["report"]["totals"]
    assert pruning["target"]["target"] == pytest.approx(0.5 * totals["macs_before"])
    assert abs(totals["macs_after"] / pruning["target"]["target"] - 1) <= 0.05
    assert pruning["after"] <= pruning["before"] + 0.02, pruning  # within 2 points of the unpruned error
    assert [label for _, label in pruning["stages"]] == ["conv1", "conv2", "fc1", "fine-tune"]

    small = keras.models.load_model(str(out / "small.keras"))
    np.testing.assert_allclose(litert_outputs(out / "model.tflite", x_val[:64]), small.predict(x_val[:64], verbose=0),
                               atol=1e-4)
    assert summary["files"]["model_int8.tflite"]["check"]["value"] >= 0.98
    assert summary["speedup"]["single_thread"] > 0
    assert (out / "pruning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.txt").read_text()
    for line in ("architecture: 8-16-256-32 -> ", "budget: target_macs=0.5", "validation error (500 examples)",
                 "LiteRT speed-up", "conv1   Conv2D  8 -> "):
        assert line in text
    assert text.splitlines()[2] in process.stdout  # the report is printed too
    # Quiet: no TensorFlow C++ lines, no deprecation warnings, no tracebacks.
    for noise in ("I0000", "W0000", "E0000", "deprecated", "Traceback", "XNNPACK"):
        assert noise not in process.stdout + process.stderr


@pytest.mark.skipif(not IS_KERAS_3, reason="keras.utils reads the folder; tf_keras runs the .npz test")
def test_prune_reads_a_folder_of_images(user_files):
    folder = user_files[0]
    process = keras_rbp(
        "prune", "--model=base.keras", "--train_data=images", "--validation_split=0.25",
        "--loss=sparse_categorical_crossentropy", "--target_macs=0.5", "--plan_epochs=1", "--batch_size=16",
        "--output_dir=out_images", cwd=folder,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = folder / "out_images"
    assert sorted(os.listdir(out)) == sorted(set(PRUNE_FILES) - {"model_int8.tflite"})
    pruning = json.loads((out / "report.json").read_text())["pruning"]
    assert pruning["validation_examples"] == 30 and pruning["settings"]["train_examples"] == 90
    assert abs(pruning["target"]["reached_over_target"] - 1) <= 0.05


def test_a_killed_plan_resumes_with_the_masks_of_an_uninterrupted_run(user_files, tmp_path):
    _, model, (x, y), (x_val, y_val) = user_files
    data = dict(train_data=(x[:640], y[:640]), validation_data=(x_val[:200], y_val[:200]))
    settings = dict(loss="sparse_categorical_crossentropy", target_macs=0.5, plan_epochs=3, batch_size=64, verbose=0)
    whole = pipeline.prune_and_export(model, **data, **settings)

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    class Epochs(keras.callbacks.Callback):
        seen = []

        def on_epoch_begin(self, epoch, logs=None):
            Epochs.seen.append(epoch)

    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        pipeline.prune_and_export(model, **data, **settings, work_dir=str(work), callbacks=[Kill()])
    assert os.path.isdir(work / "backup")
    changed = dict(settings, kl_weight=20.0)  # a backup resumes only the run that made it
    with pytest.raises(errors.ArgumentError, match=r"holds the backup of a run with kl_weight=10.0, not 20.0"):
        pipeline.prune_and_export(model, **data, **changed, work_dir=str(work))
    resumed = pipeline.prune_and_export(model, **data, **settings, work_dir=str(work), callbacks=[Epochs()])
    assert Epochs.seen == [2]  # the resumed run trained the last epoch only
    masks = [{name: noise.mask.numpy().tolist() for name, noise in rbp_groups(result.pruned).items()}
             for result in (whole, resumed)]
    assert masks[0] == masks[1]
    assert any(0 in mask for mask in masks[0].values())
    assert resumed.summary["pruning"]["stages"] == whole.summary["pruning"]["stages"]
    assert not os.path.exists(work)


def rbp_groups(model):
    from keras_rbp import pruning_groups

    return pruning_groups(model)


PRUNE_ERRORS = {
    "missing_file": (["--train_data=missing.npz"], "--train_data='missing.npz': no such file or folder"),
    "input_shape": (["--train_data=rgb.npz"],
                    "--train_data='rgb.npz': inputs of shape (batch,) + (32, 32, 3); model 'small_convnet' "
                    "takes (batch,) + (28, 28, 1)"),
    "loss_labels": (["--loss=categorical_crossentropy"],
                    "--loss='categorical_crossentropy': needs one-hot labels of 10 columns"),
    "budget": (["--target_macs=1000"], "--target_macs=1000.0: is below "),
    "output_dir_exists": (["--output_dir=images"], "--output_dir='images' exists; pass --overwrite"),
}


@pytest.mark.parametrize("case", list(PRUNE_ERRORS))
def test_prune_errors_are_one_line_naming_the_flag_and_leave_nothing(user_files, case):
    folder = user_files[0]
    before = sorted(os.listdir(folder))
    args, message = PRUNE_ERRORS[case]
    defaults = {"--train_data": "train.npz", "--loss": "sparse_categorical_crossentropy", "--output_dir": "out_error"}
    given = {arg.split("=")[0] for arg in args}
    argv = ["prune", "--model=base.keras", "--plan_epochs=1", *args]
    argv += [f"{flag}={value}" for flag, value in defaults.items() if flag not in given]
    process = keras_rbp(*argv, cwd=folder)
    assert process.returncode == 1
    assert_one_line_error(process)
    assert process.stderr.strip().splitlines()[-1].startswith("keras-rbp prune: error: " + message), process.stderr
    assert sorted(os.listdir(folder)) == before  # no output, temporary or work folder


def test_a_failed_export_leaves_no_output_folder(user_files, tmp_path, monkeypatch):
    _, model, (x, y), _ = user_files

    def failing_export(small, folder, **kwargs):
        os.makedirs(folder)
        (open(os.path.join(folder, "model.tflite"), "wb")).close()
        raise rbp_export_error("export: model.tflite failed its check against the Keras model")

    monkeypatch.setattr(pipeline, "export", failing_export)
    with pytest.raises(Exception, match="failed its check"):
        pipeline.prune_and_export(model, (x[:256], y[:256]), (x[256:320], y[256:320]), output_dir=str(tmp_path / "out"),
                                  loss="sparse_categorical_crossentropy", plan_epochs=1, batch_size=64, verbose=0)
    assert os.listdir(tmp_path) == []  # neither the folder, nor its temporary or work folder


def rbp_export_error(message):
    from keras_rbp import ExportCheckError

    return ExportCheckError(message)
