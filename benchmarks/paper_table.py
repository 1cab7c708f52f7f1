"""keras_rbp against the published Bayesian pruning results on MNIST.

Runs the whole keras_rbp path (`keras_rbp.recipes`: train, RecursivePruning,
shrink, export) on LeNet-300-100 and LeNet-5-Caffe, for each kl_weight of a
sweep, each schedule and each seed. Every finished run is kept in
paper_table_runs.json, so a stopped run resumes and models can run one at a
time; paper_table.json, .md and .png then give each setting's mean and
standard deviation over its seeds (architectures, test error, MACs and
parameters with their reductions, TFLite size, measured LiteRT speed-up over
the unpruned model) beside the published figures (docs/method.md section 7).

    python -m benchmarks.paper_table --data_dir ../shared/data --models lenet_300_100
    python -m benchmarks.paper_table --data_dir ../shared/data --models lenet5_caffe
"""

import os

from absl import app, flags

from benchmarks import results_io
from benchmarks.literature import BUDGETS, PUBLISHED, draw_published, macs, published_macs
from keras_rbp import recipes

FLAGS = flags.FLAGS
results_io.define_data_dir()
results_io.define_output_dir("paper_table_runs.json and paper_table.json, .md and .png")
results_io.define_models(BUDGETS)
flags.DEFINE_list("lenet_300_100_kl_weights", ["10", "20"], "kl_weight sweep of LeNet-300-100.")
flags.DEFINE_list("lenet5_caffe_kl_weights", ["60", "120"], "kl_weight sweep of LeNet-5-Caffe.")
flags.DEFINE_list("schedules", ["recursive"], "recursive and/or all_at_once.")
flags.DEFINE_integer("seeds", 3, "Seeds per setting (0, 1, ...).")
flags.DEFINE_bool("table_only", False, "Rebuild the table and plot from paper_table_runs.json "
                  "in --output_dir without running anything.")

# The peers to beat: (test error %, MACs in keras_rbp's convention).
TARGETS = {model: (error, published_macs(model, method))
           for model, (error, method) in {"lenet_300_100": (1.6, "VIBNet"),
                                          "lenet5_caffe": (1.0, "BC-GHS")}.items()}
# The figures averaged over the seeds of a setting.
AVERAGED = ("baseline_error", "error", "macs", "macs_reduction", "params", "params_reduction",
            "tflite_bytes", "speedup", "seconds")


def _recipe(model, kl_weight, schedule, seed, output_dir):
    return recipes.Recipe(
        model=model, dataset="mnist", data_dir=FLAGS.data_dir, output_dir=output_dir, seed=seed,
        kl_weight=kl_weight, groups_per_stage=1 if schedule == "recursive" else 0, **BUDGETS[model],
    )


def _run(model, schedule, kl_weight, seed):
    """One pipeline run's figures."""
    out = os.path.join(FLAGS.output_dir, "paper_table_exports", f"{model}_{schedule}_{kl_weight:g}_{seed}")
    results = recipes.run(_recipe(model, kl_weight, schedule, seed, out), verbose=0)
    totals = results["report"]["totals"]
    run = {
        "architecture": results["report"]["architecture_after"],
        "architecture_before": results["report"]["architecture_before"],
        "baseline_error": 100 * results["baseline_error"],
        "error": 100 * results["final_error"],
        "macs": totals["macs_after"],
        "macs_reduction": totals["macs_reduction"],
        "params": totals["params_after"],
        "params_reduction": totals["params_reduction"],
        "tflite_bytes": results["export"]["files"]["model.tflite"]["size_bytes"],
        "speedup": results["export"]["speedup"]["single_thread"],
        "seconds": sum(results["seconds"].values()),
        "kept": results["kept"],
    }
    print(f"{model} {schedule} kl_weight {kl_weight:g} seed {seed}: {run['architecture']}, "
          f"error {run['error']:.2f} %, {run['macs']:,} MACs, {run['seconds']:.0f} s", flush=True)
    return run


def _row(model, schedule, kl_weight, runs):
    """A setting's runs, with the mean and standard deviation of each figure."""
    row = {"model": model, "schedule": schedule, "kl_weight": kl_weight, "seeds": len(runs),
           "architectures": [run["architecture"] for run in runs],
           "architecture_before": runs[0]["architecture_before"], "runs": runs}
    for key in AVERAGED:
        row[key], row[key + "_std"] = results_io.mean_std([run[key] for run in runs])
    return row


def _rows(cache):
    """A row per setting of the flags whose every seed is in `cache`."""
    rows = []
    for model in BUDGETS:
        for schedule in FLAGS.schedules:
            for kl_weight in map(float, FLAGS[f"{model}_kl_weights"].value):
                keys = [f"{model}/{schedule}/{kl_weight:g}/{seed}" for seed in range(FLAGS.seeds)]
                if all(key in cache.runs for key in keys):
                    rows.append(_row(model, schedule, kl_weight, [cache.runs[key]["result"] for key in keys]))
    return rows


def _mean_std(row, key, fmt):
    return f"{format(row[key], fmt)} ± {format(row[key + '_std'], fmt)}"


def _markdown(rows, provenance):
    header = ["model", "method", "architecture (each seed)", "test error %", "MACs",
              "MACs (source's count)", "MACs red.", "params red.", "TFLite KB", "LiteRT speed-up",
              "wall s", "source"]
    lines = []
    for model in dict.fromkeys(row["model"] for row in rows):
        ours = [row for row in rows if row["model"] == model]
        base = ours[0]
        lines.append([model, "unpruned", base["architecture_before"], _mean_std(base, "baseline_error", ".2f"),
                      f"{macs(model, base['architecture_before']):,}", "", "1.00x", "1.00x", "", "1.00x", "",
                      "keras_rbp baselines"])
        for row in ours:
            lines.append([model, f"keras_rbp {row['schedule']}, kl_weight {row['kl_weight']:g}",
                          ", ".join(row["architectures"]), _mean_std(row, "error", ".2f"),
                          _mean_std(row, "macs", ",.0f"), "", f"{row['macs_reduction']:.2f}x",
                          f"{row['params_reduction']:.2f}x", f"{row['tflite_bytes'] / 1024:.0f}",
                          f"{row['speedup']:.2f}x", f"{row['seconds']:.0f}", "this benchmark"])
        for name, arch, error, source_macs, source in PUBLISHED[model]:
            lines.append([model, name, arch, f"{error:.2f}", f"{macs(model, arch):,}", f"{source_macs:,.0f}",
                          "", "", "", "", "", source])
    seeds = sorted({row["seeds"] for row in rows})
    note = (
        f"\nkeras_rbp rows: mean ± standard deviation over {', '.join(map(str, seeds))} seeds (0, 1, ...), "
        f"each a whole run from its own baseline; commit {str(provenance['commit'])[:7]}, "
        f"{provenance['keras']}, {provenance['machine']['cpu']} ({provenance['machine']['cores']} cores). "
        "MACs: multiply-accumulates per example of the conv and dense layers, kept input and "
        "Flatten features included, counted by keras_rbp for every row from its architecture; "
        "the sources' own counts beside (RigL's FLOPs / 2, the LeNet-5 papers' figures). "
        "Test error: the final model after its last epoch. Speed-up: single-thread LiteRT "
        "latency, unpruned / shrunk, median of repeated runs. Wall s: pretrain, prune, shrink "
        "and export of one run.\n"
    )
    return results_io.markdown_table(header, lines) + note


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    models = list(dict.fromkeys(row["model"] for row in rows))
    figure, axes = pyplot.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for axis, model in zip(axes[0], models):
        ours = [row for row in rows if row["model"] == model]
        for schedule, marker in (("recursive", "o"), ("all_at_once", "s")):
            points = [row for row in ours if row["schedule"] == schedule]
            if points:
                axis.errorbar([p["macs"] for p in points], [p["error"] for p in points],
                              xerr=[p["macs_std"] for p in points], yerr=[p["error_std"] for p in points],
                              fmt=marker, capsize=3, label=f"keras_rbp {schedule} (mean ± std)")
        draw_published(axis, model, f"{model}: error against MACs")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main(argv):
    del argv
    cache = results_io.RunCache(os.path.join(FLAGS.output_dir, "paper_table_runs.json"))
    if not FLAGS.table_only:
        for model in FLAGS.models:
            for schedule in FLAGS.schedules:
                for kl_weight in map(float, FLAGS[f"{model}_kl_weights"].value):
                    for seed in range(FLAGS.seeds):
                        cache.get_or_run(f"{model}/{schedule}/{kl_weight:g}/{seed}",
                                         lambda: _run(model, schedule, kl_weight, seed))
    rows = _rows(cache)
    provenance = results_io.provenance()
    targets = {
        model: {"max_error": error, "max_macs": target_macs,
                "reached_by_mean": any(r["error"] <= error and r["macs"] <= target_macs
                                       for r in rows if r["model"] == model)}
        for model, (error, target_macs) in TARGETS.items()
    }
    result = {"benchmark": "paper_table", **provenance, "rows": rows, "targets": targets, "budgets": BUDGETS,
              "published": PUBLISHED, "macs_unit": "multiply-accumulates per example"}
    markdown = _markdown(rows, provenance)
    paths = results_io.write_results(FLAGS.output_dir, "paper_table", result, markdown)
    if rows:
        paths.append(os.path.join(FLAGS.output_dir, "paper_table.png"))
        _plot(rows, paths[-1])
    print("\n".join(paths))
    print(markdown)


if __name__ == "__main__":
    app.run(main)
