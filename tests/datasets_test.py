"""Tests of the dataset loaders."""

import numpy as np
import pytest

from keras_rbp import datasets

from conftest import mnist_dir, write_cifar10_npz


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
    write_cifar10_npz(str(tmp_path), train=20, test=5)
    (x_train, y_train), (x_test, y_test) = datasets.load_cifar10(str(tmp_path))
    assert x_train.shape == (20, 32, 32, 3) and y_train.shape == (20,) and y_test.shape == (5,)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="cifar10.npz does not exist"):
        datasets.load_cifar10(str(tmp_path))
