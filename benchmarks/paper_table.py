"""keras_rbp against the published Bayesian pruning results on MNIST.

Runs the whole keras_rbp path (`keras_rbp.pipeline`: train, RecursivePruning,
shrink, export) on LeNet-300-100 and LeNet-5-Caffe, for each kl_weight of a
sweep and each schedule, writes each model's rows to
paper_table_<model>.json, and builds paper_table.json, .md and .png from
every model's rows in the output folder (models can run one at a time): each
run's architecture, final test error, MACs and parameters with their
reductions, TFLite size and measured LiteRT speed-up over the unpruned model,
beside the published figures (method.md section 7).

    python -m benchmarks.paper_table --data_dir ../shared/data \
        --models lenet_300_100 --schedules recursive,all_at_once
    python -m benchmarks.paper_table --data_dir ../shared/data --models lenet5_caffe
"""

import json
import os
import time

from absl import app, flags

from benchmarks import results_io
from benchmarks.literature import BUDGETS, PUBLISHED, macs, published_macs
from keras_rbp import pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder holding mnist.npz (else $KERAS_RBP_DATA).")
results_io.define_output_dir("paper_table.json, .md and .png")
flags.DEFINE_list("models", ["lenet_300_100", "lenet5_caffe"], "Models to run.")
flags.DEFINE_list("lenet_300_100_kl_weights", ["10", "20"], "kl_weight sweep of LeNet-300-100.")
flags.DEFINE_list("lenet5_caffe_kl_weights", ["60", "120"], "kl_weight sweep of LeNet-5-Caffe.")
flags.DEFINE_list("schedules", ["recursive"], "recursive and/or all_at_once.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_integer("train_examples", None, "A subset of MNIST's training set (smoke runs).")
flags.DEFINE_float("epoch_scale", 1.0, "Multiplies every epoch budget (smoke runs: < 1).")
flags.DEFINE_bool("table_only", False, "Rebuild the table and plot from the per-model results "
                  "in --output_dir (paper_table_<model>.json) without running anything.")

# The peers to beat: (test error %, MACs in keras_rbp's convention).
TARGETS = {
    "lenet_300_100": (1.6, published_macs("lenet_300_100", "VIBNet")),
    "lenet5_caffe": (1.0, published_macs("lenet5_caffe", "BC-GHS")),
}


def _recipe(model, kl_weight, schedule, output_dir):
    budget = dict(BUDGETS[model])
    for key in ("pretrain_epochs", "epochs_per_stage", "finetune_epochs"):
        budget[key] = max(1, round(budget[key] * FLAGS.epoch_scale))
    return pipeline.Recipe(
        model=model,
        dataset="mnist",
        data_dir=FLAGS.data_dir,
        output_dir=output_dir,
        seed=FLAGS.seed,
        train_examples=FLAGS.train_examples,
        kl_weight=kl_weight,
        groups_per_stage=1 if schedule == "recursive" else 0,
        **budget,
    )


def _row(model, schedule, results):
    totals = results["report"]["totals"]
    export = results["export"]
    return {
        "model": model,
        "schedule": schedule,
        "kl_weight": results["recipe"]["kl_weight"],
        "architecture": results["report"]["architecture_after"],
        "architecture_before": results["report"]["architecture_before"],
        "baseline_error": 100 * results["baseline_error"],
        "error": 100 * results["final_error"],
        "macs": totals["macs_after"],
        "macs_reduction": totals["macs_reduction"],
        "params": totals["params_after"],
        "params_reduction": totals["params_reduction"],
        "tflite_bytes": export["files"]["model.tflite"]["size_bytes"],
        "speedup": export["speedup"]["single_thread"],
        "seconds": sum(results["seconds"].values()),
        "kept": results["kept"],
    }


def _markdown(rows):
    header = ["model", "method", "architecture", "error %", "MACs", "MACs (source's count)", "MACs red.",
              "params red.", "TFLite KB", "LiteRT speed-up", "wall s", "source"]
    lines = []
    for model in dict.fromkeys(row["model"] for row in rows):
        ours = [row for row in rows if row["model"] == model]
        base = ours[0]
        lines.append([model, "unpruned (this run)", base["architecture_before"],
                      f"{base['baseline_error']:.2f}", f"{macs(model, base['architecture_before']):,}", "",
                      "1.00x", "1.00x", "", "1.00x", "", "keras_rbp"])
        for row in ours:
            speedup = f"{row['speedup']:.2f}x" if row["speedup"] else "-"
            lines.append([model, f"keras_rbp {row['schedule']}, kl_weight {row['kl_weight']:g}",
                          row["architecture"], f"{row['error']:.2f}", f"{row['macs']:,}", "",
                          f"{row['macs_reduction']:.2f}x", f"{row['params_reduction']:.2f}x",
                          f"{row['tflite_bytes'] / 1024:.0f}", speedup, f"{row['seconds']:.0f}",
                          "this run"])
        for name, arch, error, source_macs, source in PUBLISHED[model]:
            lines.append([model, name, arch, f"{error:.2f}", f"{macs(model, arch):,}", f"{source_macs:,.0f}",
                          "", "", "", "", "", source])
    note = (
        "\nMACs: multiply-accumulates per example of the conv and dense layers, kept input and "
        "Flatten features included, counted by keras_rbp for every row from its architecture "
        "(the sources' own counts beside: RigL's FLOPs / 2, the LeNet-5 papers' figures). "
        "Error: test error of the final model after its last epoch. "
        "Speed-up: single-thread LiteRT latency, unpruned / shrunk, median of repeated runs.\n"
    )
    return results_io.markdown_table(header, lines) + note


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    models = list(dict.fromkeys(row["model"] for row in rows))
    figure, axes = pyplot.subplots(2, len(models), figsize=(6 * len(models), 9), squeeze=False)
    for column, model in enumerate(models):
        ours = [row for row in rows if row["model"] == model]
        top = axes[0][column]
        for schedule, marker in (("recursive", "o"), ("all_at_once", "s")):
            points = [row for row in ours if row["schedule"] == schedule]
            if points:
                top.scatter([p["macs"] for p in points], [p["error"] for p in points],
                            marker=marker, label=f"keras_rbp {schedule}")
        for name, arch, error, _, _ in PUBLISHED[model]:
            top.scatter([macs(model, arch)], [error], marker="x", color="gray")
            top.annotate(name, (macs(model, arch), error), fontsize=8)
        top.set_xscale("log")
        top.set_xlabel("MACs per example")
        top.set_ylabel("test error %")
        top.set_title(f"{model}: error against MACs")
        top.legend(fontsize=8)
        best = min(ours, key=lambda row: row["error"] + 1e-6 * row["macs"])
        names = list(best["kept"])
        before = [int(width) for width in best["architecture_before"].split("-")]
        bottom = axes[1][column]
        positions = range(len(names))
        bottom.bar([p - 0.2 for p in positions], before[: len(names)], width=0.4, label="before")
        bottom.bar([p + 0.2 for p in positions], [best["kept"][n] for n in names], width=0.4,
                   label=f"kept ({best['schedule']}, kl_weight {best['kl_weight']:g})")
        bottom.set_xticks(list(positions), names, rotation=20, fontsize=8)
        bottom.set_yscale("log")
        bottom.set_title(f"{model}: channels per group")
        bottom.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def _run_model(model):
    """Runs every setting of `model`; returns the rows."""
    rows = []
    for schedule in FLAGS.schedules:
        for kl_weight in FLAGS[f"{model}_kl_weights"].value:
            start = time.time()
            out = os.path.join(FLAGS.output_dir, "paper_table_exports", f"{model}_{schedule}_{kl_weight}")
            results = pipeline.run(_recipe(model, float(kl_weight), schedule, out), verbose=0)
            rows.append(_row(model, schedule, results))
            print(f"{model} {schedule} kl_weight {kl_weight}: {rows[-1]['architecture']}, "
                  f"error {rows[-1]['error']:.2f} %, {rows[-1]['macs']:,} MACs, "
                  f"{time.time() - start:.0f} s", flush=True)
    return rows


def main(argv):
    del argv
    for model in FLAGS.models:
        if not FLAGS.table_only:
            rows = _run_model(model)
            results_io.write_results(FLAGS.output_dir, f"paper_table_{model}", {"rows": rows},
                                     _markdown(rows))
    rows = []
    for model in BUDGETS:
        path = os.path.join(FLAGS.output_dir, f"paper_table_{model}.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as file:
                rows += json.load(file)["rows"]
    targets = {
        model: {"max_error": error, "max_macs": macs,
                "reached": any(r["error"] <= error and r["macs"] <= macs for r in rows if r["model"] == model)}
        for model, (error, macs) in TARGETS.items()
    }
    result = {"rows": rows, "targets": targets, "budgets": BUDGETS,
              "published": PUBLISHED, "macs_unit": "multiply-accumulates per example"}
    paths = results_io.write_results(FLAGS.output_dir, "paper_table", result, _markdown(rows))
    png = os.path.join(FLAGS.output_dir, "paper_table.png")
    _plot(rows, png)
    print("\n".join(paths + [png]))


if __name__ == "__main__":
    app.run(main)
