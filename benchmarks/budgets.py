"""Budgets met in one fit: target against achieved cost and test error.

On MNIST, runs the recipes of `paper_table` (their epochs scaled by
--epoch_scale) with a budget, --seeds seeds a cell:
- MAC targets, both schedules: LeNet-300-100 (input pixels pruned) at 10K and
  20K MACs, LeNet-5-Caffe at 60K and 120K MACs;
- LeNet-5-Caffe, recursive: a parameter target (--params_fraction of the
  baseline's) and a latency target (--latency_fraction of the unpruned
  model's single-thread LiteRT latency on this machine), with the latency
  table's prediction beside the measured latency;
- LeNet-5-Caffe, recursive, at 120K MACs: the default plan (22 epochs:
  4 a stage, 6 of fine-tune) against a --short_plan_epochs plan
  (`plan_epochs`), whose stages end at any step.
Records the achieved cost, its ratio to the target (the goal: within 5 %,
never above) and the test error; with --plot, a PNG of error against MACs
beside the published peers.

Run from the repository root:

    python -m benchmarks.budgets --data_dir ../shared/data --plot

Writes budgets.json and .md (and budgets.png) to --output_dir; a run of
some of the --parts writes budgets_<part>_<part>.* instead, so that it
does not replace the whole table.
"""

import os
import statistics
import time

from absl import app, flags

from benchmarks import results_io
from benchmarks.literature import BUDGETS, PUBLISHED, macs
from keras_rbp import latency, models, recipes

FLAGS = flags.FLAGS
results_io.define_data_dir()
results_io.define_output_dir("budgets.json, .md and .png")
PARTS = ["macs", "params", "latency", "plans"]
flags.DEFINE_list("parts", PARTS, "Which cells to run (see above).")
flags.DEFINE_integer("seeds", 3, "Seeds per cell (0, 1, ...).")
flags.DEFINE_integer("train_examples", 20_000, "A subset of MNIST's training set.")
flags.DEFINE_float("epoch_scale", 0.5, "Multiplies every epoch budget of paper_table's recipes.")
flags.DEFINE_float("params_fraction", 0.05, "LeNet-5-Caffe's parameter target, a fraction of the baseline's.")
flags.DEFINE_float("latency_fraction", 0.5, "LeNet-5-Caffe's latency target, a fraction of the unpruned model's.")
flags.DEFINE_float("short_plan_epochs", 10, "The short plan of the plan-length comparison, in epochs.")
flags.DEFINE_bool("plot", False, "Also write budgets.png (needs matplotlib: pip install -e .[benchmarks]).")

MAC_TARGETS = {"lenet_300_100": (10_000, 20_000), "lenet5_caffe": (60_000, 120_000)}
KL_WEIGHTS = {"lenet_300_100": 10.0, "lenet5_caffe": 60.0}  # paper_table's first setting
COST_KEYS = {"macs": "macs_after", "params": "params_after"}


def _recipe(model, schedule, seed, scale, **budget):
    epochs = {key: value for key, value in BUDGETS[model].items() if key != "quantize"}
    for key in ("pretrain_epochs", "epochs_per_stage", "finetune_epochs"):
        epochs[key] = max(1, round(epochs[key] * scale))
    return recipes.Recipe(
        model=model, dataset="mnist", data_dir=FLAGS.data_dir, seed=seed,
        train_examples=FLAGS.train_examples, kl_weight=KL_WEIGHTS[model],
        groups_per_stage=1 if schedule == "recursive" else 0, **epochs, **budget,
    )


def _cell(label, model, schedule, metric, target, scale=None, **budget):
    """Runs one cell over the seeds: a row of the table."""
    runs = []
    for seed in range(FLAGS.seeds):
        start = time.time()
        recipe = _recipe(model, schedule, seed, scale or FLAGS.epoch_scale, **{f"target_{metric}": target}, **budget)
        results = recipes.run(recipe, verbose=0)
        totals = results["report"]["totals"]
        run = {"seed": seed, "macs": totals["macs_after"], "params": totals["params_after"],
               "error": 100 * results["final_error"], "architecture": results["report"]["architecture_after"],
               "pruning_epochs": results["epochs"]["pruning"], "seconds": time.time() - start}
        if metric == "latency_ms":
            run["latency_ms"] = results["latency_ms"]["measured"]
            run["predicted_latency_ms"] = results["latency_ms"]["predicted"]
        runs.append(run)
        print(f"{label} {model} {schedule} target_{metric} {target:,.4g}: {run[metric]:,.4g}, "
              f"{run['macs']:,} MACs, error {run['error']:.2f} %, {run['seconds']:.0f} s", flush=True)
    errors = [run["error"] for run in runs]
    error_mean, error_std = results_io.mean_std(errors)
    ratios = [run[metric] / target for run in runs]
    return {
        "cell": label, "model": model, "schedule": schedule, "metric": metric, "target": target, **budget,
        "runs": runs, "achieved_over_target": ratios,
        "within_5_percent": all(0.95 <= ratio <= 1.0 for ratio in ratios),
        "within_15_percent": all(abs(ratio - 1) <= 0.15 for ratio in ratios),
        "error_mean": error_mean,
        "error_std": error_std,
    }


def _rows():
    rows = []
    if "macs" in FLAGS.parts:
        for model, targets in MAC_TARGETS.items():
            for target in targets:
                for schedule in ("recursive", "all_at_once"):
                    rows.append(_cell("mac target", model, schedule, "macs", target))
    if "params" in FLAGS.parts:
        baseline = models.lenet5_caffe().count_params()
        rows.append(_cell("parameter target", "lenet5_caffe", "recursive", "params",
                          round(FLAGS.params_fraction * baseline)))
    if "latency" in FLAGS.parts:
        unpruned_ms = latency.model_latency(models.lenet5_caffe())
        rows.append(_cell("latency target", "lenet5_caffe", "recursive", "latency_ms",
                          FLAGS.latency_fraction * unpruned_ms))
    if "plans" in FLAGS.parts:
        # Full epochs here: the default plan is paper_table's 22 epochs.
        rows.append(_cell("default plan", "lenet5_caffe", "recursive", "macs", 120_000, scale=1.0))
        rows.append(_cell("short plan", "lenet5_caffe", "recursive", "macs", 120_000, scale=1.0,
                          plan_epochs=FLAGS.short_plan_epochs))
    return rows


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(MAC_TARGETS), figsize=(6 * len(MAC_TARGETS), 4.5), squeeze=False)
    for axis, model in zip(axes[0], MAC_TARGETS):
        for schedule, marker in (("recursive", "o"), ("all_at_once", "s")):
            points = [run for row in rows if row["model"] == model and row["schedule"] == schedule
                      and row["cell"] == "mac target" for run in row["runs"]]
            axis.scatter([p["macs"] for p in points], [p["error"] for p in points], marker=marker,
                         label=f"keras_rbp {schedule}")
        for name, arch, error, _, _ in PUBLISHED[model]:
            axis.scatter([macs(model, arch)], [error], marker="x", color="gray")
            axis.annotate(name, (macs(model, arch), error), fontsize=8)
        for target in MAC_TARGETS[model]:
            axis.axvline(target, color="lightgray", linestyle="--")
        axis.set_xscale("log")
        axis.set_xlabel("MACs per example")
        axis.set_ylabel("test error %")
        axis.set_title(f"{model}: MAC targets (dashed), {FLAGS.seeds} seeds")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def _achieved(row):
    unit = "" if row["metric"] != "latency_ms" else " ms"
    cells = [f"{run[row['metric']]:,.4g}{unit}" for run in row["runs"]]
    if row["metric"] == "latency_ms":
        cells = [f"{cell} (predicted {run['predicted_latency_ms']:.4g})" for cell, run in zip(cells, row["runs"])]
    return ", ".join(cells)


def main(argv):
    del argv
    provenance = results_io.provenance()
    rows = _rows()
    result = {"benchmark": "budgets", **provenance, "seeds": FLAGS.seeds, "epoch_scale": FLAGS.epoch_scale,
              "train_examples": FLAGS.train_examples, "kl_weights": KL_WEIGHTS, "rows": rows}
    table = results_io.markdown_table(
        ["cell", "model", "schedule", "target", "achieved (each seed)", "achieved / target", "MACs (mean)",
         "pruning epochs", "test error %"],
        [
            [row["cell"] + (f", plan_epochs={row['plan_epochs']:g}" if row.get("plan_epochs") else ""),
             row["model"], row["schedule"], f"{row['metric']} {row['target']:,.4g}", _achieved(row),
             ", ".join(f"{ratio:.3f}" for ratio in row["achieved_over_target"]),
             f"{statistics.mean(run['macs'] for run in row['runs']):,.0f}",
             ", ".join(str(run["pruning_epochs"]) for run in row["runs"]),
             f"{row['error_mean']:.2f} ± {row['error_std']:.2f}"]
            for row in rows
        ],
    )
    markdown = (
        f"{results_io.title('Budgets met in one fit', provenance)}\n\n"
        f"MNIST, paper_table's recipes with epochs x {FLAGS.epoch_scale:g} (the plan cells: x 1), "
        f"{FLAGS.train_examples:,} training images, {FLAGS.seeds} seeds a cell (error: mean ± standard "
        "deviation). Latency: single-thread LiteRT on this machine, "
        f"{provenance['machine']['cpu']}, {provenance['machine']['cores']} cores.\n\n" + table
    )
    name = "budgets" if FLAGS.parts == PARTS else "_".join(["budgets"] + FLAGS.parts)
    paths = results_io.write_results(FLAGS.output_dir, name, result, markdown)
    if FLAGS.plot:
        paths.append(os.path.join(FLAGS.output_dir, f"{name}.png"))
        _plot(rows, paths[-1])
    print("\n".join(paths))
    print(markdown)


if __name__ == "__main__":
    app.run(main)
