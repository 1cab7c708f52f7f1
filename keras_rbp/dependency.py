"""Dependency analysis: which channels of a pruned model `shrink` removes.

Each channel of each tensor is a slot. The rule of every layer call
(`rules.py`) joins slots that share a channel index into one class (a
dependency group: a residual stream, the inputs of a merge, the calls of a
shared layer) and marks channels that are exactly zero (a frozen theta of 0
through zero-preserving layers) or must be kept (a boundary). A class is
removed when, in every tensor that holds it, the channel is zero or read by
nothing that reaches a model output.
"""

import collections
import dataclasses
import warnings

import numpy as np

from keras_rbp import _keras
from keras_rbp import graph as graph_lib
from keras_rbp._keras import keras
from keras_rbp.layers import RBPNoise
from keras_rbp.rules import BOUNDARY, ShrinkError, activation_name, rule_for
from keras_rbp.wrapper import RBPWrapper


class _UnionFind:
    """Disjoint sets over integer slots, grown on demand."""

    def __init__(self):
        self.parent = []

    def new(self, count):
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return np.arange(start, start + count)

    def find(self, slot):
        parent = self.parent
        root = slot
        while parent[root] != root:
            root = parent[root]
        while parent[slot] != root:
            parent[slot], slot = root, parent[slot]
        return root

    def union(self, slots_a, slots_b):
        for a, b in zip(slots_a.tolist(), slots_b.tolist()):
            root_a, root_b = self.find(a), self.find(b)
            if root_a != root_b:
                self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def roots(self):
        return np.array([self.find(slot) for slot in range(len(self.parent))], dtype=np.int64)


@dataclasses.dataclass
class Tensor:
    """The channels of one tensor: a slot per channel along `axis`."""

    shape: tuple
    axis: int  # non-negative
    slots: np.ndarray
    zero: np.ndarray  # channel known to be exactly 0
    needed: np.ndarray = None  # channel read by something that reaches an output

    def __post_init__(self):
        self.needed = np.zeros(len(self.slots), bool)

    @property
    def channels(self):
        return len(self.slots)

    @property
    def unknown(self):
        """Whether the tensor's number of channels is not known."""
        return self.shape[self.axis] is None


@dataclasses.dataclass
class Op:
    """One call of a layer of the model, nested models flattened away.

    For an `RBPWrapper`, `inner` is the wrapped layer, `theta` its noise's
    frozen theta and `activation` the wrapper's; for other layers `inner`
    is the layer itself and `theta` all ones."""

    path: tuple  # names of the nested models holding the layer
    name: str
    layer: object
    inner: object
    rule: object
    call_index: int
    record: object  # the call's entry in the config's inbound_nodes
    inputs: list  # tensor keys
    outputs: list
    shapes: list  # of the outputs
    theta: np.ndarray = None
    activation: object = None
    state: dict = dataclasses.field(default_factory=dict)  # the rule's notes

    @property
    def theta_key(self):
        """The key of the tensor whose channels the theta multiplies: the
        output, or one the rule made inside the layer (attention heads)."""
        return self.state.get("theta_key", self.outputs[0])


@dataclasses.dataclass
class Group:
    op: Op
    mode: str

    @property
    def output(self):
        """The key of the tensor the group's theta multiplies."""
        return self.op.theta_key


class ChannelPlan:
    """Which channels of which tensor `shrink` keeps, and why."""

    def __init__(self, model, thetas=None, graphs=None):
        """`thetas`: a dict from group name to the theta to plan with
        instead of the group's own (masks under consideration). `graphs`: a
        dict that keeps the graphs read from `model` and its nested models
        for later plans of the same model (`budget.CostModel` plans one
        model for many masks)."""
        if not isinstance(model, keras.Model):
            raise TypeError(f"shrink: expected a Keras model, received {type(model).__name__}")
        self.model = model
        self.thetas = thetas or {}
        self._graphs = {} if graphs is None else graphs
        self.sets = _UnionFind()
        self.tensors = {}
        self.aliases = {}
        self.ops = []
        self.groups = {}
        self.flattens = []  # Flatten ops of rank > 2 inputs
        self.fixed = {}  # slot -> reason it must be kept
        self.reasons = {}  # slot -> why a zero channel stops being zero
        self.input_layers = []  # (path, name, tensor key) of every InputLayer
        self.inputs, self.outputs = self._collect(model, (), None)
        self._join_shared_calls()
        self._fold_noises()
        for key in self.outputs:
            tensor = self.tensors[key]
            tensor.needed[:] = True
            self.keep(tensor.slots, f"layer {key[1]!r} produces a model output")
        for op in reversed(self.ops):
            op.rule.backward(self, op)
        self._decide()

    # Reading the graph.

    def _collect(self, model, path, input_keys):
        """Appends the ops of `model`, each followed forward by its rule;
        returns the model's input and output keys."""
        graph, call_order = self._graph(model)
        layers = _keras.model_operations(model)
        inputs = []
        for index, ref in enumerate(graph.inputs):
            key = (path, ref.layer, 0, 0)
            if graph.layers[ref.layer].class_name != "InputLayer":
                raise ShrinkError(
                    f"shrink: Sequential model {model.name!r} has no Input layer; "
                    "build it with keras.Input(...) first"
                )
            if input_keys is None:
                shape = tuple(model.inputs[index].shape)
                channels = shape[-1] or 0  # None: unknown, and its readers are boundaries
                self.tensors[key] = Tensor(shape, len(shape) - 1, self.sets.new(channels), np.zeros(channels, bool))
            else:
                self.aliases[key] = input_keys[index]
            inputs.append(self._resolve(key))
            self.input_layers.append((path, ref.layer, inputs[-1]))
        for name, call_index in call_order:
            node, layer = graph.layers[name], layers[name]
            refs = node.calls[call_index]
            in_keys = [self._resolve((path, ref.layer, ref.node_index, ref.tensor_index)) for ref in refs]
            if isinstance(layer, keras.Model):
                if len(node.calls) > 1:
                    raise ShrinkError(
                        f"shrink: nested model {name!r} of model {model.name!r} is called "
                        f"{len(node.calls)} times; shrink supports nested models called once"
                    )
                _, out_keys = self._collect(layer, path + (name,), in_keys)
                for index, key in enumerate(out_keys):
                    self.aliases[(path, name, 0, index)] = key
                continue
            op = self._op(path, node, layer, call_index, in_keys)
            self.ops.append(op)
            if not op.rule.keeps_inputs and any(tensor.unknown for tensor in self.ins(op)):
                self.boundary(op, "reads a tensor whose number of channels is unknown")
            else:
                op.rule.forward(self, op)
        outputs = [self._resolve((path, ref.layer, ref.node_index, ref.tensor_index)) for ref in graph.outputs]
        return inputs, outputs

    def _graph(self, model):
        """The `graph.Graph` of `model` and its call order, read once."""
        if id(model) not in self._graphs:
            graph = graph_lib.graph_of(model)
            self._graphs[id(model)] = graph, graph.call_order()
        return self._graphs[id(model)]

    def _op(self, path, node, layer, call_index, in_keys):
        wrapped = isinstance(layer, RBPWrapper)
        inner = layer.layer if wrapped else layer
        record = node.config["inbound_nodes"][call_index] if "inbound_nodes" in node.config else None
        shapes = _output_shapes(layer, call_index, [self.tensors[key].shape for key in in_keys], record)
        op = Op(path, node.name, layer, inner, rule_for(inner), call_index, record, in_keys,
                [(path, node.name, call_index, index) for index in range(len(shapes))], shapes)
        if wrapped or isinstance(layer, RBPNoise):
            noise = layer.noise if wrapped else layer
            theta = self.thetas.get(node.name)
            op.theta = np.asarray(noise.theta() if theta is None else theta, np.float32)
            if call_index == 0:
                self.groups[node.name] = Group(op, noise.mode)
        if op.rule.prunable:
            op.activation = getattr(layer, "activation", None)
        return op

    def _resolve(self, key):
        while key in self.aliases:
            key = self.aliases[key]
        return key

    def _join_shared_calls(self):
        """Every call of a shared layer keeps the same channels."""
        first_calls = {}
        for op in self.ops:
            first = first_calls.setdefault((op.path, op.name), op)
            if first is op or op.rule.stateless:
                continue
            for keys_a, keys_b in ((first.inputs, op.inputs), (first.outputs, op.outputs)):
                for key_a, key_b in zip(keys_a, keys_b):
                    a, b = self.tensors[key_a], self.tensors[key_b]
                    if a.channels != b.channels or a.axis - len(a.shape) != b.axis - len(b.shape):
                        raise ShrinkError(
                            f"shrink: layer {op.name!r} is called on tensors of shapes "
                            f"{a.shape} and {b.shape}, whose channels differ"
                        )
                    self.join(a.slots, b.slots)
                    self.note_zero_lost(a.slots, f"shared layer {op.name!r} keeps what any of its calls keeps")

    def _fold_noises(self):
        """A standalone RBPNoise on the output of a prunable layer without
        activation, called once and read by nothing else, folds into that
        layer: its theta multiplies the layer's (`op.state["folded"]`)."""
        producers = {key: op for op in self.ops for key in op.outputs}
        readers = collections.Counter(key for op in self.ops for key in set(op.inputs))
        calls = collections.Counter((op.path, op.name) for op in self.ops)
        for op in self.ops:
            producer = producers.get(op.inputs[0]) if isinstance(op.layer, RBPNoise) else None
            if (
                producer is not None
                and producer.rule.prunable
                and activation_name(producer.activation or "linear") == "linear"
                and calls[(producer.path, producer.name)] == 1
                and readers[op.inputs[0]] == 1
                and op.inputs[0] not in self.outputs
            ):
                producer.theta = producer.theta * op.theta
                op.state["folded"] = True

    # The interface of the layer rules.

    def ins(self, op):
        return [self.tensors[key] for key in op.inputs]

    def outs(self, op):
        return [self.tensors[key] for key in op.outputs]

    def new(self, op, index=0, axis=None, zero=None, slots=None):
        """Creates output `index` of `op`: channels on `axis` (the last by
        default), new slots unless given, none zero unless given."""
        shape = op.shapes[index]
        axis = len(shape) - 1 if axis is None else axis % len(shape)
        channels = shape[axis] or 0  # None: unknown, and its readers are boundaries
        slots = self.sets.new(channels) if slots is None else slots
        zero = np.zeros(channels, bool) if zero is None else zero
        tensor = Tensor(shape, axis, slots, zero)
        self.tensors[op.outputs[index]] = tensor
        return tensor

    def add_tensor(self, key, shape, slots=None, zero=None):
        """Creates tensor `key` of `shape`, channels on its last axis, that
        no layer outputs: the heads inside an attention layer."""
        channels = shape[-1]
        slots = self.sets.new(channels) if slots is None else slots
        zero = np.zeros(channels, bool) if zero is None else zero
        self.tensors[key] = Tensor(tuple(shape), len(shape) - 1, slots, zero)
        return self.tensors[key]

    def fresh(self, count):
        """`count` new slots."""
        return self.sets.new(count)

    def join(self, slots_a, slots_b):
        """Puts slot a[i] and b[i] in one class, for every i."""
        self.sets.union(slots_a, slots_b)

    def join_positions(self, slots, groups):
        """Joins position p of every one of `groups` equal parts of `slots`."""
        parts = slots.reshape(groups, -1)
        for part in parts[1:]:
            self.join(parts[0], part)

    def join_within(self, slots, groups):
        """Joins all slots within each of `groups` equal parts of `slots`."""
        for part in slots.reshape(groups, -1):
            self.join(part[:1].repeat(len(part)), part)

    def repeat_slots(self, slots, multiplier):
        """Slots for `multiplier` channels made from each of `slots`, each
        joined to the channel it is made from."""
        if multiplier == 1:
            return slots
        repeated = np.repeat(slots, multiplier)
        new = self.sets.new(len(repeated))
        self.join(new, repeated)
        return new

    def keep(self, slots, reason):
        """Keeps the channels of `slots`, for `reason`."""
        for slot in np.asarray(slots).tolist():
            self.fixed.setdefault(slot, reason)

    def note_zero_lost(self, slots, reason):
        """Records why zero channels stop being zero."""
        for slot in np.asarray(slots).tolist():
            self.reasons.setdefault(slot, reason)

    def input_on_axis(self, op, key, axis):
        """The input tensor, or None (and its channels kept) where `op` reads
        channels on another axis than the one the analysis follows."""
        tensor = self.tensors[key]
        if axis % len(tensor.shape) != tensor.axis:
            self.keep(tensor.slots, f"layer {op.name!r} reads channels on axis {axis}")
            return None
        return tensor

    def boundary(self, op, reason):
        """Makes `op` a boundary: its inputs and outputs keep every channel."""
        op.rule = BOUNDARY
        message = f"{type(op.inner).__name__} layer {op.name!r} {reason}"
        for tensor in self.ins(op):
            self.keep(tensor.slots, message)
        for index in range(len(op.outputs)):
            self.keep(self.new(op, index).slots, message)

    # Deciding.

    def _decide(self):
        roots = self.sets.roots()
        removable = np.ones(len(roots), bool)
        for tensor in self.tensors.values():
            np.logical_and.at(removable, roots[tensor.slots], tensor.zero | ~tensor.needed)
        for slot in self.fixed:
            removable[roots[slot]] = False
        for tensor in self.tensors.values():
            if tensor.channels and removable[roots[tensor.slots]].all():
                removable[roots[tensor.slots[0]]] = False
                self.keep(tensor.slots[:1], "a tensor keeps at least one channel")
        for op in reversed(self.flattens):
            source = self.tensors[op.inputs[0]]
            kept_positions = ~removable[roots[self.tensors[op.outputs[0]].slots]]
            removable[roots[source.slots[np.unique(op.state["map"][kept_positions])]]] = False
        self.roots = roots
        self.removable = removable

    def kept(self, key):
        """Sorted indices of the kept channels of tensor `key`."""
        tensor = self.tensors[key]
        return np.flatnonzero(~self.removable[self.roots[tensor.slots]])

    def check(self, strict):
        """Warns (or raises, for strict groups) about zero channels kept
        because of a boundary or a layer that maps 0 elsewhere."""
        for name, group in self.groups.items():
            if group.mode == "active":
                warnings.warn(
                    f"shrink: group {name!r} is active, not frozen; its keep "
                    "probabilities are folded into the weights and all its channels kept",
                    stacklevel=3,
                )
        strict_names = set(self.groups) if strict is True else set(strict or ())
        unknown = strict_names - set(self.groups)
        if unknown:
            raise ShrinkError(
                f"shrink: strict names {sorted(unknown)}, which are not pruning groups "
                f"of model {self.model.name!r}; its groups are {list(self.groups)}"
            )
        why_kept = {}
        for source in (self.reasons, self.fixed):
            why_kept.update({self.roots[slot]: reason for slot, reason in source.items()})
        for name, group in self.groups.items():
            tensor = self.tensors[group.output]
            lost = (group.op.theta == 0) & ~self.removable[self.roots[tensor.slots]]
            reasons = sorted({why_kept.get(root) for root in self.roots[tensor.slots[lost]]} - {None})
            if not reasons:
                continue
            message = (
                f"shrink: group {name!r} keeps {int(lost.sum())} channel(s) its mask "
                f"removes: {'; '.join(reasons)}"
            )
            if name in strict_names:
                raise ShrinkError(message)
            warnings.warn(message, stacklevel=3)


def _output_shapes(layer, call_index, input_shapes, record):
    """The output shapes of call `call_index` of `layer`, as a list: the
    first call's as Keras recorded them; a later call's from its input
    shapes, in Keras 3 by a symbolic call with the arguments recorded (a
    layer called on several tensors, as ALBERT's shared encoder calls its
    attention on query and value, gets each where its call takes it)."""
    if call_index == 0:
        outputs = layer.output
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        return [tuple(output.shape) for output in outputs]
    if _keras.IS_KERAS_3 and record is not None:
        args, kwargs = graph_lib.call_arguments(record, [keras.KerasTensor(shape) for shape in input_shapes])
        return [tuple(output.shape) for output in keras.tree.flatten(layer.compute_output_spec(*args, **kwargs))]
    return _keras.output_shapes(layer, input_shapes)


def coupled_layers(plan, names):
    """Sets of layers among `names` whose output channels `shrink` joins one
    to one (the producers of a residual stream, the two sides of a
    squeeze-and-excitation product, a convolution and the depthwise one
    that follows it), in `plan`, a `ChannelPlan`: lists of two or more
    names, each in call order. Layers called more than once, or in
    different nested models, are never coupled."""
    calls = collections.Counter((op.path, op.name) for op in plan.ops)
    by_channels = {}
    for op in plan.ops:
        if op.name not in names or calls[(op.path, op.name)] != 1:
            continue
        tensor = plan.tensors[op.theta_key]
        classes = tuple(plan.roots[tensor.slots].tolist())
        by_channels.setdefault((op.path, classes), []).append(op.name)
    return [group for group in by_channels.values() if len(group) > 1]


def always_kept(plan, names):
    """The layers among `names` every one of whose channels `shrink` keeps
    in `plan`, a `ChannelPlan`, whatever their masks (each reaches a
    boundary, such as a residual stream through a LayerNormalization): a
    dict from layer name to the reason."""
    reasons = {}
    for slot, reason in plan.fixed.items():
        reasons.setdefault(plan.roots[slot], reason)
    found = {}
    for op in plan.ops:
        if op.name in names and op.call_index == 0:
            roots = plan.roots[plan.tensors[op.theta_key].slots].tolist()
            if roots and all(root in reasons for root in roots):
                found[op.name] = reasons[roots[0]]
    return found
