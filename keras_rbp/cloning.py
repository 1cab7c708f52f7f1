"""Copying layers, and building a model from a config whose layers are
objects already made.

`prune` and `shrink` edit a model's functional config, then build the new
model from it. They never ask Keras to re-create a layer from its config:
a user's class that is not registered as serializable, a layer whose
`get_config` raises or does not round-trip, and a layer that holds other
layers all live in Functional models that Keras accepts, so keras_rbp
accepts them too. Each layer entry of the config instead names a layer
object, made by `copy_layer` or by a rule, that `model_from_config` puts in
its place.
"""

import inspect
import sys

from keras_rbp import _keras
from keras_rbp._keras import keras

# The class name of a config entry that stands for a layer object.
MADE = "KerasRBPMadeLayer"

# Keras walks a functional graph recursively when it builds a model; the
# deepest applications (EfficientNetV2L, with a noise after each group) go
# past Python's default limit.
GRAPH_RECURSION_LIMIT = 20000


class LayerCopyError(TypeError):
    """A layer can be copied neither from its config nor from its
    constructor arguments."""


def copy_layer(layer):
    """A layer of `layer`'s class and configuration with variables of its
    own (their values are the caller's to set): made from ``get_config()``,
    or, where that config does not round-trip, from the arguments the layer
    was constructed with (Keras 3 records those that are plain values). A
    layer without variables that neither can make (an Activation of a
    Python function) is copied attribute by attribute: nothing in it can
    train.

    Raises:
        LayerCopyError: naming the layer, its class and the cause, for a
            layer with variables that cannot be copied.
    """
    try:
        copied = _new_layer(layer)
    except LayerCopyError:
        if layer.weights:
            raise
        copied = _keras.shallow_copy(layer)
    if copied.name != layer.name:  # a class that renames itself (KerasHub's DepthwiseConvBlock)
        _keras.rename(copied, layer.name)
    return copied


def _new_layer(layer):
    try:
        return type(layer).from_config(layer.get_config())
    except Exception as config_error:  # noqa: BLE001 - any failure tries the constructor
        cause = f"its config does not round-trip ({type(config_error).__name__}: {config_error})"
        arguments = _keras.constructor_arguments(layer)
        if arguments is None:
            raise LayerCopyError(
                f"keras_rbp cannot copy layer {layer.name!r} of class {type(layer).__name__}: {cause}, "
                "and no constructor arguments were recorded (Keras 3 records them where all are "
                "plain values); fix its get_config or from_config"
            ) from config_error
        if _takes_name(type(layer)):
            arguments = dict(arguments, name=layer.name)  # otherwise copy_layer renames the copy
        try:
            return type(layer)(**arguments)
        except Exception as error:  # noqa: BLE001
            raise LayerCopyError(
                f"keras_rbp cannot copy layer {layer.name!r} of class {type(layer).__name__}: {cause}, "
                f"and its constructor fails on the arguments it was made with "
                f"({type(error).__name__}: {error})"
            ) from error


def _takes_name(layer_class):
    """Whether `layer_class`'s constructor takes a `name` (KerasHub's
    SegFormerMultiheadAttention takes neither it nor **kwargs)."""
    parameters = inspect.signature(layer_class.__init__).parameters.values()
    return any(p.name == "name" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class MadeLayers:
    """Layer objects, by key, for the config entries that stand for them."""

    def __init__(self):
        self.layers = {}

    def entry(self, layer, name=None, inbound_nodes=None):
        """A config entry that stands for `layer` (named `name`, called as
        `inbound_nodes` says in a functional config)."""
        key = str(len(self.layers))
        self.layers[key] = layer
        name = name or layer.name
        entry = {"module": None, "class_name": MADE, "registered_name": MADE,
                 "config": {"name": name, "made_key": key}, "name": name}
        if inbound_nodes is not None:
            entry["inbound_nodes"] = inbound_nodes
        return entry

    def replace(self, entry, layer):
        """Makes the config entry `entry` stand for `layer`, in place,
        keeping its name and calls."""
        made = self.entry(layer, entry["config"]["name"], entry.get("inbound_nodes"))
        if "inbound_nodes" not in entry:
            made.pop("name")
        entry.clear()
        entry.update(made)

    def custom_objects(self):
        made = self.layers

        class _Made:
            @classmethod
            def from_config(cls, config, custom_objects=None):
                return made[config["made_key"]]

        return {MADE: _Made}


def is_made(entry):
    return entry.get("class_name") == MADE


def model_from_config(model_class, config, made=None, custom_objects=None):
    """`model_class.from_config(config)`, where the entries of `made`
    (a `MadeLayers`) become their layer objects and `custom_objects` are
    known by name, under a recursion limit deep enough for the model's
    graph."""
    made = made or MadeLayers()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, GRAPH_RECURSION_LIMIT))
    custom_objects = dict(custom_objects or {}, **made.custom_objects())
    try:
        with keras.utils.custom_object_scope(custom_objects):
            return model_class.from_config(config, custom_objects=custom_objects)
    finally:
        sys.setrecursionlimit(limit)
