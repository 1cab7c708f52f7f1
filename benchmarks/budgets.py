"""MAC targets met in one fit: target against achieved MACs and test error.

For LeNet-300-100 (input pixels pruned) at 10K and 20K MACs and LeNet-5-Caffe
at 60K and 120K MACs on MNIST, runs the recipe of `paper_table` (its
budgets, scaled by --epoch_scale) with `RecursivePruning(target_macs=...)`
under both schedules and --seeds seeds, and records the shrunk model's MACs,
their ratio to the target (the goal: within 5 %, never above) and the test
error; with --plot, a PNG of error against MACs beside the published peers.

Run from the repository root:

    python -m benchmarks.budgets --data_dir ../shared/data

Writes budgets.json and .md (and budgets.png) to --output_dir.
"""

import os
import statistics
import time

from absl import app, flags

from benchmarks import results_io
from benchmarks.literature import BUDGETS, PUBLISHED
from keras_rbp import pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder holding mnist.npz (else $KERAS_RBP_DATA).")
flags.DEFINE_string(
    "output_dir",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
    "Where budgets.json, .md and .png are written.",
)
flags.DEFINE_list("schedules", ["recursive", "all_at_once"], "recursive and/or all_at_once.")
flags.DEFINE_integer("seeds", 1, "Seeds per cell (0, 1, ...).")
flags.DEFINE_integer("train_examples", None, "A subset of MNIST's training set.")
flags.DEFINE_float("epoch_scale", 1.0, "Multiplies every epoch budget of paper_table's recipes.")
flags.DEFINE_bool("plot", False, "Also write budgets.png (needs matplotlib).")

TARGETS = {"lenet_300_100": (10_000, 20_000), "lenet5_caffe": (60_000, 120_000)}
KL_WEIGHTS = {"lenet_300_100": 10.0, "lenet5_caffe": 60.0}  # paper_table's first setting


def _recipe(model, target, schedule, seed):
    budget = {key: value for key, value in BUDGETS[model].items() if key != "quantize"}
    for key in ("pretrain_epochs", "epochs_per_stage", "finetune_epochs"):
        budget[key] = max(1, round(budget[key] * FLAGS.epoch_scale))
    return pipeline.Recipe(
        model=model, dataset="mnist", data_dir=FLAGS.data_dir, seed=seed,
        train_examples=FLAGS.train_examples, kl_weight=KL_WEIGHTS[model],
        groups_per_stage=1 if schedule == "recursive" else 0, target_macs=target, **budget,
    )


def _cells():
    rows = []
    for model, targets in TARGETS.items():
        for target in targets:
            for schedule in FLAGS.schedules:
                runs = []
                for seed in range(FLAGS.seeds):
                    start = time.time()
                    results = pipeline.run(_recipe(model, target, schedule, seed), verbose=0)
                    macs = results["report"]["totals"]["macs_after"]
                    runs.append({"seed": seed, "macs": macs, "error": 100 * results["final_error"],
                                 "architecture": results["report"]["architecture_after"],
                                 "seconds": time.time() - start})
                    print(f"{model} {schedule} target {target:,}: {macs:,} MACs, "
                          f"error {runs[-1]['error']:.2f} %, {runs[-1]['seconds']:.0f} s", flush=True)
                errors = [run["error"] for run in runs]
                rows.append({
                    "model": model, "schedule": schedule, "target_macs": target, "runs": runs,
                    "macs_over_target": [run["macs"] / target for run in runs],
                    "within_5_percent": all(0.95 <= run["macs"] / target <= 1.0 for run in runs),
                    "error_mean": statistics.mean(errors),
                    "error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                })
    return rows


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(TARGETS), figsize=(6 * len(TARGETS), 4.5), squeeze=False)
    for axis, model in zip(axes[0], TARGETS):
        for schedule, marker in (("recursive", "o"), ("all_at_once", "s")):
            points = [run for row in rows if row["model"] == model and row["schedule"] == schedule
                      for run in row["runs"]]
            axis.scatter([p["macs"] for p in points], [p["error"] for p in points], marker=marker,
                         label=f"keras_rbp {schedule}")
        for name, _, error, macs, _ in PUBLISHED[model]:
            axis.scatter([macs], [error], marker="x", color="gray")
            axis.annotate(name, (macs, error), fontsize=8)
        for target in TARGETS[model]:
            axis.axvline(target, color="lightgray", linestyle="--")
        axis.set_xscale("log")
        axis.set_xlabel("MACs per example")
        axis.set_ylabel("test error %")
        axis.set_title(f"{model}: MAC targets (dashed)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main(argv):
    del argv
    provenance = results_io.provenance()
    rows = _cells()
    result = {"benchmark": "budgets", **provenance, "seeds": FLAGS.seeds, "epoch_scale": FLAGS.epoch_scale,
              "train_examples": FLAGS.train_examples, "kl_weights": KL_WEIGHTS, "rows": rows}
    table = results_io.markdown_table(
        ["model", "schedule", "target MACs", "achieved MACs", "achieved / target", "test error %",
         "within 5 %"],
        [
            [row["model"], row["schedule"], f"{row['target_macs']:,}",
             ", ".join(f"{run['macs']:,}" for run in row["runs"]),
             ", ".join(f"{ratio:.3f}" for ratio in row["macs_over_target"]),
             f"{row['error_mean']:.2f} ± {row['error_std']:.2f}", "yes" if row["within_5_percent"] else "no"]
            for row in rows
        ],
    )
    markdown = (
        f"# MAC targets met in one fit ({provenance['keras']}, commit {str(provenance['commit'])[:7]})\n\n"
        f"MNIST, paper_table's recipes with epochs x {FLAGS.epoch_scale:g}"
        + (f", {FLAGS.train_examples:,} training images" if FLAGS.train_examples else "")
        + f", {FLAGS.seeds} seed(s) a cell (error: mean ± standard deviation).\n\n" + table
    )
    paths = results_io.write_results(FLAGS.output_dir, "budgets", result, markdown)
    if FLAGS.plot:
        paths.append(os.path.join(FLAGS.output_dir, "budgets.png"))
        _plot(rows, paths[-1])
    print("\n".join(paths))
    print(markdown)


if __name__ == "__main__":
    app.run(main)
