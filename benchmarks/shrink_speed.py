"""Seconds `keras_rbp.shrink` takes on ResNet50, VGG16, MobileNetV3Large
and EfficientNetB0.

Builds each model (weights=None, 224x224x3, 1000 classes), wraps it with
`keras_rbp.prune`, freezes every group with a random mask that removes half
of its channels, and times `shrink` --repetitions times; the figure is the
median. Target: under 10 s each. Also checks the shrunk model's outputs
against the pruned model's on one random image.

Run from the repository root, under Keras 3 or tf_keras:

    python -m benchmarks.shrink_speed
    TF_USE_LEGACY_KERAS=1 python -m benchmarks.shrink_speed

Writes shrink_speed_<keras mode>.json and .md to --output_dir.
"""

import statistics
import time
import warnings

from absl import app, flags
import numpy as np

import keras_rbp as rbp
from benchmarks import results_io
from keras_rbp._keras import IS_KERAS_3, keras

MODELS = {
    "resnet50": keras.applications.ResNet50,
    "vgg16": keras.applications.VGG16,
    "mobilenet_v3_large": keras.applications.MobileNetV3Large,
    "efficientnet_b0": keras.applications.EfficientNetB0,
}

FLAGS = flags.FLAGS
results_io.define_models(MODELS, text="Models to time")
flags.DEFINE_integer("repetitions", 3, "Timed shrink() calls per model.")
flags.DEFINE_float("keep", 0.5, "Fraction of each group's channels kept.")
results_io.define_output_dir()


def time_model(name):
    model = MODELS[name](weights=None, input_shape=(224, 224, 3))
    pruned = rbp.prune(model, dataset_size=1000)
    rng = np.random.RandomState(0)
    groups = rbp.pruning_groups(pruned)
    rbp.freeze(pruned, {group: rng.rand(noise.channels) < FLAGS.keep for group, noise in groups.items()})
    seconds = []
    for _ in range(FLAGS.repetitions):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small = rbp.shrink(pruned)
        seconds.append(time.perf_counter() - start)
    image = rng.rand(1, 224, 224, 3).astype("float32")
    expected = np.asarray(pruned(image, training=False))
    difference = float(np.abs(expected - np.asarray(small(image))).max())
    return {
        "model": name,
        "median_seconds": statistics.median(seconds),
        "seconds": seconds,
        "params_before": int(model.count_params()),
        "params_after": int(small.count_params()),
        "max_abs_output_difference": difference,
    }


def main(argv):
    del argv
    mode = "keras3" if IS_KERAS_3 else "tf_keras"
    rows = [time_model(name) for name in FLAGS.models]
    result = {
        "benchmark": "shrink_speed",
        **results_io.provenance(),
        "keep": FLAGS.keep,
        "repetitions": FLAGS.repetitions,
        "measured": "wall time of keras_rbp.shrink(pruned), median over repetitions",
        "results": rows,
    }
    markdown = f"# shrink speed ({mode}, keep {FLAGS.keep}, median of {FLAGS.repetitions})\n\n"
    markdown += results_io.markdown_table(
        ["model", "median s", "params before", "params after", "max |diff|"],
        [
            [r["model"], f"{r['median_seconds']:.2f}", f"{r['params_before']:,}",
             f"{r['params_after']:,}", f"{r['max_abs_output_difference']:.2e}"]
            for r in rows
        ],
    )
    for path in results_io.write_results(FLAGS.output_dir, f"shrink_speed_{mode}", result, markdown):
        print(path)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
