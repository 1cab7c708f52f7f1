"""Dataset loaders that keep Keras's download path and accept a local folder."""

import os

import numpy as np

from keras_rbp._keras import keras

DATA_DIR_ENV = "KERAS_RBP_DATA"


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset is neither in the local folder nor downloadable."""


def load_mnist(data_dir=None):
    """MNIST as ((x_train, y_train), (x_test, y_test)): float32 pixels in
    [0, 1] of shape (28, 28, 1), int64 labels.

    Reads `mnist.npz` (the file of `keras.datasets.mnist`) from `data_dir`,
    else from the folder named by the KERAS_RBP_DATA environment variable,
    else downloads it with `keras.datasets.mnist.load_data()`.
    """
    splits = _load("MNIST", "mnist.npz", keras.datasets.mnist.load_data, data_dir)
    return tuple((_images(x[..., None]), _labels(y)) for x, y in splits)


def load_cifar10(data_dir=None):
    """CIFAR-10 as ((x_train, y_train), (x_test, y_test)): float32 pixels in
    [0, 1] of shape (32, 32, 3), int64 labels.

    Reads `cifar10.npz` (arrays x_train, y_train, x_test, y_test in the layout
    of `keras.datasets.cifar10`) from `data_dir` or KERAS_RBP_DATA, else
    downloads the data with `keras.datasets.cifar10.load_data()`.
    """
    splits = _load("CIFAR-10", "cifar10.npz", keras.datasets.cifar10.load_data, data_dir)
    return tuple((_images(x), _labels(y)) for x, y in splits)


def _load(title, filename, download, data_dir):
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if data_dir:
        path = os.path.join(data_dir, filename)
        if not os.path.exists(path):
            raise DatasetNotFoundError(
                f"{title} not found: {path} does not exist; put {filename} there, "
                "or give no data folder to download it"
            )
        with np.load(path) as data:
            return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
    try:
        return download()
    except Exception as error:
        raise DatasetNotFoundError(
            f"{title} could not be downloaded ({type(error).__name__}); give a folder "
            f"holding {filename} (a flag, or the {DATA_DIR_ENV} environment variable)"
        ) from error


def _images(x):
    return x.astype("float32") / 255.0


def _labels(y):
    return y.reshape(-1).astype("int64")
