"""The main job on each Keras 3 backend: test error, MACs and wall time.

Runs examples/quickstart.py (LeNet-5-Caffe trained on 18,000 MNIST images,
`prune_and_export` to 150,000 MACs with a 4-epoch recursive plan, SavedModel
and TFLite files checked in LiteRT) once per backend and seed, each in its
own process with KERAS_BACKEND set, the backends one after the other for
each seed so that they share the machine's slow and fast phases. It
records each run's test error before and after, MACs and wall time (the
process's, imports and export included), and per backend the mean and
spread over seeds and the median wall time's ratio to TensorFlow's.

    python -m benchmarks.backends --data_dir ../shared/data

Writes backends.json and backends.md to --output_dir.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import results_io

QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "quickstart.py")
BACKENDS = ("tensorflow", "jax", "torch")
# The quickstart's last line, e.g. "... test error 1.90 % -> 2.89 %, 20-50-800-500 -> 4-11-176-118,
# MACs 2,293,000 -> 149,948 (15.3x fewer), LiteRT 5.0x faster".
LAST_LINE = re.compile(
    r"test error (?P<before>[\d.]+) % -> (?P<after>[\d.]+) %, (?P<arch_before>\S+) -> (?P<arch_after>\S+), "
    r"MACs (?P<macs_before>[\d,]+) -> (?P<macs_after>[\d,]+) .*LiteRT (?P<speedup>[\d.]+)x faster")

FLAGS = flags.FLAGS
results_io.define_output_dir()
results_io.define_data_dir()
flags.DEFINE_list("backends", list(BACKENDS), f"Keras 3 backends to run, of {list(BACKENDS)}.")
flags.DEFINE_integer("seeds", 3, "Seeds run on each backend (0, 1, ...).")
flags.register_validator("backends", lambda names: set(names) <= set(BACKENDS),
                         message=f"--backends takes names from {list(BACKENDS)}")


def _run(backend, seed, output_dir):
    """One quickstart run: its figures and wall seconds."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    command = [sys.executable, QUICKSTART, "--output_dir", output_dir, "--seed", str(seed)]
    if FLAGS.data_dir:
        command += ["--data_dir", FLAGS.data_dir]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    match = LAST_LINE.search(lines[-1]) if done.returncode == 0 and lines else None
    if match is None:
        raise RuntimeError(f"quickstart under {backend}, seed {seed} failed:\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-3000:]}")
    return {
        "backend": backend, "seed": seed, "wall_seconds": seconds,
        "test_error_before": float(match["before"]) / 100, "test_error_after": float(match["after"]) / 100,
        "architecture": f"{match['arch_before']} -> {match['arch_after']}",
        "macs_before": int(match["macs_before"].replace(",", "")),
        "macs_after": int(match["macs_after"].replace(",", "")),
        "litert_speedup": float(match["speedup"]),
    }


def _summary(runs):
    by_backend = {}
    for backend in FLAGS.backends:
        mine = [run for run in runs if run["backend"] == backend]
        by_backend[backend] = {
            "test_error_before": results_io.mean_std([run["test_error_before"] for run in mine]),
            "test_error_after": results_io.mean_std([run["test_error_after"] for run in mine]),
            "macs_after": [run["macs_after"] for run in mine],
            "median_wall_seconds": statistics.median(run["wall_seconds"] for run in mine),
        }
    if "tensorflow" in by_backend:
        base = by_backend["tensorflow"]["median_wall_seconds"]
        for entry in by_backend.values():
            entry["wall_time_ratio_to_tensorflow"] = entry["median_wall_seconds"] / base
    return by_backend


def _markdown(result):
    rows = []
    for backend, entry in result["backends"].items():
        (before, before_sd), (after, after_sd) = entry["test_error_before"], entry["test_error_after"]
        ratio = entry.get("wall_time_ratio_to_tensorflow")
        rows.append([backend, f"{100 * before:.2f} ± {100 * before_sd:.2f} %", f"{100 * after:.2f} ± {100 * after_sd:.2f} %",
                     ", ".join(f"{macs:,}" for macs in entry["macs_after"]), f"{entry['median_wall_seconds']:.0f} s",
                     "-" if ratio is None else f"{ratio:.2f}x"])
    return (results_io.title("The main job on each Keras 3 backend", result) + "\n\n"
            + f"`python -m benchmarks.backends`: examples/quickstart.py, {FLAGS.seeds} seeds a backend, "
            "each run a process of its own (imports and export included); test error on MNIST's 10,000 "
            "test images, MACs of the shrunk model (target 150,000).\n\n"
            + results_io.markdown_table(
                ["backend", "test error before", "test error after", "MACs after", "median wall time",
                 "wall time / TensorFlow's"], rows))


def main(argv):
    del argv  # Unused.
    provenance = results_io.provenance()
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(FLAGS.seeds):
            for backend in FLAGS.backends:
                runs.append(_run(backend, seed, os.path.join(folder, f"{backend}_{seed}")))
                print(runs[-1])
    result = dict(provenance, runs=runs, backends=_summary(runs))
    for path in results_io.write_results(FLAGS.output_dir, "backends", result, _markdown(result)):
        print("wrote", path)


if __name__ == "__main__":
    app.run(main)
