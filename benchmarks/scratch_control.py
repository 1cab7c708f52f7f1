"""How much of a pruned LeNet's error is its small shape's? Each model's
best cell of method_comparison at its MAC target is run again (LeNet-300-100
at 9,560 MACs: VIB all at once, widths from the posterior, kl_weight 30;
LeNet-5-Caffe at 100,000: RBP recursive, the budget's widths, kl_weight
20; from the committed baselines), then its shrunk model is

  * fine-tuned longer: as many epochs again as its baseline and plan had
    together, Adam with a cosine decay from the fine-tune's rate to a tenth;
  * trained from scratch: the same shape (and the same kept input pixels)
    with fresh weights, for as many epochs, Adam with a cosine decay from
    the baseline's rate to a tenth.

Both train on the first 90 % of the training images, as the runs did, and
report the error on the held-out 10 %, the test set and the training images.

    python -m benchmarks.scratch_control --data_dir ../shared/data

Writes scratch_control.json and .md to --output_dir, and keeps each seed's
runs in scratch_control_runs.json.
"""

import os

import numpy as np
from absl import app, flags

from benchmarks import results_io
from benchmarks.literature import BASELINES_FOLDER, BUDGETS, VALIDATION_SPLIT
from keras_rbp import recipes
from keras_rbp._keras import keras

FLAGS = flags.FLAGS
results_io.define_data_dir()
results_io.define_output_dir("scratch_control.json and .md, and scratch_control_runs.json")
flags.DEFINE_integer("seeds", 3, "Seeds (0, 1, ...).")
flags.DEFINE_string("baseline_dir", None, "The trained baselines (default: <output_dir>/method_comparison_baselines).")

# Each model's best cell of method_comparison at the MAC target.
CELLS = {
    "lenet_300_100": dict(method="vib", groups_per_stage=0, widths="posterior", kl_weight=30.0, max_noise_scale=1.0,
                          target_macs=9560, pretrain_epochs=40, plan_epochs=25),
    "lenet5_caffe": dict(method="rbp", groups_per_stage=1, widths="share", kl_weight=20.0, max_noise_scale=3.0,
                         target_macs=100_000, pretrain_epochs=20, plan_epochs=22),
}
results_io.define_models(CELLS)


def _recipe(model, seed):
    budget = {key: value for key, value in BUDGETS[model].items() if key != "quantize"}
    return recipes.Recipe(
        model=model, dataset="mnist", data_dir=FLAGS.data_dir, seed=seed, validation_split=VALIDATION_SPLIT,
        baseline_dir=FLAGS.baseline_dir or os.path.join(FLAGS.output_dir, BASELINES_FOLDER),
        **{**budget, **CELLS[model]},
    )


def _errors(model, splits):
    """Error % of `model` on each (x, y) of `splits`."""
    return {name: 100 * float(np.mean(np.argmax(model.predict(x, verbose=0), -1) != y))
            for name, (x, y) in splits.items()}


def _train(model, splits, learning_rate, epochs):
    x, y = splits["train"]
    steps = epochs * int(np.ceil(len(x) / recipes.Recipe.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.1)
    model.compile(keras.optimizers.Adam(schedule), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=recipes.Recipe.batch_size, epochs=epochs, verbose=0)
    return _errors(model, splits)


def _run(model, seed):
    recipe = _recipe(model, seed)
    models = {}
    results = recipes.run(recipe, verbose=0, models=models)
    (x_train, y_train), (x_test, y_test) = recipes.load_data(recipe)
    if recipe.input_features:
        x_train, x_test = x_train[:, results["kept_features"]], x_test[:, results["kept_features"]]
    fit_size = int(len(x_train) * (1 - VALIDATION_SPLIT))
    splits = {"train": (x_train[:fit_size], y_train[:fit_size]),
              "validation": (x_train[fit_size:], y_train[fit_size:]), "test": (x_test, y_test)}
    epochs = recipe.pretrain_epochs + recipe.plan_epochs
    small = models["small"]
    run = {"architecture": results["report"]["architecture_after"], "macs": results["report"]["totals"]["macs_after"],
           "baseline_error": 100 * results["baseline_error"], "extra_epochs": epochs,
           "pruned": _errors(small, splits)}
    keras.utils.set_random_seed(seed)
    scratch = keras.models.clone_model(small)  # the same layers, freshly initialised
    run["longer_finetune"] = _train(small, splits, recipe.finetune_learning_rate, epochs)
    run["scratch"] = _train(scratch, splits, recipe.learning_rate, epochs)
    print(f"{model} seed {seed}: {run['architecture']}, test error % pruned {run['pruned']['test']:.2f}, "
          f"fine-tuned {epochs} epochs more {run['longer_finetune']['test']:.2f}, from scratch "
          f"{run['scratch']['test']:.2f}", flush=True)
    return run


def _row(model, runs):
    row = {"model": model, **CELLS[model], "seeds": len(runs), "runs": runs}
    for variant in VARIANTS:
        for split in SPLITS:
            row[f"{variant}_{split}"] = results_io.mean_std([run[variant][split] for run in runs])
    return row


VARIANTS = {"pruned": "as pruned", "longer_finetune": "fine-tuned longer", "scratch": "from scratch"}
SPLITS = ("test", "validation", "train")


def _markdown(rows, provenance):
    lines = []
    for row in rows:
        cell = f"{row['method']}, {row['widths']} widths, kl_weight {row['kl_weight']:g}"
        for variant, name in VARIANTS.items():
            added = "" if variant == "pruned" else row["runs"][0]["extra_epochs"]
            errors = [f"{row[f'{variant}_{split}'][0]:.2f} ± {row[f'{variant}_{split}'][1]:.2f}" for split in SPLITS]
            lines.append([row["model"], f"{row['target_macs']:,}", cell,
                          ", ".join(run["architecture"] for run in row["runs"]), name, added, *errors])
    header = ["model", "MAC target", "cell", "architectures (each seed)", "model", "added epochs",
              "test error %", "validation error %", "training error %"]
    return (f"{results_io.title('Pruned LeNets against their shapes fine-tuned longer and trained from scratch', provenance)}"
            "\n\nMNIST, all 60,000 training images (the last 10 % held out), the committed baselines; error %, "
            f"mean ± standard deviation over {FLAGS.seeds} seeds.\n\n" + results_io.markdown_table(header, lines))


def main(argv):
    del argv
    cache = results_io.RunCache(os.path.join(FLAGS.output_dir, "scratch_control_runs.json"))
    rows = [_row(model, [cache.get_or_run(f"{model}/{seed}", lambda: _run(model, seed)) for seed in range(FLAGS.seeds)])
            for model in FLAGS.models]
    provenance = results_io.provenance()
    result = {"benchmark": "scratch_control", **provenance, "seeds": FLAGS.seeds, "rows": rows}
    markdown = _markdown(rows, provenance)
    print("\n".join(results_io.write_results(FLAGS.output_dir, "scratch_control", result, markdown)))
    print(markdown)


if __name__ == "__main__":
    app.run(main)
