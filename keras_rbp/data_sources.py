"""The data `prune_and_export` trains and measures on: arrays, an
`ImageFolder` or a `tf.data.Dataset`, checked against the model, read in an
order that depends only on the seed and the epoch (`EpochClock`)."""

import contextlib
import io
import os

import numpy as np
import tensorflow as tf

from keras_rbp._keras import keras
from keras_rbp.errors import ArgumentError


class ImageFolder:
    """Images in one subfolder per class, read as
    `keras.utils.image_dataset_from_directory` reads them (the classes in
    alphanumeric order of their folders, labels their indices), for
    `prune_and_export`.

    Args:
        path: the folder of class subfolders.
        image_size: (height, width) every image is resized to.
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA).
        scale: the pixel values 0-255 are multiplied by it (1/255 by
            default: pixels in [0, 1]).
        validation_split, subset, seed: as in `image_dataset_from_directory`:
            a fraction of the images held out, "training" or "validation".
    """

    def __init__(self, path, image_size, channels=3, scale=1.0 / 255, validation_split=None, subset=None, seed=0):
        color_mode = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(channels)
        if color_mode is None:
            raise ValueError(f"ImageFolder: channels must be 1, 3 or 4, received: {channels!r}")
        with contextlib.redirect_stdout(io.StringIO()):  # "Found N files belonging to C classes."
            listing = keras.utils.image_dataset_from_directory(
                path, labels="inferred", label_mode="int", color_mode=color_mode, batch_size=None,
                image_size=tuple(image_size), shuffle=validation_split is not None, seed=seed,
                validation_split=validation_split, subset=subset,
            )
        self.path, self.image_size, self.channels, self.scale = path, tuple(image_size), channels, scale
        self.class_names = list(listing.class_names)
        self.file_paths = list(listing.file_paths)
        root = os.path.abspath(path)
        self.labels = np.array(
            [self.class_names.index(os.path.relpath(os.path.abspath(p), root).split(os.sep)[0])
             for p in self.file_paths], dtype="int64")

    def __len__(self):
        return len(self.file_paths)

    def load(self, path):
        """One image as the model reads it, a float32 tensor."""
        image = tf.io.decode_image(tf.io.read_file(path), channels=self.channels, expand_animations=False)
        image = tf.image.resize(image, self.image_size)
        image.set_shape(self.image_size + (self.channels,))
        return image * self.scale


class Source:
    """Training or validation data: arrays or an ImageFolder (random access,
    so that each epoch's order depends only on the seed and the epoch), or
    a tf.data.Dataset read as given."""

    def __init__(self, data, batch_size):
        self.batch_size = batch_size
        self.images = self.x = self.y = self.dataset = None
        if isinstance(data, ImageFolder):
            self.images, self.y = data, data.labels
            self.size = len(data)
        elif isinstance(data, tf.data.Dataset):
            self.dataset, self.size = data, None
        else:
            self.x, self.y = data
            self.size = len(self.x)
        if self.size is not None:
            self.steps = -(-self.size // batch_size)
            self.dataset = self._batches(tf.data.Dataset.range(self.size))
        else:
            cardinality = int(data.cardinality())
            self.steps = cardinality if cardinality > 0 else None

    def _batches(self, indices):
        """Batches of (x, y) of the examples `indices` (a dataset of int64)
        names, in its order."""
        if self.images is not None:
            paths, labels = tf.constant(self.images.file_paths), tf.constant(self.y)
            data = indices.map(lambda i: (self.images.load(paths[i]), labels[i]),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            return data.batch(self.batch_size).prefetch(2)
        x, y = tf.constant(self.x), tf.constant(self.y)
        return indices.batch(self.batch_size).map(lambda i: (tf.gather(x, i), tf.gather(y, i))).prefetch(2)

    def training_dataset(self, clock, seed):
        """The training batches: arrays and image folders in an order drawn
        from (seed, epoch), the epoch read from `clock` (an `EpochClock`
        among fit's callbacks) when each epoch's iterator starts, so that an
        epoch resumed from a backup reads the examples in the order the lost
        one read them."""
        if self.x is None and self.images is None:
            return self.dataset
        size = self.size

        def order(_):
            epoch = tf.py_function(lambda: np.int64(clock.epoch), [], tf.int64)
            keys = tf.random.stateless_uniform([size], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
            return tf.data.Dataset.from_tensor_slices(tf.argsort(keys, stable=True))

        indices = tf.data.Dataset.from_tensors(0).flat_map(order)
        return self._batches(indices).apply(tf.data.experimental.assert_cardinality(self.steps))

    def arrays(self, limit=None, labels=True):
        """The first `limit` examples as arrays (x, y)."""
        if self.x is not None:
            return self.x[:limit], self.y[:limit]
        xs, ys, count = [], [], 0
        for batch in self.dataset:
            xs.append(np.asarray(batch[0]))
            ys.append(np.asarray(batch[1]))
            count += len(xs[-1])
            if limit is not None and count >= limit:
                break
        return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def data_source(data, model, arg, batch_size):
    """`data` as a `Source`, with its inputs and labels checked against the
    model."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ArgumentError(arg, data, f"holds {len(data)} items; pass (x, y)")
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y):
            raise ArgumentError(arg, f"x of {len(x)}, y of {len(y)}", "x and y need the same number of examples")
        if len(x) == 0:
            raise ArgumentError(arg, "x of 0", "holds no examples")
        if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
            x = x.astype("float32")
        data = (x, y)
    elif not isinstance(data, (ImageFolder, tf.data.Dataset)):
        raise ArgumentError(arg, type(data).__name__, "pass (x, y) arrays, an ImageFolder or a tf.data.Dataset")
    if isinstance(data, ImageFolder) and len(data) == 0:
        raise ArgumentError(arg, data.path, "holds no images")
    source = Source(data, batch_size)
    if len(model.inputs) != 1:
        return source  # several inputs: fit checks them
    expected = tuple(model.inputs[0].shape[1:])
    if source.x is not None:
        got = source.x.shape[1:]
    elif source.images is not None:
        got = source.images.image_size + (source.images.channels,)
    else:
        spec = source.dataset.element_spec[0] if isinstance(source.dataset.element_spec, tuple) else None
        if not isinstance(spec, tf.TensorSpec):
            return source  # inputs by name, or without labels: fit checks them
        got = tuple(spec.shape[1:])
    if len(got) != len(expected) or any(e is not None and g is not None and e != g for e, g in zip(expected, got)):
        raise ArgumentError(arg, getattr(data, "path", None) or f"x of shape {source.x.shape if source.x is not None else got}",
                            f"inputs of shape (batch,) + {tuple(got)}; model {model.name!r} takes (batch,) + "
                            f"{tuple(None if d is None else int(d) for d in expected)}")
    return source


class EpochClock(keras.callbacks.Callback):
    """Holds the epoch that `fit` is in (counted from 0 over a resumed
    run, as `BackupAndRestore` resumes it), for a dataset to read."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
