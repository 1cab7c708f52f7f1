"""Multi-worker training on loopback: worker processes started by the test,
each with its TF_CONFIG, under MultiWorkerMirroredStrategy.

Run as a script (`--kl_check OUT`), this file is also the worker of the
KL-counting test.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EXAMPLE = os.path.join(REPO, "examples", "multi_worker.py")
TIMEOUT_S = 300
# A budget that prunes every group of LeNet-300-100 within a short plan.
EXAMPLE_FLAGS = ["--train_examples", "4096", "--target_macs", "0.25", "--pretrain_epochs", "1"]
# What a worker logs when the coordination service lost a worker's heartbeat.
STALLED = "heartbeat timeout"


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    """Worker processes of one command on loopback ports, each logging to
    its own file under `folder` (`name`_worker<i>.log)."""

    def __init__(self, folder, command, workers=2, name="run"):
        ports = _free_ports(workers)
        self.logs = [os.path.join(folder, f"{name}_worker{i}.log") for i in range(workers)]
        self.processes = []
        for index, log in enumerate(self.logs):
            tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                         "task": {"type": "worker", "index": index}}
            # This checkout's keras_rbp, whatever the environment installed.
            env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), PYTHONUNBUFFERED="1",
                       PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
            with open(log, "w", encoding="utf-8") as out:
                self.processes.append(subprocess.Popen(
                    [sys.executable] + [arg.format(index=index) for arg in command],
                    env=env, stdout=out, stderr=subprocess.STDOUT))

    def wait(self, timeout=TIMEOUT_S):
        """The exit codes; every worker is killed once `timeout` has passed."""
        deadline = time.time() + timeout
        try:
            return [process.wait(max(1, deadline - time.time())) for process in self.processes]
        finally:
            self.kill()

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def log(self, index):
        with open(self.logs[index], encoding="utf-8") as f:
            return f.read()


def _example(folder, data_dir, extra=()):
    return [EXAMPLE, "--data_dir", data_dir, "--work_dir", os.path.join(folder, "work"),
            "--output_dir", os.path.join(folder, "out{index}"), *EXAMPLE_FLAGS, *extra]


def _kept(log):
    """The kept channels a worker printed."""
    line = next(line for line in log.splitlines() if line.startswith("kept channels: "))
    return json.loads(line[len("kept channels: "):])


@pytest.fixture(scope="module")
def keras_mode():
    from keras_rbp._keras import IS_KERAS_3

    return "keras3" if IS_KERAS_3 else "tf_keras"


def _once_more_if_stalled(run, folder):
    """run(folder) in a new `folder`, and once more in a fresh one when
    TensorFlow's coordination service stopped the cluster because a worker's
    heartbeat missed its 10 s timeout: a stall of the loaded test machine,
    not a keras_rbp failure. Returns the folder that ran and run's result."""
    os.makedirs(folder)
    try:
        return folder, run(folder)
    except AssertionError as error:
        if STALLED not in str(error):
            raise
    folder = folder + "_again"
    os.makedirs(folder)
    return folder, run(folder)


def _uninterrupted(folder, data_dir):
    """Two workers that run the example to its end."""
    cluster = Cluster(folder, _example(folder, data_dir))
    codes = cluster.wait()
    assert codes == [0, 0], cluster.log(0)[-3000:] + cluster.log(1)[-3000:]
    return cluster


def _check_same_masks_and_chief_only_files(folder, cluster):
    chief, other = _kept(cluster.log(0)), _kept(cluster.log(1))
    assert chief == other
    full = {"image_rbp_noise": 784, "fc1": 300, "fc2": 100}
    assert all(0 < len(chief[name]) < full[name] for name in full), {k: len(v) for k, v in chief.items()}
    chief_files = set(os.listdir(os.path.join(folder, "out0")))
    assert {"export", "logs", "pruned.h5"} <= chief_files
    assert os.listdir(os.path.join(folder, "out0", "logs"))  # PruningSummaries' event file
    assert not os.path.exists(os.path.join(folder, "out1"))  # the other worker wrote nothing
    with open(os.path.join(folder, "out0", "export", "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["report"]["totals"]["macs_after"] <= 0.25 * report["report"]["totals"]["macs_before"]


def _kill_mid_stage_and_restart(folder, data_dir):
    """Worker 1 is killed in the middle of the first stage (3 epochs), after
    the pruning fit's second epoch; then both workers start again with the
    same command. Returns the restarted cluster."""
    command = _example(folder, data_dir)
    cluster = Cluster(folder, command)
    deadline = time.time() + TIMEOUT_S
    while cluster.log(1).count("rbp_stage: 1.0000") < 2:
        assert time.time() < deadline and cluster.processes[1].poll() is None, cluster.log(1)[-3000:]
        time.sleep(0.2)
    cluster.processes[1].send_signal(signal.SIGKILL)
    cluster.kill()  # the chief cannot go on without it
    assert "kept channels" not in cluster.log(0) + cluster.log(1)
    restarted = Cluster(folder, command, name="restarted")
    assert restarted.wait() == [0, 0], restarted.log(0)[-3000:] + restarted.log(1)[-3000:]
    # Neither the baseline nor the plan starts again: the fit resumes at the
    # epoch after the last backup.
    assert "Epoch 1/" not in restarted.log(0) + restarted.log(1)
    return restarted


@pytest.mark.heavy
def test_two_workers_agree_and_a_killed_worker_resumes_to_the_same_masks(tmp_path, keras_mode):
    if keras_mode == "keras3":
        pytest.skip("Keras 3 cannot train under MultiWorkerMirroredStrategy")
    from conftest import mnist_dir

    uninterrupted_folder, uninterrupted = _once_more_if_stalled(
        lambda folder: _uninterrupted(folder, mnist_dir()), str(tmp_path / "uninterrupted"))
    _check_same_masks_and_chief_only_files(uninterrupted_folder, uninterrupted)

    _, restarted = _once_more_if_stalled(
        lambda folder: _kill_mid_stage_and_restart(folder, mnist_dir()), str(tmp_path / "resumed"))
    expected = _kept(uninterrupted.log(0))
    assert _kept(restarted.log(0)) == expected
    assert _kept(restarted.log(1)) == expected


def test_keras3_refuses_a_multi_worker_strategy_before_training(tmp_path, keras_mode):
    if keras_mode != "keras3":
        pytest.skip("tf_keras trains under MultiWorkerMirroredStrategy")
    from conftest import mnist_dir

    cluster = Cluster(str(tmp_path), _example(str(tmp_path), mnist_dir()))
    assert cluster.wait() == [1, 1]
    for index in range(2):
        log = cluster.log(index)
        assert "Keras 3 cannot train under MultiWorkerMirroredStrategy" in log
        assert "TF_USE_LEGACY_KERAS=1" in log
        assert "Epoch 1/" not in log


def test_the_kl_is_counted_once_and_each_worker_draws_its_own_noise(tmp_path, keras_mode):
    """Two workers train distribute_test's deterministic model; their
    weights equal one process's, and their noise counters differ."""
    if keras_mode == "keras3":
        pytest.skip("Keras 3 cannot train under MultiWorkerMirroredStrategy")
    import distribute_test
    import tensorflow as tf

    def run(folder):
        out = os.path.join(folder, "worker{index}.npz")
        cluster = Cluster(folder, [os.path.abspath(__file__), "--kl_check", out])
        assert cluster.wait() == [0, 0], cluster.log(0)[-3000:] + cluster.log(1)[-3000:]
        return [np.load(out.format(index=index)) for index in range(2)]

    _, results = _once_more_if_stalled(run, str(tmp_path / "cluster"))
    single = distribute_test._train(tf.distribute.get_strategy(), kl_weight=200.0)
    for result in results:
        assert int(result["replicas"]) == 2
        for index, expected in enumerate(single):
            np.testing.assert_allclose(result[f"weight{index}"], expected, rtol=1e-4, atol=1e-5)
    assert int(results[0]["counter"]) != int(results[1]["counter"])


def _kl_check_worker(path):
    """The worker of the KL test: trains distribute_test's model under the
    cluster's strategy and saves its weights and this worker's noise counter."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    sys.path.insert(0, HERE)
    import distribute_test
    import keras_rbp as rbp

    weights = distribute_test._train(strategy, kl_weight=200.0)
    with strategy.scope():
        noise = rbp.RBPNoise(dataset_size=8, seed=5)
        noise.build((None, 4))
    counter = strategy.experimental_local_results(strategy.run(lambda: noise._seed()[1]))[0]
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    np.savez(path.format(index=index), replicas=strategy.num_replicas_in_sync, counter=int(counter),
             **{f"weight{i}": w for i, w in enumerate(weights)})


if __name__ == "__main__":
    _kl_check_worker(sys.argv[sys.argv.index("--kl_check") + 1])
