"""How much `keras_rbp.shrink` removes from small KerasHub models.

Builds each model of `benchmarks.hub_models` (random weights, small
configurations, offline), prunes it, freezes every group with a random mask
that keeps --keep of its channels, and shrinks it, as
`benchmarks.applications` does for Keras Applications. A model that prune
or shrink refuses is recorded with its error. Keras 3 only (KerasHub needs
it):

    python -m benchmarks.hub

Writes hub_models.json and .md to --output_dir.
"""

from absl import app, flags, logging
import keras

from benchmarks import hub_models, results_io
from benchmarks.measure import measure_shrink

FLAGS = flags.FLAGS
results_io.define_models(hub_models.HUB_MODELS, text="benchmarks.hub_models names to shrink")
flags.DEFINE_float("keep", 0.7, "Fraction of each group's channels its random mask keeps.")
results_io.define_output_dir()


def main(argv):
    del argv  # Unused.
    provenance = results_io.provenance()
    results, failures = {}, {}
    for name in FLAGS.models:
        try:
            model = hub_models.build(name)
            results[name] = measure_shrink(model, hub_models.example_inputs(name), FLAGS.keep)
            logging.info("%s: %s", name, results[name])
        except Exception as error:  # a failure is a result of this benchmark
            failures[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            logging.error("%s: %s", name, failures[name])
        keras.backend.clear_session()
    result = {"benchmark": "hub", **provenance, "keras_hub": hub_models.keras_hub.__version__,
              "keep": FLAGS.keep, "models": results, "failures": failures}
    exact = [name for name, r in results.items()
             if r["max_abs_output_difference"] <= 1e-4 * max(1.0, r["output_scale"])]
    smaller = [name for name in exact if results[name]["params_ratio"] > 1.0]
    rows = [
        [
            name,
            hub_models.FAMILY[name],
            f"{r['groups']} ({r['coupled_groups']})",
            f"{r['params_ratio']:.2f}x",
            "-" if r["macs_ratio"] is None else f"{r['macs_ratio']:.2f}x",
            f"{r['channels_masked_but_kept']} of {r['channels_masked']}",
            f"{r['max_abs_output_difference'] / max(1.0, r['output_scale']):.1e}",
            f"{r['prune_seconds']:.1f}",
            f"{r['shrink_seconds']:.1f}",
        ]
        for name, r in results.items()
    ]
    rows += [[name, hub_models.FAMILY[name], "-", "-", "-", "-", failure, "-", "-"]
             for name, failure in failures.items()]
    markdown = (
        f"{results_io.title(f'shrink on small KerasHub {hub_models.keras_hub.__version__} models', provenance)}\n\n"
        f"Random weights, random masks keeping {100 * FLAGS.keep:.0f} % of each group's channels. "
        f"{len(results)} of {len(FLAGS.models)} prune and shrink; {len(exact)} match the pruned model "
        f"(relative difference under 1e-4), {len(smaller)} of them with fewer parameters. Groups: all "
        "(coupled). MACs ratio: - for a model built for any input size. Output difference: largest "
        "absolute difference from the pruned model, over max(1, largest output).\n\n"
        + results_io.markdown_table(
            ["model", "family", "groups", "params ratio", "MACs ratio", "masked channels kept",
             "output difference", "prune s", "shrink s"],
            rows,
        )
    )
    for path in results_io.write_results(FLAGS.output_dir, "hub_models", result, markdown):
        print(path)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
