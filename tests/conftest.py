"""Shared test set-up: two logical CPUs for tf.distribute, seeds, MNIST
(and a summary of the tests that skipped without it), the `heavy` marker,
and a lock that runs the latency tests alone."""

import fcntl
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

# Must run before TensorFlow initialises its devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

from keras_rbp import _keras  # noqa: E402
from keras_rbp._keras import keras, ops, to_numpy  # noqa: E402,F401 (to_numpy: for the tests)

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def strategy():
    """A MirroredStrategy over the two logical CPUs, one for the whole run:
    the collective ops of several strategies in one process interfere."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture(autouse=True)
def _machine_lock(request):
    """Tests marked `timing` measure LiteRT latency, which another test
    running on the other CPU slows by a third: they hold this run's lock
    alone, while every other test holds it shared (pytest -n 2)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
    with open(os.path.join(tempfile.gettempdir(), f"keras_rbp_tests_{run}.lock"), "a") as lock:
        exclusive = request.node.get_closest_marker("timing") is not None
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def tensor(value):
    """A float32 tensor of the backend in use."""
    return ops.convert_to_tensor(np.asarray(value, "float32"))


def value_and_gradients(function, values):
    """The value of `function`, a scalar function of float32 tensors, at
    `values`, and its gradient with respect to each, as numpy arrays."""
    values = [np.asarray(value, "float32") for value in values]
    if _keras.BACKEND == "jax":
        import jax  # noqa: PLC0415

        value, gradients = jax.value_and_grad(function, argnums=tuple(range(len(values))))(*values)
    elif _keras.BACKEND == "torch":
        import torch  # noqa: PLC0415

        arguments = [torch.tensor(value, requires_grad=True) for value in values]
        value = function(*arguments)
        gradients = torch.autograd.grad(value, arguments)
        value, gradients = value.detach(), [gradient.detach() for gradient in gradients]
    else:
        arguments = [tf.Variable(value) for value in values]
        with tf.GradientTape() as tape:
            value = function(*arguments)
        gradients = tape.gradient(value, arguments)
    return float(to_numpy(value)), [to_numpy(gradient) for gradient in gradients]


def pytest_collection_modifyitems(config, items):
    """Under the JAX and PyTorch backends, the whole suite (no test named
    on the command line) runs the tests marked `every_backend` alone: the
    rest run under TensorFlow and tf_keras."""
    if _keras.ON_TENSORFLOW or config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return
    kept = [item for item in items if item.get_closest_marker("every_backend")]
    deselected = [item for item in items if not item.get_closest_marker("every_backend")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


MISSING_DATA = "mnist.npz not found in"

# More cases of a family whose one representative the default run keeps
# (see pyproject.toml): `python -m pytest -n 2 -m heavy` runs them.
heavy = pytest.mark.heavy


def mnist_dir():
    """The folder holding mnist.npz: KERAS_RBP_DATA, else ../shared/data
    (beside the checkout)."""
    folder = os.environ.get("KERAS_RBP_DATA") or os.path.normpath(SHARED_DATA)
    if not os.path.exists(os.path.join(folder, "mnist.npz")):
        message = f"{MISSING_DATA} {folder}; set KERAS_RBP_DATA to the folder that holds it"
        if os.environ.get("KERAS_RBP_REQUIRE_DATA") == "1":  # CI: a missing file is a failure
            pytest.fail(message)
        pytest.skip(message)
    return folder


def pytest_terminal_summary(terminalreporter):
    """Says, at the end of the run, how many tests skipped for want of MNIST:
    a green run that trained on nothing should not look like a full one."""
    missing = [report for report in terminalreporter.stats.get("skipped", [])
               if MISSING_DATA in str(report.longrepr)]
    if missing:
        terminalreporter.write_sep("=", f"{len(missing)} tests skipped: MNIST not found", yellow=True, bold=True)
        reason = str(missing[0].longrepr[2] if isinstance(missing[0].longrepr, tuple) else missing[0].longrepr)
        terminalreporter.write_line(reason.removeprefix("Skipped: "))
        terminalreporter.write_line("KERAS_RBP_REQUIRE_DATA=1 (set by .ci/run) makes them fail instead.")


def write_cifar10_npz(folder, train=256, test=64):
    """Writes a cifar10.npz of random images and labels, CIFAR-10's shapes."""
    rng = np.random.RandomState(0)
    np.savez(
        os.path.join(folder, "cifar10.npz"),
        x_train=rng.randint(0, 256, (train, 32, 32, 3)).astype("uint8"),
        y_train=rng.randint(0, 10, (train, 1)).astype("uint8"),
        x_test=rng.randint(0, 256, (test, 32, 32, 3)).astype("uint8"),
        y_test=rng.randint(0, 10, (test, 1)).astype("uint8"),
    )
