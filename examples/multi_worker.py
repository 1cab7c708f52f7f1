"""LeNet-300-100 on MNIST pruned on several machines with
`tf.distribute.MultiWorkerMirroredStrategy`, under tf_keras.

Every worker runs this same command with its own TF_CONFIG. Worker 0 is the
chief: only it writes the TensorBoard summaries, the checkpoint of the
pruned model and the export. `--work_dir` must be a folder that every worker
reads and writes (a shared disk or a bucket): it holds the trained baseline
and the `BackupAndRestore` checkpoints, from which a killed run resumes when
every worker is started again with the same command. Each worker prints the
channels it kept, which are the same on every worker.

    TF_USE_LEGACY_KERAS=1 TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
        "task": {"type": "worker", "index": 0}}' python examples/multi_worker.py \\
        --data_dir ../shared/data --work_dir /shared/rbp_work --output_dir out/multi_worker

Keras 3 cannot train under this strategy; keras_rbp says so before training.
"""

import json
import os

from absl import app, flags
import numpy as np
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "folder holding mnist.npz (else $KERAS_RBP_DATA, else download)")
flags.DEFINE_string("work_dir", None, "a folder every worker can read and write: the baseline and "
                    "the backups from which a stopped run resumes", required=True)
flags.DEFINE_string("output_dir", "out/multi_worker", "where the chief writes its summaries, checkpoint and export")
flags.DEFINE_integer("train_examples", 12_000, "train on the first this many MNIST training images")
flags.DEFINE_integer("batch_size", 128, "images per training step, over all workers together")
flags.DEFINE_integer("pretrain_epochs", 2, "epochs that train the unpruned baseline")
flags.DEFINE_float("learning_rate", 1e-3, "Adam's learning rate")
flags.DEFINE_float("kl_weight", 10.0, "how hard pruning pushes: larger removes more channels")
flags.DEFINE_float("target_macs", None, "prune to this many MACs (multiply-accumulates per example), "
                   "or to this fraction of the baseline's if below 1; unset: kl_weight decides")
flags.DEFINE_integer("epochs_per_stage", 3, "the most epochs each stage trains before its channels are decided")
flags.DEFINE_integer("finetune_epochs", 1, "epochs that train the pruned model after the last stage")
flags.DEFINE_integer("seed", 0, "seed of the data order, the weights' initialisation and the pruning noise")


def resolver_index(strategy):
    """This worker's index in the cluster."""
    return strategy.cluster_resolver.task_id or 0


def main(argv):
    del argv
    # The strategy reads TF_CONFIG; it must exist before any other TensorFlow op.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras_rbp as rbp  # noqa: E402 (after the strategy, which must come first)
    from keras_rbp._keras import keras

    rbp.check_strategy(strategy, "examples/multi_worker.py")  # Keras 3 cannot train under it
    is_chief = rbp.is_chief(strategy)
    keras.utils.set_random_seed(FLAGS.seed)
    (x_train, y_train), (x_test, y_test) = rbp.datasets.load_mnist(FLAGS.data_dir)
    steps_per_epoch = FLAGS.train_examples // FLAGS.batch_size
    size = steps_per_epoch * FLAGS.batch_size
    # One fixed order, the same in every epoch: an epoch resumed from a
    # backup then reads the batches the lost one would have read.
    dataset = (
        tf.data.Dataset.from_tensor_slices((x_train[:size].reshape(size, -1), y_train[:size]))
        .shuffle(size, seed=FLAGS.seed, reshuffle_each_iteration=False)
        .batch(FLAGS.batch_size, drop_remainder=True)
        .repeat()
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    baseline_path = os.path.join(FLAGS.work_dir, "baseline.weights.h5")
    with strategy.scope():
        baseline = rbp.models.lenet_300_100(input_shape=(784,))
        if os.path.exists(baseline_path):
            baseline.load_weights(baseline_path)
        else:
            baseline.compile(keras.optimizers.Adam(FLAGS.learning_rate), loss)
            baseline.fit(dataset, epochs=FLAGS.pretrain_epochs, steps_per_epoch=steps_per_epoch, verbose=2)
            # Saving reads the variables with collective ops, so every worker
            # saves; only the chief's file is kept.
            os.makedirs(FLAGS.work_dir, exist_ok=True)
            partial = os.path.join(FLAGS.work_dir, f"baseline.partial{resolver_index(strategy)}.weights.h5")
            baseline.save_weights(partial)
            if is_chief:
                os.replace(partial, baseline_path)
            else:
                os.remove(partial)
        pruned = rbp.prune(baseline, dataset_size=size, kl_weight=FLAGS.kl_weight, input_features=True,
                           seed=FLAGS.seed)
        pruned.compile(keras.optimizers.Adam(FLAGS.learning_rate), loss, metrics=["accuracy"])

    schedule = rbp.RecursivePruning(epochs_per_stage=FLAGS.epochs_per_stage, finetune_epochs=FLAGS.finetune_epochs,
                                    target_macs=FLAGS.target_macs)
    callbacks = [
        schedule,
        keras.callbacks.BackupAndRestore(os.path.join(FLAGS.work_dir, "backup")),
        rbp.PruningSummaries(os.path.join(FLAGS.output_dir, "logs")),  # written by the chief only
    ]
    if is_chief:
        callbacks.append(keras.callbacks.ModelCheckpoint(os.path.join(FLAGS.output_dir, "pruned.h5")))
    pruned.fit(dataset, epochs=schedule.total_epochs(pruned), steps_per_epoch=steps_per_epoch,
               callbacks=callbacks, verbose=2)

    kept = {name: channels.tolist() for name, channels in rbp.kept_channels(pruned).items()}
    print("kept channels: " + json.dumps(kept), flush=True)
    if is_chief:
        small = rbp.shrink(pruned, keep_input_shape=False)
        features = kept[next(iter(kept))]
        x_small = x_test.reshape(len(x_test), -1)[:, features]
        error = float(np.mean(np.argmax(small.predict(x_small, verbose=0), -1) != y_test))
        # The baseline's copy outside the strategy: saving a model made in
        # its scope would wait for the other workers, which have finished.
        original = rbp.models.lenet_300_100(input_shape=(784,))
        original.set_weights(baseline.get_weights())
        rbp.export(small, os.path.join(FLAGS.output_dir, "export"), representative_data=x_small[:256],
                   original=original, overwrite=True)
        baseline_error = float(np.mean(np.argmax(original.predict(x_test.reshape(len(x_test), -1), verbose=0), -1)
                                       != y_test))
        print(f"chief: {rbp.report(original, small).totals['macs_after']:,} MACs, test error "
              f"{100 * error:.2f} % (unpruned {100 * baseline_error:.2f} %), exported to {FLAGS.output_dir}",
              flush=True)


if __name__ == "__main__":
    app.run(main)
