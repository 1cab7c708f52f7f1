"""The `Recipe` of the examples and benchmarks: train a baseline on MNIST or
CIFAR-10, prune it with `prune_and_export`, and report what changed."""

import dataclasses
import os
import time

import numpy as np

from keras_rbp import datasets, models
from keras_rbp._keras import keras
from keras_rbp.exporting import export
from keras_rbp.latency import model_latency
from keras_rbp.metrics import report
from keras_rbp.pipeline import kept_masks, schedule_from_settings, with_distillation
from keras_rbp.pruning import prune, pruning_groups
from keras_rbp.surgery import kept_channels, shrink


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
    trained = with_distillation(pruned, baseline, recipe.distillation_weight, recipe.distillation_temperature)
    _compile(trained, recipe.learning_rate)
    schedule = schedule_from_settings(dataclasses.asdict(recipe), verbose, max_noise_scale=recipe.max_noise_scale)
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
        "kept": {name: int(mask.sum()) for name, mask in kept_masks(pruned).items()},
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
def _latency_figures(recipe, schedule, pruned, small):
    """The latency target, the budget's prediction for the kept channels,
    the shrunk model's measured latency, and the table behind them."""
    return {
        "target": recipe.target_latency_ms,
        "predicted": schedule.budget.cost(kept_masks(pruned)),
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
