"""Training-speed overhead of the RBP wrapper: plain versus pruned models.

Times training steps of LeNet-5-Caffe and LeNet-300-100, plain and wrapped by
`keras_rbp.prune`, in the same process. The pruned model is timed with each
of its groups in turn set as in a stage of `RecursivePruning`: that group
active and trainable, the others off and not trainable. For LeNet-300-100 it
also times the floor of pruning input pixels: the plain model with a
trainable, noise-free scale per pixel, which alone adds the gradient with
respect to the input (a matrix product as large as the first layer's).

Every variant is its own compiled model, warmed up (traced) before timing.
The timing runs --rounds rounds; a round calls each variant's train function
for --chunk steps, in an order reversed every other round, and records the
wall time of every step. Interleaving in short chunks makes the variants
share the machine's slow and fast phases (on a shared or virtual machine
whole seconds run at half speed). The figure per variant is the median step
time, and the ratio pruned / plain per group (target <= 1.10).

Run from the repository root, under Keras 3 and under tf_keras:

    python -m benchmarks.overhead --data_dir ../shared/data
    TF_USE_LEGACY_KERAS=1 python -m benchmarks.overhead --data_dir ../shared/data

Writes overhead_<keras mode>.json and .md to --output_dir.
"""

import os
import statistics
import time

from absl import app, flags, logging
import numpy as np
import tensorflow as tf

import keras_rbp as rbp
from benchmarks import results_io
from keras_rbp import datasets, models
from keras_rbp import noise as noise_lib
from keras_rbp._keras import keras

MODELS = {
    # name: (builder, prune options of the literature's set-up, whether to
    # time the floor of pruning the input pixels)
    "lenet5_caffe": (models.lenet5_caffe, {"flatten_features": True}, False),
    "lenet_300_100": (models.lenet_300_100, {"flatten_features": True}, True),
}
INPUT_GATE = "input gate (floor)"

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(MODELS), f"Models to time, of {list(MODELS)}.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_integer("rounds", 40, "Timed rounds; each runs every variant once.")
flags.DEFINE_integer("chunk", 5, "Training steps of a variant in a round.")
results_io.define_data_dir()
flags.DEFINE_bool(
    "random_data", False, "Train on random MNIST-shaped data instead of MNIST."
)
results_io.define_output_dir()

MEASURED = (
    "wall time of each call of the model's train function (one step), in "
    "rounds that run every variant for a chunk of steps, after a warm-up fit "
    "of each; median over all steps"
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


def _compiled(model, dataset):
    """Compiles `model` and traces its train function with a short fit."""
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0)
    return model


class _InputGate(keras.layers.Layer):
    """A trainable scale per input feature, without noise or KL."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


def _with_input_gate(model):
    """`model`, a chain of a Flatten and Dense layers, with an `_InputGate`
    after its Flatten."""
    flatten, *dense = [
        layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    inputs = keras.Input(model.input_shape[1:])
    x = _InputGate(name="input_gate")(flatten(inputs))
    for layer in dense:
        x = layer(x)
    return keras.Model(inputs, x)


def _pruned_for_stage(builder, options, dataset_size, active):
    """A pruned model with group `active` set as in its stage of
    RecursivePruning (active, trainable) and the others off, not trainable."""
    keras.utils.set_random_seed(0)
    pruned = rbp.prune(builder(), dataset_size=dataset_size, **options)
    for group, noise in rbp.pruning_groups(pruned).items():
        noise.mode = "active" if group == active else "off"
        noise.trainable = group == active
    return pruned


def _time_variants(variants, dataset):
    """Interleaved per-step times of each variant's train function: a dict
    from variant to a list of seconds."""
    functions = {name: model.make_train_function() for name, model in variants.items()}
    iterators = {name: iter(dataset) for name in variants}
    times = {name: [] for name in variants}
    order = list(variants)
    for round_index in range(FLAGS.rounds):
        for name in order if round_index % 2 == 0 else reversed(order):
            function, iterator = functions[name], iterators[name]
            for _ in range(FLAGS.chunk):
                start = time.perf_counter()
                function(iterator)
                times[name].append(time.perf_counter() - start)
    return times


def _draw_seconds(channels, calls=20, repetitions=15):
    """Median seconds of one draw of batch x channels normals as RBPNoise
    makes them (`noise.standard_normal`), each summed to keep it: the part of
    an active group's cost that no other change to the layer can remove."""

    @tf.function
    def draws(seed):
        return tf.add_n(
            [
                tf.reduce_sum(noise_lib.standard_normal([FLAGS.batch_size, channels], seed + i))
                for i in range(calls)
            ]
        )

    seed = tf.constant([0, 0], tf.int64)
    draws(seed).numpy()
    times = []
    for repetition in range(repetitions):
        start = time.perf_counter()
        draws(seed + repetition).numpy()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def _time_model(name, dataset, dataset_size):
    """Times plain `name`, pruned `name` with each group active, and the
    input-gate floor where asked; returns a dict of plain data."""
    builder, options, input_gate = MODELS[name]
    keras.utils.set_random_seed(0)
    variants = {"plain": _compiled(builder(), dataset)}
    if input_gate:
        keras.utils.set_random_seed(0)
        variants[INPUT_GATE] = _compiled(_with_input_gate(builder()), dataset)
    keras.utils.set_random_seed(0)
    noises = rbp.pruning_groups(rbp.prune(builder(), dataset_size=dataset_size, **options))
    groups = list(noises)
    for group in groups:
        variants[group] = _compiled(_pruned_for_stage(builder, options, dataset_size, group), dataset)
    times = _time_variants(variants, dataset)

    medians = {variant: statistics.median(t) for variant, t in times.items()}
    ratios = {
        variant: medians[variant] / medians["plain"] for variant in variants if variant != "plain"
    }
    group_ratios = [ratios[group] for group in groups]
    draws = {group: _draw_seconds(noise.channels) for group, noise in noises.items()}
    result = {
        "groups": groups,
        "median_seconds_per_step": medians,
        "steps_per_second": {variant: 1.0 / t for variant, t in medians.items()},
        "ratio_to_plain": ratios,
        "mean_ratio": statistics.mean(group_ratios),
        "worst_ratio": max(group_ratios),
        "steps_timed_per_variant": FLAGS.rounds * FLAGS.chunk,
        "normal_draw_seconds": draws,
        "normal_draw_to_plain_step": {g: t / medians["plain"] for g, t in draws.items()},
    }
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
    provenance = results_io.provenance()
    keras_mode = provenance["keras"]
    load_before = provenance["machine"]["load_average_at_start"]
    results = {name: _time_model(name, dataset, len(x)) for name in FLAGS.models}
    result = {
        "benchmark": "overhead",
        **provenance,
        "measured": MEASURED,
        "data": source,
        "batch_size": FLAGS.batch_size,
        "rounds": FLAGS.rounds,
        "chunk": FLAGS.chunk,
        "load_average_after": list(os.getloadavg()),
        "target_ratio": 1.10,
        "models": results,
    }
    rows = [
        [
            name,
            variant,
            f"{r['steps_per_second']['plain']:.1f}",
            f"{r['steps_per_second'][variant]:.1f}",
            f"{ratio:.3f}",
            f"{r['normal_draw_to_plain_step'][variant]:.3f}"
            if variant in r["normal_draw_to_plain_step"]
            else "",
        ]
        for name, r in results.items()
        for variant, ratio in r["ratio_to_plain"].items()
    ]
    markdown = (
        f"{results_io.title(f'RBP wrapper overhead, TensorFlow {tf.__version__}', provenance)}\n\n"
        f"Training steps per second at batch {FLAGS.batch_size} on {source} data, "
        f"{FLAGS.rounds} rounds x {FLAGS.chunk} steps a variant, "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} at start. "
        f"Measured: {MEASURED}. Target ratio <= 1.10. Each pruned variant has "
        "one group active and trainable and the others off and not trainable, as in "
        f"a stage of RecursivePruning; \"{INPUT_GATE}\" is the plain model with a "
        "trainable scale per input pixel, the least that pruning input pixels adds. "
        "The last column is the time of the group's batch x channels normal draws "
        "alone, timed apart, over the plain step.\n\n"
        + results_io.markdown_table(
            [
                "model",
                "variant",
                "plain steps/s",
                "variant steps/s",
                "variant/plain time",
                "normal draws / plain step",
            ],
            rows,
        )
    )
    for path in results_io.write_results(FLAGS.output_dir, f"overhead_{keras_mode}", result, markdown):
        print(path)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
