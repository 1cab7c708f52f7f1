"""A recursive plan of a few epochs on deep networks, end to end.

With the default plan, `RecursivePruning` trains `epochs_per_stage` epochs
a group: 265 epochs for MobileNetV2 (52 groups), 270 for ResNet50 (53).
This benchmark runs each of --models (keras.applications, `weights=None`,
32x32 inputs) through a plan of --plan_epochs epochs, stages of
--groups_per_stage consecutive groups ending at any step, and a MAC target,
on generated images: prune (cost-aware), fit, shrink; it records the plan,
the time, the MACs against the target and that the shrunk model's outputs
equal the pruned model's. Generated data shows the mechanics, not accuracy.

Run from the repository root:

    python -m benchmarks.deep_plans

Writes deep_plans_<keras>.json and .md to --output_dir.
"""

import time

import numpy as np
from absl import app, flags

from benchmarks import results_io
import keras_rbp as rbp
from keras_rbp._keras import keras

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["MobileNetV2", "ResNet50"], "keras.applications constructors.")
flags.DEFINE_float("plan_epochs", 3.0, "The whole plan's length in epochs.")
flags.DEFINE_integer("groups_per_stage", 8, "Consecutive groups visited in one stage.")
flags.DEFINE_float("target_macs", 0.5, "The MAC target, a fraction of the unpruned model's.")
flags.DEFINE_integer("examples", 512, "Generated training images.")
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
results_io.define_output_dir()


class _StageSteps(keras.callbacks.Callback):
    """Records the global step at which each stage starts."""

    def __init__(self):
        super().__init__()
        self.step, self.starts, self._active = 0, [], None

    def on_train_begin(self, logs=None):
        self._groups = rbp.pruning_groups(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        active = tuple(name for name, noise in self._groups.items() if noise.mode == "active")
        if active and active != self._active:
            self.starts.append(self.step)
        self._active = active
        self.step += 1


def _run(name):
    keras.utils.set_random_seed(0)
    size = 32
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)
    rng = np.random.default_rng(0)
    x = rng.random((FLAGS.examples, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 10, FLAGS.examples)
    pruned = rbp.prune(model, dataset_size=len(x), cost_aware=True)
    pruned.compile(keras.optimizers.Adam(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    schedule = rbp.RecursivePruning(plan_epochs=FLAGS.plan_epochs, groups_per_stage=FLAGS.groups_per_stage,
                                    target_macs=FLAGS.target_macs, verbose=0)
    stages = _StageSteps()
    start = time.perf_counter()
    pruned.fit(x, y, batch_size=FLAGS.batch_size, epochs=schedule.total_epochs(pruned),
               callbacks=[schedule, stages], verbose=0)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    small = rbp.shrink(pruned)
    shrink_seconds = time.perf_counter() - start
    totals = rbp.report(model, small).totals
    check = x[:8]
    difference = float(np.max(np.abs(small(check, training=False) - pruned(check, training=False))))
    steps_per_epoch = -(-len(x) // FLAGS.batch_size)
    return {
        "model": name, "input_size": size, "groups": len(rbp.pruning_groups(pruned)),
        "stages": len(schedule.stages(pruned)), "stage_and_finetune_steps": list(schedule.lengths(pruned, steps_per_epoch)),
        "default_plan_epochs": rbp.RecursivePruning().total_epochs(pruned),
        "steps_trained": stages.step, "stage_start_steps": stages.starts, "steps_per_epoch": steps_per_epoch,
        "fit_seconds": fit_seconds, "shrink_seconds": shrink_seconds,
        "macs_before": totals["macs_before"], "macs_after": totals["macs_after"],
        "macs_over_target": totals["macs_after"] / (FLAGS.target_macs * totals["macs_before"]),
        "params_before": totals["params_before"], "params_after": totals["params_after"],
        "max_output_difference": difference,
    }


def main(argv):
    del argv
    provenance = results_io.provenance()
    rows = []
    for name in FLAGS.models:
        rows.append(_run(name))
        print(rows[-1], flush=True)
    result = {"benchmark": "deep_plans", **provenance, "plan_epochs": FLAGS.plan_epochs,
              "groups_per_stage": FLAGS.groups_per_stage, "target_macs": FLAGS.target_macs,
              "examples": FLAGS.examples, "batch_size": FLAGS.batch_size, "rows": rows}
    table = results_io.markdown_table(
        ["model", "groups", "stages", "steps a stage, fine-tune", "steps trained", "default plan (epochs)",
         "fit s", "MACs before", "MACs after", "after / target", "params after / before", "max |shrunk - pruned|"],
        [[r["model"], r["groups"], r["stages"], ", ".join(map(str, r["stage_and_finetune_steps"])),
          r["steps_trained"], r["default_plan_epochs"], f"{r['fit_seconds']:.0f}", f"{r['macs_before']:,}",
          f"{r['macs_after']:,}", f"{r['macs_over_target']:.3f}", f"{r['params_after'] / r['params_before']:.3f}",
          f"{r['max_output_difference']:.1e}"] for r in rows],
    )
    markdown = (
        f"{results_io.title(f'A recursive plan of {FLAGS.plan_epochs:g} epochs on deep networks', provenance)}\n\n"
        f"{FLAGS.examples} generated 32x32 images, batch {FLAGS.batch_size}, stages of {FLAGS.groups_per_stage} "
        f"groups, target_macs={FLAGS.target_macs:g}, cost-aware; the default plan would train 5 epochs a "
        f"group and 5 of fine-tune.\n\n" + table
    )
    paths = results_io.write_results(FLAGS.output_dir, f"deep_plans_{provenance['keras']}", result, markdown)
    print("\n".join(paths))
    print(markdown)


if __name__ == "__main__":
    app.run(main)
