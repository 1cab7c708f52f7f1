"""`export` from the JAX and PyTorch backends: the model is saved as a
`.keras` file, which a TensorFlow process (Keras 3 with
KERAS_BACKEND=tensorflow) loads and exports with `exporting.export`'s
checks; it also checks that the loaded model computes what the model
computed on its own backend.

``python -m keras_rbp.tensorflow_export FOLDER`` is that process: FOLDER
holds what `export_in_tensorflow` wrote there.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

MODEL = "model.keras"
ORIGINAL = "original.keras"
ARRAYS = "arrays.npz"
ARGUMENTS = "arguments.json"
ERROR = "error.txt"


def export_in_tensorflow(model, out_dir, representative_data, check_data, expected, original, arguments):
    """Runs `exporting.export` of `model` in a TensorFlow process and returns
    its summary. `representative_data` and `check_data` are lists of arrays
    (or None), `expected` the outputs of `model` on `check_data` on this
    backend, `arguments` the other arguments of `export` (plain data)."""
    from keras_rbp._keras import BACKEND  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="keras_rbp_export.") as folder:
        model.save(os.path.join(folder, MODEL))
        if original is not None:
            original.save(os.path.join(folder, ORIGINAL))
        arrays = {f"expected_{i}": x for i, x in enumerate(expected)}
        arrays.update({f"check_{i}": x for i, x in enumerate(check_data)})
        arrays.update({f"representative_{i}": x for i, x in enumerate(representative_data or [])})
        np.savez(os.path.join(folder, ARRAYS), **arrays)
        with open(os.path.join(folder, ARGUMENTS), "w", encoding="utf-8") as file:
            json.dump(dict(arguments, out_dir=os.path.abspath(out_dir), backend=BACKEND,
                           representative=representative_data is not None), file)
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        env.pop("TF_USE_LEGACY_KERAS", None)
        done = subprocess.run([sys.executable, "-m", "keras_rbp.tensorflow_export", folder], env=env,
                              capture_output=True, text=True, check=False)
        error_path = os.path.join(folder, ERROR)
        if os.path.exists(error_path):
            with open(error_path, encoding="utf-8") as file:
                kind, message = file.read().split("\n", 1)
            from keras_rbp.exporting import ExportCheckError  # noqa: PLC0415

            error_class = {"ExportCheckError": ExportCheckError, "FileExistsError": FileExistsError}.get(
                kind, RuntimeError)
            raise error_class(message)
        if done.returncode != 0:
            raise RuntimeError(f"export: the TensorFlow process failed: {done.stderr.strip()[-2000:]}")
    with open(os.path.join(out_dir, "report.json"), encoding="utf-8") as file:
        return json.load(file)


def _arrays(arrays, prefix):
    names = sorted((name for name in arrays.files if name.startswith(prefix)), key=lambda n: int(n.rsplit("_", 1)[1]))
    return [arrays[name] for name in names]


def _main(folder):
    with open(os.path.join(folder, ARGUMENTS), encoding="utf-8") as file:
        arguments = json.load(file)
    backend = arguments.pop("backend")
    out_dir = arguments.pop("out_dir")
    has_representative = arguments.pop("representative")
    try:
        import keras_rbp as rbp  # noqa: PLC0415
        from keras_rbp import exporting  # noqa: PLC0415
        from keras_rbp._keras import keras  # noqa: PLC0415

        arrays = np.load(os.path.join(folder, ARRAYS))
        check_data = _arrays(arrays, "check_")
        model = keras.models.load_model(os.path.join(folder, MODEL))
        loaded = exporting._keras_outputs(model, check_data)  # noqa: SLF001 (one package)
        exporting._check(f"the model loaded under TensorFlow from {backend}", _arrays(arrays, "expected_"),  # noqa: SLF001
                         loaded, arguments["float_atol"], None)
        original_path = os.path.join(folder, ORIGINAL)
        original = keras.models.load_model(original_path) if os.path.exists(original_path) else None
        summary = rbp.export(model, out_dir, representative_data=_arrays(arrays, "representative_") if has_representative
                             else None, check_data=check_data, original=original, **arguments)
        summary["exported_under"] = f"tensorflow, from a .keras file saved under {backend}"
        with open(os.path.join(out_dir, exporting.REPORT), "w", encoding="utf-8") as file:
            json.dump(summary, file, indent=2)
    except Exception as error:  # reported to the parent process, which raises it
        with open(os.path.join(folder, ERROR), "w", encoding="utf-8") as file:
            file.write(f"{type(error).__name__}\n{error}")
        raise


if __name__ == "__main__":
    _main(sys.argv[1])
