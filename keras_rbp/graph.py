"""A small, explicit graph of a Keras model, read from its functional config.

`model_config` writes the config of any Sequential or Functional model as a
plain Functional model of the same layers would: a Functional subclass
(KerasHub's `Backbone` and `Task` classes, a user's class built with the
functional constructor), whose own `get_config` holds constructor arguments,
is read through `keras.Model(model.inputs, model.outputs)`, at any depth of
nesting. Keras 3 and tf_keras write a functional model's `inbound_nodes`
differently; `Graph` normalises both into layers, calls and tensor
references, and `rename_references` and `reroute_references` rewire a config
in either format.
"""

import contextlib
import dataclasses

import numpy as np

from keras_rbp import _keras
from keras_rbp._keras import keras

SEQUENTIAL = "Sequential"
FUNCTIONAL = ("Functional", "Model")
KERAS_TENSOR = "__keras_tensor__"


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """Output `tensor_index` of call `node_index` of layer `layer`."""

    layer: str
    node_index: int = 0
    tensor_index: int = 0


@dataclasses.dataclass
class LayerNode:
    """One layer: its config entry and the tensors each of its calls reads."""

    name: str
    class_name: str
    config: dict
    calls: list  # one list of TensorRef per call of the layer

    @property
    def inputs(self):
        return [ref for call in self.calls for ref in call]


@dataclasses.dataclass
class Graph:
    """The layers of a Sequential or Functional config, in config order."""

    name: str
    layers: dict  # name -> LayerNode
    inputs: list  # TensorRef of each model input
    outputs: list  # TensorRef of each model output

    @classmethod
    def from_config(cls, class_name, config):
        if class_name == SEQUENTIAL:
            return _sequential_graph(config)
        return _functional_graph(config)

    def consumers(self, name):
        """Names of the layers that read an output of layer `name`."""
        return [
            node.name
            for node in self.layers.values()
            if any(ref.layer == name for ref in node.inputs)
        ]

    def topological_order(self):
        """Layer names in the order of their first call, inputs first; ties
        keep config order."""
        order = dict.fromkeys(node.name for node in self.layers.values() if not node.calls)
        for name, _ in self.call_order():
            order.setdefault(name)
        return list(order)

    def call_order(self):
        """(layer name, call index) of every call, each after the calls
        whose outputs it reads; layers without calls (inputs) first."""
        placed = {(node.name, 0) for node in self.layers.values() if not node.calls}
        order = []
        remaining = [(node, index) for node in self.layers.values() for index in range(len(node.calls))]
        while remaining:
            ready = [
                (node, index) for node, index in remaining
                if all((ref.layer, ref.node_index) in placed for ref in node.calls[index])
            ]
            if not ready:
                raise ValueError(f"model {self.name!r}: the layer graph has a cycle")
            for node, index in ready:
                order.append((node.name, index))
                placed.add((node.name, index))
            remaining = [item for item in remaining if (item[0].name, item[1]) not in placed]
        return order

    def is_output(self, name):
        return any(ref.layer == name for ref in self.outputs)


def graph_of(model):
    """The `Graph` of a Sequential or Functional Keras model."""
    return Graph.from_config(model_class(model), model_config(model))


def unique_name(name, taken):
    """`name`, or `name` with the first free suffix _1, _2, ...; added to
    the set `taken`."""
    candidate, index = name, 0
    while candidate in taken:
        index += 1
        candidate = f"{name}_{index}"
    taken.add(candidate)
    return candidate


def model_class(model):
    """'Sequential' or 'Functional': how a model's config is read."""
    return SEQUENTIAL if isinstance(model, keras.Sequential) else "Functional"


def model_config(model):
    """The config of a Sequential or Functional model, written as for a
    plain Sequential or Functional model with the same layers and calls.

    A Functional subclass is read as ``keras.Model(inputs, outputs)``, and
    every nested model is read by this function in turn. A layer whose
    `get_config` raises gets an entry with its name alone: its config is
    never used to re-create it (see `cloning`)."""
    if not _keras.is_functional(model) and not isinstance(model, keras.Sequential):
        raise TypeError(f"model {model.name!r} of class {type(model).__name__} has no functional graph")
    view = model if _keras.is_plain_model(model) else _keras.functional_view(model)
    nested = {layer.name: layer for layer in view.layers if isinstance(layer, keras.Model)}
    with _placeholder_configs(view.layers, replace=list(nested.values())):
        config = view.get_config()
    entries = config["layers"]
    for entry in entries:
        if "name" in entry:  # an operation's config may lack its name
            entry["config"].setdefault("name", entry["name"])
        layer = nested.get(entry["config"]["name"])
        if layer is not None:
            entry.pop("build_config", None)
            entry.update(_keras.model_entry_fields(layer), config=model_config(layer))
    return config


@contextlib.contextmanager
def _placeholder_configs(layers, replace):
    """Gives each layer of `replace`, and each layer of `layers` whose
    `get_config` raises, a `get_config` that returns its name alone, while
    the context lasts."""
    patched = list(replace)
    for layer in layers:
        if layer in patched:
            continue
        try:
            layer.get_config()
        except Exception:  # noqa: BLE001 - any broken get_config is replaced
            patched.append(layer)
    for layer in patched:
        layer.get_config = lambda layer=layer: {"name": layer.name, "trainable": layer.trainable}
    try:
        yield
    finally:
        for layer in patched:
            del layer.get_config


def keras_model_class(model):
    """keras.Sequential or keras.Model: the class that rebuilds `model`
    from its config, as `model_class` reads it."""
    return keras.Sequential if model_class(model) == SEQUENTIAL else keras.Model


def all_layers(model):
    """Every layer of `model`, each nested model followed by its layers."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def model_class_name(entry):
    """'Sequential', 'Functional' or None for a layer entry of a config."""
    class_name = entry["class_name"]
    if class_name == SEQUENTIAL:
        return SEQUENTIAL
    if class_name in FUNCTIONAL:
        return "Functional"
    return None


def _sequential_graph(config):
    layers = {}
    entries = config["layers"]
    previous = None
    inputs = []
    for entry in entries:
        name = entry["config"]["name"]
        calls = [[TensorRef(previous)]] if previous else []
        layers[name] = LayerNode(name, entry["class_name"], entry, calls)
        if previous is None:
            inputs.append(TensorRef(name))
        previous = name
    outputs = [TensorRef(previous)] if previous else []
    return Graph(config["name"], layers, inputs, outputs)


def _functional_graph(config):
    # A nested model's node 0 is the one that built it: tf_keras numbers its
    # calls from 1 everywhere, Keras 3 a nested Functional model's in
    # input_layers and output_layers only. Refs are renumbered here to index the config's calls.
    nested = [entry for entry in config["layers"] if model_class_name(entry)]
    call_offsets = {
        entry["name"]: 1
        for entry in nested
        if any(not is_call_record(node) for node in entry["inbound_nodes"])
    }
    model_offsets = dict(call_offsets)
    model_offsets.update({entry["name"]: 1 for entry in nested if model_class_name(entry) == "Functional"})

    def renumbered(refs, offsets):
        return [
            dataclasses.replace(ref, node_index=ref.node_index - offsets.get(ref.layer, 0))
            for ref in refs
        ]

    layers = {}
    for entry in config["layers"]:
        calls = [renumbered(_node_refs(node), call_offsets) for node in entry["inbound_nodes"]]
        layers[entry["name"]] = LayerNode(entry["name"], entry["class_name"], entry, calls)
    return Graph(
        config["name"],
        layers,
        renumbered(_refs(config["input_layers"]), model_offsets),
        renumbered(_refs(config["output_layers"]), model_offsets),
    )


def _refs(value):
    """Reads [name, node, tensor], or any nesting of lists and dicts of
    them, in the order Keras flattens it (a dict by key), which numbers a
    model's inputs and outputs."""
    if isinstance(value, dict):
        return [ref for key in sorted(value) for ref in _refs(value[key])]
    if value and isinstance(value[0], str):
        return [TensorRef(*value[:3])]
    return [ref for item in value for ref in _refs(item)]


NUMPY_CONSTANTS = ("__numpy__", "__tensor__")


def _map_record(value, on_tensor, on_constant):
    """A copy of a call record (either config format) in which every tensor
    reference is replaced by `on_tensor(TensorRef)` and every numeric
    constant operand by `on_constant(numpy array)`, visited in the order
    Keras flattens the call (a dict by key)."""
    if isinstance(value, dict):
        if value.get("class_name") == KERAS_TENSOR:
            return on_tensor(TensorRef(*value["config"]["keras_history"]))
        if value.get("class_name") in NUMPY_CONSTANTS:
            config = value["config"]
            return on_constant(np.asarray(config["value"], dtype=config.get("dtype")))
        # By key, as Keras flattens a dict (a nested model's dict of inputs).
        return {key: _map_record(value[key], on_tensor, on_constant) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        if _is_legacy_ref(value):  # [layer, node, tensor] or with the call's kwargs
            ref = on_tensor(TensorRef(*value[:3]))
            return [ref, _map_record(value[3], on_tensor, on_constant)] if len(value) > 3 else ref
        if value and _is_numeric(value):
            return on_constant(np.asarray(value))
        return [_map_record(item, on_tensor, on_constant) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return on_constant(np.asarray(value))
    return value


def _is_numeric(value):
    if isinstance(value, (list, tuple)):
        return all(_is_numeric(item) for item in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _node_refs(node):
    """The tensors read by one call, in order, in either config format."""
    refs = []
    _map_record(node, refs.append, lambda constant: constant)
    return refs


def call_constants(record):
    """The numeric constant operands of one call record, as numpy arrays."""
    constants = []
    _map_record(record, lambda ref: ref, constants.append)
    return constants


def call_arguments(record, tensors):
    """The positional and keyword arguments of an operation layer's call,
    with its tensor references replaced by `tensors` in call order and its
    constants as numpy arrays."""
    values = iter(tensors)
    mapped = _map_record(record, lambda ref: next(values), lambda constant: constant)
    if is_call_record(record):
        return mapped["args"], mapped["kwargs"]
    first, kwargs = mapped  # tf_keras: [tensor, kwargs]
    return [first], kwargs


def map_call_constants(record, function):
    """A copy of a call record with every numeric constant replaced by
    `function(array)`, written back in the form it had."""

    def rewrite(value):
        if isinstance(value, dict):
            if value.get("class_name") in NUMPY_CONSTANTS:
                config = value["config"]
                array = function(np.asarray(config["value"], dtype=config.get("dtype")))
                return dict(value, config=dict(config, value=array.tolist()))
            return {key: rewrite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            if _is_legacy_ref(value):
                return [*value[:3], *(rewrite(item) for item in value[3:])]
            if value and _is_numeric(value):
                return function(np.asarray(value)).tolist()
            return [rewrite(item) for item in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return function(np.asarray(value)).item()
        return value

    return rewrite(record)


def entry_inputs(entry):
    """The tensors read by every call of a functional config's layer entry."""
    return [ref for node in entry["inbound_nodes"] for ref in _node_refs(node)]


def is_call_record(node):
    """Whether a config's record of one call is Keras 3's ``{"args": ...,
    "kwargs": ...}``; tf_keras writes a list of tensor references, or a
    dict of them for a call on a dict."""
    return isinstance(node, dict) and "args" in node


def call_inputs(entry):
    """The tensors read by each call of a functional config's layer entry:
    a list per call, references as the config writes them."""
    return [_node_refs(node) for node in entry["inbound_nodes"]]


def without_none_kwargs(inbound_nodes):
    """A copy of Keras 3 call records without keyword arguments set to None
    (a wrapper's ``mask=None``, which the layer it wrapped may not accept)."""
    return [
        dict(node, kwargs={k: v for k, v in node["kwargs"].items() if v is not None})
        if isinstance(node, dict) and "kwargs" in node
        else node
        for node in inbound_nodes
    ]


def _is_legacy_ref(value):
    """tf_keras writes a tensor as [layer_name, node_index, tensor_index, kwargs]."""
    return (
        len(value) in (3, 4)
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], int)
    )


def rename_references(value, old, new):
    """Makes every tensor reference to layer `old` in a config point to `new`."""
    reroute_references(value, lambda ref: dataclasses.replace(ref, layer=new) if ref.layer == old else ref)


def reroute_references(value, function):
    """Replaces, in place, every tensor reference `ref` in a config (either
    format) by the `TensorRef` that `function(ref)` returns."""
    if isinstance(value, dict):
        if value.get("class_name") == KERAS_TENSOR:
            history = value["config"]["keras_history"]
            ref = function(TensorRef(*history[:3]))
            value["config"]["keras_history"] = [ref.layer, ref.node_index, ref.tensor_index]
            return
        for item in value.values():
            reroute_references(item, function)
    elif isinstance(value, (list, tuple)):
        if isinstance(value, list) and _is_legacy_ref(value):
            ref = function(TensorRef(*value[:3]))
            value[:3] = [ref.layer, ref.node_index, ref.tensor_index]
            for item in value[3:]:
                reroute_references(item, function)
            return
        for item in value:
            reroute_references(item, function)
