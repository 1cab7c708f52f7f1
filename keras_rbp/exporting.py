"""Exporting: `export` writes the SavedModel and TFLite files of a Keras
model, each checked against the model, with sizes and LiteRT latencies in
report.json."""

import importlib.metadata
import json
import os
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from keras_rbp import _keras, _quiet
from keras_rbp._keras import keras, to_numpy, tree
from keras_rbp.latency import benchmark_tflite
from keras_rbp.metrics import report as metrics_report
from keras_rbp.surgery import float32_copy
from keras_rbp.tensorflow_export import export_in_tensorflow

from ai_edge_litert.interpreter import Interpreter

INTERPRETER = {"name": "LiteRT", "package": "ai-edge-litert",
               "version": importlib.metadata.version("ai-edge-litert")}

QUANTIZATIONS = ("dynamic_range", "int8")
SAVED_MODEL = "saved_model"
FLOAT_TFLITE = "model.tflite"
TFLITE_FILES = {
    "float32": FLOAT_TFLITE,
    "dynamic_range": "model_dynamic_range.tflite",
    "int8": "model_int8.tflite",
}
REPORT = "report.json"
RANDOM_CHECK_SAMPLES = 32
BATCH_SIZE = 256
TENSOR_LIST_ERROR = "Lowering tensor list ops is failed"


class ExportCheckError(RuntimeError):
    """An exported file does not compute what the Keras model computes."""


def export(
    model,
    out_dir,
    representative_data=None,
    original=None,
    quantize=None,
    overwrite=False,
    check_data=None,
    float_atol=1e-5,
    min_agreement=0.98,
    benchmark=True,
):
    """Writes a Keras model as SavedModel and TFLite files a device can run.

    Writes into `out_dir`: ``saved_model/``, ``model.tflite`` (float32),
    ``model_dynamic_range.tflite`` and ``model_int8.tflite`` on request, and
    ``report.json``. Every file is run on check inputs and compared with
    `model`: float files by their largest absolute difference, quantised
    files by the agreement of their top-1 class (the last axis of each
    output). Everything is written to a temporary folder beside `out_dir`
    and moved into place only when every file passed; on any error nothing
    is left behind.

    On the JAX and PyTorch backends, `model` is saved as a `.keras` file
    that a TensorFlow process loads and exports (TensorFlow must be
    installed); its outputs there are checked against `model`'s here, and
    report.json says so (``exported_under``).

    Args:
        model: a plain Keras model, such as the one `keras_rbp.shrink`
            returns. A model under a mixed-precision policy is written as its
            float32 copy (`keras_rbp.surgery.float32_copy`), checked against
            that copy's outputs.
        out_dir: the folder to create.
        representative_data: inputs of the model (an array, or a list of
            arrays for several inputs), used to calibrate the int8 file and,
            unless `check_data` is given, for the checks.
        original: the unpruned model; when given, report.json holds
            `keras_rbp.report(original, model)` and, with `benchmark`, the
            LiteRT speed-up of `model` over `original`.
        quantize: the quantised files to write, from "dynamic_range" and
            "int8". None writes the int8 file when `representative_data` is
            given and none otherwise.
        overwrite: whether to replace an existing `out_dir`.
        check_data: the inputs of the checks; by default
            `representative_data`, else random inputs in [0, 1) (float files
            only).
        float_atol: the largest absolute difference allowed for float files,
            for outputs of magnitude up to 1; it scales with the largest
            output magnitude above 1, as float32 rounding does.
        min_agreement: the smallest top-1 agreement allowed for quantised
            files.
        benchmark: whether to time every TFLite file with `benchmark_tflite`.

    Returns:
        The contents of report.json, as a dict.

    Raises:
        FileExistsError: `out_dir` exists and `overwrite` is False.
        ExportCheckError: a file failed its check.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    model = float32_copy(model)
    quantize = _check_quantize(quantize, representative_data, check_data)
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"export: min_agreement must be in [0, 1], received: {min_agreement!r}")
    if float_atol < 0:
        raise ValueError(f"export: float_atol must be >= 0, received: {float_atol!r}")
    if os.path.lexists(out_dir) and not overwrite:
        raise FileExistsError(
            f"export: out_dir {out_dir!r} exists; pass overwrite=True to replace it"
        )
    if representative_data is not None:
        representative_data = _as_inputs(representative_data, model, "representative_data")
    if check_data is not None:
        check_data = _as_inputs(check_data, model, "check_data")
    else:
        check_data = representative_data if representative_data is not None else _random_inputs(model)
    expected = _keras_outputs(model, check_data)
    if not _keras.ON_TENSORFLOW:
        arguments = dict(quantize=list(quantize), overwrite=overwrite, float_atol=float_atol,
                         min_agreement=min_agreement, benchmark=benchmark)
        return export_in_tensorflow(model, out_dir, representative_data, check_data, expected, original, arguments)

    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    except OSError as error:
        raise OSError(f"export: cannot write beside out_dir {out_dir!r}: {error}") from error
    try:
        files = {}
        saved_model = os.path.join(tmp_dir, SAVED_MODEL)
        save_model(model, saved_model)
        got = _saved_model_outputs(saved_model, model, check_data)
        check = _check(SAVED_MODEL, expected, got, float_atol, None)
        files[SAVED_MODEL] = _entry(saved_model, "float32", check)
        single_batch_loops = None  # found by the first file's conversion, then kept
        for kind in ("float32",) + quantize:
            path = os.path.join(tmp_dir, TFLITE_FILES[kind])
            flatbuffer, single_batch_loops = _convert_loops(model, saved_model, kind, representative_data,
                                                            single_batch_loops)
            with open(path, "wb") as file:
                file.write(flatbuffer)
            got = tflite_outputs(path, model, check_data)
            agreement = None if kind == "float32" else min_agreement
            check = _check(TFLITE_FILES[kind], expected, got, float_atol, agreement)
            files[TFLITE_FILES[kind]] = dict(_entry(path, kind, check), batch_size=1 if single_batch_loops else None)
            if benchmark:
                files[TFLITE_FILES[kind]]["latency_ms"] = benchmark_tflite(path)
        summary = {"keras": keras.__version__, "interpreter": INTERPRETER, "files": files}
        if original is not None:
            summary.update(_compare_with_original(original, model, files, benchmark))
        with open(os.path.join(tmp_dir, REPORT), "w", encoding="utf-8") as file:
            json.dump(summary, file, indent=2)
        _move_into_place(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return summary


def save_model(model, path):
    """Writes `model` as a SavedModel with a serving_default signature,
    without TensorFlow's INFO lines about assets, fingerprints and shards."""
    with _keras.tensorflow_warnings_only():
        _keras.save_tf_saved_model(model, path)


def convert(model, saved_model, kind="float32", representative_data=None):
    """The TFLite flatbuffer of `model`, as bytes.

    The converter lowers a loop over tensor lists (a recurrent layer's) only
    where their shapes are known; such a file is converted for one example
    at a time, as a device runs it, and larger batches fail in LiteRT.

    Args:
        model: the Keras model, which names the inputs.
        saved_model: the SavedModel folder `save_model` wrote from `model`.
        kind: "float32", "dynamic_range" or "int8" (int8 weights,
            activations, inputs and outputs, calibrated on
            `representative_data`).
        representative_data: a list of arrays, one per model input.
    """
    return _convert_loops(model, saved_model, kind, representative_data)[0]


def _convert_loops(model, saved_model, kind, representative_data, single_batch_loops=None):
    """(the flatbuffer, whether its loops take one example at a time); with
    `single_batch_loops` None, a batch is tried first."""
    if single_batch_loops is None:
        try:
            return _convert(model, saved_model, kind, representative_data, single_batch_loops=False), False
        except Exception as error:  # the converter's ConverterError is private
            if TENSOR_LIST_ERROR not in str(error):
                raise
        single_batch_loops = True
    return _convert(model, saved_model, kind, representative_data, single_batch_loops), single_batch_loops


def _convert(model, saved_model, kind, representative_data, single_batch_loops):
    input_names = _keras.input_names(model)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter._experimental_default_to_single_batch_in_tensor_list_ops = single_batch_loops
    if kind != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8

        def samples():
            for i in range(len(representative_data[0])):
                yield {name: x[i : i + 1] for name, x in zip(input_names, representative_data)}

        converter.representative_dataset = samples
    # The int8 calibration runs tf.lite.Interpreter inside TensorFlow, which
    # warns that it is deprecated (keras_rbp runs every file with LiteRT),
    # and prints a "fully_quantize: ..." line.
    with warnings.catch_warnings(), _quiet.quiet_stderr():
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return converter.convert()


def tflite_outputs(path, model, inputs):
    """Runs a TFLite file of `model` with LiteRT.

    Args:
        path: a TFLite file written from `model`, by `export` or `convert`.
        model: the Keras model, which names the file's inputs and outputs.
        inputs: a list of arrays, one per model input.

    Returns:
        The outputs as a list of float32 arrays, in the order of the model's
        outputs; quantised inputs and outputs are converted with the file's
        scale and zero point.
    """
    try:
        return _run_tflite(path, model, inputs, BATCH_SIZE)
    except RuntimeError:  # a file for one example at a time (see `convert`)
        return _run_tflite(path, model, inputs, 1)


def _run_tflite(path, model, inputs, batch_size):
    input_names, output_names = _keras.input_names(model), _keras.output_names(model)
    runner = Interpreter(model_path=path).get_signature_runner()
    input_details = runner.get_input_details()
    output_details = runner.get_output_details()
    batches = []
    for start in range(0, len(inputs[0]), batch_size):
        feed = {
            name: _quantize(x[start : start + batch_size], input_details[name])
            for name, x in zip(input_names, inputs)
        }
        # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line comes with
        # the first call; its errors reach Python as exceptions.
        with _quiet.quiet_stderr():
            result = runner(**feed)
        batches.append({k: _dequantize(v, output_details[k]) for k, v in result.items()})
    return _ordered({k: np.concatenate([b[k] for b in batches]) for k in batches[0]}, output_names)


def _check_quantize(quantize, representative_data, check_data):
    if quantize is None:
        return ("int8",) if representative_data is not None else ()
    quantize = (quantize,) if isinstance(quantize, str) else tuple(quantize)
    for kind in quantize:
        if kind not in QUANTIZATIONS:
            raise ValueError(f"export: quantize holds {kind!r}; choose from {QUANTIZATIONS}")
    if "int8" in quantize and representative_data is None:
        raise ValueError(
            f"export: quantize={quantize!r} asks for an int8 file, which needs "
            "representative_data to calibrate it; representative_data is None"
        )
    if quantize and representative_data is None and check_data is None:
        raise ValueError(
            f"export: quantize={quantize!r} asks for quantised files, which are "
            "checked by top-1 agreement on real inputs; pass check_data or representative_data"
        )
    return tuple(k for k in QUANTIZATIONS if k in quantize)


def _as_inputs(data, model, arg):
    """`data` (an array, a list of them, or a dict by input name) as a list
    of arrays, one per model input in order, each of its input's dtype."""
    if isinstance(data, dict):
        names = _keras.input_names(model)
        if set(data) != set(names):
            raise ValueError(f"export: {arg} has inputs {sorted(data)}; model {model.name!r} has {names}")
        data = [data[name] for name in names]
    arrays = list(data) if isinstance(data, (list, tuple)) else [data]
    if len(arrays) != len(model.inputs):
        raise ValueError(
            f"export: {arg} holds {len(arrays)} arrays; model {model.name!r} has "
            f"{len(model.inputs)} inputs"
        )
    arrays = [np.asarray(x, dtype=_numpy_dtype(spec.dtype)) for x, spec in zip(arrays, model.inputs)]
    for x, spec in zip(arrays, model.inputs):
        expected = tuple(spec.shape[1:])
        if x.ndim != len(expected) + 1 or any(
            d is not None and d != got for d, got in zip(expected, x.shape[1:])
        ):
            raise ValueError(
                f"export: {arg} has shape {x.shape}; model {model.name!r} expects "
                f"(batch,) + {expected}"
            )
    if len({len(x) for x in arrays}) != 1 or len(arrays[0]) == 0:
        raise ValueError(
            f"export: {arg} needs the same, positive number of examples for "
            f"every input; received {[len(x) for x in arrays]}"
        )
    return arrays


def _numpy_dtype(dtype):
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


def _random_inputs(model):
    rng = np.random.default_rng(0)
    inputs = []
    for spec in model.inputs:
        if any(d is None for d in spec.shape[1:]):
            raise ValueError(
                f"export: input {spec.name!r} of model {model.name!r} has shape "
                f"{tuple(spec.shape)}; pass check_data to check the exported files"
            )
        inputs.append(rng.random((RANDOM_CHECK_SAMPLES,) + tuple(spec.shape[1:]), dtype="float32"))
    return inputs


def _keras_outputs(model, inputs):
    batches = []
    for start in range(0, len(inputs[0]), BATCH_SIZE):
        batch = tree.pack_sequence_as(model.input, [x[start : start + BATCH_SIZE] for x in inputs])
        outputs = tree.flatten(model(batch, training=False))
        batches.append([to_numpy(y) for y in outputs])
    return [np.concatenate(ys) for ys in zip(*batches)]


def _saved_model_outputs(path, model, inputs):
    input_names, output_names = _keras.input_names(model), _keras.output_names(model)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    batches = []
    for start in range(0, len(inputs[0]), BATCH_SIZE):
        feed = {name: tf.constant(x[start : start + BATCH_SIZE]) for name, x in zip(input_names, inputs)}
        batches.append({k: v.numpy() for k, v in signature(**feed).items()})
    return _ordered({k: np.concatenate([b[k] for b in batches]) for k in batches[0]}, output_names)


def _ordered(outputs, output_names):
    missing = sorted(set(output_names) - set(outputs))
    if missing:
        raise ExportCheckError(
            f"export: the exported signature lacks outputs {missing}; it has {sorted(outputs)}"
        )
    return [outputs[name] for name in output_names]


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(detail["dtype"], np.integer) or scale == 0:  # float, or integers such as token ids
        return np.asarray(x, dtype=detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(detail["dtype"], np.integer) or scale == 0:
        return y
    return (y.astype("float32") - zero_point) * scale


def _check(name, expected, got, float_atol, min_agreement):
    """Compares a file's outputs with the Keras model's; raises
    `ExportCheckError` when they differ more than allowed."""
    for e, g in zip(expected, got):
        if e.shape != g.shape:
            raise ExportCheckError(
                f"export: {name} gives an output of shape {g.shape}; the model gives {e.shape}"
            )
    if min_agreement is None:
        diff = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got))
        scale = max(1.0, max(float(np.max(np.abs(e))) for e in expected))
        check = {
            "metric": "max_abs_diff",
            "value": diff,
            "limit": float_atol * scale,
            "output_scale": scale,
            "samples": len(expected[0]),
        }
        passed = diff <= check["limit"]
    else:
        agreement = min(
            float(np.mean(np.argmax(e, axis=-1) == np.argmax(g, axis=-1))) for e, g in zip(expected, got)
        )
        check = {
            "metric": "top1_agreement",
            "value": agreement,
            "limit": min_agreement,
            "samples": len(expected[0]),
        }
        passed = agreement >= min_agreement
    if not passed:
        raise ExportCheckError(
            f"export: {name} failed its check against the Keras model: "
            f"{check['metric']} {check['value']:.6g} against a limit of {check['limit']:.6g} "
            f"on {check['samples']} inputs"
        )
    return check


def _entry(path, kind, check):
    return {"kind": kind, "size_bytes": _size(path), "check": check}


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, fs in os.walk(path) for f in fs)


def _compare_with_original(original, model, files, benchmark):
    """The report of `original` against `model` and, with `benchmark`, the
    float TFLite latency of each and their ratio."""
    result = {"report": metrics_report(original, model).to_dict()}
    if benchmark:
        with tempfile.TemporaryDirectory() as folder:
            saved_model = os.path.join(folder, SAVED_MODEL)
            original = float32_copy(original)
            save_model(original, saved_model)
            path = os.path.join(folder, FLOAT_TFLITE)
            with open(path, "wb") as file:
                file.write(convert(original, saved_model))
            original_latency = benchmark_tflite(path)
        latency = files[FLOAT_TFLITE]["latency_ms"]
        result["original_latency_ms"] = original_latency
        result["speedup"] = {
            key: original_latency[key] / latency[key] for key in ("single_thread", "multi_thread")
        }
    return result


def _move_into_place(tmp_dir, out_dir):
    """Renames `tmp_dir` to `out_dir`, replacing an existing `out_dir`."""
    if not os.path.lexists(out_dir):
        os.rename(tmp_dir, out_dir)
        return
    trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old.", dir=os.path.dirname(out_dir))
    os.rename(out_dir, os.path.join(trash, "old"))
    os.rename(tmp_dir, out_dir)
    shutil.rmtree(trash, ignore_errors=True)
