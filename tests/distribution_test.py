"""Data-parallel training across processes on the JAX backend, with
`keras.distribution.DataParallel`: two processes on loopback, each training
on its half of the data, end with the same masks, meet the budget, and a
process killed mid-plan resumes from its backup to the masks of an
uninterrupted run.

Run as a script (`INDEX PORT OUT BACKUP KILL_AT`), this file is the worker.
"""

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from keras_rbp import _keras

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROCESSES = 2
TIMEOUT_S = 300
TARGET_MACS = 0.3

pytestmark = [pytest.mark.every_backend,
              pytest.mark.skipif(_keras.BACKEND != "jax", reason="keras.distribution runs on the JAX backend")]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(folder, name, kill_at=-1):
    """Starts the worker processes on one port and waits for them; returns
    their exit codes. A worker told to die at epoch `kill_at` kills itself,
    and the other, blocked on its peer, is killed then."""
    port = _free_port()
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    processes, logs = [], []
    for index in range(PROCESSES):
        log = os.path.join(folder, f"{name}_{index}.log")
        logs.append(log)
        with open(log, "w", encoding="utf-8") as out:
            arguments = [str(index), str(port), os.path.join(folder, f"{name}_{index}.npz"),
                         os.path.join(folder, f"backup_{index}"), str(kill_at if index == 1 else -1)]
            processes.append(subprocess.Popen([sys.executable, os.path.abspath(__file__)] + arguments,
                                              env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        if kill_at >= 0:
            processes[1].wait(TIMEOUT_S)
            processes[0].kill()
        codes = [process.wait(TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return codes, logs


def _log_tails(logs):
    return "\n".join(open(log, encoding="utf-8").read()[-2000:] for log in logs)


def test_two_processes_end_with_the_same_masks_and_a_killed_one_resumes_to_them(tmp_path):
    folder = str(tmp_path)
    codes, logs = _run(folder, "uninterrupted")
    assert codes == [0, 0], _log_tails(logs)
    results = [np.load(os.path.join(folder, f"uninterrupted_{i}.npz")) for i in range(PROCESSES)]
    groups = [name for name in results[0].files if name.startswith("mask_")]
    assert groups
    for name in groups:
        np.testing.assert_array_equal(results[0][name], results[1][name])
    assert 0.994 * TARGET_MACS <= float(results[0]["macs_after"] / results[0]["macs_before"]) <= TARGET_MACS

    codes, logs = _run(folder, "killed", kill_at=2)
    assert codes[1] == -signal.SIGKILL, _log_tails(logs)
    assert os.path.isdir(os.path.join(folder, "backup_1"))
    codes, logs = _run(folder, "resumed")
    assert codes == [0, 0], _log_tails(logs)
    resumed = np.load(os.path.join(folder, "resumed_0.npz"))
    assert int(resumed["resumed_from_epoch"]) == 2
    for name in groups:
        np.testing.assert_array_equal(resumed[name], results[0][name])


def _worker(index, port, out, backup, kill_at):
    """Trains LeNet-300-100 on this process's half of 2,048 MNIST images,
    prunes it to TARGET_MACS with a recursive plan under DataParallel, and
    saves its masks and MACs to `out`."""
    import keras  # noqa: PLC0415  (after the environment is set)

    keras.distribution.initialize(job_addresses=f"127.0.0.1:{port}", num_processes=PROCESSES, process_id=index)
    keras.distribution.set_distribution(keras.distribution.DataParallel(auto_shard_dataset=False))
    import keras_rbp as rbp  # noqa: PLC0415
    from conftest import mnist_dir  # noqa: PLC0415

    (x, y), _ = rbp.datasets.load_mnist(mnist_dir())
    x, y = x[:2048].reshape(2048, -1), y[:2048]
    shard_x, shard_y = x[index::PROCESSES], y[index::PROCESSES]
    keras.utils.set_random_seed(0)
    model = rbp.models.lenet_300_100(x.shape[1:], 10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    model.fit(shard_x, shard_y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    pruned = rbp.prune(model, dataset_size=len(x), seed=0)
    pruned.compile(keras.optimizers.Adam(1e-3), loss)
    schedule = rbp.RecursivePruning(epochs_per_stage=1, finetune_epochs=1, target_macs=TARGET_MACS, verbose=0)
    started = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.append(epoch)
            if epoch == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    pruned.fit(shard_x, shard_y, batch_size=32, epochs=schedule.total_epochs(pruned), shuffle=False, verbose=0,
               callbacks=[schedule, keras.callbacks.BackupAndRestore(backup), Clock()])
    totals = rbp.report(model, rbp.shrink(pruned)).totals
    masks = {f"mask_{name}": noise.mask.numpy() for name, noise in rbp.pruning_groups(pruned).items()}
    np.savez(out, macs_after=totals["macs_after"], macs_before=totals["macs_before"],
             resumed_from_epoch=started[0], **masks)


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    _worker(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
