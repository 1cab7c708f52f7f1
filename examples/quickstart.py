"""The whole keras_rbp path in a few minutes: train LeNet-5-Caffe on MNIST,
prune it to a MAC budget with the recursive plan, shrink it, export and check
its SavedModel and TFLite files in LiteRT, and report (the README's main
job; `benchmarks/paper_table.py` is the full paper reproduction).

    python examples/quickstart.py --data_dir ../shared/data --output_dir out/quickstart
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: no C++ log lines

import sys  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_rbp as rbp  # noqa: E402
from keras_rbp._keras import keras  # noqa: E402
from keras_rbp.datasets import DATA_DIR_ENV, DatasetNotFoundError  # noqa: E402

flags.DEFINE_string("data_dir", None, f"folder holding mnist.npz (else ${DATA_DIR_ENV}, else download)")
flags.DEFINE_string("output_dir", "out/quickstart", "the folder prune_and_export writes")
flags.DEFINE_integer("train_examples", 20000, "train on the first this many MNIST training images")
flags.DEFINE_integer("validation_examples", 2000, "of which the last this many are held out for validation")
flags.DEFINE_integer("pretrain_epochs", 2, "epochs that train the unpruned baseline")
flags.DEFINE_float("target_macs", 150000, "the MAC budget (multiply-accumulates per example), or a fraction")
flags.DEFINE_float("plan_epochs", 4, "the length of the whole pruning plan, stages and fine-tune, in epochs")
flags.DEFINE_float("kl_weight", 60.0, "how hard pruning pushes (60 suits LeNet-5-Caffe, see the README)")
flags.DEFINE_integer("batch_size", 64, "images a training step")
flags.DEFINE_integer("seed", 0, "seed of the weights, the data order and the noise")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    try:
        (x_train, y_train), (x_test, y_test) = rbp.datasets.load_mnist(FLAGS.data_dir)
    except DatasetNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    x_train, y_train = x_train[: FLAGS.train_examples], y_train[: FLAGS.train_examples]
    held = FLAGS.validation_examples
    train, validation = (x_train[:-held], y_train[:-held]), (x_train[-held:], y_train[-held:])

    keras.utils.set_random_seed(FLAGS.seed)
    model = rbp.models.lenet5_caffe()
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    print(f"training LeNet-5-Caffe on {len(train[0]):,} MNIST images, {FLAGS.pretrain_epochs} epochs")
    model.fit(*train, batch_size=FLAGS.batch_size, epochs=FLAGS.pretrain_epochs, validation_data=validation,
              verbose=2)

    print(f"pruning to {FLAGS.target_macs:,g} MACs with a {FLAGS.plan_epochs:g}-epoch recursive plan")
    target = int(FLAGS.target_macs) if FLAGS.target_macs >= 1 else FLAGS.target_macs
    result = rbp.prune_and_export(
        model, train, validation, output_dir=FLAGS.output_dir, overwrite=True, target_macs=target,
        plan_epochs=FLAGS.plan_epochs, kl_weight=FLAGS.kl_weight, cost_aware=True, flatten_features=True,
        batch_size=FLAGS.batch_size, quantize=["int8"], seed=FLAGS.seed,
    )
    errors = [np.mean(np.argmax(m.predict(x_test, batch_size=1000, verbose=0), -1) != y_test) for m in
              (model, result.small)]
    totals, summary = result.report.totals, result.summary
    print(
        f"LeNet-5-Caffe on MNIST: test error {100 * errors[0]:.2f} % -> {100 * errors[1]:.2f} %, "
        f"{result.report.architecture_before} -> {result.report.architecture_after}, "
        f"MACs {totals['macs_before']:,} -> {totals['macs_after']:,} ({totals['macs_reduction']:.1f}x fewer), "
        f"LiteRT {summary['speedup']['single_thread']:.1f}x faster"
    )
    return 0


if __name__ == "__main__":
    app.run(main)
