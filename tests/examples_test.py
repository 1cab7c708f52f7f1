"""The examples, end to end in a subprocess, with tiny budgets."""

import json
import os
import subprocess
import sys

import pytest

from conftest import mnist_dir, write_cifar10_npz
from keras_rbp._keras import IS_KERAS_3

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
TINY = ["--pretrain_epochs=1", "--epochs_per_stage=1", "--finetune_epochs=1",
        "--train_examples=1200", "--test_examples=300"]


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(os.path.join(EXAMPLES, "..")))
    env.pop("KERAS_RBP_DATA", None)
    return subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )


def _check_export(out):
    results = json.load(open(os.path.join(out, "results.json")))
    assert os.path.isdir(os.path.join(out, "saved_model"))
    assert os.path.getsize(os.path.join(out, "model.tflite")) > 0
    assert results["export"]["files"]["model.tflite"]["check"]["value"] <= 1e-4 * max(
        1.0, results["export"]["files"]["model.tflite"]["check"]["output_scale"])
    return results


@pytest.mark.parametrize("script,architecture", [
    ("lenet_300_100.py", "784-300-100"),
    pytest.param("lenet5.py", "20-50-800-500", marks=pytest.mark.heavy),
])
def test_mnist_example_end_to_end(tmp_path, script, architecture):
    out = str(tmp_path / "out")
    done = _run(script, f"--data_dir={mnist_dir()}", f"--output_dir={out}", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    results = _check_export(out)
    assert results["report"]["architecture_before"] == architecture
    assert f"architecture {architecture} -> " in done.stdout


@pytest.mark.skipif(not IS_KERAS_3, reason="the examples' tf_keras path: the LeNet examples run it")
@pytest.mark.heavy
def test_vgg16_cifar10_example_on_generated_data(tmp_path):
    write_cifar10_npz(str(tmp_path), train=64, test=32)
    out = str(tmp_path / "out")
    # One stage for all 14 groups keeps VGG-16's CPU time small.
    done = _run("vgg16_cifar10.py", f"--data_dir={tmp_path}", f"--output_dir={out}", *TINY,
                "--groups_per_stage=0", "--batch_size=32")
    assert done.returncode == 0, done.stderr[-3000:]
    _check_export(out)


def test_missing_data_folder_gives_one_line_and_fails(tmp_path):
    done = _run("lenet5.py", f"--data_dir={tmp_path / 'nowhere'}", f"--output_dir={tmp_path / 'out'}")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mnist.npz does not exist" in errors[0]
    assert "Traceback" not in done.stderr
    assert not os.path.exists(tmp_path / "out")
