"""How much `keras_rbp.shrink` removes from every Keras Application.

Builds each constructor of `keras.applications` (weights=None, 32x32x3 or
the smallest size it accepts, 10 classes), wraps it with `keras_rbp.prune`
(coupled groups, the default), freezes every group with a random mask that
keeps --keep of its channels, and shrinks it. Records the parameter and MAC
ratios, the groups (coupled ones apart), the channels that a mask removes
but `shrink` keeps, with the reasons its warnings give, the largest output
difference from the pruned model, and the seconds prune and shrink took.

Run from the repository root, under Keras 3 or tf_keras:

    python -m benchmarks.applications
    TF_USE_LEGACY_KERAS=1 python -m benchmarks.applications

Writes applications_<keras mode>.json and .md to --output_dir.
"""

from absl import app, flags, logging
import numpy as np

from benchmarks import results_io
from benchmarks.measure import measure_shrink
from keras_rbp._keras import keras

APPLICATIONS = sorted(name for name in dir(keras.applications) if name[0].isupper())

FLAGS = flags.FLAGS
results_io.define_models(APPLICATIONS, text="keras.applications constructors to shrink")
flags.DEFINE_float("keep", 0.7, "Fraction of each group's channels its random mask keeps.")
results_io.define_output_dir()


def build_application(name, classes=10):
    """(model, input size): `name` at 32x32, or at 75x75 where it needs more."""
    constructor = getattr(keras.applications, name)
    for size in (32, 75):
        try:
            return constructor(weights=None, input_shape=(size, size, 3), classes=classes), size
        except ValueError:
            continue
    raise ValueError(f"{name} builds at neither 32x32 nor 75x75")


def shrink_application(name):
    model, size = build_application(name)
    images = np.random.RandomState(0).rand(2, size, size, 3).astype("float32") * 255
    return {"input_size": size, **measure_shrink(model, images, FLAGS.keep)}


def main(argv):
    del argv  # Unused.
    provenance = results_io.provenance()
    keras_mode = provenance["keras"]
    results, failures = {}, {}
    for name in FLAGS.models:
        try:
            results[name] = shrink_application(name)
            logging.info("%s: %s", name, results[name])
        except Exception as error:  # a failure is a result of this benchmark
            failures[name] = f"{type(error).__name__}: {error}"
            logging.error("%s: %s", name, failures[name])
        keras.backend.clear_session()
    result = {"benchmark": "applications", **provenance, "keep": FLAGS.keep,
              "models": results, "failures": failures}
    rows = [
        [
            name,
            r["input_size"],
            f"{r['groups']} ({r['coupled_groups']})",
            f"{r['params_ratio']:.2f}x",
            f"{r['macs_ratio']:.2f}x",
            f"{r['channels_masked_but_kept']} of {r['channels_masked']}",
            "; ".join(f"{reason} ({count})" for reason, count in r["reasons_kept"].items()) or "-",
            f"{r['max_abs_output_difference'] / max(1.0, r['output_scale']):.1e}",
            f"{r['shrink_seconds']:.1f}",
        ]
        for name, r in results.items()
    ]
    rows += [[name, "-", "-", "-", "-", "-", failure, "-", "-"] for name, failure in failures.items()]
    markdown = (
        f"{results_io.title('shrink on every Keras Application', provenance)}\n\n"
        f"weights=None, 10 classes, random masks keeping {100 * FLAGS.keep:.0f} % of each group's "
        f"channels; {len(results)} of {len(FLAGS.models)} shrink. Groups: all (coupled). Output "
        "difference: largest absolute difference from the pruned model, over max(1, largest "
        "output).\n\n"
        + results_io.markdown_table(
            ["model", "input", "groups", "params ratio", "MACs ratio", "masked channels kept",
             "why kept (warnings)", "output difference", "shrink s"],
            rows,
        )
    )
    for path in results_io.write_results(FLAGS.output_dir, f"applications_{keras_mode}", result, markdown):
        print(path)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
