"""Dataset loaders that keep Keras's download path and accept a local folder."""

import os

import numpy as np

from keras_rbp._keras import keras

DATA_DIR_ENV = "KERAS_RBP_DATA"


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset is neither in the local folder nor downloadable."""


def load_mnist(data_dir=None):
    """MNIST as ((x_train, y_train), (x_test, y_test)), pixels scaled to [0, 1]
    with a trailing channel axis.

    Reads `mnist.npz` from `data_dir`, else from the folder named by the
    KERAS_RBP_DATA environment variable, else downloads it with
    `keras.datasets.mnist.load_data()`.
    """
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if data_dir:
        path = os.path.join(data_dir, "mnist.npz")
        if not os.path.exists(path):
            raise DatasetNotFoundError(
                f"MNIST not found: {path} does not exist; put the mnist.npz of "
                "keras.datasets.mnist there, or leave the data folder unset to download it"
            )
        with np.load(path) as data:
            splits = (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
    else:
        try:
            splits = keras.datasets.mnist.load_data()
        except Exception as error:
            raise DatasetNotFoundError(
                f"MNIST could not be downloaded ({error}); pass a folder holding "
                f"mnist.npz, or set {DATA_DIR_ENV}"
            ) from error
    return tuple((_images(x), y.astype("int64")) for x, y in splits)


def _images(x):
    return (x.astype("float32") / 255.0)[..., None]
