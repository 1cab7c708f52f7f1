"""`prune_and_export`: the whole keras_rbp path for a user's own trained
model and data, in one call (which the `keras-rbp prune` command runs):
prune it, train a `RecursivePruning` plan (resumable from a work folder),
`shrink`, `export`, and write a report of what changed.
"""

import dataclasses
import json
import os
import shutil
import tempfile

from keras_rbp.data_sources import EpochClock, data_source
from keras_rbp.distillation import distilled
from keras_rbp.errors import ArgumentError
from keras_rbp._keras import keras, to_numpy
from keras_rbp.exporting import export
from keras_rbp.measures import loss_and_measure
from keras_rbp.metrics import report
from keras_rbp.schedule import RecursivePruning
from keras_rbp.surgery import shrink
from keras_rbp.pruning import prune, pruning_groups

CURVE_EXAMPLES = 2000  # the validation examples the metric over the plan is measured on
CHECK_EXAMPLES = 512  # the validation examples the exported files are checked on
OUTPUT_FILES = ("pruned.keras", "small.keras", "report.txt", "pruning.png")


SCHEDULE_SETTINGS = ("epochs_per_stage", "finetune_epochs", "finetune_learning_rate", "target_macs",
                      "target_params", "target_latency_ms", "round_to", "widths", "plan_epochs")


def schedule_from_settings(settings, verbose, **more):
    """The RecursivePruning that `settings` (a dict holding the keys of
    `SCHEDULE_SETTINGS` and groups_per_stage, 0 or None for all groups in
    one stage) describes, with `more` arguments."""
    return RecursivePruning(
        groups_per_stage=settings["groups_per_stage"] or None, verbose=verbose,
        **{key: settings[key] for key in SCHEDULE_SETTINGS}, **more,
    )


def kept_masks(pruned):
    """The masks of the groups of `pruned`, as booleans."""
    return {name: noise.mask.numpy() > 0 for name, noise in pruning_groups(pruned).items()}


def with_distillation(pruned, teacher, weight, temperature):
    """The model to fit: `pruned`, or with a weight, `pruned` distilled from `teacher`."""
    return distilled(pruned, teacher, temperature, weight) if weight else pruned


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
    train = data_source(train_data, model, "train_data", batch_size)
    validation = data_source(validation_data, model, "validation_data", batch_size) if validation_data is not None else None
    loss, measure = loss_and_measure(model, loss, from_logits, train, validation)
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
    trained = with_distillation(pruned, model, distillation_weight, distillation_temperature)
    trained.compile(keras.optimizers.Adam(learning_rate), loss, metrics=measure.keras_metrics)
    schedule = _checkedschedule_from_settings(pruned, train, settings, verbose)
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
            "kept": {name: int(mask.sum()) for name, mask in kept_masks(pruned).items()},
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


def _checkedschedule_from_settings(pruned, train, settings, verbose):
    """The RecursivePruning of `settings`, its plan checked against the
    training data before any training; a bad setting is an ArgumentError."""
    try:
        schedule = schedule_from_settings(settings, verbose)
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
