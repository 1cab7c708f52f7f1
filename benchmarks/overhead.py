"""Training-speed overhead of the RBP wrapper: plain versus pruned models,
on the Keras backend in use.

Times training steps of LeNet-5-Caffe and LeNet-300-100 (MNIST), and of
MobileNetV2 and EfficientNetB0 (weights=None, --image_size images of 3
channels, random data), plain and wrapped by `keras_rbp.prune`, in the same
process. A LeNet's pruned model is timed with each of its groups in turn set
as in a stage of `RecursivePruning`: that group active, the others off and
drawing no noise. A
deep net's (coupled groups, the Activation layers they bring) is timed with
its first group, its middle group and its last group active that way, and
with every group active, as all at once. Each model is also timed with its
first group active and `keras_rbp.distilled` from a plain copy (the
teacher's forward pass and the distillation loss added to a step). For
LeNet-300-100 it also times the floor of pruning input pixels: the plain
model with a trainable, noise-free scale per pixel, which alone adds the
gradient with respect to the input (a matrix product as large as the first
layer's).

Every variant is its own compiled model, warmed up (traced) before timing.
The timing runs --rounds rounds; a round fits each variant for --chunk steps
and for one step, in an order reversed every other round, and takes their
difference over chunk - 1 as the variant's step time, which leaves out what
a call of fit costs on any backend. Interleaving makes the variants share
the machine's slow and fast phases (on a shared or virtual machine whole
seconds run at half speed). The figure per variant is the median step time,
and the ratio pruned / plain (target <= 1.15).

Run from the repository root, on each Keras 3 backend and under tf_keras:

    python -m benchmarks.overhead --data_dir ../shared/data --models lenet5_caffe,mobilenet_v2
    KERAS_BACKEND=jax python -m benchmarks.overhead --data_dir ../shared/data --models lenet5_caffe,mobilenet_v2
    KERAS_BACKEND=torch python -m benchmarks.overhead --data_dir ../shared/data --models lenet5_caffe,mobilenet_v2
    TF_USE_LEGACY_KERAS=1 python -m benchmarks.overhead --data_dir ../shared/data

Writes overhead_<keras mode and backend>.json and .md to --output_dir (with
the --models named in the file name when they are not all of them).
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
from keras_rbp import _keras
from keras_rbp._keras import keras

def _application(name):
    def build():
        return getattr(keras.applications, name)(
            input_shape=(FLAGS.image_size, FLAGS.image_size, 3), weights=None, classes=10)
    return build


MODELS = {
    # name: (builder, prune options of the literature's set-up, whether to
    # time the floor of pruning the input pixels, whether its data is MNIST)
    "lenet5_caffe": (models.lenet5_caffe, {"flatten_features": True}, False, True),
    "lenet_300_100": (models.lenet_300_100, {"flatten_features": True}, True, True),
    "mobilenet_v2": (_application("MobileNetV2"), {}, False, False),
    "efficientnet_b0": (_application("EfficientNetB0"), {}, False, False),
}
ALL_AT_ONCE = "every group (all at once)"
DISTILLED = "distillation"
TARGET_RATIO = 1.15
INPUT_GATE = "input gate (floor)"

FLAGS = flags.FLAGS
results_io.define_models(MODELS, text="Models to time")
flags.DEFINE_integer("batch_size", 128, "Training batch size of the LeNets.")
flags.DEFINE_integer("deep_batch_size", 32, "Training batch size of MobileNetV2 and EfficientNetB0.")
flags.DEFINE_integer("image_size", 64, "Input height and width of MobileNetV2 and EfficientNetB0.")
flags.DEFINE_integer("rounds", 20, "Timed rounds; each runs every variant once.")
flags.DEFINE_integer("chunk", 20, "Training steps of the longer fit of a variant in a round.")
results_io.define_data_dir()
flags.DEFINE_bool(
    "random_data", False, "Train on random MNIST-shaped data instead of MNIST."
)
results_io.define_output_dir()

MEASURED = (
    "a step's time as (fit of --chunk steps - fit of one step) / (chunk - 1), "
    "which leaves out what fit costs a call, in rounds that time every "
    "variant, after a warm-up fit of each; median over the rounds"
)


def _training_data(mnist):
    """Training images and labels: MNIST's (or random MNIST-shaped ones when
    it is missing), or random --image_size colour images; and the source."""
    rng = np.random.default_rng(0)
    if mnist:
        if not FLAGS.random_data:
            try:
                (x, y), _ = datasets.load_mnist(FLAGS.data_dir)
                return x, y, "mnist"
            except datasets.DatasetNotFoundError as error:
                logging.warning("%s; timing on random data", error)
        return rng.random((60000, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 60000), "random"
    x = rng.random((2048, FLAGS.image_size, FLAGS.image_size, 3), dtype=np.float32)
    return x, rng.integers(0, 10, len(x)), "random"


def _dataset(x, y, batch_size):
    return (
        tf.data.Dataset.from_tensor_slices((x, y.astype("int64")))
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


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
    """A pruned model with the groups of `active` set as in a stage of
    RecursivePruning (active) and the others off, drawing no noise."""
    keras.utils.set_random_seed(0)
    pruned = rbp.prune(builder(), dataset_size=dataset_size, **options)
    for group, noise in rbp.pruning_groups(pruned).items():
        noise.mode = "active" if group in active else "off"
        noise.sampling = group in active
    return pruned


def _stages(groups, every_group):
    """The variants timed: each group alone, or for a deep net its first,
    middle and last group and all of them at once."""
    if every_group:
        return {group: [group] for group in groups}
    chosen = dict.fromkeys([groups[0], groups[len(groups) // 2], groups[-1]])
    return {**{group: [group] for group in chosen}, ALL_AT_ONCE: list(groups)}


def _fit_seconds(model, dataset, steps):
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return time.perf_counter() - start


def _time_variants(variants, dataset):
    """Interleaved per-step times of each variant, a dict from variant to a
    list of seconds, one a round: the difference of a fit of --chunk steps
    and a fit of one step, over chunk - 1 (on every backend alike)."""
    times = {name: [] for name in variants}
    order = list(variants)
    for round_index in range(FLAGS.rounds):
        for name in order if round_index % 2 == 0 else reversed(order):
            long = _fit_seconds(variants[name], dataset, FLAGS.chunk)
            short = _fit_seconds(variants[name], dataset, 1)
            times[name].append((long - short) / (FLAGS.chunk - 1))
    return times


def _draw_seconds(channels, batch_size, calls=20, repetitions=15):
    """Median seconds of one draw of batch x channels normals as RBPNoise
    makes them (`noise.standard_normal`), each summed to keep it: the part of
    an active group's cost that no other change to the layer can remove."""

    # A layer's own seed: a SeedGenerator under Keras 3, a step counter's
    # seed tensor under tf_keras.
    seed = keras.random.SeedGenerator(0) if _keras.IS_KERAS_3 else tf.Variable([0, 0], dtype=tf.int64)

    def one_draw():
        if _keras.IS_KERAS_3:
            return tf.reduce_sum(noise_lib.standard_normal([batch_size, channels], seed))
        seed.assign_add([0, 1])
        return tf.reduce_sum(noise_lib.standard_normal([batch_size, channels], seed.read_value()))

    @tf.function
    def draws():
        return tf.add_n([one_draw() for _ in range(calls)])

    draws().numpy()
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        draws().numpy()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def _time_model(name):
    """Times plain `name`, pruned `name` with each stage of `_stages`
    active, and the input-gate floor where asked; returns a dict of plain
    data."""
    builder, options, input_gate, mnist = MODELS[name]
    x, y, source = _training_data(mnist)
    batch_size = FLAGS.batch_size if mnist else FLAGS.deep_batch_size
    dataset = _dataset(x, y, batch_size)
    keras.utils.set_random_seed(0)
    variants = {"plain": _compiled(builder(), dataset)}
    if input_gate:
        keras.utils.set_random_seed(0)
        variants[INPUT_GATE] = _compiled(_with_input_gate(builder()), dataset)
    keras.utils.set_random_seed(0)
    noises = rbp.pruning_groups(rbp.prune(builder(), dataset_size=len(x), **options))
    stages = _stages(list(noises), every_group=mnist)
    for variant, active in stages.items():
        variants[variant] = _compiled(_pruned_for_stage(builder, options, len(x), set(active)), dataset)
    first = next(iter(noises))
    keras.utils.set_random_seed(0)
    teacher = builder()
    student = _pruned_for_stage(builder, options, len(x), {first})
    variants[f"{first} + {DISTILLED}"] = _compiled(rbp.distilled(student, teacher), dataset)
    times = _time_variants(variants, dataset)

    medians = {variant: statistics.median(t) for variant, t in times.items()}
    ratios = {
        variant: medians[variant] / medians["plain"] for variant in variants if variant != "plain"
    }
    stage_ratios = [ratios[variant] for variant in stages]
    draws = {group: _draw_seconds(noises[group].channels, batch_size) for group in stages
             if group in noises and _keras.ON_TENSORFLOW}  # timed with tf.function
    result = {
        "data": source,
        "batch_size": batch_size,
        "input_shape": list(x.shape[1:]),
        "groups": list(noises),
        "stages_timed": stages,
        "median_seconds_per_step": medians,
        "steps_per_second": {variant: 1.0 / t for variant, t in medians.items()},
        "ratio_to_plain": ratios,
        "mean_ratio": statistics.mean(stage_ratios),
        "worst_ratio": max(stage_ratios),
        "steps_timed_per_variant": FLAGS.rounds * (FLAGS.chunk + 1),
        "normal_draw_seconds": draws,
        "normal_draw_to_plain_step": {g: t / medians["plain"] for g, t in draws.items()},
    }
    logging.info("%s: %s", name, result)
    return result


def main(argv):
    del argv  # Unused.
    provenance = results_io.provenance()
    load_before = provenance["machine"]["load_average_at_start"]
    results = {name: _time_model(name) for name in FLAGS.models}
    result = {
        "benchmark": "overhead",
        **provenance,
        "measured": MEASURED,
        "rounds": FLAGS.rounds,
        "chunk": FLAGS.chunk,
        "load_average_after": list(os.getloadavg()),
        "target_ratio": TARGET_RATIO,
        "models": results,
    }
    rows = [
        [
            name,
            f"{r['data']}, {'x'.join(map(str, r['input_shape']))}, batch {r['batch_size']}",
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
        f"{results_io.title(f'RBP wrapper overhead, backend {_keras.BACKEND}', provenance)}\n\n"
        f"Training steps per second, {FLAGS.rounds} rounds of a fit of {FLAGS.chunk} steps and one of 1 a variant, "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} at start. "
        f"Measured: {MEASURED}. Target ratio <= {TARGET_RATIO}. A pruned variant named after a group has "
        "that group active and the others off, as in "
        f"a stage of RecursivePruning; \"{ALL_AT_ONCE}\" has every group active; "
        f"\"+ {DISTILLED}\" adds distillation from a plain copy (`keras_rbp.distilled`); "
        f"\"{INPUT_GATE}\" is the plain model with a "
        "trainable scale per input pixel, the least that pruning input pixels adds. "
        "The last column is the time of the group's batch x channels normal draws "
        "alone, timed apart, over the plain step.\n\n"
        + results_io.markdown_table(
            [
                "model",
                "data",
                "variant",
                "plain steps/s",
                "variant steps/s",
                "variant/plain time",
                "normal draws / plain step",
            ],
            rows,
        )
    )
    mode = provenance["keras"] if provenance["keras"] == "tf_keras" else f"keras3_{_keras.BACKEND}"
    name = f"overhead_{mode}" + ("" if FLAGS.models == list(MODELS) else "_" + "_".join(FLAGS.models))
    for path in results_io.write_results(FLAGS.output_dir, name, result, markdown):
        print(path)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
