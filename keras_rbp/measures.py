"""What `prune_and_export` trains on and measures: the loss (the model's
compiled one, or one named, checked against the labels) and the error or
loss it reports."""

import numpy as np

from keras_rbp._keras import keras, to_numpy
from keras_rbp.distillation import output_kinds
from keras_rbp.errors import ArgumentError

CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy")


class Measure:
    """What the validation data measures: the classification error for the
    cross-entropy losses, else the loss."""

    def __init__(self, kind, loss, from_logits):
        self.kind, self.loss, self.from_logits = kind, loss, from_logits
        self.name = "error" if kind in CLASSIFICATION_LOSSES else "loss"
        self.keras_metrics = ["accuracy"] if self.name == "error" else []

    def of_outputs(self, outputs, y):
        outputs = to_numpy(outputs)
        if self.kind == "sparse_categorical_crossentropy":
            return float(np.mean(np.argmax(outputs, axis=-1) != y.reshape(-1)))
        if self.kind == "categorical_crossentropy":
            return float(np.mean(np.argmax(outputs, axis=-1) != np.argmax(y, axis=-1)))
        if self.kind == "binary_crossentropy":
            return float(np.mean((outputs.reshape(y.shape) > (0.0 if self.from_logits else 0.5)) != (y > 0.5)))
        return float(np.mean(to_numpy(self.loss(y, outputs))))

    def __call__(self, model, source, limit=None):
        """The measure of `model` on the first `limit` examples of `source`
        (all by default). A limited measure (the curve over the plan) calls
        the model directly, in batches of 256."""
        if limit is None:
            if source.x is None:
                outputs = model.predict(source.dataset, verbose=0)
                return self.of_outputs(outputs, source.y if source.y is not None else source.arrays()[1])
            return self.of_outputs(model.predict(source.x, batch_size=256, verbose=0), source.y)
        x, y = source.arrays(limit)
        outputs = [to_numpy(model(x[i : i + 256], training=False)) for i in range(0, len(x), 256)]
        return self.of_outputs(np.concatenate(outputs), y)


def loss_and_measure(model, loss, from_logits, train, validation):
    """The loss object fit trains on and what validation measures; a
    cross-entropy loss given by name is checked against the labels."""
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ArgumentError("loss", None, f"model {model.name!r} was not compiled with a loss; name one")
    name = loss if isinstance(loss, str) else None
    if name is None:
        config_name = getattr(loss, "name", None) or getattr(loss, "__name__", "")
        name = config_name if config_name in CLASSIFICATION_LOSSES else None
        return loss, Measure(name, loss, getattr(loss, "from_logits", False) if name else None)
    try:
        loss_class = keras.losses.get(name)
    except (ValueError, TypeError) as error:
        raise ArgumentError("loss", name, "is not a Keras loss") from error
    if name not in CLASSIFICATION_LOSSES:
        return loss_class, Measure(name, keras.losses.get(name), None)
    outputs = int(model.outputs[0].shape[-1]) if model.outputs[0].shape[-1] is not None else None
    for arg, source in (("train_data", train), ("validation_data", validation)):
        if source is not None:
            _check_labels(name, source, outputs, arg)
    if from_logits is None:
        from_logits = not output_kinds(model)[0][0]  # the first output is neither a softmax nor a sigmoid
    classes = {"sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
               "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
               "binary_crossentropy": keras.losses.BinaryCrossentropy}
    return classes[name](from_logits=from_logits), Measure(name, None, from_logits)


def _check_labels(name, source, outputs, arg):
    if source.y is not None:
        y = np.asarray(source.y)
    else:
        y = np.asarray(next(iter(source.dataset))[1])
    what = f"labels of shape {y.shape[1:] or '(batch,)'} and dtype {y.dtype}"
    integral = y.size and np.all(np.equal(np.mod(y, 1), 0))
    if name == "sparse_categorical_crossentropy":
        if y.ndim > 1 and y.shape[-1] > 1:
            raise ArgumentError("loss", name, f"needs class indices, but {arg} has one-hot labels "
                                f"({y.shape[-1]} columns); use categorical_crossentropy")
        if not integral or y.min() < 0 or (outputs and y.max() >= outputs):
            raise ArgumentError("loss", name, f"needs class indices in [0, {outputs}), but {arg} has labels "
                                f"from {y.min()} to {y.max()}" + ("" if integral else " (not whole numbers)"))
    elif name == "categorical_crossentropy":
        if y.ndim < 2 or (outputs and y.shape[-1] != outputs):
            raise ArgumentError("loss", name, f"needs one-hot labels of {outputs} columns, but {arg} has {what}"
                                + ("; use sparse_categorical_crossentropy" if y.ndim == 1 or y.shape[-1] == 1 else ""))
    elif name == "binary_crossentropy":
        if not np.all((y == 0) | (y == 1)):
            raise ArgumentError("loss", name, f"needs labels 0 and 1, but {arg} has labels from {y.min()} "
                                f"to {y.max()}; use sparse_categorical_crossentropy for class indices")
