"""Tests of export(): every file written, loadable and checked; atomic
writes; argument errors; benchmark_tflite."""

import functools
import importlib.metadata
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import keras_rbp as rbp
from keras_rbp import exporting as export_lib
from keras_rbp import latency
from keras_rbp._keras import keras
from keras_rbp.datasets import load_mnist
from keras_rbp.models import lenet5_caffe, small_resnet

from conftest import mnist_dir

L = keras.layers
TRAIN_SAMPLES = 3000
CHECK_SAMPLES = 1000


@functools.lru_cache(maxsize=None)
def mnist_subset():
    (x_train, y_train), (x_test, _) = load_mnist(mnist_dir())
    return x_train[:TRAIN_SAMPLES], y_train[:TRAIN_SAMPLES], x_test[:CHECK_SAMPLES]


@functools.lru_cache(maxsize=None)
def trained_pruned(builder):
    """(original, pruned): `builder`'s model, and its pruned copy trained one
    epoch with every fourth channel of each pruning group frozen at 0."""
    x_train, y_train, _ = mnist_subset()
    keras.utils.set_random_seed(7)
    original = builder()
    pruned = rbp.prune(original, dataset_size=len(x_train))
    masks = {name: np.arange(noise.channels) % 4 != 0 for name, noise in rbp.pruning_groups(pruned).items()}
    rbp.freeze(pruned, masks, {name: np.ones(len(mask)) for name, mask in masks.items()})
    pruned.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    return original, pruned


@functools.lru_cache(maxsize=None)
def trained_and_shrunk(builder):
    """(original, small): `trained_pruned`'s models, the pruned one shrunk."""
    original, pruned = trained_pruned(builder)
    return original, rbp.shrink(pruned)


@pytest.fixture
def mnist():
    return mnist_subset()


@pytest.fixture(params=[pytest.param(lenet5_caffe, id="lenet5"),
                        pytest.param(small_resnet, id="resnet", marks=pytest.mark.heavy)])
def shrunk(request):
    return trained_and_shrunk(request.param)


@pytest.fixture(scope="module")
def small_lenet():
    """A shrunk LeNet-5 made without data: every fourth channel removed."""
    pruned = rbp.prune(lenet5_caffe(), dataset_size=1)
    rbp.freeze(pruned, {name: np.arange(noise.channels) % 4 != 0 for name, noise in rbp.pruning_groups(pruned).items()})
    return rbp.shrink(pruned)


def _size(path):
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# Stand-in LiteRT timings, ms: a file export writes, and the unpruned model's.
PRUNED_MS = {"single_thread": 2.0, "multi_thread": 1.5}
ORIGINAL_MS = {"single_thread": 6.0, "multi_thread": 3.0}


def test_export_writes_every_file_and_each_passes_its_check(tmp_path, mnist, shrunk, monkeypatch):
    x_train, _, x_test = mnist
    original, small = shrunk
    out_dir = tmp_path / "out"
    timed = []  # (file name, bytes, whether it is the unpruned model's)

    def benchmark(path):
        unpruned = not os.path.abspath(path).startswith(str(tmp_path))  # written in a temporary folder
        timed.append((os.path.basename(path), os.path.getsize(path), unpruned))
        return {**(ORIGINAL_MS if unpruned else PRUNED_MS), "num_threads": 4, "runs": 100}

    monkeypatch.setattr(export_lib, "benchmark_tflite", benchmark)
    report = rbp.export(
        small,
        out_dir,
        representative_data=x_train[:256],
        check_data=x_test,
        original=original,
        quantize=("dynamic_range", "int8"),
    )

    assert sorted(os.listdir(out_dir)) == sorted(
        ["saved_model", "model.tflite", "model_dynamic_range.tflite", "model_int8.tflite", "report.json"]
    )
    with open(out_dir / "report.json", encoding="utf-8") as file:
        assert json.load(file) == json.loads(json.dumps(report))
    assert report["interpreter"] == {"name": "LiteRT", "package": "ai-edge-litert",
                                     "version": importlib.metadata.version("ai-edge-litert")}
    files = report["files"]
    for name in ("saved_model", "model.tflite"):
        assert files[name]["check"]["metric"] == "max_abs_diff"
        check = files[name]["check"]
        # 1e-5 for outputs up to 1, scaled by the largest logit above that.
        assert check["value"] <= 1e-5 * check["output_scale"]
    for name in ("model_dynamic_range.tflite", "model_int8.tflite"):
        assert files[name]["check"]["metric"] == "top1_agreement"
        assert files[name]["check"]["value"] >= 0.98
        assert files[name]["check"]["samples"] == CHECK_SAMPLES
    assert {files[name]["batch_size"] for name in ("model.tflite", "model_dynamic_range.tflite", "model_int8.tflite")} \
        == {None}  # any batch
    assert files["model_int8.tflite"]["size_bytes"] < files["model.tflite"]["size_bytes"]
    for name, entry in files.items():
        assert entry["size_bytes"] == _size(out_dir / name), name
        if name.endswith(".tflite"):
            assert entry["latency_ms"] == {**PRUNED_MS, "num_threads": 4, "runs": 100}, name
    # Each file is timed once, then the unpruned model converted alike, a
    # larger file; the speed-up is the float file's against it.
    assert [(name, unpruned) for name, _, unpruned in timed] == [
        ("model.tflite", False), ("model_dynamic_range.tflite", False), ("model_int8.tflite", False),
        ("model.tflite", True)]
    assert timed[-1][1] > files["model.tflite"]["size_bytes"]
    assert report["original_latency_ms"] == {**ORIGINAL_MS, "num_threads": 4, "runs": 100}
    assert report["speedup"] == {"single_thread": 3.0, "multi_thread": 2.0}
    assert report["report"] == json.loads(json.dumps(rbp.report(original, small).to_dict()))

    # The files load and compute the model's outputs on their own.
    expected = small(x_test[:8], training=False).numpy()
    signature = tf.saved_model.load(str(out_dir / "saved_model")).signatures["serving_default"]
    (got,) = signature(image=tf.constant(x_test[:8])).values()
    tolerance = 1e-5 * max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=tolerance)
    runner = Interpreter(model_path=str(out_dir / "model.tflite")).get_signature_runner()
    (got,) = runner(image=x_test[:8]).values()
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
    int8_input = Interpreter(model_path=str(out_dir / "model_int8.tflite")).get_input_details()[0]
    assert int8_input["dtype"] == np.int8


def test_multi_input_multi_output_model(tmp_path):
    a, b = keras.Input((5,), name="a"), keras.Input((3,), name="b")
    hidden = L.Concatenate()([L.Dense(4, name="dense_a")(a), b])
    model = keras.Model([a, b], [L.Dense(2, name="zz")(hidden), L.Dense(3, name="aa")(hidden)])
    rng = np.random.default_rng(0)
    data = [rng.random((40, 5)), rng.random((40, 3))]
    report = rbp.export(model, tmp_path / "out", check_data=data, benchmark=False)
    outputs = export_lib.tflite_outputs(str(tmp_path / "out" / "model.tflite"), model, data)
    assert [y.shape for y in outputs] == [(40, 2), (40, 3)]
    assert report["files"]["model.tflite"]["check"]["value"] <= 1e-5


def test_a_shrunk_recurrent_model_exports_for_one_example_at_a_time(tmp_path):
    inputs = keras.Input((12, 6))
    x = L.Conv1D(16, 3, activation="relu", name="conv")(inputs)
    x = L.Bidirectional(L.LSTM(8), name="lstm")(x)
    model = keras.Model(inputs, L.Dense(3)(x))
    pruned = rbp.prune(model, dataset_size=100)
    rbp.freeze(pruned, {"conv": np.arange(16) % 3 > 0})
    small = rbp.shrink(pruned)
    assert small.get_layer("lstm").get_weights()[0].shape[0] == 10  # the kept filters
    data = np.random.default_rng(0).random((20, 12, 6), dtype=np.float32)
    report = rbp.export(small, tmp_path / "out", check_data=data, quantize=["dynamic_range"], benchmark=False)
    assert report["files"]["model.tflite"]["check"]["value"] <= 1e-5
    assert report["files"]["model_dynamic_range.tflite"]["check"]["value"] >= 0.98  # top-1 agreement
    assert [report["files"][name]["batch_size"] for name in ("model.tflite", "model_dynamic_range.tflite")] == [1, 1]
    path = str(tmp_path / "out" / "model.tflite")
    np.testing.assert_allclose(export_lib.tflite_outputs(path, small, [data])[0], small(data), atol=1e-5)
    runner = Interpreter(model_path=path).get_signature_runner()
    with pytest.raises(RuntimeError):  # the loops' tensor lists hold one example
        runner(**{name: data for name in runner.get_input_details()})


def test_a_model_of_token_ids_is_timed_on_ids_its_embedding_holds(tmp_path):
    inputs = keras.Input((20,), dtype="int32")
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling1D()(L.Embedding(50, 8)(inputs))))
    ids = np.random.default_rng(0).integers(0, 50, (16, 20)).astype("int32")
    report = rbp.export(model, tmp_path / "out", check_data=ids)
    assert report["files"]["model.tflite"]["latency_ms"]["single_thread"] > 0


def test_existing_out_dir_is_refused_unless_overwrite(tmp_path, small_lenet):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="out_dir.*overwrite=True"):
        rbp.export(small_lenet, out_dir, benchmark=False)
    assert os.listdir(out_dir) == ["old.txt"]
    rbp.export(small_lenet, out_dir, overwrite=True, benchmark=False)
    assert sorted(os.listdir(out_dir)) == ["model.tflite", "report.json", "saved_model"]
    assert os.listdir(tmp_path) == ["out"]


def test_failed_check_leaves_nothing_behind(tmp_path, monkeypatch, small_lenet):
    real = export_lib.tflite_outputs
    monkeypatch.setattr(
        export_lib, "tflite_outputs", lambda *args: [y + 1e-3 for y in real(*args)]
    )
    with pytest.raises(rbp.ExportCheckError, match="model.tflite failed its check.*max_abs_diff"):
        rbp.export(small_lenet, tmp_path / "out", benchmark=False)
    assert os.listdir(tmp_path) == []

    # With overwrite, the folder already there is kept as it was.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(rbp.ExportCheckError):
        rbp.export(small_lenet, tmp_path / "out", overwrite=True, benchmark=False)
    assert os.listdir(tmp_path) == ["out"]
    assert os.listdir(tmp_path / "out") == ["old.txt"]


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, small_lenet):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_lib, "_convert", full_disk)
    with pytest.raises(OSError, match="No space left"):
        rbp.export(small_lenet, tmp_path / "out", benchmark=False)
    assert os.listdir(tmp_path) == []


def test_unwritable_folder(tmp_path, small_lenet):
    # A folder under a file cannot be made, by root either.
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="out_dir .*file/out"):
        rbp.export(small_lenet, tmp_path / "file" / "out", benchmark=False)
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quantize": "int4"}, "quantize holds 'int4'"),
        ({"quantize": "int8"}, "quantize=.*representative_data is None"),
        ({"quantize": "dynamic_range"}, "pass check_data or representative_data"),
        ({"representative_data": np.zeros((4, 28, 28))}, r"representative_data has shape \(4, 28, 28\)"),
        ({"check_data": [np.zeros((4, 28, 28, 1))] * 2}, "check_data holds 2 arrays"),
        ({"min_agreement": 1.5}, "min_agreement must be in"),
        ({"float_atol": -1.0}, "float_atol must be >= 0"),
    ],
)
def test_argument_errors_name_the_argument(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rbp.export(lenet5_caffe(), tmp_path / "out", **kwargs)
    assert not os.path.exists(tmp_path / "out")


class _Clock:
    """A stand-in for time.perf_counter: each timed call of `invoke` (a pair
    of readings) lasts the next of `durations` seconds."""

    def __init__(self, durations):
        self.durations, self.now, self.reading = iter(durations), 0.0, 0

    def perf_counter(self):
        if self.reading % 2:
            self.now += next(self.durations)
        self.reading += 1
        return self.now


def test_benchmark_tflite_takes_the_median_of_the_timed_runs_per_thread_count(tmp_path, monkeypatch):
    model = lenet5_caffe()
    rbp.export(model, tmp_path / "out", benchmark=False)
    path = str(tmp_path / "out" / "model.tflite")
    interpreters = []

    class Interpreter(latency.Interpreter):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.threads, self.invokes = kwargs["num_threads"], 0
            interpreters.append(self)

        def invoke(self):
            self.invokes += 1
            super().invoke()

    monkeypatch.setattr(latency, "Interpreter", Interpreter)
    # Five timed runs with one thread, then five with two: medians 3 ms and 4 ms.
    clock = _Clock([0.003, 0.001, 0.009, 0.002, 0.005, 0.004, 0.0045, 0.008, 0.001, 0.0035])
    monkeypatch.setattr(latency, "time", clock)
    result = rbp.benchmark_tflite(path, num_threads=2, warmup=2, runs=5)
    assert result["single_thread"] == pytest.approx(3.0) and result["multi_thread"] == pytest.approx(4.0)
    assert (result["num_threads"], result["runs"]) == (2, 5)
    assert [(i.threads, i.invokes) for i in interpreters] == [(1, 7), (2, 7)]  # warm-up calls untimed
    assert clock.reading == 20

    # By default: 10 warm-up calls, 100 timed, every CPU of the machine.
    interpreters.clear()
    monkeypatch.setattr(latency, "time", _Clock([0.001] * 200))
    result = rbp.benchmark_tflite(path)
    assert (result["num_threads"], result["runs"]) == (os.cpu_count(), 100)
    assert [(i.threads, i.invokes) for i in interpreters] == [(1, 110), (os.cpu_count(), 110)]
    assert result["single_thread"] == pytest.approx(1.0) and result["multi_thread"] == pytest.approx(1.0)

    with pytest.raises(ValueError, match="runs must be an integer >= 1, received: 0"):
        rbp.benchmark_tflite(path, runs=0)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        rbp.benchmark_tflite(str(tmp_path / "missing.tflite"))
