"""README.md's first Python snippet, run exactly as written, so that the
first screen cannot rot."""

import os
import re
import subprocess
import sys

import pytest

from conftest import mnist_dir
from keras_rbp._keras import IS_KERAS_3

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


def first_python_snippet():
    with open(README, encoding="utf-8") as file:
        return re.search(r"```python\n(.*?)```", file.read(), re.S).group(1)


@pytest.mark.skipif(not IS_KERAS_3, reason="the snippet imports keras, which is Keras 3")
def test_the_readme_snippet_runs_as_written(tmp_path):
    snippet = first_python_snippet()
    assert "rbp.prune_and_export(" in snippet
    (tmp_path / "snippet.py").write_text(snippet)
    env = dict(os.environ, KERAS_RBP_DATA=mnist_dir(),
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "20-50-800-500 -> " in done.stdout
    out = tmp_path / "out" / "quickstart"
    for name in ("pruned.keras", "small.keras", "saved_model", "model.tflite", "report.json", "report.txt",
                 "pruning.png"):
        assert (out / name).exists(), name
