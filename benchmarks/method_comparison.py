"""The pruning methods side by side: RBP (Gaussian and relaxed-Bernoulli
samples), SBP, VIBNet and L0 noises and the magnitude baseline on the same
models, under both schedules, at the same MAC budgets and the same number of
epochs after the baseline, over several seeds.

Each cell is one (model, method, schedule, MAC target) over its seeds. Every
run goes through `keras_rbp.recipes` with a `target_macs` budget and
`plan_epochs` (the same plan length for every method and schedule); all
methods of a seed start from the same baseline weights (kept in
--baseline_dir). Every finished run is kept in method_comparison_runs.json,
so the table fills over several runs and a stopped run resumes; cells whose
seeds are all done go into method_comparison.json, .md and .png (a reduced
budget's into method_comparison_x<epoch scale>_<images>.*). With
--tune_models, each method's and schedule's kl_weight is first chosen on a
held-out validation split (the test set is never used to choose), and
--<model>_pretrain_epochs gives the baseline recipe that baseline_recipes
chose on it.

    python -m benchmarks.method_comparison --data_dir ../shared/data --models lenet_300_100 \
        --tune_models lenet_300_100 --lenet_300_100_pretrain_epochs 40
"""

import fractions
import os

from absl import app, flags

from benchmarks import results_io
from benchmarks.literature import (BASELINES_FOLDER, BUDGETS, PUBLISHED, VALIDATION_SPLIT, draw_published, macs,
                                   published_macs)
from keras_rbp import methods, recipes

FLAGS = flags.FLAGS
results_io.define_data_dir()
results_io.define_output_dir("method_comparison_runs.json and the tables (method_comparison.json, .md and .png; "
                             "a reduced budget's names say it)")
flags.DEFINE_string("baseline_dir", None, "Where the trained baselines are kept and reused "
                    "(default: <output_dir>/method_comparison_baselines).")
flags.DEFINE_list("methods", sorted(methods.METHODS), "Pruning methods to compare.")
flags.DEFINE_list("schedules", ["recursive", "all_at_once"], "recursive and/or all_at_once.")
flags.DEFINE_integer("seeds", 3, "Seeds per cell (0, 1, ...).")
flags.DEFINE_integer("train_examples", None, "A subset of MNIST's training set (all by default).")
flags.DEFINE_float("epoch_scale", 1.0, "Multiplies the baseline and plan epochs (a smaller budget: < 1).")
flags.DEFINE_enum("widths", "share", ["share", "posterior"], "How the budget sets each group's width "
                  "(RecursivePruning's widths); 'posterior' runs and tables are kept apart from 'share' ones.")
flags.DEFINE_float("rbp_max_noise_scale", 3.0, "RBP's noise scale at a stage's end (its ramp's top; the "
                   "peers run at 1), a knob of RBP's collapse.")
flags.DEFINE_float("prior_keep_prob", recipes.Recipe.prior_keep_prob, "pi_0 of RBP's prior.")
flags.DEFINE_float("logit_scale", recipes.Recipe.logit_scale, "How many times faster than the weights every "
                   "method's noise parameters (RBP's logits) move.")
flags.DEFINE_float("finetune_learning_rate", recipes.Recipe.finetune_learning_rate, "Adam's learning rate in "
                   "the fine-tune after the last stage.")
flags.DEFINE_float("distillation_weight", 0.0, "Above 0, every run also learns from its unpruned baseline "
                   f"(keras_rbp.distilled, temperature {recipes.Recipe.distillation_temperature:g}).")
# Runs with these knobs away from their defaults are kept apart in the run
# cache and the table names (`_knobs`).
flags.DEFINE_bool("table_only", False, "Rebuild the table from the runs file without running anything.")
flags.DEFINE_list("tune_models", [], "Models whose kl_weights are chosen by the validation error first: "
                  "each method's and schedule's default times each --tune_factors, at the smallest MAC "
                  "target, seed 0 (every run holds out the last tenth of its training images).")
flags.DEFINE_list("tune_factors", ["1", "1/3", "3"], "The kl_weights --tune_models tries, as multiples of "
                  "each default (the first wins a tie).")

# The MAC budgets, in keras_rbp's count: the published points to beat.
MAC_TARGETS = {
    "lenet_300_100": [published_macs("lenet_300_100", "VIBNet"), published_macs("lenet_300_100", "L0")],
    "lenet5_caffe": [100_000, published_macs("lenet5_caffe", "BC-GHS")],
}
results_io.define_models(MAC_TARGETS)
# Each method's strength. Under a MAC target the budget decides how many
# channels go; the penalty shapes which. The defaults: the first values that
# pruned LeNet-300-100 in a short plan (RBP's: the documented defaults);
# --tune_models chooses among them times --tune_factors on a validation split.
# Magnitude has no penalty: its weight is unused.
KL_WEIGHTS = {
    "lenet_300_100": {"rbp": 10.0, "rbp_relaxed": 10.0, "sbp": 100.0, "vib": 10.0, "l0": 100.0, "magnitude": 1.0},
    "lenet5_caffe": {"rbp": 60.0, "rbp_relaxed": 60.0, "sbp": 600.0, "vib": 60.0, "l0": 600.0, "magnitude": 1.0},
}
# RBP's noise-scale ramp is its own; the peers run as published (scale 1),
# and magnitude has no noise.
MAX_NOISE_SCALE = {"rbp": 3.0, "rbp_relaxed": 3.0, "sbp": 1.0, "vib": 1.0, "l0": 1.0, "magnitude": 1.0}
WIDTHS_TEXT = {
    "share": "each group keeps its share of the budget (about the same fraction of every layer)",
    "posterior": "each group keeps at most what its posterior keeps (pi >= 0.5; magnitude: its share) and at "
                 "most the fraction of its channels that fits, alike for the groups of a stage; the later "
                 "stages get the rest, and the last stage fills what remains; what the common fraction "
                 "leaves goes a channel at a time to the groups whose next channel's keep logit is highest",
}


for _model, _targets in MAC_TARGETS.items():
    flags.DEFINE_list(f"{_model}_targets", [str(t) for t in _targets], f"MAC targets of {_model}.")
    flags.DEFINE_integer(f"{_model}_pretrain_epochs", None, f"The epochs of {_model}'s baseline (default: "
                         "paper_table's times --epoch_scale; baseline_recipes chooses them on validation).")


def _plan_epochs(model):
    """The default recursive plan's length, given to every cell."""
    budget = BUDGETS[model]
    groups = 3 if model == "lenet_300_100" else 4
    return FLAGS.epoch_scale * (groups * budget["epochs_per_stage"] + budget["finetune_epochs"])


def _pretrain_epochs(model):
    scaled = max(1, round(BUDGETS[model]["pretrain_epochs"] * FLAGS.epoch_scale))
    return FLAGS[f"{model}_pretrain_epochs"].value or scaled


def _recipe(model, method, schedule, target, seed, kl_weight):
    budget = dict(BUDGETS[model], pretrain_epochs=_pretrain_epochs(model))
    return recipes.Recipe(
        model=model, dataset="mnist", data_dir=FLAGS.data_dir, seed=seed, train_examples=FLAGS.train_examples,
        baseline_dir=FLAGS.baseline_dir or os.path.join(FLAGS.output_dir, BASELINES_FOLDER),
        validation_split=VALIDATION_SPLIT, method=method, kl_weight=kl_weight,
        max_noise_scale=_max_noise_scale(method), prior_keep_prob=FLAGS.prior_keep_prob,
        logit_scale=FLAGS.logit_scale, finetune_learning_rate=FLAGS.finetune_learning_rate,
        distillation_weight=FLAGS.distillation_weight,
        groups_per_stage=1 if schedule == "recursive" else 0, target_macs=target,
        plan_epochs=_plan_epochs(model), widths=FLAGS.widths, **{k: v for k, v in budget.items() if k != "quantize"},
    )


def _max_noise_scale(method):
    return FLAGS.rbp_max_noise_scale if method in ("rbp", "rbp_relaxed") else MAX_NOISE_SCALE[method]


def _knobs():
    """The key suffix of the knobs set away from their defaults."""
    knobs = {"rbp_max_noise_scale": "noise", "prior_keep_prob": "prior", "distillation_weight": "distill",
             "logit_scale": "logit", "finetune_learning_rate": "ft"}
    return "".join(f"/{short}{FLAGS[flag].value:g}" for flag, short in knobs.items()
                   if FLAGS[flag].value != FLAGS[flag].default)


def _distillation_text():
    if not FLAGS.distillation_weight:
        return "none"
    return f"weight {FLAGS.distillation_weight:g}, temperature {recipes.Recipe.distillation_temperature:g}"


def _run(model, method, schedule, target, seed, kl_weight):
    results = recipes.run(_recipe(model, method, schedule, target, seed, kl_weight), verbose=0)
    totals = results["report"]["totals"]
    run = {
        "architecture": results["report"]["architecture_after"],
        "baseline_error": 100 * results["baseline_error"],
        "error": 100 * results["final_error"],
        "macs": totals["macs_after"],
        "params": totals["params_after"],
        "pruning_epochs": results["epochs"]["pruning"],
        "seconds": sum(results["seconds"].values()),
        "validation_error": 100 * results["validation_error"],
        # Each stage's channels its noise left undecided when it ended (a
        # Dirac-like noise's; the peers' never collapse), in %.
        "undecided": [100 * end["undecided"] / end["channels"] for end in results["stage_ends"]
                      if end["channels"]],
    }
    print(f"{model} {method} {schedule} target {target:,}: seed {seed}, kl_weight {kl_weight:g}: "
          f"{run['architecture']}, validation error {run['validation_error']:.2f} %, test error "
          f"{run['error']:.2f} %, {run['macs']:,} MACs, {run['seconds']:.0f} s", flush=True)
    return run


def _key(model, method, schedule, target, seed, kl_weight):
    return (f"{model}/{method}/{schedule}/{target}/{seed}/x{FLAGS.epoch_scale:g}/{FLAGS.train_examples}/"
            f"pre{_pretrain_epochs(model)}/kl{kl_weight:g}" + ("" if FLAGS.widths == "share" else f"/{FLAGS.widths}")
            + _knobs())


def _tune_factors():
    """--tune_factors as numbers ("1/3" is a third)."""
    return [float(fractions.Fraction(factor)) for factor in FLAGS.tune_factors]


def _kl_weight(cache, model, method, schedule):
    """(the cell's kl_weight, the validation error % of each kl_weight
    tried): the default, or for --tune_models the one of least validation
    error; (None, trials) while trials are missing (--table_only)."""
    default = KL_WEIGHTS[model][method]
    if model not in FLAGS.tune_models or methods.get(method).ranks_by_weights:
        return default, {}
    target = min(map(int, FLAGS[f"{model}_targets"].value))
    trials = {}
    factors = _tune_factors()
    for kl_weight in (default * factor for factor in factors):
        key = _key(model, method, schedule, target, 0, kl_weight)
        if not FLAGS.table_only:
            cache.get_or_run(key, lambda: _run(model, method, schedule, target, 0, kl_weight))
        if key in cache.runs:
            trials[f"{kl_weight:g}"] = cache.runs[key]["result"]["validation_error"]
    if len(trials) < len(factors):
        return None, trials
    return float(min(trials, key=trials.get)), trials


def _cells():
    for model in FLAGS.models:
        for target in map(int, FLAGS[f"{model}_targets"].value):
            for method in FLAGS.methods:
                for schedule in FLAGS.schedules:
                    yield model, method, schedule, target


def _row(cell, kl_weight, trials, entries):
    """A finished cell's row; `entries` are its seeds' cached runs."""
    model, method, schedule, target = cell
    runs = [entry["result"] for entry in entries]
    row = {"model": model, "method": method, "schedule": schedule, "target_macs": target,
           "kl_weight": kl_weight, "kl_weight_chosen_by": "validation" if trials else "default",
           "validation_error_by_kl_weight": trials, "seeds": len(runs), "runs": runs,
           "cpus": sorted({entry["provenance"]["machine"]["cpu"] for entry in entries})}
    for key in ("error", "macs", "baseline_error"):
        row[key], row[key + "_std"] = results_io.mean_std([run[key] for run in runs])
    return row


def _markdown(rows, provenance):
    header = ["model", "MAC target", "method", "schedule", "kl_weight", "test error % (mean ± std)",
              "MACs (mean ± std)", "architectures (each seed)", "pruning epochs", "unpruned error % (each seed)",
              "undecided at stage ends % (seed 0)", "CPU"]
    lines = [[row["model"], f"{row['target_macs']:,}", row["method"], row["schedule"],
              f"{row['kl_weight']:g}" + (" (validation)" if row["validation_error_by_kl_weight"] else ""),
              f"{row['error']:.2f} ± {row['error_std']:.2f}", f"{row['macs']:,.0f} ± {row['macs_std']:,.0f}",
              ", ".join(run["architecture"] for run in row["runs"]),
              ", ".join(str(run["pruning_epochs"]) for run in row["runs"]),
              ", ".join(f"{run['baseline_error']:.2f}" for run in row["runs"]),
              ", ".join(f"{value:.0f}" for value in row["runs"][0].get("undecided", [])), ", ".join(row["cpus"])]
             for row in rows]
    published = [[model, "", name, "published", "", f"{error:.2f}", f"{macs(model, arch):,}", arch, "", "", "", ""]
                 for model in dict.fromkeys(row["model"] for row in rows) for name, arch, error, _, _ in PUBLISHED[model]]
    return (
        f"{results_io.title('Methods at equal MACs and epochs', provenance)}\n\n"
        f"MNIST, {FLAGS.train_examples or 'all 60,000'} training images, paper_table's budgets with epochs x "
        f"{FLAGS.epoch_scale:g} (baselines: "
        + ", ".join(f"{model} {_pretrain_epochs(model)} epochs" for model in FLAGS.models)
        + "); every cell's plan (stages and fine-tune) has the same length, and every "
        "method of a seed starts from the same baseline weights, those of --baseline_dir (a baseline "
        "trained again on another CPU differs: each row gives its seeds' unpruned errors and the CPU of its "
        f"runs). Widths: {WIDTHS_TEXT[FLAGS.widths]}. RBP's noise scale rises to {FLAGS.rbp_max_noise_scale:g} "
        f"in a stage, its prior keep probability is {FLAGS.prior_keep_prob:g}; the noise parameters move "
        f"{FLAGS.logit_scale:g} times faster than the weights; the fine-tune's learning rate is "
        f"{FLAGS.finetune_learning_rate:g}. Distillation from the unpruned "
        f"baseline: {_distillation_text()}. "
        f"kl_weight: the defaults {KL_WEIGHTS}, or "
        f"for {', '.join(FLAGS.tune_models) or 'no model'} chosen among the default times "
        f"{', '.join(FLAGS.tune_factors)} by the validation error (seed 0, the smallest MAC "
        "target; the JSON gives each trial). Every run trains on the first "
        f"{1 - VALIDATION_SPLIT:.0%} of the training images and holds out the rest, its validation split.\n\n"
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


def _table_name():
    """method_comparison, or for a reduced budget method_comparison_x<epoch
    scale>_<training images>: each budget has its own table; with
    --widths posterior, its name ends in _posterior."""
    name = "method_comparison"
    if FLAGS.epoch_scale != 1 or FLAGS.train_examples is not None:
        name += f"_x{FLAGS.epoch_scale:g}_{FLAGS.train_examples or 'all'}"
    return name + ("" if FLAGS.widths == "share" else f"_{FLAGS.widths}") + _knobs().replace("/", "_")


def main(argv):
    del argv
    cache = results_io.RunCache(os.path.join(FLAGS.output_dir, "method_comparison_runs.json"))
    rows = []
    for cell in _cells():
        kl_weight, trials = _kl_weight(cache, *cell[:3])
        if kl_weight is None:
            continue
        keys = [_key(*cell, seed, kl_weight) for seed in range(FLAGS.seeds)]
        if not FLAGS.table_only:
            for seed, key in enumerate(keys):
                cache.get_or_run(key, lambda: _run(*cell, seed, kl_weight))
        if all(key in cache.runs for key in keys):
            rows.append(_row(cell, kl_weight, trials, [cache.runs[key] for key in keys]))
    provenance = results_io.provenance()
    result = {"benchmark": "method_comparison", **provenance, "seeds": FLAGS.seeds,
              "epoch_scale": FLAGS.epoch_scale, "train_examples": FLAGS.train_examples,
              "pretrain_epochs": {model: _pretrain_epochs(model) for model in FLAGS.models},
              "widths": FLAGS.widths, "tune_factors": FLAGS.tune_factors, "kl_weights": KL_WEIGHTS,
              "max_noise_scale": {**MAX_NOISE_SCALE, "rbp": _max_noise_scale("rbp"),
                                  "rbp_relaxed": _max_noise_scale("rbp_relaxed")},
              "prior_keep_prob": FLAGS.prior_keep_prob, "logit_scale": FLAGS.logit_scale,
              "finetune_learning_rate": FLAGS.finetune_learning_rate,
              "distillation_weight": FLAGS.distillation_weight,
              "rows": rows}
    markdown = _markdown(rows, provenance)
    paths = results_io.write_results(FLAGS.output_dir, _table_name(), result, markdown)
    if rows:
        paths.append(os.path.join(FLAGS.output_dir, _table_name() + ".png"))
        _plot(rows, paths[-1])
    print("\n".join(paths))
    print(markdown)


if __name__ == "__main__":
    app.run(main)
