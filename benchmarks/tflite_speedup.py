"""Measured LiteRT speed-up of shrunk models beside their MAC reduction.

For LeNet-5-Caffe, a CIFAR-10 VGG-16 and MobileNetV3Small (224x224,
`weights=None`), removes channels with `freeze` and a fixed pattern (the
kept counts or the kept fraction of every group in PATTERNS, spread evenly
over each group), shrinks the model with `shrink`, converts the unpruned and the
shrunk model to float32 TFLite files, and times both with
`benchmark_tflite` (batch 1, warm-up, then the median of --runs calls),
alternating the two models over --repetitions. The figure per model is the
median over repetitions of the single-thread latency ratio unpruned /
shrunk, beside the MAC ratio (its physical limit); the target is a measured
speed-up of at least 70 % of the MAC ratio. Latencies depend on the machine
and on its load: quote the medians with the machine they ran on.

Also times round_to: VGG-16 and MobileNetV2 (224x224) pruned to one MAC
target with free kept counts and with counts rounded to multiples of 4 and
8 (--round_to), to tell whether LiteRT runs multiples faster.

Run from the repository root:

    python -m benchmarks.tflite_speedup

Writes tflite_speedup_<keras mode>.json and .md to --output_dir.
"""

import os
import platform
import statistics
import tempfile
import warnings

from absl import app, flags, logging
import numpy as np
import tensorflow as tf

import keras_rbp as rbp
from benchmarks import results_io
from keras_rbp import models
from keras_rbp._keras import keras
from keras_rbp.budget import Budget
from keras_rbp.exporting import convert, save_model

MODELS = {
    "lenet5_caffe": models.lenet5_caffe,
    "vgg16_cifar10": models.vgg16_cifar10,
    "mobilenet_v3_small": lambda: keras.applications.MobileNetV3Small(input_shape=(224, 224, 3), weights=None),
    "mobilenet_v2": lambda: keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None),
}
# Kept channels per pruning group: LeNet-5-Caffe as 20-50-800-500 ->
# 5-9-144-21 (the design's example); VGG-16 with half the channels of
# blocks 1-3 and a quarter of those of blocks 4-5 and of the dense layer;
# MobileNetV3Small with half of every group (its coupled groups included).
PATTERNS = {
    "lenet5_caffe": {"conv1": 5, "conv2": 9, "fc1": 21},
    "vgg16_cifar10": {
        **{f"bn{i}": c // 2 for i, c in enumerate((64, 64, 128, 128, 256, 256, 256), start=1)},
        **{f"bn{i}": 128 for i in range(8, 14)},
        "fc1": 128,
    },
    "mobilenet_v3_small": 0.5,
}
# round_to: each model pruned to ROUNDING_TARGET of its MACs, channels in a
# random order, kept counts free or rounded to multiples of --round_to.
ROUNDING_MODELS = ("vgg16_cifar10", "mobilenet_v2")
ROUNDING_TARGET = 0.3
TARGET = 0.7

FLAGS = flags.FLAGS
results_io.define_models([name for name in MODELS if name in PATTERNS], text="Models to time with fixed masks")
flags.DEFINE_list("rounding_models", list(ROUNDING_MODELS),
                  f"Models on which to time round_to at equal MACs, of {list(MODELS)}.")
flags.DEFINE_list("round_to", ["4", "8"], "The round_to values to compare with free channel counts.")
flags.DEFINE_integer("repetitions", 5, "Alternating timings of each unpruned/shrunk pair.")
flags.DEFINE_integer("warmup", 20, "Untimed runs before each timing.")
flags.DEFINE_integer("runs", 200, "Timed runs per timing; the median is kept.")
results_io.define_output_dir()


def shrunk_model(name):
    """(unpruned, shrunk) `name`, channels removed as PATTERNS says."""
    keras.utils.set_random_seed(0)
    original = MODELS[name]()
    pruned = rbp.prune(original, dataset_size=1)
    groups = rbp.pruning_groups(pruned)
    pattern = PATTERNS[name]
    if isinstance(pattern, float):
        pattern = {group: max(1, round(pattern * noise.channels)) for group, noise in groups.items()}
    masks = {}
    for group, kept in pattern.items():
        mask = np.zeros(groups[group].channels, dtype=bool)
        mask[np.linspace(0, len(mask) - 1, kept).round().astype(int)] = True
        masks[group] = mask
    rbp.freeze(pruned, masks, {group: np.ones(len(mask)) for group, mask in masks.items()})
    return original, rbp.shrink(pruned)


def tflite_file(model, folder, name):
    saved_model = os.path.join(folder, name)
    save_model(model, saved_model)
    path = saved_model + ".tflite"
    with open(path, "wb") as file:
        file.write(convert(model, saved_model))
    return path


def time_model(name, folder):
    original, small = shrunk_model(name)
    report = rbp.report(original, small)
    paths = {"unpruned": tflite_file(original, folder, name), "shrunk": tflite_file(small, folder, name + "_shrunk")}
    timings = {variant: [] for variant in paths}
    for repetition in range(FLAGS.repetitions):
        order = list(paths) if repetition % 2 == 0 else list(reversed(paths))
        for variant in order:
            timings[variant].append(rbp.benchmark_tflite(paths[variant], warmup=FLAGS.warmup, runs=FLAGS.runs))
    result = {"architecture": f"{report.architecture_before} -> {report.architecture_after}"}
    for threads in ("single_thread", "multi_thread"):
        latency = {v: statistics.median(t[threads] for t in timings[v]) for v in timings}
        ratios = [u[threads] / s[threads] for u, s in zip(timings["unpruned"], timings["shrunk"])]
        result[threads] = {
            "median_latency_ms": latency,
            "speedup_per_repetition": ratios,
            "median_speedup": statistics.median(ratios),
        }
    result["num_threads"] = timings["shrunk"][0]["num_threads"]
    result["macs"] = {"unpruned": report.totals["macs_before"], "shrunk": report.totals["macs_after"]}
    result["mac_ratio"] = report.totals["macs_reduction"]
    result["speedup_over_mac_ratio"] = result["single_thread"]["median_speedup"] / result["mac_ratio"]
    result["meets_target"] = result["speedup_over_mac_ratio"] >= TARGET
    result["tflite_bytes"] = {variant: os.path.getsize(path) for variant, path in paths.items()}
    logging.info("%s: %s", name, result)
    return result


def time_files(paths):
    """Median single-thread latency of each file, timed in alternating
    order --repetitions times."""
    timings = {variant: [] for variant in paths}
    for repetition in range(FLAGS.repetitions):
        order = list(paths) if repetition % 2 == 0 else list(reversed(paths))
        for variant in order:
            timings[variant].append(
                rbp.benchmark_tflite(paths[variant], warmup=FLAGS.warmup, runs=FLAGS.runs)["single_thread"]
            )
    return {variant: statistics.median(times) for variant, times in timings.items()}


def time_rounding(name, folder):
    """Free and rounded channel counts at one MAC target: MACs, architecture
    and single-thread latency of each shrunk model."""
    keras.utils.set_random_seed(0)
    original = MODELS[name]()
    pruned = rbp.prune(original, dataset_size=1)
    rng = np.random.RandomState(0)
    pis = {group: rng.rand(noise.channels) for group, noise in rbp.pruning_groups(pruned).items()}
    variants, paths = {}, {}
    for round_to in [1] + [int(value) for value in FLAGS.round_to]:
        budget = Budget(pruned, "macs", ROUNDING_TARGET, round_to=round_to)
        masks = budget.stage_masks({}, pis, [])
        rbp.freeze(pruned, masks, {group: np.ones(len(mask)) for group, mask in masks.items()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small = rbp.shrink(pruned)
        report = rbp.report(original, small)
        variant = f"round_to={round_to}"
        paths[variant] = tflite_file(small, folder, f"{name}_round_to_{round_to}")
        variants[variant] = {"macs": report.totals["macs_after"], "architecture": report.architecture_after}
    for variant, latency in time_files(paths).items():
        variants[variant]["median_latency_ms"] = latency
    free = variants["round_to=1"]["median_latency_ms"]
    for result in variants.values():
        result["speedup_over_free_counts"] = free / result["median_latency_ms"]
    logging.info("%s: %s", name, variants)
    return {"target_macs": ROUNDING_TARGET, "variants": variants}


def main(argv):
    del argv  # Unused.
    provenance = results_io.provenance()
    keras_mode = provenance["keras"]
    load_before = provenance["machine"]["load_average_at_start"]
    with tempfile.TemporaryDirectory() as folder:
        results = {name: time_model(name, folder) for name in FLAGS.models}
        rounding = {name: time_rounding(name, folder) for name in FLAGS.rounding_models}
    result = {
        "benchmark": "tflite_speedup",
        **provenance,
        "load_average_at_end": list(os.getloadavg()),
        "repetitions": FLAGS.repetitions,
        "warmup": FLAGS.warmup,
        "runs": FLAGS.runs,
        "target_speedup_over_mac_ratio": TARGET,
        "models": results,
        "round_to": rounding,
    }
    rows = [
        [
            name,
            r["architecture"],
            f"{r['single_thread']['median_latency_ms']['unpruned']:.3f}",
            f"{r['single_thread']['median_latency_ms']['shrunk']:.3f}",
            f"{r['single_thread']['median_speedup']:.2f}x",
            f"{r['mac_ratio']:.2f}x",
            f"{100 * r['speedup_over_mac_ratio']:.0f} %",
            f"{r['multi_thread']['median_speedup']:.2f}x",
        ]
        for name, r in results.items()
    ]
    markdown = (
        f"{results_io.title(f'LiteRT speed-up of shrunk models, TensorFlow {tf.__version__}', provenance)}\n\n"
        f"Float32 TFLite, batch 1, LiteRT with XNNPACK; median of {FLAGS.runs} runs after "
        f"{FLAGS.warmup} warm-up runs, median over {FLAGS.repetitions} alternating repetitions; "
        f"{os.cpu_count()} CPUs ({platform.machine()}), load average {load_before[0]:.1f} at start "
        "(a shared machine: the latencies are medians, not best cases). "
        f"Target: single-thread speed-up >= {100 * TARGET:.0f} % of the MAC ratio.\n\n"
        + results_io.markdown_table(
            [
                "model",
                "architecture",
                "unpruned ms (1 thread)",
                "shrunk ms (1 thread)",
                "speed-up (1 thread)",
                "MAC ratio",
                "speed-up / MAC ratio",
                f"speed-up ({results[next(iter(results))]['num_threads']} threads)",
            ],
            rows,
        )
    )
    if rounding:
        markdown += (
            f"\n## round_to at equal MACs\n\nEach model pruned to {100 * ROUNDING_TARGET:.0f} % of its "
            "MACs (`budget.Budget`, channels ranked at random), with free kept counts and with counts "
            "rounded to multiples of round_to; single-thread latency as above.\n\n"
            + results_io.markdown_table(
                ["model", "round_to", "MACs", "ms (1 thread)", "speed-up over free counts"],
                [
                    [name, variant.split("=")[1], f"{v['macs']:,}", f"{v['median_latency_ms']:.3f}",
                     f"{v['speedup_over_free_counts']:.2f}x"]
                    for name, r in rounding.items()
                    for variant, v in r["variants"].items()
                ],
            )
        )
    for path in results_io.write_results(FLAGS.output_dir, f"tflite_speedup_{keras_mode}", result, markdown):
        print(path)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
