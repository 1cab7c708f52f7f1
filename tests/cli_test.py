"""End-to-end tests of the keras-rbp command line, each in a subprocess."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_rbp._keras import IS_KERAS_3
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
    "unknown_command": (["compress", "--model=x.keras"], ["expected one command of shrink, export, report"]),
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
