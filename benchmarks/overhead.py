"""Training-speed overhead of the RBP wrapper: plain versus pruned models.

Times training steps of LeNet-5-Caffe and LeNet-300-100, plain and wrapped by
`keras_rbp.prune`, in the same process. The pruned model is timed once with
each of its groups active in turn (the others off), as the stages of
`RecursivePruning` have them; the modes are switched through their variables,
without retracing. Each repetition runs `model.fit(dataset, epochs=1,
steps_per_epoch=--steps)` for every variant, in an order reversed every other
repetition, after one untimed warm-up fit of each model that traces and
compiles its train function, and a callback records the wall time of every
step. The figure per variant is the median step time over all repetitions,
which a stray slow step (on a shared or virtual machine, a whole slow fit)
does not move, and the ratio pruned / plain for each active group
(target <= 1.10).

Run from the repository root, under Keras 3 and under tf_keras:

    python -m benchmarks.overhead --data_dir ../shared/data
    TF_USE_LEGACY_KERAS=1 python -m benchmarks.overhead --data_dir ../shared/data

Writes overhead_<keras mode>.json and .md to --output_dir.
"""

import os
import platform
import statistics
import time

from absl import app, flags, logging
import numpy as np
import tensorflow as tf

import keras_rbp as rbp
from benchmarks import results_io
from keras_rbp import datasets, models
from keras_rbp._keras import IS_KERAS_3, keras

MODELS = {
    # name: (builder, prune options of the literature's set-up)
    "lenet5_caffe": (models.lenet5_caffe, {"flatten_features": True}),
    "lenet_300_100": (models.lenet_300_100, {"flatten_features": True}),
}

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(MODELS), f"Models to time, of {list(MODELS)}.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_integer("steps", 200, "Training steps per timed repetition.")
flags.DEFINE_integer("repetitions", 7, "Timed repetitions of each variant.")
flags.DEFINE_string(
    "data_dir", None, f"Folder holding mnist.npz; default ${datasets.DATA_DIR_ENV}."
)
flags.DEFINE_bool(
    "random_data", False, "Train on random MNIST-shaped data instead of MNIST."
)
flags.DEFINE_string(
    "output_dir",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
    "Where the JSON and markdown results are written.",
)

MEASURED = (
    "wall time of each training step (on_train_batch_begin to "
    "on_train_batch_end) in repetitions of model.fit(dataset, epochs=1, "
    "steps_per_epoch=steps), after an untimed warm-up fit of each model; "
    "the variants' fits interleave; median over all steps"
)


def _training_data():
    """MNIST's training images and labels, or random ones; and the source's name."""
    if not FLAGS.random_data:
        try:
            (x, y), _ = datasets.load_mnist(FLAGS.data_dir)
            return x, y, "mnist"
        except datasets.DatasetNotFoundError as error:
            logging.warning("%s; timing on random data", error)
    rng = np.random.default_rng(0)
    x = rng.random((60000, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 60000).astype("int64")
    return x, y, "random"


def _compiled(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


class _StepTimer(keras.callbacks.Callback):
    """Records the wall time of every training step of a fit."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _step_seconds(model, dataset):
    """Times one fit of --steps steps; returns the seconds of each step."""
    timer = _StepTimer()
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=FLAGS.steps,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    return timer.seconds


def _time_model(name, dataset, dataset_size):
    """Times plain `name` and pruned `name` with each group active; returns
    a dict of plain data."""
    builder, options = MODELS[name]
    keras.utils.set_random_seed(0)
    plain = builder()
    pruned = _compiled(rbp.prune(plain, dataset_size=dataset_size, **options))
    plain = _compiled(plain)
    groups = rbp.pruning_groups(pruned)

    def time_variant(variant):
        """Times the plain model, or the pruned one with group `variant` active."""
        if variant == "plain":
            return _step_seconds(plain, dataset)
        for group, noise in groups.items():
            noise.mode = "active" if group == variant else "off"
        return _step_seconds(pruned, dataset)

    for model in (plain, pruned):  # warm-up: traces and compiles
        model.fit(dataset, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)
    variants = ["plain", *groups]
    times = {variant: [] for variant in variants}
    for repetition in range(FLAGS.repetitions):
        for variant in variants if repetition % 2 == 0 else reversed(variants):
            times[variant].extend(time_variant(variant))

    medians = {variant: statistics.median(t) for variant, t in times.items()}
    fit_medians = {
        variant: statistics.median(
            statistics.mean(t[i : i + FLAGS.steps]) for i in range(0, len(t), FLAGS.steps)
        )
        for variant, t in times.items()
    }
    ratios = {group: medians[group] / medians["plain"] for group in groups}
    result = {
        "groups": list(groups),
        "median_seconds_per_step": medians,
        "median_of_fit_mean_seconds_per_step": fit_medians,
        "steps_per_second": {variant: 1.0 / t for variant, t in medians.items()},
        "ratio_pruned_to_plain": ratios,
        "mean_ratio": statistics.mean(ratios.values()),
        "worst_ratio": max(ratios.values()),
    }
    if IS_KERAS_3:
        result["jit_compile"] = {"plain": bool(plain.jit_compile), "pruned": bool(pruned.jit_compile)}
    logging.info("%s: %s", name, result)
    return result


def main(argv):
    del argv  # Unused.
    unknown = set(FLAGS.models) - set(MODELS)
    if unknown:
        raise app.UsageError(f"--models: unknown {sorted(unknown)}; known: {list(MODELS)}")
    x, y, source = _training_data()
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .repeat()
        .batch(FLAGS.batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    keras_mode = "keras3" if IS_KERAS_3 else "tf_keras"
    load_before = os.getloadavg()
    results = {name: _time_model(name, dataset, len(x)) for name in FLAGS.models}
    result = {
        "benchmark": "overhead",
        "measured": MEASURED,
        "keras_mode": keras_mode,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "data": source,
        "batch_size": FLAGS.batch_size,
        "steps": FLAGS.steps,
        "repetitions": FLAGS.repetitions,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "target_ratio": 1.10,
        "models": results,
    }
    rows = [
        [
            name,
            group,
            f"{r['steps_per_second']['plain']:.1f}",
            f"{r['steps_per_second'][group]:.1f}",
            f"{ratio:.3f}",
        ]
        for name, r in results.items()
        for group, ratio in r["ratio_pruned_to_plain"].items()
    ]
    markdown = (
        f"# RBP wrapper overhead ({keras_mode}, Keras {keras.__version__}, "
        f"TensorFlow {tf.__version__})\n\n"
        f"Training steps per second at batch {FLAGS.batch_size} on {source} data, "
        f"{FLAGS.steps} steps x {FLAGS.repetitions} repetitions, "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} at start. "
        f"Measured: {MEASURED}. Target ratio <= 1.10. The pruned model has "
        f"one group active and the others off, as in a stage of RecursivePruning.\n\n"
        + results_io.markdown_table(
            ["model", "active group", "plain steps/s", "pruned steps/s", "pruned/plain time"],
            rows,
        )
    )
    for path in results_io.write_results(FLAGS.output_dir, f"overhead_{keras_mode}", result, markdown):
        print(path)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
