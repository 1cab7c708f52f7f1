"""The whole keras_rbp path as one recipe: train a baseline, prune it with
`RecursivePruning`, `shrink` it, `export` it, and report what changed.

The examples and the paper benchmark run it with their own budgets.
"""

import contextlib
import dataclasses
import io
import json
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

from keras_rbp import datasets, models
from keras_rbp.distillation import distilled, output_kinds
from keras_rbp._keras import keras, to_numpy
from keras_rbp.exporting import export
from keras_rbp.latency import model_latency
from keras_rbp.metrics import report
from keras_rbp.schedule import RecursivePruning
from keras_rbp.surgery import kept_channels, shrink
from keras_rbp.pruning import prune, pruning_groups

LOADERS = {"mnist": datasets.load_mnist, "cifar10": datasets.load_cifar10}


@dataclasses.dataclass
class Recipe:
    """Every setting of one run. Epochs and example counts are the budget."""

    model: str  # a builder of keras_rbp.models, e.g. "lenet5_caffe"
    dataset: str  # "mnist" or "cifar10"
    data_dir: str = None
    output_dir: str = None  # where export() writes; None skips the export
    seed: int = 0
    train_examples: int = None  # a subset of the training set, for small budgets
    test_examples: int = None
    validation_split: float = 0.1
    batch_size: int = 128
    learning_rate: float = 1e-3
    pretrain_epochs: int = 10
    pretrain_weight_decay: float = 0.0  # the baseline's decoupled weight decay (AdamW); 0: Adam
    baseline_dir: str = None  # trained baselines kept here, one per setting, and reused
    # prune()
    method: str = "rbp"  # or "rbp_relaxed", a peer's noise ("sbp", "vib", "l0"), "magnitude"
    kl_weight: float = 10.0
    prior_keep_prob: float = 0.01
    initial_keep_prob: float = 0.9
    logit_scale: float = 10.0  # the noise parameters move this many times faster than the weights
    input_features: bool = False  # the small model then takes the kept features
    flatten_features: bool = False
    cost_aware: bool = False
    distillation_weight: float = 0.0  # the distillation loss's weight (0: none); see keras_rbp.distillation
    distillation_temperature: float = 4.0
    # RecursivePruning
    epochs_per_stage: int = 5
    finetune_epochs: int = 5
    groups_per_stage: int = 1  # 0: every group in one stage (all-at-once)
    max_noise_scale: float = 3.0
    finetune_learning_rate: float = 1e-4
    target_macs: float = None  # a budget: MACs, or a fraction of the baseline's
    target_params: float = None
    target_latency_ms: float = None  # single-thread LiteRT milliseconds on this machine
    round_to: int = 1
    widths: str = "share"  # with a target: "share", or "posterior" (see RecursivePruning)
    plan_epochs: float = None  # the whole pruning plan's length; None: the epochs above
    quantize: tuple = ()


def load_data(recipe):
    """(x_train, y_train), (x_test, y_test), cut to the recipe's budget; with
    `input_features`, each example flattened to a vector of features."""
    (x_train, y_train), (x_test, y_test) = LOADERS[recipe.dataset](recipe.data_dir)
    if recipe.input_features:
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    return (
        (x_train[: recipe.train_examples], y_train[: recipe.train_examples]),
        (x_test[: recipe.test_examples], y_test[: recipe.test_examples]),
    )


def run_baseline(recipe, verbose=1):
    """Trains (or loads from `baseline_dir`) the recipe's unpruned model and
    nothing else; returns its test error and, with a validation split, its
    error on the held-out training images, where a baseline recipe is chosen."""
    clock = _Clock()
    (x_train, y_train), (x_test, y_test), fit_size, baseline = _seeded_baseline(recipe, verbose)
    clock.lap("pretrain")
    results = {"recipe": dataclasses.asdict(recipe), "baseline_error": _error(baseline, x_test, y_test)}
    if fit_size < len(x_train):
        results["validation_error"] = _error(baseline, x_train[fit_size:], y_train[fit_size:])
    results["seconds"] = clock.laps
    return results


def run(recipe, verbose=1, models=None):
    """Runs the recipe; returns its figures as a dict (see the README). A
    dict passed as `models` receives the "baseline" and the shrunk "small"
    model, which takes the kept input features where `input_features`."""
    clock = _Clock()
    (x_train, y_train), (x_test, y_test), fit_size, baseline = _seeded_baseline(recipe, verbose)
    clock.lap("pretrain")

    pruned = prune(
        baseline,
        dataset_size=fit_size,
        kl_weight=recipe.kl_weight,
        prior_keep_prob=recipe.prior_keep_prob,
        initial_keep_prob=recipe.initial_keep_prob,
        logit_scale=recipe.logit_scale,
        input_features=recipe.input_features,
        flatten_features=recipe.flatten_features,
        cost_aware=recipe.cost_aware,
        seed=recipe.seed,
        method=recipe.method,
    )
    trained = _with_distillation(pruned, baseline, recipe.distillation_weight, recipe.distillation_temperature)
    _compile(trained, recipe.learning_rate)
    schedule = _schedule(dataclasses.asdict(recipe), verbose, max_noise_scale=recipe.max_noise_scale)
    history = trained.fit(x_train, y_train, batch_size=recipe.batch_size,
                          epochs=schedule.total_epochs(pruned), callbacks=[schedule],
                          validation_split=recipe.validation_split, verbose=2 if verbose else 0)
    clock.lap("prune")

    # With input features pruned, the small model takes only the kept ones.
    small = shrink(pruned, keep_input_shape=not recipe.input_features)
    small_x_test, small_x_train = x_test, x_train
    results_features = {}
    if recipe.input_features:
        features = kept_channels(pruned)[next(iter(pruning_groups(pruned)))]
        results_features = {"kept_features": features.tolist()}
        small_x_test, small_x_train = x_test[:, features], x_train[:, features]
    _compile(small, recipe.learning_rate)
    clock.lap("shrink")
    if models is not None:
        models.update(baseline=baseline, small=small)
    summary = report(baseline, small)
    results = {
        "recipe": dataclasses.asdict(recipe),
        "baseline_error": _error(baseline, x_test, y_test),
        "pruned_error": _error(pruned, x_test, y_test),
        "final_error": _error(small, small_x_test, y_test),
        "epochs": {"pretrain": recipe.pretrain_epochs, "pruning": len(history.epoch)},
        "kept": {name: int(mask.sum()) for name, mask in _masks(pruned).items()},
        "stage_ends": schedule.stage_ends,
        "report": summary.to_dict(),
        **results_features,
    }
    if fit_size < len(x_train):  # the held-out split: where hyperparameters are chosen
        results["validation_error"] = _error(small, small_x_train[fit_size:], y_train[fit_size:])
    if recipe.target_latency_ms is not None:
        results["latency_ms"] = _latency_figures(recipe, schedule, pruned, small)
    if recipe.output_dir:
        results["export"] = export(
            small,
            recipe.output_dir,
            representative_data=small_x_train[:256],
            check_data=small_x_test[:512],
            original=baseline,
            quantize=recipe.quantize,
            overwrite=True,
        )
        clock.lap("export")
    results["seconds"] = clock.laps
    if verbose:
        print(summary)
    return results


# The settings of a run (a Recipe's fields, prune_and_export's arguments)
# that RecursivePruning takes as they are.
_SCHEDULE_SETTINGS = ("epochs_per_stage", "finetune_epochs", "finetune_learning_rate", "target_macs",
                      "target_params", "target_latency_ms", "round_to", "widths", "plan_epochs")


def _schedule(settings, verbose, **more):
    """The RecursivePruning that `settings` (a dict holding the keys of
    `_SCHEDULE_SETTINGS` and groups_per_stage, 0 or None for all groups in
    one stage) describes, with `more` arguments."""
    return RecursivePruning(
        groups_per_stage=settings["groups_per_stage"] or None, verbose=verbose,
        **{key: settings[key] for key in _SCHEDULE_SETTINGS}, **more,
    )


def _latency_figures(recipe, schedule, pruned, small):
    """The latency target, the budget's prediction for the kept channels,
    the shrunk model's measured latency, and the table behind them."""
    return {
        "target": recipe.target_latency_ms,
        "predicted": schedule.budget.cost(_masks(pruned)),
        "measured": model_latency(small),
        "table": schedule.budget.costs.latency.to_dict(),
        "stage_measurements": schedule.budget.measurements,
    }


def _seeded_baseline(recipe, verbose):
    """The recipe's data, the number of training images it fits on (the rest
    held out), and its baseline, all from the recipe's seed."""
    keras.utils.set_random_seed(recipe.seed)
    (x_train, y_train), test = load_data(recipe)
    fit_size = int(round(len(x_train) * (1.0 - recipe.validation_split)))
    return (x_train, y_train), test, fit_size, _baseline(recipe, x_train, y_train, fit_size, verbose)


def _baseline(recipe, x_train, y_train, fit_size, verbose):
    """The recipe's trained, unpruned model: loaded from `baseline_dir` when
    a run with the same baseline settings saved it there, else trained (and
    saved there). Every method and schedule of a seed then starts from the
    same weights."""
    baseline = getattr(models, recipe.model)(x_train.shape[1:], int(y_train.max()) + 1)
    path = None
    if recipe.baseline_dir:
        settings = (recipe.model, recipe.dataset, recipe.seed, recipe.train_examples, recipe.validation_split,
                    recipe.batch_size, recipe.learning_rate, recipe.pretrain_epochs, recipe.input_features)
        if recipe.pretrain_weight_decay:
            settings += (f"wd{recipe.pretrain_weight_decay:g}",)
        name = "_".join(str(value) for value in settings).replace(".", "p")
        path = os.path.join(recipe.baseline_dir, f"{name}.weights.h5")
        if os.path.exists(path):
            baseline.load_weights(path)  # before compile: the optimiser's state is not needed
            _compile(baseline, recipe.learning_rate)
            return baseline
    _compile(baseline, _decaying(recipe, fit_size), recipe.pretrain_weight_decay)
    baseline.fit(x_train, y_train, batch_size=recipe.batch_size, epochs=recipe.pretrain_epochs,
                 validation_split=recipe.validation_split, verbose=2 if verbose else 0)
    if path:
        os.makedirs(recipe.baseline_dir, exist_ok=True)
        partial = path.replace(".weights.h5", ".partial.weights.h5")
        baseline.save_weights(partial)
        os.replace(partial, path)
    return baseline


def _masks(pruned):
    return {name: noise.mask.numpy() > 0 for name, noise in pruning_groups(pruned).items()}


def _with_distillation(pruned, teacher, weight, temperature):
    """The model to fit: `pruned`, or with a weight, `pruned` distilled from `teacher`."""
    return distilled(pruned, teacher, temperature, weight) if weight else pruned


def _compile(model, learning_rate, weight_decay=0.0):
    optimizer = (keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay) if weight_decay
                 else keras.optimizers.Adam(learning_rate))
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _decaying(recipe, fit_size):
    """The baseline's learning rate: cosine decay to a tenth over its epochs."""
    steps = max(1, recipe.pretrain_epochs * -(-fit_size // recipe.batch_size))
    return keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps, alpha=0.1)


def _error(model, x, y):
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) != y))


class _Clock:
    def __init__(self):
        self.laps = {}
        self._start = time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.laps[name] = round(now - self._start, 2)
        self._start = now



# The whole path for a user's own trained model: `prune_and_export`, which
# the `keras-rbp prune` command runs.

CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy")
CURVE_EXAMPLES = 2000  # the validation examples the metric over the plan is measured on
CHECK_EXAMPLES = 512  # the validation examples the exported files are checked on
OUTPUT_FILES = ("pruned.keras", "small.keras", "report.txt", "pruning.png")


class ArgumentError(ValueError):
    """An argument of `prune_and_export` that cannot work, before anything
    is trained or written: `arg` names it, `reason` says why."""

    def __init__(self, arg, value, reason):
        self.arg, self.value, self.reason = arg, value, reason
        super().__init__(f"prune_and_export: {arg}={_short(value)}: {reason}")


@dataclasses.dataclass
class PruningResult:
    """What `prune_and_export` made.

    Attributes:
        pruned: the pruned model, with its RBP noises (saves and loads).
        small: the plain Keras model `shrink` made from it.
        report: `keras_rbp.report(model, small)`.
        summary: the contents of report.json: the export's files, checks and
            latencies, and a "pruning" entry with the budget, the errors
            before and after and the metric over the plan.
        output_dir: the folder written, or None.
    """

    pruned: object
    small: object
    report: object
    summary: dict
    output_dir: str = None


class ImageFolder:
    """Images in one subfolder per class, read as
    `keras.utils.image_dataset_from_directory` reads them (the classes in
    alphanumeric order of their folders, labels their indices), for
    `prune_and_export`.

    Args:
        path: the folder of class subfolders.
        image_size: (height, width) every image is resized to.
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA).
        scale: the pixel values 0-255 are multiplied by it (1/255 by
            default: pixels in [0, 1]).
        validation_split, subset, seed: as in `image_dataset_from_directory`:
            a fraction of the images held out, "training" or "validation".
    """

    def __init__(self, path, image_size, channels=3, scale=1.0 / 255, validation_split=None, subset=None, seed=0):
        color_mode = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(channels)
        if color_mode is None:
            raise ValueError(f"ImageFolder: channels must be 1, 3 or 4, received: {channels!r}")
        with contextlib.redirect_stdout(io.StringIO()):  # "Found N files belonging to C classes."
            listing = keras.utils.image_dataset_from_directory(
                path, labels="inferred", label_mode="int", color_mode=color_mode, batch_size=None,
                image_size=tuple(image_size), shuffle=validation_split is not None, seed=seed,
                validation_split=validation_split, subset=subset,
            )
        self.path, self.image_size, self.channels, self.scale = path, tuple(image_size), channels, scale
        self.class_names = list(listing.class_names)
        self.file_paths = list(listing.file_paths)
        root = os.path.abspath(path)
        self.labels = np.array(
            [self.class_names.index(os.path.relpath(os.path.abspath(p), root).split(os.sep)[0])
             for p in self.file_paths], dtype="int64")

    def __len__(self):
        return len(self.file_paths)

    def load(self, path):
        """One image as the model reads it, a float32 tensor."""
        image = tf.io.decode_image(tf.io.read_file(path), channels=self.channels, expand_animations=False)
        image = tf.image.resize(image, self.image_size)
        image.set_shape(self.image_size + (self.channels,))
        return image * self.scale


def prune_and_export(
    model,
    train_data,
    validation_data=None,
    output_dir=None,
    loss=None,
    from_logits=None,
    batch_size=32,
    learning_rate=1e-3,
    method="rbp",
    kl_weight=10.0,
    cost_aware=True,
    distillation_weight=0.0,
    distillation_temperature=4.0,
    flatten_features=False,
    target_macs=None,
    target_params=None,
    target_latency_ms=None,
    round_to=1,
    widths="share",
    plan_epochs=None,
    epochs_per_stage=5,
    finetune_epochs=5,
    groups_per_stage=1,
    finetune_learning_rate=1e-4,
    quantize=(),
    representative_examples=256,
    work_dir=None,
    overwrite=False,
    seed=0,
    callbacks=(),
    verbose=1,
):
    """Prunes a trained model on its data, shrinks it and writes what a
    device needs, in one call: `prune`, fit with `RecursivePruning`,
    `shrink`, `report` and `export`. The `keras-rbp prune` command runs it.

    The model is left untouched. The pruned model trains with Adam at
    `learning_rate` on `loss`; with `output_dir`, the folder receives
    pruned.keras, small.keras, the files `export` writes and checks
    (saved_model/, model.tflite, model_int8.tflite on request), report.json,
    report.txt (the per-layer table, the architectures, the reductions, the
    LiteRT speed-up and the errors before and after) and pruning.png (each
    layer's channels before and after, and the validation metric over the
    plan with its stages). It is written into a temporary folder beside
    `output_dir` and moved into place at the end: an error leaves nothing.

    With `work_dir` (by default a hidden folder beside `output_dir`), the
    plan is backed up at each epoch's end (`keras.callbacks.BackupAndRestore`):
    called again with the same arguments after a kill, it resumes from the
    last epoch and ends with the masks of an uninterrupted run. Arrays and
    `ImageFolder`s are read in an order that depends only on `seed` and the
    epoch, so that a resumed epoch reads what the lost one read.

    Args:
        model: a trained Keras model (Sequential or Functional).
        train_data: the training data: a tuple (x, y) of arrays, an
            `ImageFolder`, or a finite, batched `tf.data.Dataset` of (x, y)
            (read as given: shuffle it yourself, with a seed for an exact
            resume).
        validation_data: the same kinds; the error (or loss) before and
            after, and over the plan, is measured on it.
        output_dir: the folder to write; None writes nothing.
        loss: a Keras loss, or its name; by default the model's compiled
            loss. "sparse_categorical_crossentropy",
            "categorical_crossentropy" and "binary_crossentropy" are checked
            against the labels, and measured as a classification error.
        from_logits: whether the model's outputs are logits, for a loss
            given by name; None: they are probabilities where the layer
            that writes the first output (inside a nested model too) ends
            in a softmax or a sigmoid, logits otherwise.
        batch_size: examples a step, for arrays and image folders.
        learning_rate: Adam's learning rate while pruning.
        method, kl_weight, cost_aware, flatten_features: as in `prune`.
        distillation_weight: above 0, the pruned model also learns from
            `model`'s outputs: the loss adds this weight times the
            distillation loss (`keras_rbp.distillation`); 0, none.
        distillation_temperature: the distillation's softmax temperature.
        target_macs, target_params, target_latency_ms, round_to, widths,
            plan_epochs, epochs_per_stage, finetune_epochs,
            groups_per_stage, finetune_learning_rate: as in
            `RecursivePruning`.
        quantize: quantised TFLite files to write, of "dynamic_range" and
            "int8".
        representative_examples: how many training inputs calibrate the
            int8 file.
        work_dir: the folder of the backups; removed when the call ends
            well.
        overwrite: whether to replace an existing `output_dir`.
        seed: the noise's seed and the order of the data.
        callbacks: more Keras callbacks for fit (`PruningSummaries`,
            TensorBoard, ...), listed after the plan's.
        verbose: 1 prints Keras's progress lines, a line per stage and the
            report; 0 prints nothing.

    Returns:
        A `PruningResult`.

    Raises:
        ArgumentError: an argument that cannot work (a file, a shape, a loss
            that does not fit the labels, a budget below what can be
            reached), before anything is trained or written.
    """
    keras.utils.set_random_seed(seed)
    quantize = _quantize_kinds(quantize)
    output_dir, work_dir = _folders(output_dir, work_dir, overwrite)
    train = _data_source(train_data, model, "train_data", batch_size)
    validation = _data_source(validation_data, model, "validation_data", batch_size) if validation_data is not None else None
    loss, measure = _loss_and_measure(model, loss, from_logits, train, validation)
    settings = {
        "model": model.name, "params": int(model.count_params()), "train_examples": train.size,
        "loss": getattr(loss, "name", str(loss)), "batch_size": batch_size, "learning_rate": learning_rate,
        "method": method, "kl_weight": kl_weight, "cost_aware": cost_aware, "flatten_features": flatten_features,
        "distillation_weight": distillation_weight, "distillation_temperature": distillation_temperature,
        "target_macs": target_macs, "target_params": target_params, "target_latency_ms": target_latency_ms,
        "round_to": round_to, "widths": widths, "plan_epochs": plan_epochs, "epochs_per_stage": epochs_per_stage,
        "finetune_epochs": finetune_epochs, "groups_per_stage": groups_per_stage,
        "finetune_learning_rate": finetune_learning_rate, "seed": seed,
    }

    pruned = prune(model, dataset_size=train.size if train.size else train.dataset, kl_weight=kl_weight,
                   cost_aware=cost_aware, flatten_features=flatten_features, seed=seed, method=method)
    trained = _with_distillation(pruned, model, distillation_weight, distillation_temperature)
    trained.compile(keras.optimizers.Adam(learning_rate), loss, metrics=measure.keras_metrics)
    schedule = _checked_schedule(pruned, train, settings, verbose)
    _check_budget(pruned, target_macs, target_params, round_to)

    before = measure(model, validation) if validation is not None else None
    resumed = bool(work_dir) and os.path.isdir(work_dir)
    if resumed:
        _check_work_dir(work_dir, settings)
    curve, clock = _PlanCurve(measure, validation, work_dir, schedule, train.steps), EpochClock()
    callbacks = [clock, schedule, curve] + _backup_callbacks(work_dir, settings) + list(callbacks or ())
    planned = False  # whether the plan ran to its end: its backups are then of no more use
    try:
        if verbose and resumed:
            print(f"prune_and_export: resuming the plan backed up in {work_dir}")
        trained.fit(
            train.training_dataset(clock, seed), epochs=schedule.total_epochs(pruned, train.steps),
            validation_data=validation.dataset if validation is not None else None, callbacks=callbacks,
            shuffle=False, verbose=2 if verbose else 0,
        )
        planned = True

        small = shrink(pruned)
        summary_report = report(model, small)
        after = measure(small, validation) if validation is not None else None
        pruning = {
            "settings": settings,
            "target": _target_summary(schedule, summary_report),
            "kept": {name: int(mask.sum()) for name, mask in _masks(pruned).items()},
            "measure": measure.name,
            "before": before,
            "after": after,
            "validation_examples": validation.size if validation is not None else None,
            "curve": curve.points,
            "stages": curve.stages,
            "stage_ends": schedule.stage_ends,  # the stages this call ended, and their undecided channels
            "steps_per_epoch": train.steps,
        }
        summary = {"report": summary_report.to_dict(), "pruning": pruning}
        if output_dir is not None:
            summary = _write_output(output_dir, model, pruned, small, summary_report, pruning, train, validation,
                                    quantize, representative_examples, overwrite)
    except BaseException as error:
        # A kill mid-plan keeps the backups, to resume from; any other end
        # removes a work folder this call made, or one whose plan is done.
        interrupted = isinstance(error, KeyboardInterrupt) and not planned
        if work_dir and not interrupted and (planned or not resumed):
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
    if work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    if verbose:
        from keras_rbp import summary as summary_lib

        print(summary_lib.text_report(summary, str(summary_report)))
        if output_dir is not None:
            print(f"wrote {output_dir}")
    return PruningResult(pruned, small, summary_report, summary, output_dir)


def _quantize_kinds(quantize):
    """`quantize` as a tuple of kinds, each checked."""
    quantize = (quantize,) if isinstance(quantize, str) else tuple(quantize or ())
    for kind in quantize:
        if kind not in ("dynamic_range", "int8"):
            raise ArgumentError("quantize", ",".join(quantize), f"{kind!r} is not one of dynamic_range, int8")
    return quantize


def _folders(output_dir, work_dir, overwrite):
    """The absolute output folder (refused where it exists, unless
    `overwrite`) and the work folder: `work_dir`, or a hidden one beside
    the output folder."""
    if output_dir is None:
        return None, work_dir
    output_dir = os.path.abspath(os.fspath(output_dir))
    if os.path.lexists(output_dir) and not overwrite:
        raise ArgumentError("output_dir", output_dir, "exists; pass overwrite=True to replace it")
    if work_dir is None:
        work_dir = os.path.join(os.path.dirname(output_dir), f".{os.path.basename(output_dir)}.work")
    return output_dir, work_dir


def _checked_schedule(pruned, train, settings, verbose):
    """The RecursivePruning of `settings`, its plan checked against the
    training data before any training; a bad setting is an ArgumentError."""
    try:
        schedule = _schedule(settings, verbose)
        schedule.total_epochs(pruned, train.steps)
        if train.steps:
            schedule.lengths(pruned, train.steps)  # a plan shorter than its stages fails now
    except ValueError as error:
        raise _argument_error(error, settings) from error
    return schedule


def _backup_callbacks(work_dir, settings):
    """A BackupAndRestore in the work folder, which records `settings`
    beside it; none without a work folder."""
    if not work_dir:
        return []
    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, "settings.json"), "w", encoding="utf-8") as file:
        json.dump(settings, file, indent=2, default=str)
    return [keras.callbacks.BackupAndRestore(os.path.join(work_dir, "backup"))]


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _argument_error(error, settings):
    """The ValueError of RecursivePruning or Budget as an ArgumentError
    naming the argument its message names."""
    message = str(error)
    for arg in ("target_macs", "target_params", "target_latency_ms", "plan_epochs", "round_to",
                "epochs_per_stage", "finetune_epochs", "groups_per_stage", "widths"):
        if f"{arg}" in message:
            reason = message.split(": ", 1)[-1] if message.startswith("RecursivePruning") else message
            return ArgumentError(arg, settings.get(arg), reason)
    return error


def _check_budget(pruned, target_macs, target_params, round_to):
    """A MAC or parameter target below what can be reached fails now, before
    any training (a latency target needs its timings: RecursivePruning
    checks it when fit starts)."""
    from keras_rbp.budget import Budget

    for metric, target in (("macs", target_macs), ("params", target_params)):
        if target is None:
            continue
        try:
            Budget(pruned, metric, target, 1, round_to)
        except ValueError as error:
            reason = str(error).split(") is ", 1)[-1]
            raise ArgumentError(f"target_{metric}", target, f"is {reason}" if reason != str(error) else reason) from error


class _Source:
    """Training or validation data: arrays or an ImageFolder (random access,
    so that each epoch's order depends only on the seed and the epoch), or
    a tf.data.Dataset read as given."""

    def __init__(self, data, batch_size):
        self.batch_size = batch_size
        self.images = self.x = self.y = self.dataset = None
        if isinstance(data, ImageFolder):
            self.images, self.y = data, data.labels
            self.size = len(data)
        elif isinstance(data, tf.data.Dataset):
            self.dataset, self.size = data, None
        else:
            self.x, self.y = data
            self.size = len(self.x)
        if self.size is not None:
            self.steps = -(-self.size // batch_size)
            self.dataset = self._batches(tf.data.Dataset.range(self.size))
        else:
            cardinality = int(data.cardinality())
            self.steps = cardinality if cardinality > 0 else None

    def _batches(self, indices):
        """Batches of (x, y) of the examples `indices` (a dataset of int64)
        names, in its order."""
        if self.images is not None:
            paths, labels = tf.constant(self.images.file_paths), tf.constant(self.y)
            data = indices.map(lambda i: (self.images.load(paths[i]), labels[i]),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            return data.batch(self.batch_size).prefetch(2)
        x, y = tf.constant(self.x), tf.constant(self.y)
        return indices.batch(self.batch_size).map(lambda i: (tf.gather(x, i), tf.gather(y, i))).prefetch(2)

    def training_dataset(self, clock, seed):
        """The training batches: arrays and image folders in an order drawn
        from (seed, epoch), the epoch read from `clock` (an `EpochClock`
        among fit's callbacks) when each epoch's iterator starts, so that an
        epoch resumed from a backup reads the examples in the order the lost
        one read them."""
        if self.x is None and self.images is None:
            return self.dataset
        size = self.size

        def order(_):
            epoch = tf.py_function(lambda: np.int64(clock.epoch), [], tf.int64)
            keys = tf.random.stateless_uniform([size], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
            return tf.data.Dataset.from_tensor_slices(tf.argsort(keys, stable=True))

        indices = tf.data.Dataset.from_tensors(0).flat_map(order)
        return self._batches(indices).apply(tf.data.experimental.assert_cardinality(self.steps))

    def arrays(self, limit=None, labels=True):
        """The first `limit` examples as arrays (x, y)."""
        if self.x is not None:
            return self.x[:limit], self.y[:limit]
        xs, ys, count = [], [], 0
        for batch in self.dataset:
            xs.append(np.asarray(batch[0]))
            ys.append(np.asarray(batch[1]))
            count += len(xs[-1])
            if limit is not None and count >= limit:
                break
        return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def _data_source(data, model, arg, batch_size):
    """`data` as a `_Source`, with its inputs and labels checked against the
    model."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ArgumentError(arg, data, f"holds {len(data)} items; pass (x, y)")
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y):
            raise ArgumentError(arg, f"x of {len(x)}, y of {len(y)}", "x and y need the same number of examples")
        if len(x) == 0:
            raise ArgumentError(arg, "x of 0", "holds no examples")
        if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
            x = x.astype("float32")
        data = (x, y)
    elif not isinstance(data, (ImageFolder, tf.data.Dataset)):
        raise ArgumentError(arg, type(data).__name__, "pass (x, y) arrays, an ImageFolder or a tf.data.Dataset")
    if isinstance(data, ImageFolder) and len(data) == 0:
        raise ArgumentError(arg, data.path, "holds no images")
    source = _Source(data, batch_size)
    if len(model.inputs) != 1:
        return source  # several inputs: fit checks them
    expected = tuple(model.inputs[0].shape[1:])
    if source.x is not None:
        got = source.x.shape[1:]
    elif source.images is not None:
        got = source.images.image_size + (source.images.channels,)
    else:
        spec = source.dataset.element_spec[0] if isinstance(source.dataset.element_spec, tuple) else None
        if not isinstance(spec, tf.TensorSpec):
            return source  # inputs by name, or without labels: fit checks them
        got = tuple(spec.shape[1:])
    if len(got) != len(expected) or any(e is not None and g is not None and e != g for e, g in zip(expected, got)):
        raise ArgumentError(arg, getattr(data, "path", None) or f"x of shape {source.x.shape if source.x is not None else got}",
                            f"inputs of shape (batch,) + {tuple(got)}; model {model.name!r} takes (batch,) + "
                            f"{tuple(None if d is None else int(d) for d in expected)}")
    return source


class _Measure:
    """What the validation data measures: the classification error for the
    cross-entropy losses, else the loss."""

    def __init__(self, kind, loss, from_logits):
        self.kind, self.loss, self.from_logits = kind, loss, from_logits
        self.name = "error" if kind in CLASSIFICATION_LOSSES else "loss"
        self.keras_metrics = ["accuracy"] if self.name == "error" else []

    def of_outputs(self, outputs, y):
        outputs = to_numpy(outputs)
        if self.kind == "sparse_categorical_crossentropy":
            return float(np.mean(np.argmax(outputs, axis=-1) != y.reshape(-1)))
        if self.kind == "categorical_crossentropy":
            return float(np.mean(np.argmax(outputs, axis=-1) != np.argmax(y, axis=-1)))
        if self.kind == "binary_crossentropy":
            return float(np.mean((outputs.reshape(y.shape) > (0.0 if self.from_logits else 0.5)) != (y > 0.5)))
        return float(np.mean(to_numpy(self.loss(y, outputs))))

    def __call__(self, model, source, limit=None):
        """The measure of `model` on the first `limit` examples of `source`
        (all by default). A limited measure (the curve over the plan) calls
        the model directly, in batches of 256."""
        if limit is None:
            if source.x is None:
                outputs = model.predict(source.dataset, verbose=0)
                return self.of_outputs(outputs, source.y if source.y is not None else source.arrays()[1])
            return self.of_outputs(model.predict(source.x, batch_size=256, verbose=0), source.y)
        x, y = source.arrays(limit)
        outputs = [to_numpy(model(x[i : i + 256], training=False)) for i in range(0, len(x), 256)]
        return self.of_outputs(np.concatenate(outputs), y)


def _loss_and_measure(model, loss, from_logits, train, validation):
    """The loss object fit trains on and what validation measures; a
    cross-entropy loss given by name is checked against the labels."""
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ArgumentError("loss", None, f"model {model.name!r} was not compiled with a loss; name one")
    name = loss if isinstance(loss, str) else None
    if name is None:
        config_name = getattr(loss, "name", None) or getattr(loss, "__name__", "")
        name = config_name if config_name in CLASSIFICATION_LOSSES else None
        return loss, _Measure(name, loss, getattr(loss, "from_logits", False) if name else None)
    try:
        loss_class = keras.losses.get(name)
    except (ValueError, TypeError) as error:
        raise ArgumentError("loss", name, "is not a Keras loss") from error
    if name not in CLASSIFICATION_LOSSES:
        return loss_class, _Measure(name, keras.losses.get(name), None)
    outputs = int(model.outputs[0].shape[-1]) if model.outputs[0].shape[-1] is not None else None
    for arg, source in (("train_data", train), ("validation_data", validation)):
        if source is not None:
            _check_labels(name, source, outputs, arg)
    if from_logits is None:
        from_logits = not output_kinds(model)[0][0]  # the first output is neither a softmax nor a sigmoid
    classes = {"sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
               "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
               "binary_crossentropy": keras.losses.BinaryCrossentropy}
    return classes[name](from_logits=from_logits), _Measure(name, None, from_logits)


def _check_labels(name, source, outputs, arg):
    if source.y is not None:
        y = np.asarray(source.y)
    else:
        y = np.asarray(next(iter(source.dataset))[1])
    what = f"labels of shape {y.shape[1:] or '(batch,)'} and dtype {y.dtype}"
    integral = y.size and np.all(np.equal(np.mod(y, 1), 0))
    if name == "sparse_categorical_crossentropy":
        if y.ndim > 1 and y.shape[-1] > 1:
            raise ArgumentError("loss", name, f"needs class indices, but {arg} has one-hot labels "
                                f"({y.shape[-1]} columns); use categorical_crossentropy")
        if not integral or y.min() < 0 or (outputs and y.max() >= outputs):
            raise ArgumentError("loss", name, f"needs class indices in [0, {outputs}), but {arg} has labels "
                                f"from {y.min()} to {y.max()}" + ("" if integral else " (not whole numbers)"))
    elif name == "categorical_crossentropy":
        if y.ndim < 2 or (outputs and y.shape[-1] != outputs):
            raise ArgumentError("loss", name, f"needs one-hot labels of {outputs} columns, but {arg} has {what}"
                                + ("; use sparse_categorical_crossentropy" if y.ndim == 1 or y.shape[-1] == 1 else ""))
    elif name == "binary_crossentropy":
        if not np.all((y == 0) | (y == 1)):
            raise ArgumentError("loss", name, f"needs labels 0 and 1, but {arg} has labels from {y.min()} "
                                f"to {y.max()}; use sparse_categorical_crossentropy for class indices")


def _check_work_dir(work_dir, settings):
    """A work folder holds the backups of a run with these settings, or
    fails naming the first setting that differs."""
    path = os.path.join(work_dir, "settings.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as file:
        saved = json.load(file)
    expected = json.loads(json.dumps(settings, default=str))
    for key, value in expected.items():
        if saved.get(key) != value:
            raise ArgumentError("work_dir", work_dir, f"holds the backup of a run with {key}={saved.get(key)!r}, "
                                f"not {value!r}; run with the same settings to resume it, or delete the folder")


class EpochClock(keras.callbacks.Callback):
    """Holds the epoch that `fit` is in (counted from 0 over a resumed
    run, as `BackupAndRestore` resumes it), for a dataset to read."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


class _PlanCurve(keras.callbacks.Callback):
    """Measures the validation data when the plan starts, at the end of each
    stage and of each epoch, and records the step at which each stage
    starts; kept in the work folder, so that a resumed plan keeps its
    curve."""

    def __init__(self, measure, validation, work_dir, schedule, steps_per_epoch):
        super().__init__()
        self.measure, self.validation, self.schedule = measure, validation, schedule
        self.path = os.path.join(work_dir, "curve.json") if work_dir else None
        self.steps_per_epoch = steps_per_epoch
        self.points, self.stages = [], []
        self._modes = None

    def _step(self):
        return int(to_numpy(self.model.optimizer.iterations))

    def _signature(self):
        return tuple(noise.mode for noise in pruning_groups(self.model).values())

    def _record(self, step, label=None):
        if self.validation is not None:
            value = self.measure(self.model, self.validation, CURVE_EXAMPLES)
            self.points = [p for p in self.points if p[0] < step] + [[step, value]]
        if label is not None:
            self.stages = [s for s in self.stages if s[0] < step] + [[step, label]]
        if self.path:
            partial = self.path + ".partial"
            with open(partial, "w", encoding="utf-8") as file:
                json.dump({"points": self.points, "stages": self.stages}, file)
            os.replace(partial, self.path)

    def on_train_begin(self, logs=None):
        self._modes = None  # the first step records its stage
        self._loaded = False

    def _load(self):
        """The curve of the run this one resumes, up to the step that
        BackupAndRestore (whose on_train_begin runs after this one's)
        restored."""
        self._loaded = True
        step = self._step()
        if step and self.path and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as file:
                saved = json.load(file)
            self.points = [p for p in saved["points"] if p[0] <= step]
            self.stages = [s for s in saved["stages"] if s[0] <= step]

    def _label(self):
        names = [name for name, noise in pruning_groups(self.model).items() if noise.mode == "active"]
        return ", ".join(names) if names else "fine-tune"

    def on_train_batch_begin(self, batch, logs=None):
        if not self._loaded:
            self._load()
        # RecursivePruning, earlier in the list, has set this step's modes.
        modes = self._signature()
        if modes != self._modes:
            self._modes = modes
            label = self._label()
            if not (self.stages and self.stages[-1][1] == label):  # not a resumed stage
                self._record(self._step(), label)

    def on_epoch_end(self, epoch, logs=None):
        self._record(self._step())


def _target_summary(schedule, summary_report):
    if schedule.target is None:
        return None
    metric, value = schedule.target
    totals = summary_report.totals
    unpruned = {"macs": totals["macs_before"], "params": totals["params_before"]}.get(metric)
    target = value * unpruned if unpruned is not None and 0 < value < 1 else value
    reached = {"macs": totals["macs_after"], "params": totals["params_after"]}.get(metric)
    entry = {"metric": metric, "given": value, "target": target}
    if reached is not None:
        entry["reached"] = reached
        entry["reached_over_target"] = reached / target
    return entry


def _write_output(output_dir, model, pruned, small, summary_report, pruning, train, validation, quantize,
                  representative_examples, overwrite):
    """Writes the output folder in a temporary folder beside it, then moves
    it into place; returns report.json's contents."""
    from keras_rbp import summary as summary_lib

    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.partial.", dir=parent)
    try:
        folder = os.path.join(tmp, "out")
        representative = train.arrays(representative_examples)[0]
        check = validation.arrays(CHECK_EXAMPLES)[0] if validation is not None else representative
        summary = export(small, folder, representative_data=representative, check_data=check, original=model,
                         quantize=quantize)
        summary["pruning"] = pruning
        pruned.save(os.path.join(folder, "pruned.keras"))
        small.save(os.path.join(folder, "small.keras"))
        with open(os.path.join(folder, "report.json"), "w", encoding="utf-8") as file:
            json.dump(summary, file, indent=2, default=str)
        with open(os.path.join(folder, "report.txt"), "w", encoding="utf-8") as file:
            file.write(summary_lib.text_report(summary, str(summary_report)) + "\n")
        summary_lib.plot(summary, os.path.join(folder, "pruning.png"))
        if os.path.lexists(output_dir):
            if not overwrite:
                raise FileExistsError(f"prune_and_export: output_dir {output_dir!r} appeared while it ran")
            old = os.path.join(tmp, "old")
            os.rename(output_dir, old)
        os.rename(folder, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary
