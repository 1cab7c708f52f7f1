"""The pruning methods side by side: RBP, SBP, VIBNet and L0 noises and the
magnitude baseline on the same models, under both schedules, at the same MAC budgets and the
same number of epochs after the baseline, over several seeds.

Each cell is one (model, method, schedule, MAC target) over its seeds. Every
run goes through `keras_rbp.pipeline` with a `target_macs` budget and
`plan_epochs` (the same plan length for every method and schedule); all
methods of a seed start from the same baseline weights (kept in
--baseline_dir). Every finished run is kept in method_comparison_runs.json,
so the table fills over several runs and a stopped run resumes; cells whose
seeds are all done go into method_comparison.json, .md and .png.

    python -m benchmarks.method_comparison --data_dir ../shared/data --models lenet_300_100
"""

import os
import statistics

from absl import app, flags

from benchmarks import results_io
from benchmarks.literature import BUDGETS, PUBLISHED, draw_published, macs, published_macs
from keras_rbp import methods, pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder holding mnist.npz (else $KERAS_RBP_DATA).")
results_io.define_output_dir("method_comparison_runs.json and method_comparison.json, .md and .png")
flags.DEFINE_string("baseline_dir", None, "Where the trained baselines are kept and reused "
                    "(default: <output_dir>/method_comparison_baselines).")
flags.DEFINE_list("models", ["lenet_300_100", "lenet5_caffe"], "Models to run.")
flags.DEFINE_list("methods", sorted(methods.METHODS), "Pruning methods to compare.")
flags.DEFINE_list("schedules", ["recursive", "all_at_once"], "recursive and/or all_at_once.")
flags.DEFINE_integer("seeds", 3, "Seeds per cell (0, 1, ...).")
flags.DEFINE_integer("train_examples", None, "A subset of MNIST's training set (all by default).")
flags.DEFINE_float("epoch_scale", 1.0, "Multiplies the baseline and plan epochs (a smaller budget: < 1).")
flags.DEFINE_bool("table_only", False, "Rebuild the table from the runs file without running anything.")

# The MAC budgets, in keras_rbp's count: the published points to beat.
MAC_TARGETS = {
    "lenet_300_100": [published_macs("lenet_300_100", "VIBNet"), published_macs("lenet_300_100", "L0")],
    "lenet5_caffe": [100_000, published_macs("lenet5_caffe", "BC-GHS")],
}
# Each method's strength. Under a MAC target the budget decides how many
# channels go; the penalty shapes which. Not tuned yet: the first values that
# pruned LeNet-300-100 in a short plan (RBP's: the documented defaults).
# Magnitude has no penalty: its weight is unused.
KL_WEIGHTS = {
    "lenet_300_100": {"rbp": 10.0, "rbp_relaxed": 10.0, "sbp": 100.0, "vib": 10.0, "l0": 100.0, "magnitude": 1.0},
    "lenet5_caffe": {"rbp": 60.0, "rbp_relaxed": 60.0, "sbp": 600.0, "vib": 60.0, "l0": 600.0, "magnitude": 1.0},
}
# RBP's noise-scale ramp is its own; the peers run as published (scale 1),
# and magnitude has no noise.
MAX_NOISE_SCALE = {"rbp": 3.0, "rbp_relaxed": 3.0, "sbp": 1.0, "vib": 1.0, "l0": 1.0, "magnitude": 1.0}


for _model, _targets in MAC_TARGETS.items():
    flags.DEFINE_list(f"{_model}_targets", [str(t) for t in _targets], f"MAC targets of {_model}.")


def _plan_epochs(model):
    """The default recursive plan's length, given to every cell."""
    budget = BUDGETS[model]
    groups = 3 if model == "lenet_300_100" else 4
    return FLAGS.epoch_scale * (groups * budget["epochs_per_stage"] + budget["finetune_epochs"])


def _recipe(model, method, schedule, target, seed):
    budget = dict(BUDGETS[model])
    budget["pretrain_epochs"] = max(1, round(budget["pretrain_epochs"] * FLAGS.epoch_scale))
    return pipeline.Recipe(
        model=model, dataset="mnist", data_dir=FLAGS.data_dir, seed=seed, train_examples=FLAGS.train_examples,
        baseline_dir=FLAGS.baseline_dir or os.path.join(FLAGS.output_dir, "method_comparison_baselines"),
        method=method, kl_weight=KL_WEIGHTS[model][method], max_noise_scale=MAX_NOISE_SCALE[method],
        groups_per_stage=1 if schedule == "recursive" else 0, target_macs=target,
        plan_epochs=_plan_epochs(model), **{k: v for k, v in budget.items() if k != "quantize"},
    )


def _run(model, method, schedule, target, seed):
    results = pipeline.run(_recipe(model, method, schedule, target, seed), verbose=0)
    totals = results["report"]["totals"]
    run = {
        "architecture": results["report"]["architecture_after"],
        "baseline_error": 100 * results["baseline_error"],
        "error": 100 * results["final_error"],
        "macs": totals["macs_after"],
        "params": totals["params_after"],
        "pruning_epochs": results["epochs"]["pruning"],
        "seconds": sum(results["seconds"].values()),
    }
    print(f"{model} {method} {schedule} target {target:,}: seed {seed}: {run['architecture']}, "
          f"error {run['error']:.2f} %, {run['macs']:,} MACs, {run['seconds']:.0f} s", flush=True)
    return run


def _key(model, method, schedule, target, seed):
    return f"{model}/{method}/{schedule}/{target}/{seed}/x{FLAGS.epoch_scale:g}/{FLAGS.train_examples}"


def _cells():
    for model in FLAGS.models:
        for target in map(int, FLAGS[f"{model}_targets"].value):
            for method in FLAGS.methods:
                for schedule in FLAGS.schedules:
                    yield model, method, schedule, target


def _row(cell, runs):
    model, method, schedule, target = cell
    row = {"model": model, "method": method, "schedule": schedule, "target_macs": target,
           "kl_weight": KL_WEIGHTS[model][method], "seeds": len(runs), "runs": runs}
    for key in ("error", "macs", "baseline_error"):
        values = [run[key] for run in runs]
        row[key] = statistics.mean(values)
        row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return row


def _markdown(rows, provenance):
    header = ["model", "MAC target", "method", "schedule", "test error % (mean ± std)", "MACs (mean ± std)",
              "architectures (each seed)", "pruning epochs", "unpruned error %"]
    lines = [[row["model"], f"{row['target_macs']:,}", row["method"], row["schedule"],
              f"{row['error']:.2f} ± {row['error_std']:.2f}", f"{row['macs']:,.0f} ± {row['macs_std']:,.0f}",
              ", ".join(run["architecture"] for run in row["runs"]),
              ", ".join(str(run["pruning_epochs"]) for run in row["runs"]),
              f"{row['baseline_error']:.2f} ± {row['baseline_error_std']:.2f}"] for row in rows]
    published = [[model, "", name, "published", f"{error:.2f}", f"{macs(model, arch):,}", arch, "", ""]
                 for model in dict.fromkeys(row["model"] for row in rows) for name, arch, error, _, _ in PUBLISHED[model]]
    return (
        f"# Methods at equal MACs and epochs ({provenance['keras']}, commit {str(provenance['commit'])[:7]})\n\n"
        f"MNIST, {FLAGS.train_examples or 'all 60,000'} training images, paper_table's budgets with epochs x "
        f"{FLAGS.epoch_scale:g}; every cell's plan (stages and fine-tune) has the same length, and every "
        f"method of a seed starts from the same baseline. kl_weight per method: {KL_WEIGHTS} (not tuned). "
        f"{provenance['machine']['cpu']}, {provenance['machine']['cores']} cores.\n\n"
        + results_io.markdown_table(header, lines + published)
    )


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    models = list(dict.fromkeys(row["model"] for row in rows))
    figure, axes = pyplot.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    markers = {"recursive": "o", "all_at_once": "s"}
    for axis, model in zip(axes[0], models):
        for method in FLAGS.methods:
            for schedule, marker in markers.items():
                points = [r for r in rows if r["model"] == model and r["method"] == method and r["schedule"] == schedule]
                if points:
                    axis.errorbar([p["macs"] for p in points], [p["error"] for p in points],
                                  yerr=[p["error_std"] for p in points], fmt=marker, capsize=3,
                                  label=f"{method} {schedule}")
        draw_published(axis, model, f"{model}: methods at equal MACs and epochs")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main(argv):
    del argv
    cache = results_io.RunCache(os.path.join(FLAGS.output_dir, "method_comparison_runs.json"))
    rows = []
    for cell in _cells():
        keys = [_key(*cell, seed) for seed in range(FLAGS.seeds)]
        if not FLAGS.table_only:
            for seed, key in enumerate(keys):
                cache.get_or_run(key, lambda: _run(*cell, seed))
        if all(key in cache.runs for key in keys):
            rows.append(_row(cell, [cache.runs[key]["result"] for key in keys]))
    provenance = results_io.provenance()
    result = {"benchmark": "method_comparison", **provenance, "seeds": FLAGS.seeds,
              "epoch_scale": FLAGS.epoch_scale, "train_examples": FLAGS.train_examples,
              "kl_weights": KL_WEIGHTS, "max_noise_scale": MAX_NOISE_SCALE, "rows": rows}
    markdown = _markdown(rows, provenance)
    paths = results_io.write_results(FLAGS.output_dir, "method_comparison", result, markdown)
    if rows:
        paths.append(os.path.join(FLAGS.output_dir, "method_comparison.png"))
        _plot(rows, paths[-1])
    print("\n".join(paths))
    print(markdown)


if __name__ == "__main__":
    app.run(main)
