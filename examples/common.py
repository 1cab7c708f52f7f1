"""Flags and main() shared by the examples: each example names its model,
its dataset and its default budget; the flags can change every setting."""

import dataclasses
import json
import os
import sys

# An entry point's setting, before TensorFlow is imported: no C++ log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

from keras_rbp import recipes
from keras_rbp.datasets import DATA_DIR_ENV, DatasetNotFoundError

FLAGS = flags.FLAGS


HELP = {
    "data_dir": f"folder holding the dataset's .npz file (else ${DATA_DIR_ENV}, else download)",
    "output_dir": "folder for the exported SavedModel, TFLite files and results.json",
    "seed": "seed of the data order, the weights' initialisation and the pruning noise",
    "train_examples": "train on the first this many training images (default: all)",
    "test_examples": "measure the test error on the first this many test images (default: all)",
    "validation_split": "fraction of the training images held out to show validation accuracy",
    "batch_size": "images per training step",
    "learning_rate": "Adam's learning rate (the baseline's decays to a tenth of it)",
    "pretrain_epochs": "epochs that train the unpruned baseline",
    "pretrain_weight_decay": "the baseline's decoupled weight decay (AdamW); 0 trains it with Adam",
    "baseline_dir": "keep the trained baseline in this folder and reuse it in later runs with the "
                    "same model, data, seed and baseline recipe",
    "method": "the pruning noise: rbp (Recursive Bayesian Pruning), rbp_relaxed (its gates with "
              "relaxed-Bernoulli samples), or for comparison sbp (Structured Bayesian Pruning), vib "
              "(VIBNet), l0 (L0 hard-concrete gates), magnitude (weight norms; needs a target)",
    "kl_weight": "how hard pruning pushes: larger removes more channels",
    "prior_keep_prob": "the prior probability that a channel is kept (pi_0)",
    "initial_keep_prob": "every channel's keep probability when pruning starts",
    "logit_scale": "how many times faster than the weights the noise parameters (the logits) move",
    "input_features": "also prune the input pixels (the small model then takes only the kept ones)",
    "flatten_features": "also prune the features after each Flatten layer",
    "cost_aware": "price each channel by the MACs it carries, so that expensive channels go first",
    "distillation_weight": "weight of the distillation loss from the unpruned model (0: none)",
    "distillation_temperature": "softmax temperature of the distillation loss",
    "epochs_per_stage": "the most epochs each stage trains before its channels are decided",
    "finetune_epochs": "epochs that train the pruned model after the last stage",
    "groups_per_stage": "layers pruned together in one stage; 0 prunes all of them at once",
    "max_noise_scale": "the pruning noise grows to this many times its standard deviation in a stage",
    "finetune_learning_rate": "the learning rate of the fine-tune",
    "target_macs": "prune to this many MACs (multiply-accumulates per example), or to this "
                   "fraction of the baseline's if below 1",
    "target_params": "prune to this many parameters, or to this fraction of the baseline's if below 1",
    "target_latency_ms": "prune to this single-thread LiteRT latency per example on this machine, "
                         "in milliseconds (a per-layer table is timed first)",
    "round_to": "with a target, keep channel counts that are multiples of this",
    "widths": "with a target: 'share' (every layer keeps about the same fraction) or 'posterior' "
              "(a layer keeps at most what its posterior keeps; the other layers get the rest)",
    "plan_epochs": "the length of the whole pruning plan in epochs (may be fractional); its "
                   "stages then end at any step; unset: epochs_per_stage a stage and finetune_epochs",
}


def define_flags(**defaults):
    """Defines one flag per `recipes.Recipe` field, with these defaults."""
    for field in dataclasses.fields(recipes.Recipe):
        if field.name in ("model", "dataset", "quantize"):
            continue
        default = defaults.get(field.name, field.default)
        help_text = HELP[field.name]
        if isinstance(field.default, bool):
            flags.DEFINE_boolean(field.name, default, help_text)
        elif field.type is float or isinstance(field.default, float):
            flags.DEFINE_float(field.name, default, help_text)
        elif field.type is int or isinstance(field.default, int):
            flags.DEFINE_integer(field.name, default, help_text)
        else:
            flags.DEFINE_string(field.name, default, help_text)
    flags.DEFINE_list("quantize", list(defaults.get("quantize", [])),
                      "quantised TFLite files to write: dynamic_range, int8")


def main(model, dataset):
    """Runs the recipe the flags describe and writes results.json."""

    def run(argv):
        del argv
        values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(recipes.Recipe)
                  if f.name not in ("model", "dataset")}
        values["quantize"] = tuple(values["quantize"])
        recipe = recipes.Recipe(model=model, dataset=dataset, **values)
        try:
            results = recipes.run(recipe)
        except DatasetNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        line = (
            f"{model}: baseline error {100 * results['baseline_error']:.2f} %, final error "
            f"{100 * results['final_error']:.2f} %, architecture "
            f"{results['report']['architecture_before']} -> {results['report']['architecture_after']}"
        )
        print(line)
        if recipe.output_dir:
            path = os.path.join(recipe.output_dir, "results.json")
            with open(path, "w", encoding="utf-8") as file:
                json.dump(results, file, indent=2, default=str)
            print(f"wrote {recipe.output_dir}")
        return 0

    app.run(run)
