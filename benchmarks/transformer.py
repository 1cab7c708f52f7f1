"""A small ViT on MNIST pruned to a MAC target: heads and MLP widths.

Trains `keras_rbp.models.small_vit` (patches of 4x4, --blocks blocks of
--heads heads) on MNIST, then prunes it with the recursive schedule to
--target_macs of its MACs (cost-aware, one group a stage: each block's
attention heads and its MLP width), --seeds seeds. Records, per seed, the
test error before and after, the MACs achieved against the target, the
heads and MLP widths kept, and the float LiteRT speed-up of the shrunk
model over the unpruned one (single thread, this machine).

Run from the repository root:

    python -m benchmarks.transformer --data_dir ../shared/data

Writes transformer.json and .md to --output_dir.
"""

import tempfile
import time

from absl import app, flags

from benchmarks import results_io
from keras_rbp import recipes

FLAGS = flags.FLAGS
results_io.define_data_dir()
results_io.define_output_dir("transformer.json and .md")
flags.DEFINE_integer("seeds", 3, "Seeds (0, 1, ...).")
flags.DEFINE_integer("train_examples", None, "A subset of MNIST's training set; all 60,000 by default.")
flags.DEFINE_float("target_macs", 0.5, "The MAC target, a fraction of the unpruned model's.")
flags.DEFINE_integer("pretrain_epochs", 10, "Epochs of the unpruned model.")
flags.DEFINE_integer("epochs_per_stage", 2, "Epochs of each recursive stage.")
flags.DEFINE_integer("finetune_epochs", 2, "Epochs of fine-tuning after the last stage.")
flags.DEFINE_float("kl_weight", 10.0, "prune's kl_weight.")


def _recipe(seed, output_dir):
    return recipes.Recipe(
        model="small_vit", dataset="mnist", data_dir=FLAGS.data_dir, output_dir=output_dir, seed=seed,
        train_examples=FLAGS.train_examples, pretrain_epochs=FLAGS.pretrain_epochs,
        epochs_per_stage=FLAGS.epochs_per_stage, finetune_epochs=FLAGS.finetune_epochs,
        kl_weight=FLAGS.kl_weight, cost_aware=True, groups_per_stage=1, target_macs=FLAGS.target_macs,
    )


def _run(seed):
    start = time.time()
    with tempfile.TemporaryDirectory() as folder:
        results = recipes.run(_recipe(seed, f"{folder}/export"), verbose=0)
    totals = results["report"]["totals"]
    run = {
        "seed": seed,
        "baseline_error": 100 * results["baseline_error"],
        "error": 100 * results["final_error"],
        "macs_before": totals["macs_before"],
        "macs_after": totals["macs_after"],
        "macs_over_target": totals["macs_after"] / (FLAGS.target_macs * totals["macs_before"]),
        "kept": results["kept"],
        "speedup_single_thread": results["export"]["speedup"]["single_thread"],
        "pruning_epochs": results["epochs"]["pruning"],
        "seconds": time.time() - start,
    }
    print(f"seed {seed}: error {run['baseline_error']:.2f} -> {run['error']:.2f} %, MACs {run['macs_after']:,} "
          f"({run['macs_over_target']:.3f} of the target), kept {run['kept']}, "
          f"LiteRT x{run['speedup_single_thread']:.2f}, {run['seconds']:.0f} s", flush=True)
    return run


def main(argv):
    del argv
    provenance = results_io.provenance()
    runs = [_run(seed) for seed in range(FLAGS.seeds)]
    before = results_io.mean_std([run["baseline_error"] for run in runs])
    after = results_io.mean_std([run["error"] for run in runs])
    settings = {flag: getattr(FLAGS, flag) for flag in (
        "seeds", "train_examples", "target_macs", "pretrain_epochs", "epochs_per_stage", "finetune_epochs",
        "kl_weight")}
    result = {"benchmark": "transformer", **provenance, **settings, "runs": runs,
              "baseline_error_mean": before[0], "baseline_error_std": before[1],
              "error_mean": after[0], "error_std": after[1]}
    table = results_io.markdown_table(
        ["seed", "test error % before", "after", "MACs after", "of the target", "kept (heads, MLP)",
         "LiteRT speed-up"],
        [[run["seed"], f"{run['baseline_error']:.2f}", f"{run['error']:.2f}", f"{run['macs_after']:,}",
          f"{run['macs_over_target']:.3f}", ", ".join(f"{name} {kept}" for name, kept in run["kept"].items()),
          f"{run['speedup_single_thread']:.2f}x"] for run in runs],
    )
    markdown = (
        f"{results_io.title('A small ViT on MNIST pruned to a MAC target', provenance)}\n\n"
        f"`small_vit` (2 blocks of 4 heads, MLP 128, patches 4x4), {FLAGS.pretrain_epochs} epochs, then "
        f"RecursivePruning(target_macs={FLAGS.target_macs:g}, cost-aware, one group a stage, "
        f"{FLAGS.epochs_per_stage} epochs a stage, {FLAGS.finetune_epochs} of fine-tune). Test error: "
        f"{before[0]:.2f} ± {before[1]:.2f} % before, {after[0]:.2f} ± {after[1]:.2f} % after "
        f"(mean ± standard deviation of {FLAGS.seeds} seeds). LiteRT: float32, single thread, "
        f"{provenance['machine']['cpu']}.\n\n" + table
    )
    print("\n".join(results_io.write_results(FLAGS.output_dir, "transformer", result, markdown)))
    print(markdown)


if __name__ == "__main__":
    app.run(main)
