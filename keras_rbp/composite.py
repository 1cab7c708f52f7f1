"""Composite layers: layers that call other layers inside their `call`.

KerasHub builds many of its models from such blocks (`MBConvBlock`,
`FusedMBConvBlock`, `InvertedResidualBlock`, `ConvBnActBlock`, its ViT's
encoder layers, ...), and so do users. Keras 3 records no graph inside them,
so keras_rbp traces each one: the block's `call` runs on symbolic inputs,
and `expanded_view` makes the calls it recorded in the block's place. From
there every sublayer follows its own rule, as in a model written with them:
a block's expansion channels, its squeeze-and-excitation reduction and an
encoder's MLP width become pruning groups, a residual stream across blocks
one coupled group, and `shrink` writes the blocks' sublayers as plain Keras
layers. A sublayer whose name another layer of the model already has (each
block's ``dropout``) is named ``<block>_<sublayer>`` in the pruned and the
shrunk model, and a nested model's layer likewise ``<model>_<layer>``.

A layer is traced when it holds sublayers, its class has no rule of its own
(see `rules.register_rule`) and it is not one of Keras's own layers
(MultiHeadAttention, RNNs and Keras's wrappers keep their rules or stay
boundaries). A block whose `call` cannot be traced stays a boundary, with a
warning naming it. tf_keras records no composite layers' calls either, and
its blocks stay boundaries.
"""

import contextlib
import inspect
import warnings

import numpy as np

from keras_rbp import _keras
from keras_rbp import graph as graph_lib
from keras_rbp import rules
from keras_rbp._keras import keras


def is_composite(layer):
    """Whether `layer` is traced into the calls of its sublayers."""
    if not _keras.IS_KERAS_3 or isinstance(layer, keras.Model):
        return False
    if type(layer).__module__.split(".")[0] in ("keras", "keras_rbp"):
        return False
    if not rules.is_unknown(layer):
        return False
    return bool(layer._flatten_layers(include_self=False, recursive=False))


def has_composites(model):
    """Whether `model`, or a model nested in it, calls a composite layer."""
    for layer in _keras.model_operations(model).values():
        if is_composite(layer) or (isinstance(layer, keras.Model) and has_composites(layer)):
            return True
    return False


@contextlib.contextmanager
def expanded_view(model):
    """Gives `model` itself, or where it calls composite layers, a
    Functional model of the same layers and calls in which each composite
    layer's call is replaced by the calls its trace recorded.

    Layers are shared with `model`, not copied: the view adds calls to
    them and never changes their weights. While the context lasts, a layer
    of a nested model whose name a layer met before has (each encoder's
    ``embedding``) is renamed ``<model>_<layer>``, and so is a block's
    sublayer (``<block>_<sublayer>``); they get their names back when it
    ends."""
    renamed = _unique_names(model)
    try:
        if _keras.IS_KERAS_3 and has_composites(model):
            yield _Expander(model, renamed).view(model)
        else:
            yield model
    finally:
        for layer, name in reversed(renamed):
            _keras.rename(layer, name)


def _unique_names(model):
    """Renames, in place, every layer of `model` and the models nested in
    it whose name a layer before it has; returns (layer, its own name) for
    each. Input layers keep their names: a model's inputs are matched by
    them. tf_keras keys a model's calls by its layers' names, so there a
    name met twice is an error."""
    taken, owners, seen, renamed = set(), {}, set(), []

    def visit(current):
        for layer in _keras.model_operations(current).values():
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if layer.name in taken and not isinstance(layer, keras.layers.InputLayer):
                if not _keras.IS_KERAS_3:
                    raise ValueError(
                        f"keras_rbp: models {owners[layer.name]!r} and {current.name!r} both hold a layer named "
                        f"{layer.name!r}; under tf_keras the layers of nested models need distinct names"
                    )
                renamed.append((layer, layer.name))
                _keras.rename(layer, graph_lib.unique_name(f"{current.name}_{layer.name}", taken))
            taken.add(layer.name)
            owners[layer.name] = current.name
            if isinstance(layer, keras.Model):
                visit(layer)

    visit(model)
    return renamed


class _Expander:
    """Expands the composite layers of one model, keeping names unique."""

    def __init__(self, model, renamed):
        self.taken = set(_names(model))
        self.renamed = renamed  # (layer, its own name), appended to

    def view(self, model):
        # clone_model re-creates a Functional subclass from its config: clone its plain view.
        base = model if type(model) is _keras.FUNCTIONAL else _keras.functional_view(model)
        return keras.models.clone_model(base, clone_function=lambda layer: layer, call_function=self.call)

    def call(self, layer, *args, **kwargs):
        if isinstance(layer, keras.Model) and has_composites(layer):
            return self.view(layer)(*args, **kwargs)
        if is_composite(layer):
            traced = self._trace(layer, args, kwargs)
            if traced is not None:
                return _keras.replay(traced, _tensors((args, kwargs)), self.call)
        return layer(*args, **_accepted(layer.call, kwargs))

    def _trace(self, layer, args, kwargs):
        """A Functional model of `layer`'s call on inputs shaped as the
        symbolic tensors in `args` and `kwargs`, or None with a warning
        where the call cannot be traced."""
        tensors = _tensors((args, kwargs))
        inputs = [keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype) for tensor in tensors]
        replacement = {id(tensor): new for tensor, new in zip(tensors, inputs)}
        new_args, new_kwargs = keras.tree.map_structure(
            lambda item: replacement.get(id(item), item), (list(args), _accepted(layer.call, kwargs))
        )
        try:
            traced = keras.Model(inputs, layer.call(*new_args, **new_kwargs), name=layer.name)
            _check_trace(layer, traced, tensors, new_args, new_kwargs)
        except Exception as error:  # noqa: BLE001 - a block that cannot be traced stays a boundary
            warnings.warn(
                f"keras_rbp: {type(layer).__name__} layer {layer.name!r} holds layers, but its call "
                f"cannot be traced ({type(error).__name__}: {error}); it stays a boundary",
                stacklevel=4,
            )
            return None
        self._rename_sublayers(layer)
        return traced

    def _rename_sublayers(self, block):
        for sublayer in block._flatten_layers(include_self=False, recursive=False):
            if sublayer.name in self.taken:
                self.renamed.append((sublayer, sublayer.name))
                _keras.rename(sublayer, graph_lib.unique_name(f"{block.name}_{sublayer.name}", self.taken))
            self.taken.add(sublayer.name)


def _check_trace(layer, traced, tensors, args, kwargs):
    """Raises unless `traced` computes what `layer` computes, in inference
    (no BatchNormalization statistic moves), on random inputs of the traced
    shapes (a batch of 2; 3 for any other unknown size): a call that reads
    shapes as Python numbers, or makes layers as it runs, is traced into a
    graph that does not."""
    rng = np.random.RandomState(0)
    arrays = []
    for tensor in tensors:
        shape = [2] + [3 if size is None else size for size in tensor.shape[1:]]
        values = rng.randint(0, 2, shape) if "int" in str(tensor.dtype) else rng.uniform(-1, 1, shape)
        arrays.append(values.astype(str(tensor.dtype)))
    replacement = {id(tensor): array for tensor, array in zip(traced.inputs, arrays)}
    call_args, call_kwargs = keras.tree.map_structure(lambda item: replacement.get(id(item), item), (args, kwargs))
    expected = keras.tree.flatten(layer(*call_args, **dict(call_kwargs, training=False)))
    actual = keras.tree.flatten(traced(arrays, training=False))
    for a, b in zip(expected, actual):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape or np.abs(a - b).max(initial=0) > 1e-4 * max(1.0, np.abs(a).max(initial=0)):
            raise ValueError("the traced graph computes other values than the layer")


def _accepted(function, kwargs):
    """The items of `kwargs` that `function` takes: Keras passes `training`
    and `mask` to a layer's call only where its signature has them."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(kwargs)
    return {key: value for key, value in kwargs.items() if key in parameters}


def _names(model):
    """The names of the layers and operations of `model` and the models
    nested in it."""
    for name, layer in _keras.model_operations(model).items():
        yield name
        if isinstance(layer, keras.Model):
            yield from _names(layer)


def _tensors(structure):
    return [item for item in keras.tree.flatten(structure) if isinstance(item, keras.KerasTensor)]
