"""`quantize_aware`: quantization-aware training of a small model with
tensorflow-model-optimization, for an int8 TFLite file (tf_keras only)."""

import os
import tempfile

import numpy as np

from keras_rbp.exporting import SAVED_MODEL, TFLITE_FILES, convert, save_model, tflite_outputs
from keras_rbp import _keras
from keras_rbp._keras import keras


def quantize_aware(
    model,
    out_path,
    train_data,
    eval_data,
    epochs=1,
    batch_size=128,
    learning_rate=1e-4,
    loss=None,
    calibration_samples=256,
    overwrite=False,
):
    """Fine-tunes `model` with fake quantisation and writes an int8 TFLite file.

    Wraps a copy of `model` with `tfmot.quantization.keras.quantize_model`,
    fine-tunes it briefly, and converts it to a TFLite file with int8
    weights, activations, inputs and outputs. For comparison it also
    quantises `model` after training (post-training int8, calibrated on the
    first `calibration_samples` training inputs) and measures the accuracy
    of both files and of `model` on `eval_data`. Needs tf_keras
    (``TF_USE_LEGACY_KERAS=1``), which tensorflow-model-optimization runs on.

    Args:
        model: a plain single-input classifier, such as `keras_rbp.shrink`
            returns; it is not changed.
        out_path: the .tflite file to write.
        train_data: (inputs, integer labels) of the fine-tune.
        eval_data: (inputs, integer labels) to measure accuracy on.
        epochs: epochs of the fine-tune.
        batch_size: batch size of the fine-tune.
        learning_rate: Adam learning rate of the fine-tune.
        loss: the fine-tune loss; None means sparse categorical cross-entropy
            on logits.
        calibration_samples: training inputs that calibrate the
            post-training int8 file.
        overwrite: whether to replace an existing `out_path`.

    Returns:
        A dict with the accuracy of "float" (the Keras model), "qat_int8" and
        "ptq_int8", and the size in bytes of each TFLite file.
    """
    _keras.require_tf_keras("quantize_aware")
    import tensorflow_model_optimization as tfmot  # noqa: PLC0415 (tf_keras only)

    out_path = os.path.abspath(os.fspath(out_path))
    if os.path.lexists(out_path) and not overwrite:
        raise FileExistsError(
            f"quantize_aware: out_path {out_path!r} exists; pass overwrite=True to replace it"
        )
    x_train, y_train = _labelled(train_data, "train_data")
    x_eval, y_eval = _labelled(eval_data, "eval_data")
    counts = (("epochs", epochs), ("batch_size", batch_size), ("calibration_samples", calibration_samples))
    for arg, value in counts:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"quantize_aware: {arg} must be a positive integer, received: {value!r}")

    qat_model = tfmot.quantization.keras.quantize_model(model)
    qat_model.compile(
        keras.optimizers.Adam(learning_rate),
        loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    qat_model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    representative = [x_train[:calibration_samples]]
    parent = os.path.dirname(out_path)
    os.makedirs(parent, exist_ok=True)
    # Beside out_path, so that the finished file is renamed into place.
    with tempfile.TemporaryDirectory(prefix=".keras_rbp_qat.", dir=parent) as folder:
        qat_path = _write_int8(qat_model, os.path.join(folder, "qat"), representative)
        ptq_path = _write_int8(model, os.path.join(folder, "ptq"), representative)
        result = {
            "float": {"accuracy": _accuracy(model.predict(x_eval, verbose=0), y_eval)},
            "qat_int8": _evaluate(qat_path, qat_model, x_eval, y_eval),
            "ptq_int8": _evaluate(ptq_path, model, x_eval, y_eval),
        }
        os.replace(qat_path, out_path)
    return result


def _write_int8(model, folder, representative):
    """Writes `model` as an int8 TFLite file in `folder`; returns its path."""
    saved_model = os.path.join(folder, SAVED_MODEL)
    save_model(model, saved_model)
    path = os.path.join(folder, TFLITE_FILES["int8"])
    with open(path, "wb") as file:
        file.write(convert(model, saved_model, "int8", representative))
    return path


def _labelled(data, arg):
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValueError(
            f"quantize_aware: {arg} must be a pair (inputs, labels), received: {type(data).__name__}"
        ) from None
    x, y = np.asarray(x, dtype="float32"), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"quantize_aware: {arg} needs as many labels as inputs, at least one; "
            f"received {len(x)} inputs and {len(y)} labels"
        )
    return x, y


def _evaluate(path, model, x, y):
    (outputs,) = tflite_outputs(path, model, [x])
    return {"accuracy": _accuracy(outputs, y), "size_bytes": os.path.getsize(path)}


def _accuracy(outputs, labels):
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))
