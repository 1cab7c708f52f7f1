"""The keras-rbp command line: prune a trained model on its data, end to
end; or shrink, export or report a pruned model saved during training (a
.keras file under Keras 3; a SavedModel folder, .h5 or .keras file under
tf_keras, with TF_USE_LEGACY_KERAS=1).

    keras-rbp prune --model=base.keras --train_data=train.npz \\
        --validation_data=val.npz --loss=sparse_categorical_crossentropy \\
        --target_macs=0.5 --plan_epochs=10 --output_dir=out
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
from keras_rbp import _keras, data_sources, errors, pipeline
from keras_rbp._keras import keras

COMMANDS = ("prune", "shrink", "export", "report")
USAGE_ERROR, COMMAND_ERROR = 2, 1

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model", None, "prune: the trained model (.keras); shrink, export, report: the pruned model saved during training."
)
flags.DEFINE_string(
    "output", None, "shrink: where to save the small model; report: a JSON file for the report."
)
flags.DEFINE_string(
    "output_dir",
    None,
    "export, prune: the folder to write. prune writes pruned.keras, small.keras, saved_model/, "
    "model.tflite (and model_int8.tflite with --quantize=int8), report.json, report.txt and pruning.png.",
)
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
    "export, prune: quantised files, of dynamic_range and int8; export writes int8 by default when "
    "--representative_data is given, prune none.",
)
# prune
DATA_HELP = (
    "a .npz file with arrays x (the model's inputs) and y (the labels), or a folder of images "
    "with one subfolder per class (read by keras.utils.image_dataset_from_directory at the "
    "model's input size, pixels scaled by --image_scale)"
)
flags.DEFINE_string("train_data", None, f"prune: the training data: {DATA_HELP}.")
flags.DEFINE_string(
    "validation_data",
    None,
    "prune: the validation data, the same kinds; by default the last --validation_split of the training data.",
)
flags.DEFINE_float(
    "validation_split", 0.1, "prune: without --validation_data, the fraction of the training data held out for it."
)
flags.DEFINE_string(
    "loss",
    None,
    "prune: the loss the model was trained with, a Keras loss name: sparse_categorical_crossentropy "
    "(integer labels), categorical_crossentropy (one-hot labels), binary_crossentropy, "
    "mean_squared_error, ...",
)
flags.DEFINE_enum(
    "from_logits", "auto", ["auto", "true", "false"],
    "prune: whether the model's outputs are logits; auto: probabilities where the layer that "
    "writes the first output ends in a softmax or a sigmoid.",
)
flags.DEFINE_float(
    "target_macs", None,
    "prune: the MACs (multiply-accumulates per example) of the pruned model: a number, or a fraction "
    "of the model's if below 1.",
)
flags.DEFINE_float("target_params", None, "prune: the parameters of the pruned model, in the same forms.")
flags.DEFINE_float(
    "target_latency_ms", None,
    "prune: the single-thread LiteRT latency per example of the pruned model on this machine, in ms.",
)
flags.DEFINE_integer("round_to", 1, "prune: with a target, keep channel counts that are multiples of this.")
flags.DEFINE_float(
    "plan_epochs", None,
    "prune: the length of the whole pruning plan (every stage and the fine-tune) in epochs; by "
    "default --epochs_per_stage a stage and --finetune_epochs.",
)
flags.DEFINE_integer("epochs_per_stage", 5, "prune: the most epochs a stage trains (its share of --plan_epochs).")
flags.DEFINE_integer("finetune_epochs", 5, "prune: the epochs of the fine-tune (its share of --plan_epochs).")
flags.DEFINE_integer(
    "groups_per_stage", 1, "prune: layers pruned together in a stage; 0 prunes them all at once."
)
flags.DEFINE_enum(
    "method", "rbp", ["rbp", "rbp_relaxed", "sbp", "vib", "l0", "magnitude"],
    "prune: the pruning noise: rbp (Recursive Bayesian Pruning), rbp_relaxed, sbp, vib, l0, or "
    "magnitude (weight norms; needs a target).",
)
flags.DEFINE_float("kl_weight", 10.0, "prune: how hard pruning pushes; larger removes more channels.")
flags.DEFINE_bool("cost_aware", True, "prune: price each channel by the MACs it carries.")
flags.DEFINE_float("distillation_weight", 0.0,
                   "prune: weight of the distillation loss from the unpruned model (0: none; 1 is usual).")
flags.DEFINE_float("distillation_temperature", 4.0, "prune: the distillation's softmax temperature.")
flags.DEFINE_bool("flatten_features", False, "prune: also prune the features after each Flatten layer.")
flags.DEFINE_integer("batch_size", 32, "prune: examples a training step.")
flags.DEFINE_float("learning_rate", 1e-3, "prune: Adam's learning rate while pruning.")
flags.DEFINE_float("finetune_learning_rate", 1e-4, "prune: the learning rate of the fine-tune.")
flags.DEFINE_integer(
    "representative_examples", 256, "prune: the training inputs that calibrate the int8 file."
)
flags.DEFINE_float("image_scale", 1.0 / 255, "prune: image folders' pixel values 0-255 are multiplied by this.")
flags.DEFINE_string(
    "work_dir", None,
    "prune: the folder of the backups a killed run resumes from (run the same command again); by "
    "default .<output_dir>.work beside --output_dir; removed at the end.",
)
flags.DEFINE_integer("seed", 0, "prune: the seed of the pruning noise and of the data order.")
flags.DEFINE_bool("benchmark", True, "export: time each TFLite file with LiteRT.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output or --output_dir.")
flags.DEFINE_bool("verbose", False, "On an error, print its traceback before the one-line message.")

REQUIRED = {
    "prune": ("model", "train_data", "loss", "output_dir"),
    "shrink": ("model", "output"),
    "export": ("model", "output_dir"),
    "report": ("model",),
}


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
            {"prune": _prune, "shrink": _shrink, "export": _export, "report": _report}[command]()
        except errors.ArgumentError as error:
            raise CommandError(_flag_error(error)) from error
        except (rbp.ExportCheckError, rbp.ShrinkError, OSError, ValueError) as error:
            raise CommandError(error) from error
    except KeyboardInterrupt:
        work = f"; run the same command to resume from {_work_dir()}" if command == "prune" else ""
        _fail(130, f"keras-rbp {command}: interrupted{work}")
    except CommandError as error:
        if FLAGS.verbose:
            traceback.print_exception(error.__cause__ or error)
        _fail(COMMAND_ERROR, f"keras-rbp {command}: error: {error}")


def _check_paths(command):
    for name in REQUIRED[command]:
        if not getattr(FLAGS, name):
            raise CommandError(f"--{name} is required")
    for name in ("model", "original", "representative_data", "check_data", "train_data", "validation_data"):
        path = getattr(FLAGS, name)
        if path and not os.path.exists(path):
            raise CommandError(f"--{name}={path!r}: no such file or folder")
    target = FLAGS.output_dir if command in ("export", "prune") else FLAGS.output
    if target and os.path.lexists(target) and not FLAGS.overwrite:
        flag = "output_dir" if command in ("export", "prune") else "output"
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


def _flag_error(error):
    """An ArgumentError of prune_and_export as the flag and the value given."""
    flag = error.arg
    value = FLAGS[flag].value if flag in FLAGS and FLAGS[flag].present else error.value
    if isinstance(value, list):
        value = ",".join(value)
    return f"--{flag}={value!r}: {error.reason}"


def _work_dir():
    if FLAGS.work_dir:
        return FLAGS.work_dir
    output_dir = os.path.abspath(FLAGS.output_dir)
    return os.path.join(os.path.dirname(output_dir), f".{os.path.basename(output_dir)}.work")


def _prune():
    model = _load("model")
    if rbp.pruning_groups(model):
        raise CommandError(
            f"--model={FLAGS.model!r}: model {model.name!r} is already pruned (it has RBP noises); "
            "prune takes the trained, unpruned model"
        )
    train = _prune_data("train_data", model)
    if FLAGS.validation_data:
        validation = _prune_data("validation_data", model)
    elif FLAGS.validation_split:
        if not 0 < FLAGS.validation_split < 1:
            raise CommandError(f"--validation_split={FLAGS.validation_split!r}: must be in [0, 1)")
        train, validation = _split(train, model)
    else:
        validation = None
    from_logits = {"auto": None, "true": True, "false": False}[FLAGS.from_logits]
    pipeline.prune_and_export(
        model,
        train,
        validation,
        output_dir=FLAGS.output_dir,
        loss=FLAGS.loss,
        from_logits=from_logits,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate,
        method=FLAGS.method,
        kl_weight=FLAGS.kl_weight,
        cost_aware=FLAGS.cost_aware,
        distillation_weight=FLAGS.distillation_weight,
        distillation_temperature=FLAGS.distillation_temperature,
        flatten_features=FLAGS.flatten_features,
        target_macs=_number(FLAGS.target_macs),
        target_params=_number(FLAGS.target_params),
        target_latency_ms=FLAGS.target_latency_ms,
        round_to=FLAGS.round_to,
        plan_epochs=FLAGS.plan_epochs,
        epochs_per_stage=FLAGS.epochs_per_stage,
        finetune_epochs=FLAGS.finetune_epochs,
        groups_per_stage=FLAGS.groups_per_stage,
        finetune_learning_rate=FLAGS.finetune_learning_rate,
        quantize=FLAGS.quantize or (),
        representative_examples=FLAGS.representative_examples,
        work_dir=FLAGS.work_dir,
        overwrite=FLAGS.overwrite,
        seed=FLAGS.seed,
    )


def _number(value):
    """A target of 1 or more is a count: an int, as RecursivePruning takes it."""
    return int(value) if value is not None and value >= 1 and value == int(value) else value


def _image_shape(flag, model):
    shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else ()
    if len(shape) != 3 or None in shape or shape[-1] not in (1, 3, 4):
        raise CommandError(
            f"--{flag}={getattr(FLAGS, flag)!r}: a folder of images needs a model of one image input "
            f"(batch, height, width, 1, 3 or 4 channels); model {model.name!r} takes "
            + ", ".join(str(tuple(x.shape)) for x in model.inputs)
        )
    return shape


def _prune_data(flag, model, **split):
    """The data a prune flag names: (x, y) arrays of a .npz file, or an
    ImageFolder."""
    path = getattr(FLAGS, flag)
    if os.path.isdir(path):
        height, width, channels = _image_shape(flag, model)
        try:
            folder = data_sources.ImageFolder(path, (height, width), channels, FLAGS.image_scale, seed=FLAGS.seed, **split)
        except ValueError as error:
            raise CommandError(f"--{flag}={path!r}: {str(error).strip().splitlines()[0]}") from error
        if len(folder) == 0:
            raise CommandError(f"--{flag}={path!r}: holds no images in class subfolders")
        return folder
    try:
        data = np.load(path)
    except (OSError, ValueError) as error:
        raise CommandError(f"--{flag}={path!r}: cannot read a .npz file or an image folder: {error}") from error
    if not isinstance(data, np.lib.npyio.NpzFile) or not {"x", "y"} <= set(data.files):
        found = list(data.files) if isinstance(data, np.lib.npyio.NpzFile) else "one array"
        raise CommandError(f"--{flag}={path!r}: needs a .npz file with arrays x and y; it holds {found}")
    return data["x"], data["y"]


def _split(train, model):
    """The training data and its last --validation_split as validation."""
    if isinstance(train, data_sources.ImageFolder):
        split = dict(validation_split=FLAGS.validation_split)
        return (_prune_data("train_data", model, subset="training", **split),
                _prune_data("train_data", model, subset="validation", **split))
    x, y = train
    held = int(round(len(x) * FLAGS.validation_split))
    if held == 0 or held == len(x):
        raise CommandError(
            f"--validation_split={FLAGS.validation_split!r}: leaves {held} of {len(x)} examples for "
            "validation; pass --validation_data"
        )
    return (x[:-held], y[:-held]), (x[-held:], y[-held:])


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
