"""Tests of the dataset loaders."""

import numpy as np
import pytest

from keras_rbp import datasets

from conftest import mnist_dir


def test_mnist_from_a_local_folder():
    (x_train, y_train), (x_test, y_test) = datasets.load_mnist(mnist_dir())
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert list(y_train[:5]) == [5, 0, 4, 1, 9] and list(y_test[:5]) == [7, 2, 1, 0, 4]


def test_mnist_folder_from_the_environment(monkeypatch):
    monkeypatch.setenv(datasets.DATA_DIR_ENV, mnist_dir())
    (_, y_train), _ = datasets.load_mnist()
    assert len(y_train) == 60000


def test_cifar10_from_a_local_folder(tmp_path):
    rng = np.random.RandomState(0)
    np.savez(
        tmp_path / "cifar10.npz",
        x_train=rng.randint(0, 256, (20, 32, 32, 3)).astype("uint8"),
        y_train=rng.randint(0, 10, (20, 1)).astype("uint8"),
        x_test=rng.randint(0, 256, (5, 32, 32, 3)).astype("uint8"),
        y_test=rng.randint(0, 10, (5, 1)).astype("uint8"),
    )
    (x_train, y_train), (x_test, y_test) = datasets.load_cifar10(str(tmp_path))
    assert x_train.shape == (20, 32, 32, 3) and y_train.shape == (20,) and y_test.shape == (5,)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="cifar10.npz does not exist"):
        datasets.load_cifar10(str(tmp_path))
