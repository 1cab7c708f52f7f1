"""Flags and main() shared by the examples: each example names its model,
its dataset and its default budget; the flags can change every setting."""

import dataclasses
import json
import os
import sys

from absl import app, flags

from keras_rbp import pipeline
from keras_rbp.datasets import DATA_DIR_ENV, DatasetNotFoundError

FLAGS = flags.FLAGS


def define_flags(**defaults):
    """Defines one flag per `pipeline.Recipe` field, with these defaults."""
    for field in dataclasses.fields(pipeline.Recipe):
        if field.name in ("model", "dataset", "quantize"):
            continue
        default = defaults.get(field.name, field.default)
        help_text = f"Recipe.{field.name}"
        if field.name == "data_dir":
            help_text = f"folder holding the dataset's .npz file (else ${DATA_DIR_ENV}, else download)"
        elif field.name == "output_dir":
            help_text = "folder for the exported SavedModel, TFLite files and results.json"
        elif field.name in ("target_macs", "target_params"):
            unit = field.name.split("_")[1]
            help_text = (f"prune to this many {unit} (MACs: multiply-accumulates per example), "
                         f"or to this fraction of the baseline's {unit} if below 1")
        elif field.name == "round_to":
            help_text = "with a target, keep channel counts that are multiples of this"
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
        values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(pipeline.Recipe)
                  if f.name not in ("model", "dataset")}
        values["quantize"] = tuple(values["quantize"])
        recipe = pipeline.Recipe(model=model, dataset=dataset, **values)
        try:
            results = pipeline.run(recipe)
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
