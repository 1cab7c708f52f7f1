"""The keras-rbp command line: shrink, export or report a pruned model saved
during training (a .keras file under Keras 3; a SavedModel folder, .h5 or
.keras file under tf_keras, with TF_USE_LEGACY_KERAS=1).

    keras-rbp shrink --model=pruned.keras --output=small.keras
    keras-rbp export --model=pruned.keras --output_dir=out \\
        --representative_data=x_train_256.npy --quantize=dynamic_range,int8
    keras-rbp report --model=pruned.keras --output=report.json

`python -m keras_rbp` is the same command. Errors are one line on stderr
and a non-zero exit status.
"""

import json
import os
import shutil
import sys
import tempfile
import traceback

import numpy as np
from absl import app, flags

import keras_rbp as rbp
from keras_rbp import _keras
from keras_rbp._keras import keras

COMMANDS = ("shrink", "export", "report")
USAGE_ERROR, COMMAND_ERROR = 2, 1

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The pruned model saved during training.")
flags.DEFINE_string(
    "output", None, "shrink: where to save the small model; report: a JSON file for the report."
)
flags.DEFINE_string("output_dir", None, "export: the folder to write.")
flags.DEFINE_string(
    "original",
    None,
    "export, report: the unpruned model to compare with; by default the pruned "
    "model with every channel kept.",
)
flags.DEFINE_string(
    "representative_data",
    None,
    "export: a .npy file of model inputs that calibrate the int8 file (a .npz "
    "file for several inputs, in the model's input order).",
)
flags.DEFINE_string(
    "check_data", None, "export: a .npy/.npz file of the inputs the files are checked on."
)
flags.DEFINE_list(
    "quantize",
    None,
    "export: quantised files, of dynamic_range and int8; by default int8 when "
    "--representative_data is given.",
)
flags.DEFINE_bool("benchmark", True, "export: time each TFLite file with LiteRT.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output or --output_dir.")
flags.DEFINE_bool("verbose", False, "On an error, print its traceback before the one-line message.")

REQUIRED = {"shrink": ("model", "output"), "export": ("model", "output_dir"), "report": ("model",)}


class CommandError(Exception):
    """A user error, printed as one line."""


def run(argv=None):
    """Runs the command line; the entry point of the keras-rbp script."""
    app.run(_main, argv=argv, flags_parser=_parse_flags)


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(USAGE_ERROR, f"keras-rbp: error: {error}")


def _fail(status, message):
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else repr(message)
    print(first_line, file=sys.stderr)
    sys.exit(status)


def _main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        _fail(
            USAGE_ERROR,
            f"keras-rbp: error: expected one command of {', '.join(COMMANDS)}; "
            f"received {argv[1:]!r}",
        )
    command = argv[1]
    try:
        _check_paths(command)
        try:
            {"shrink": _shrink, "export": _export, "report": _report}[command]()
        except (rbp.ExportCheckError, rbp.ShrinkError, OSError, ValueError) as error:
            raise CommandError(error) from error
    except CommandError as error:
        if FLAGS.verbose:
            traceback.print_exception(error.__cause__ or error)
        _fail(COMMAND_ERROR, f"keras-rbp {command}: error: {error}")


def _check_paths(command):
    for name in REQUIRED[command]:
        if not getattr(FLAGS, name):
            raise CommandError(f"--{name} is required")
    for name in ("model", "original", "representative_data", "check_data"):
        path = getattr(FLAGS, name)
        if path and not os.path.exists(path):
            raise CommandError(f"--{name}={path!r}: no such file or folder")
    target = FLAGS.output_dir if command == "export" else FLAGS.output
    if target and os.path.lexists(target) and not FLAGS.overwrite:
        flag = "output_dir" if command == "export" else "output"
        raise CommandError(f"--{flag}={target!r} exists; pass --overwrite to replace it")


def _load(flag):
    path = getattr(FLAGS, flag)
    if not _keras.loads_saved_model_folders() and os.path.isdir(path):
        raise CommandError(
            f"--{flag}={path!r} is a folder (a SavedModel?); Keras 3 reads .keras "
            "files: pass one, or run with TF_USE_LEGACY_KERAS=1"
        )
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many kinds for an unreadable file.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"--{flag}={path!r}: cannot read a Keras model: {reason}") from error


def _load_pruned():
    model = _load("model")
    if not rbp.pruning_groups(model):
        raise CommandError(
            f"--model={FLAGS.model!r}: model {model.name!r} has no RBP wrappers; "
            "keras-rbp takes a model made by keras_rbp.prune and saved during training"
        )
    return model


def _original():
    """The unpruned model: --original, else the pruned one with every
    channel kept (its groups switched off), shrunk to plain layers."""
    if FLAGS.original:
        return _load("original")
    model = _load_pruned()
    for noise in rbp.pruning_groups(model).values():
        noise.mode = "off"
    return rbp.shrink(model)


def _data(flag):
    path = getattr(FLAGS, flag)
    if not path:
        return None
    try:
        data = np.load(path)
    except (OSError, ValueError) as error:
        raise CommandError(f"--{flag}={path!r}: cannot read a .npy or .npz file: {error}") from error
    if isinstance(data, np.lib.npyio.NpzFile):
        return [data[key] for key in data.files]
    return data


def _shrink():
    model = _load_pruned()
    small = rbp.shrink(model)
    _save(small, FLAGS.output)
    print(rbp.report(model, small))
    print(f"saved {FLAGS.output}")


def _save(model, path):
    """Saves `model` beside `path`, then moves it into place."""
    path = os.path.abspath(path)
    name = os.path.basename(path)
    folder = tempfile.mkdtemp(prefix=f".{name}.", dir=os.path.dirname(path))
    try:
        tmp_path = os.path.join(folder, name)
        model.save(tmp_path)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp_path, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _export():
    small = rbp.shrink(_load_pruned())
    summary = rbp.export(
        small,
        FLAGS.output_dir,
        representative_data=_data("representative_data"),
        check_data=_data("check_data"),
        original=_original(),
        quantize=FLAGS.quantize,
        overwrite=FLAGS.overwrite,
        benchmark=FLAGS.benchmark,
    )
    for name, entry in summary["files"].items():
        check = entry["check"]
        line = f"{name}: {entry['size_bytes']:,} bytes, {check['metric']} {check['value']:.3g}"
        if "latency_ms" in entry:
            line += f", {entry['latency_ms']['single_thread']:.3f} ms single-thread"
        print(line)
    if "speedup" in summary:
        print(f"speed-up over the unpruned model: {summary['speedup']['single_thread']:.2f}x single-thread")
    print(summary["report"]["architecture_before"], "->", summary["report"]["architecture_after"])
    print(f"wrote {FLAGS.output_dir}")


def _report():
    model = _load_pruned()
    result = rbp.report(_load("original") if FLAGS.original else model, rbp.shrink(model))
    print(result)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as file:
            json.dump(result.to_dict(), file, indent=2)
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    run()
