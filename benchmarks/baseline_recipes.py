"""The unpruned baselines' recipes, chosen on a validation split: every
candidate (epochs, peak learning rate, weight decay) trains LeNet-300-100 or
LeNet-5-Caffe at seed 0 on the first 90 % of MNIST's training images; the one
of least error on the other 10 % is chosen (the documented recipe, listed
first, wins a tie) and trained over every seed for its test error. The test
set never chooses.

Every run is kept in baseline_recipes_runs.json, so a stopped run resumes;
the trained weights go to --baseline_dir, which method_comparison shares, so
its runs start from the same baselines.

    python -m benchmarks.baseline_recipes --data_dir ../shared/data
"""

import os

from absl import app, flags

from benchmarks import results_io
from benchmarks.literature import BASELINES_FOLDER, BUDGETS, VALIDATION_SPLIT
from keras_rbp import recipes

FLAGS = flags.FLAGS
results_io.define_data_dir()
results_io.define_output_dir("baseline_recipes_runs.json and baseline_recipes.json and .md")
flags.DEFINE_string("baseline_dir", None, "Where the trained baselines are kept and reused "
                    "(default: method_comparison_baselines under --output_dir).")
results_io.define_models(BUDGETS)
flags.DEFINE_integer("seeds", 3, "Seeds of the chosen recipe (0, 1, ...).")

# (pretrain_epochs, learning_rate, pretrain_weight_decay): the documented
# recipe (literature.BUDGETS, Adam 1e-3 with a cosine decay) first, then half
# and twice its epochs, a 3x learning rate, and AdamW's decoupled weight decay.
CANDIDATES = {
    model: [(epochs, 1e-3, 0.0), (epochs // 2, 1e-3, 0.0), (2 * epochs, 1e-3, 0.0), (epochs, 3e-3, 0.0),
            (epochs, 1e-3, 0.05)]
    for model, epochs in ((model, budget["pretrain_epochs"]) for model, budget in BUDGETS.items())
}


def _run(model, candidate, seed):
    epochs, learning_rate, weight_decay = candidate
    recipe = recipes.Recipe(
        model=model, dataset="mnist", data_dir=FLAGS.data_dir, seed=seed, validation_split=VALIDATION_SPLIT,
        pretrain_epochs=epochs, learning_rate=learning_rate, pretrain_weight_decay=weight_decay,
        input_features=BUDGETS[model].get("input_features", False),
        baseline_dir=FLAGS.baseline_dir or os.path.join(FLAGS.output_dir, BASELINES_FOLDER),
    )
    results = recipes.run_baseline(recipe, verbose=0)
    run = {"validation_error": 100 * results["validation_error"], "error": 100 * results["baseline_error"],
           "seconds": results["seconds"]["pretrain"]}
    print(f"{model} {_name(candidate)}, seed {seed}: validation error {run['validation_error']:.2f} %, "
          f"test error {run['error']:.2f} %, {run['seconds']:.0f} s", flush=True)
    return run


def _name(candidate):
    epochs, learning_rate, weight_decay = candidate
    return f"{epochs} epochs, lr {learning_rate:g}, weight decay {weight_decay:g}"


def _model_result(cache, model):
    def run(candidate, seed):
        key = f"{model}/{candidate[0]}/{candidate[1]:g}/{candidate[2]:g}/{seed}"
        return cache.get_or_run(key, lambda: _run(model, candidate, seed))

    trials = [{"recipe": _name(c), "candidate": c, **run(c, 0)} for c in CANDIDATES[model]]
    chosen = min(trials, key=lambda trial: trial["validation_error"])  # the first of equals
    errors = [run(chosen["candidate"], seed)["error"] for seed in range(FLAGS.seeds)]
    error, error_std = results_io.mean_std(errors)
    return {"model": model, "trials": trials, "chosen": chosen["recipe"], "seeds": FLAGS.seeds,
            "error": error, "error_std": error_std, "errors": errors}


def _markdown(results, provenance):
    lines = []
    for result in results:
        for trial in result["trials"]:
            chosen = trial["recipe"] == result["chosen"]
            lines.append([result["model"], trial["recipe"] + (" (chosen)" if chosen else ""),
                          f"{trial['validation_error']:.2f}",
                          f"{result['error']:.2f} ± {result['error_std']:.2f}" if chosen else ""])
    return (
        f"{results_io.title('Baseline recipes chosen on validation', provenance)}\n\n"
        f"MNIST; every candidate trains at seed 0 on the first {1 - VALIDATION_SPLIT:.0%} of the 60,000 training "
        "images (batch 128, Adam or AdamW, cosine decay to a tenth) and is scored on the rest. The chosen "
        f"recipe's test error: mean ± std over {FLAGS.seeds} seeds. {provenance['machine']['cpu']}, "
        f"{provenance['machine']['cores']} cores.\n\n"
        + results_io.markdown_table(["model", "recipe", "validation error % (seed 0)", "test error %"], lines)
    )


def main(argv):
    del argv
    cache = results_io.RunCache(os.path.join(FLAGS.output_dir, "baseline_recipes_runs.json"))
    results = [_model_result(cache, model) for model in FLAGS.models]
    provenance = results_io.provenance()
    markdown = _markdown(results, provenance)
    paths = results_io.write_results(FLAGS.output_dir, "baseline_recipes",
                                     {"benchmark": "baseline_recipes", **provenance, "models": results}, markdown)
    print("\n".join(paths))
    print(markdown)


if __name__ == "__main__":
    app.run(main)
