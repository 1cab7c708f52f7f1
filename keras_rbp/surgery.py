"""`shrink`: removes the pruned channels of a pruned model physically.

The surgery reads the model's public config into a graph (`graph.py`) and
follows every channel through it. Each channel of each tensor is a slot;
layers that share channel indices (elementwise merges, BatchNormalization,
activations, dropout, pooling, padding, cropping, upsampling, depthwise
convolutions) join their slots into one class; Concatenate and Flatten map
indices explicitly. A class is removed when, in every tensor that holds it,
the channel is either exactly zero (a frozen theta of 0 through
zero-preserving layers) or read by nothing that reaches an output. The
kept channels' theta is folded into the kernel and bias (or BatchNormalization
gamma and beta), and the model is rebuilt from its edited config with plain
Keras layers.

Layers whose channels cannot be sliced (LayerNormalization, Reshape, Permute,
Lambda, Softmax over channels, unknown layers) are boundaries: the channels
feeding them are kept, with a warning naming the layer, or a `ShrinkError`
for the groups listed in `strict`.
"""

import copy
import dataclasses
import warnings

import numpy as np

from keras_rbp import graph as graph_lib
from keras_rbp._keras import keras, serialize
from keras_rbp.layers import RBPNoise
from keras_rbp.wrapper import RBPWrapper, channel_axis

L = keras.layers
SELECTION_SUFFIX = "_select"


def _classes(*names):
    return tuple(getattr(L, name) for name in names if hasattr(L, name))


FULL_MIX = _classes("Dense", "Conv1D", "Conv2D", "Conv3D", "SeparableConv2D")
DEPTHWISE = _classes("DepthwiseConv2D")
NORMALIZATION = _classes("BatchNormalization")
IDENTITY_AT_INFERENCE = _classes(
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "Identity",
)
ACTIVATIONS = _classes("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Rescaling")
SPATIAL = _classes(
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
)
ELEMENTWISE = _classes("Add", "Subtract", "Average", "Maximum", "Minimum", "Multiply")
MIXING_ACTIVATIONS = ("softmax", "log_softmax")


class ShrinkError(ValueError):
    """`shrink` cannot remove channels it was asked to remove, or cannot
    rewrite the model; the message names the layer and the reason."""


def shrink(model, keep_input_shape=True, strict=False):
    """Returns a plain Keras model with the pruned channels removed.

    The user's model is not modified. Frozen groups remove the channels whose
    theta is 0 and fold theta into the kept channels; groups in mode "off"
    keep every channel (theta = 1); groups still "active" keep every channel
    and fold their keep probability pi (the inference theta), with a warning.
    The result's outputs equal ``model(x, training=False)`` to float32
    rounding, and it loads without keras_rbp.

    A channel is removed only where every layer sharing its index (through
    Add, BatchNormalization, activations, pooling, ...) removed it or leaves
    it unread. Input-feature and Flatten-feature groups read by Dense layers
    fold their theta into those layers' kernel rows (zero rows for removed
    features: a Keras model has no cheaper gather); read by other layers,
    they become a non-trainable, bias-free Dense named ``<layer>_select``
    that picks and scales the kept features. With ``keep_input_shape=False``
    removed input features are physically gone.

    Args:
        model: a model returned by `prune`, its groups frozen with `freeze`
            or `RecursivePruning`. Every layer must be called once.
        keep_input_shape: if True, the small model takes the original inputs
            and selects the kept input features inside; if False, each input
            takes only its kept features (see `kept_channels`).
        strict: False, True or a collection of group names (see
            `pruning_groups`). For those groups, channels that a boundary
            layer (Reshape, Lambda, LayerNormalization, an activation that
            maps 0 elsewhere, a model output, ...) forces to keep raise a
            `ShrinkError` naming the layer and the reason, instead of a
            warning.

    Returns:
        A new, uncompiled Keras model of the same class.

    Raises:
        ShrinkError: where the model cannot be rewritten, or a strict group
            cannot be pruned as its mask says.
    """
    plan = _Plan(model)
    plan.check(strict)
    return _Rebuilder(plan, keep_input_shape).build()


def kept_channels(model):
    """The channels `shrink` keeps in each group: a dict from group name to
    the sorted indices of its kept channels. For an input-feature group,
    these are the features a model shrunk with ``keep_input_shape=False``
    takes, in order."""
    plan = _Plan(model)
    return {name: plan.kept(group.output) for name, group in plan.groups.items()}


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
class _Tensor:
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


@dataclasses.dataclass
class _Op:
    """One layer call of the model, nested models flattened away."""

    path: tuple  # names of the nested models holding the layer
    name: str
    layer: object
    kind: str
    inputs: list  # tensor keys
    outputs: list
    theta: np.ndarray = None  # prunable layers and noises
    activation: object = None  # prunable layers
    flatten_map: np.ndarray = None  # flatten: input channel of each position


@dataclasses.dataclass
class _Group:
    op: _Op
    output: tuple  # key of the tensor the group's theta multiplies
    mode: str


class _Plan:
    """Which channels of which tensor `shrink` keeps, and why."""

    def __init__(self, model):
        if not isinstance(model, keras.Model):
            raise TypeError(f"shrink: expected a Keras model, received {type(model).__name__}")
        self.model = model
        self.sets = _UnionFind()
        self.tensors = {}
        self.aliases = {}
        self.ops = []
        self.groups = {}
        self.fixed = {}  # slot -> reason it must be kept
        self.reasons = {}  # slot -> why a zero channel stops being zero
        self.input_layers = []  # (path, name, tensor key) of every InputLayer
        self.inputs, self.outputs = self._collect(model, (), None)
        for op in self.ops:
            self._forward(op)
        for key in self.outputs:
            tensor = self.tensors[key]
            tensor.needed[:] = True
            self._fix(tensor.slots, f"layer {key[1]!r} produces a model output")
        for op in reversed(self.ops):
            self._backward(op)
        self._decide()

    # Reading the graph.

    def _collect(self, model, path, input_keys):
        """Appends the ops of `model`; returns its input and output keys."""
        class_name = graph_lib.SEQUENTIAL if isinstance(model, keras.Sequential) else "Functional"
        graph = graph_lib.Graph.from_config(class_name, model.get_config())
        layers = {layer.name: layer for layer in model.layers}
        inputs = []
        for index, ref in enumerate(graph.inputs):
            key = (path, ref.layer, 0)
            if graph.layers[ref.layer].class_name != "InputLayer":
                raise ShrinkError(
                    f"shrink: Sequential model {model.name!r} has no Input layer; "
                    "build it with keras.Input(...) first"
                )
            if input_keys is None:
                shape = tuple(model.inputs[index].shape)
                self.tensors[key] = _Tensor(
                    shape, len(shape) - 1, self.sets.new(shape[-1]), np.zeros(shape[-1], bool)
                )
            else:
                self.aliases[key] = input_keys[index]
            inputs.append(self._resolve(key))
            self.input_layers.append((path, ref.layer, inputs[-1]))
        input_names = {ref.layer for ref in graph.inputs}
        for node in graph.layers.values():
            if node.name not in input_names and len(node.calls) != 1:
                raise ShrinkError(
                    f"shrink: layer {node.name!r} of model {model.name!r} is called "
                    f"{len(node.calls)} times; shrink supports layers called once"
                )
        for name in graph.topological_order():
            if name in input_names:
                continue
            node = graph.layers[name]
            layer = layers[name]
            in_keys = [self._resolve((path, ref.layer, ref.tensor_index)) for ref in node.inputs]
            if isinstance(layer, keras.Model):
                _, out_keys = self._collect(layer, path + (name,), in_keys)
                for index, key in enumerate(out_keys):
                    self.aliases[(path, name, index)] = key
                continue
            outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
            op = _Op(path, name, layer, _kind(layer), in_keys,
                     [(path, name, index) for index in range(len(outputs))])
            op.shapes = [tuple(output.shape) for output in outputs]
            self.ops.append(op)
        outputs = [self._resolve((path, ref.layer, ref.tensor_index)) for ref in graph.outputs]
        return inputs, outputs

    def _resolve(self, key):
        while key in self.aliases:
            key = self.aliases[key]
        return key

    # Forward: slots, channel axes, exact zeros.

    def _new(self, op, index=0, axis=None, zero=None, slots=None):
        shape = op.shapes[index]
        axis = len(shape) - 1 if axis is None else axis % len(shape)
        channels = shape[axis]
        slots = self.sets.new(channels) if slots is None else slots
        zero = np.zeros(channels, bool) if zero is None else zero
        tensor = _Tensor(shape, axis, slots, zero)
        self.tensors[op.outputs[index]] = tensor
        return tensor

    def _fix(self, slots, reason):
        for slot in slots.tolist():
            self.fixed.setdefault(slot, reason)

    def _input_on_axis(self, op, key, axis):
        """The input tensor, or None (and its channels kept) where `op` reads
        channels on another axis than the one the surgery follows."""
        tensor = self.tensors[key]
        if axis % len(tensor.shape) != tensor.axis:
            self._fix(tensor.slots, f"layer {op.name!r} reads channels on axis {axis}")
            return None
        return tensor

    def _forward(self, op):
        kind = op.kind
        ins = [self.tensors[key] for key in op.inputs]
        layer = op.layer
        if kind in ("wrapper", "prunable"):
            self._forward_prunable(op)
        elif kind == "noise":
            op.theta = _theta(layer)
            tensor = self._input_on_axis(op, op.inputs[0], layer.axis)
            if tensor is None:
                raise ShrinkError(
                    f"shrink: RBPNoise {op.name!r} has axis {layer.axis}, which is not "
                    "the channel axis of its input"
                )
            self._new(op, axis=tensor.axis, slots=tensor.slots, zero=tensor.zero | (op.theta == 0))
            self.groups[op.name] = _Group(op, op.outputs[0], layer.mode)
        elif kind == "per_channel":
            axis = _data_format_axis(layer, len(ins[0].shape))
            tensor = ins[0] if axis is None else self._input_on_axis(op, op.inputs[0], axis)
            if tensor is None:
                return self._forward_boundary(op, ins, "reads channels on another axis")
            if _mixes_channels(layer, tensor):
                return self._forward_boundary(op, ins, "normalises over the channels")
            zero = tensor.zero & _maps_zero_to_zero(layer, tensor.shape)
            self._note_zero_lost(tensor, zero, f"layer {op.name!r} maps 0 to a non-zero value")
            self._new(op, axis=_output_axis(layer, tensor, op.shapes[0]),
                      slots=tensor.slots, zero=zero)
        elif kind == "elementwise":
            first = ins[0]
            if any(t.shape[1:] != first.shape[1:] or t.axis != first.axis for t in ins):
                return self._forward_boundary(op, ins, "broadcasts its inputs")
            for tensor in ins[1:]:
                self.sets.union(first.slots, tensor.slots)
            zeros = np.stack([t.zero for t in ins])
            zero = zeros.any(0) if isinstance(layer, L.Multiply) else zeros.all(0)
            self._new(op, axis=first.axis, slots=first.slots, zero=zero)
        elif kind == "concat":
            first = ins[0]
            axis = layer.axis % len(first.shape)
            if any(t.axis != first.axis for t in ins):
                return self._forward_boundary(op, ins, "joins tensors of different channel axes")
            if axis == first.axis:
                self._new(op, axis=axis, slots=np.concatenate([t.slots for t in ins]),
                          zero=np.concatenate([t.zero for t in ins]))
            else:
                for tensor in ins[1:]:
                    self.sets.union(first.slots, tensor.slots)
                self._new(op, axis=first.axis, slots=first.slots,
                          zero=np.stack([t.zero for t in ins]).all(0))
        elif kind == "flatten":
            tensor = ins[0]
            op.flatten_map = _flatten_map(layer, tensor)
            if len(tensor.shape) == 2:
                self._new(op, slots=tensor.slots, zero=tensor.zero)
            else:
                self._new(op, zero=tensor.zero[op.flatten_map])
        elif kind == "reshape":
            axis = _reshapedchannel_axis(ins[0], op.shapes[0])
            if axis is None:
                return self._forward_boundary(op, ins, "mixes channels with other axes")
            self._new(op, axis=axis, slots=ins[0].slots, zero=ins[0].zero)
        else:
            self._forward_boundary(op, ins, "cannot be sliced channel by channel")

    def _forward_boundary(self, op, ins, reason):
        op.kind = "boundary"
        for tensor in ins:
            self._fix(tensor.slots, f"{type(op.layer).__name__} layer {op.name!r} {reason}")
        for index in range(len(op.outputs)):
            tensor = self._new(op, index)
            self._fix(tensor.slots, f"{type(op.layer).__name__} layer {op.name!r} {reason}")

    def _forward_prunable(self, op):
        layer = op.layer
        inner = layer.layer if op.kind == "wrapper" else layer
        op.theta = _theta(layer)
        op.activation = layer.activation if hasattr(layer, "activation") else None
        out_axis = channel_axis(inner)
        if op.kind == "wrapper":
            self.groups[op.name] = _Group(op, op.outputs[0], layer.noise.mode)
        if getattr(inner, "groups", 1) != 1:
            raise ShrinkError(f"shrink: layer {op.name!r} is a grouped convolution (groups={inner.groups})")
        if isinstance(inner, NORMALIZATION + DEPTHWISE):
            tensor = self._input_on_axis(op, op.inputs[0], out_axis)
            if tensor is None:
                raise ShrinkError(
                    f"shrink: layer {op.name!r} reads channels on axis {out_axis}, "
                    "which its input does not hold its channels on"
                )
            if isinstance(inner, NORMALIZATION):
                slots, inner_zero = tensor.slots, np.zeros(tensor.channels, bool)
            else:
                multiplier = inner.depth_multiplier
                slots = np.repeat(tensor.slots, multiplier)
                if multiplier > 1:
                    new = self.sets.new(len(slots))
                    self.sets.union(new, slots)
                    slots = new
                inner_zero = np.repeat(tensor.zero, multiplier) & (not inner.use_bias)
        else:
            self._input_on_axis(op, op.inputs[0], out_axis)
            tensor, slots, inner_zero = None, None, False
        out = self._new(op, axis=out_axis, slots=slots)
        if op.activation is not None and _activation_name(op.activation) in MIXING_ACTIVATIONS:
            self._fix(out.slots, f"layer {op.name!r} has a softmax activation over its channels")
            return
        zero_to_zero = op.activation is None or _activation_maps_zero_to_zero(op.activation)
        zeroed = (op.theta == 0) | inner_zero
        out.zero = zeroed & zero_to_zero
        if tensor is not None:
            zero_in = np.repeat(tensor.zero, out.channels // tensor.channels)
            for slot in out.slots[zero_in & ~out.zero].tolist():
                self.reasons.setdefault(slot, f"layer {op.name!r} maps 0 to a non-zero value")
        if not zero_to_zero and zeroed.any():
            reason = f"the activation of layer {op.name!r} maps 0 to a non-zero value"
            for slot in out.slots[zeroed].tolist():
                self.reasons.setdefault(slot, reason)

    def _note_zero_lost(self, tensor, zero_out, reason):
        for slot in tensor.slots[tensor.zero & ~zero_out].tolist():
            self.reasons.setdefault(slot, reason)

    # Backward: which channels reach an output.

    def _backward(self, op):
        kind = op.kind
        outs = [self.tensors[key] for key in op.outputs]
        ins = [self.tensors[key] for key in op.inputs]
        needed = outs[0].needed
        if kind == "boundary":
            for tensor in ins:
                tensor.needed[:] = True
        elif kind in ("wrapper", "prunable"):
            inner_needed = needed & (op.theta != 0)
            inner = op.layer.layer if kind == "wrapper" else op.layer
            if isinstance(inner, NORMALIZATION):
                ins[0].needed |= inner_needed
            elif isinstance(inner, DEPTHWISE):
                ins[0].needed |= inner_needed.reshape(ins[0].channels, -1).any(1)
            elif inner_needed.any():
                ins[0].needed[:] = True
        elif kind == "noise":
            ins[0].needed |= needed & (op.theta != 0)
        elif kind == "elementwise" and isinstance(op.layer, L.Multiply):
            for tensor in ins:
                others_zero = np.stack([t.zero for t in ins if t is not tensor] or [tensor.zero & False])
                tensor.needed |= needed & ~others_zero.any(0)
        elif kind in ("per_channel", "elementwise", "reshape"):
            for tensor in ins:
                tensor.needed |= needed
        elif kind == "concat":
            if outs[0].channels == ins[0].channels:
                for tensor in ins:
                    tensor.needed |= needed
            else:
                for tensor, part in zip(ins, _split(needed, ins)):
                    tensor.needed |= part
        elif kind == "flatten":
            np.logical_or.at(ins[0].needed, op.flatten_map, needed)

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
                removable[roots[tensor.slots[0]]] = False  # a layer keeps one channel
        for op in reversed(self.ops):
            if op.kind == "flatten" and len(self.tensors[op.inputs[0]].shape) > 2:
                source = self.tensors[op.inputs[0]]
                kept_positions = ~removable[roots[self.tensors[op.outputs[0]].slots]]
                removable[roots[source.slots[np.unique(op.flatten_map[kept_positions])]]] = False
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


class _Rebuilder:
    """Edits the model's config and slices its weights as a `_Plan` says."""

    def __init__(self, plan, keep_input_shape):
        self.plan = plan
        self.keep_input_shape = keep_input_shape
        self.physical = {}  # tensor key -> indices of the channels the new model holds
        self.entries = {}  # (path, name) -> new config entry, or None to drop it
        self.renames = {}  # (path, name) -> new name
        self.weights = {}  # (path, name) -> weights of the new layer
        self.row_scales = {}  # tensor key -> theta of each physical feature, for its Dense readers

    def build(self):
        plan = self.plan
        for key in plan.inputs:
            tensor = plan.tensors[key]
            full = np.arange(tensor.channels)
            self.physical[key] = full if self.keep_input_shape else plan.kept(key)
        for op in plan.ops:
            self._plan_op(op)
        for key in plan.outputs:
            if len(self.physical[key]) != plan.tensors[key].channels:
                raise ShrinkError(f"shrink: the model output of layer {key[1]!r} would lose channels")
        model = plan.model
        sequential = isinstance(model, keras.Sequential)
        config = copy.deepcopy(model.get_config())
        self._edit(config, (), sequential)
        custom_objects = {
            type(layer).__name__: type(layer) for layer in _all_layers(model)
        }
        model_class = keras.Sequential if sequential else keras.Model
        small = model_class.from_config(config, custom_objects=custom_objects)
        for (path, name), weights in self.weights.items():
            _find_layer(small, path, self.renames.get((path, name), name)).set_weights(weights)
        return small

    def _input_indices(self, op, axis):
        """The input channels the new layer reads, along its channel `axis`."""
        key = op.inputs[0]
        tensor = self.plan.tensors[key]
        if axis % len(tensor.shape) == tensor.axis:
            return self.physical[key]
        return np.arange(tensor.shape[axis])

    def _plan_op(self, op):
        plan = self.plan
        ins = [self.physical[key] for key in op.inputs]
        out_key = op.outputs[0]
        self.weights[(op.path, op.name)] = op.layer.get_weights()
        if op.kind in ("wrapper", "prunable"):
            self.physical[out_key] = self._plan_prunable(op)
        elif op.kind == "noise":
            self.physical[out_key] = self._plan_selection(op, ins[0])
        elif op.kind == "per_channel":
            self.physical[out_key] = ins[0]
        elif op.kind == "reshape":
            tensor = plan.tensors[out_key]
            target_shape = list(tensor.shape[1:])
            target_shape[tensor.axis - 1] = len(ins[0])
            self.entries[(op.path, op.name)] = (None, {"target_shape": target_shape})
            self.physical[out_key] = ins[0]
        elif op.kind in ("elementwise", "concat"):
            if op.kind == "concat" and plan.tensors[out_key].channels != plan.tensors[op.inputs[0]].channels:
                offsets = np.cumsum([0] + [plan.tensors[k].channels for k in op.inputs[:-1]])
                self.physical[out_key] = np.concatenate([p + o for p, o in zip(ins, offsets)])
            elif all(np.array_equal(ins[0], other) for other in ins[1:]):
                self.physical[out_key] = ins[0]
            else:
                raise ShrinkError(
                    f"shrink: layer {op.name!r} merges tensors that keep different "
                    "channels (a model input or Flatten output with removed features)"
                )
        elif op.kind == "flatten":
            self.physical[out_key] = (
                ins[0] if len(op.flatten_map) == len(ins[0]) and len(plan.tensors[op.inputs[0]].shape) == 2
                else np.flatnonzero(np.isin(op.flatten_map, ins[0]))
            )
        else:
            for key, physical in zip(op.inputs, ins):
                if len(physical) != plan.tensors[key].channels:
                    raise ShrinkError(
                        f"shrink: {type(op.layer).__name__} layer {op.name!r} reads a "
                        "tensor whose channels were removed"
                    )
            for key in op.outputs:
                self.physical[key] = np.arange(plan.tensors[key].channels)

    def _plan_prunable(self, op):
        layer = op.layer
        inner = layer.layer if op.kind == "wrapper" else layer
        axis = channel_axis(inner)
        in_index = self._input_indices(op, axis)
        theta = np.ones(self.plan.tensors[op.outputs[0]].channels, np.float32) if op.theta is None else op.theta
        if isinstance(inner, NORMALIZATION):
            out_index = in_index
        elif isinstance(inner, DEPTHWISE):
            multiplier = inner.depth_multiplier
            out_index = (in_index[:, None] * multiplier + np.arange(multiplier)).reshape(-1)
        else:
            out_index = self.plan.kept(op.outputs[0])
        weights, config_changes = _sliced_weights(inner, in_index, out_index, theta[out_index])
        if op.inputs[0] in self.row_scales:
            weights[0] = weights[0] * self.row_scales[op.inputs[0]][:, None]
        key = (op.path, op.name)
        self.weights[key] = weights
        if isinstance(inner, FULL_MIX):
            config_changes["units" if isinstance(inner, L.Dense) else "filters"] = len(out_index)
        if op.kind == "wrapper" and hasattr(inner, "activation"):
            config_changes["activation"] = keras.activations.serialize(layer.activation)
        if op.kind == "wrapper":
            entry = serialize(type(inner).from_config(inner.get_config()))
        else:
            entry = None
        self.entries[key] = (entry, config_changes)
        return out_index

    def _dense_inputs(self, key):
        """The tensors, `key` or a rank-2 Flatten of it, through which only
        Dense layers read `key`; empty if anything else reads it."""
        found = []
        for reader in [op for op in self.plan.ops if key in op.inputs]:
            if _is_dense_reader(reader):
                found.append(key)
            elif reader.kind == "flatten" and len(self.plan.tensors[key].shape) == 2:
                through = self._dense_inputs(reader.outputs[0])
                if not through:
                    return []
                found.extend(through)
            else:
                return []
        return sorted(set(found))

    def _plan_selection(self, op, in_index):
        """Drops a standalone RBPNoise. Where only Dense layers read it, its
        theta (0 for removed features) scales their kernel rows; elsewhere
        it becomes a Dense that selects and scales the kept features."""
        tensor = self.plan.tensors[op.outputs[0]]
        kept = self.plan.kept(op.outputs[0])
        key = (op.path, op.name)
        dense_inputs = self._dense_inputs(op.outputs[0])
        if dense_inputs:
            for dense_input in dense_inputs:
                self.row_scales[dense_input] = op.theta[in_index]
            self.entries[key] = None
            del self.weights[key]
            return in_index
        same_model_input = op.inputs[0][0] == op.path
        if same_model_input and np.array_equal(in_index, kept) and np.all(op.theta[kept] == 1):
            self.entries[key] = None
            del self.weights[key]
            return kept
        if tensor.axis != len(tensor.shape) - 1:
            raise ShrinkError(
                f"shrink: RBPNoise {op.name!r} is on axis {tensor.axis}; feature "
                "selection supports the last axis only"
            )
        kernel = np.zeros((len(in_index), len(kept)), np.float32)
        kernel[np.searchsorted(in_index, kept), np.arange(len(kept))] = op.theta[kept]
        base = op.name[: -len("_rbp_noise")] if op.name.endswith("_rbp_noise") else op.name
        name = base + SELECTION_SUFFIX
        self.renames[key] = name
        self.weights[key] = [kernel]
        selection = L.Dense(len(kept), use_bias=False, trainable=False, name=name)
        self.entries[key] = (serialize(selection), {})
        return kept

    def _edit(self, config, path, sequential):
        """Edits the layer entries of a (nested) model config in place."""
        input_keys = {(p, name): key for p, name, key in self.plan.input_layers if p == path}
        entries, renames = [], []
        for entry in config["layers"]:
            entry.pop("build_config", None)
            name = entry["config"]["name"]
            key = (path, name)
            nested = graph_lib.model_class_name(entry)
            if nested:
                self._edit(entry["config"], path + (name,), nested == graph_lib.SEQUENTIAL)
            elif key in input_keys:
                self._edit_input(entry, input_keys[key])
            elif self.entries.get(key, ()) is None:
                if not sequential:
                    renames.append((name, graph_lib.entry_inputs(entry)[0].layer))
                continue
            elif key in self.entries:
                entry = self._replaced(entry, key, *self.entries[key])
                if entry["config"]["name"] != name:
                    renames.append((name, entry["config"]["name"]))
            entries.append(entry)
        config["layers"] = entries
        for old, new in renames:
            if not sequential:
                for entry in entries:
                    graph_lib.rename_references(entry["inbound_nodes"], old, new)
                graph_lib.rename_references(config["output_layers"], old, new)

    def _edit_input(self, entry, key):
        tensor = self.plan.tensors[key]
        layer_config = entry["config"]
        shape_key = "batch_shape" if "batch_shape" in layer_config else "batch_input_shape"
        shape = list(layer_config[shape_key])
        shape[tensor.axis] = len(self.physical[key])
        layer_config[shape_key] = shape

    def _replaced(self, entry, key, new_entry, config_changes):
        """A config entry for the new layer of `key`, wired as `entry` is."""
        name = self.renames.get(key, entry["config"]["name"])
        new_entry = dict(new_entry or entry)
        new_entry.pop("build_config", None)
        new_entry["config"] = dict(new_entry["config"], name=name, **config_changes)
        if "inbound_nodes" in entry:
            new_entry["inbound_nodes"] = graph_lib.without_none_kwargs(entry["inbound_nodes"])
        if "name" in entry:
            new_entry["name"] = name
        return new_entry


def _sliced_weights(layer, in_index, out_index, theta):
    """The weights of `layer` restricted to the given input and output
    channels, with theta folded in; and the config changes this needs."""
    weights = layer.get_weights()
    changes = {}
    if isinstance(layer, NORMALIZATION):
        names = (["gamma"] if layer.scale else []) + (["beta"] if layer.center else [])
        values = dict(zip(names + ["moving_mean", "moving_variance"], weights))
        sliced = {name: value[in_index] for name, value in values.items()}
        if "gamma" in sliced:
            sliced["gamma"] = sliced["gamma"] * theta
        elif np.any(theta != 1):
            sliced["gamma"] = theta
            changes["scale"] = True
        if "beta" in sliced:
            sliced["beta"] = sliced["beta"] * theta
        order = ["gamma", "beta", "moving_mean", "moving_variance"]
        return [sliced[name] for name in order if name in sliced], changes
    bias = [weights[-1][out_index] * theta] if layer.use_bias else []
    if isinstance(layer, DEPTHWISE):
        kernel = weights[0][..., in_index, :]
        kernel = kernel * theta.reshape(kernel.shape[-2:])
        return [kernel] + bias, changes
    if isinstance(layer, L.SeparableConv2D):
        depthwise = weights[0][..., in_index, :]
        multiplier = depthwise.shape[-1]
        rows = (in_index[:, None] * multiplier + np.arange(multiplier)).reshape(-1)
        pointwise = weights[1][..., rows, :][..., out_index] * theta
        return [depthwise, pointwise] + bias, changes
    kernel = weights[0][..., in_index, :][..., out_index] * theta
    return [kernel] + bias, changes


def _is_dense_reader(op):
    """Whether `op` is a Dense layer, wrapped or not, reading one tensor."""
    inner = op.layer.layer if op.kind == "wrapper" else op.layer
    return op.kind in ("wrapper", "prunable") and type(inner) is L.Dense and len(op.inputs) == 1


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _find_layer(model, path, name):
    for nested in path:
        model = model.get_layer(nested)
    return model.get_layer(name)


def _theta(layer):
    noise = layer.noise if isinstance(layer, RBPWrapper) else layer
    if isinstance(noise, RBPNoise):
        return noise.theta().numpy().astype(np.float32)
    return None


def _kind(layer):
    if isinstance(layer, RBPWrapper):
        return "wrapper"
    if isinstance(layer, RBPNoise):
        return "noise"
    layer_type = type(layer)
    if layer_type in FULL_MIX + DEPTHWISE + NORMALIZATION:
        return "prunable"
    if layer_type in IDENTITY_AT_INFERENCE + ACTIVATIONS + SPATIAL:
        return "per_channel"
    if layer_type in ELEMENTWISE:
        return "elementwise"
    if layer_type is L.Concatenate:
        return "concat"
    if layer_type is L.Flatten:
        return "flatten"
    if layer_type is L.Reshape:
        return "reshape"
    return "boundary"


def _data_format_axis(layer, rank):
    """The channel axis a data_format layer reads, None for the others."""
    if not hasattr(layer, "data_format"):
        return None
    return 1 if layer.data_format == "channels_first" else rank - 1


def _output_axis(layer, tensor, out_shape):
    if len(out_shape) == 2:
        return 1
    if len(out_shape) == len(tensor.shape):
        return tensor.axis
    raise ShrinkError(f"shrink: layer {layer.name!r} changes the rank of its input")


def _mixes_channels(layer, tensor):
    if isinstance(layer, L.Softmax):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return any(axis % len(tensor.shape) == tensor.axis for axis in axes)
    if isinstance(layer, L.Activation):
        return _activation_name(layer.activation) in MIXING_ACTIVATIONS
    return False


def _activation_name(activation):
    return getattr(activation, "__name__", str(activation))


def _activation_maps_zero_to_zero(activation):
    return bool(np.all(np.asarray(activation(np.zeros((1, 2), np.float32))) == 0))


def _maps_zero_to_zero(layer, shape):
    if not isinstance(layer, ACTIVATIONS):
        return True
    zeros = np.zeros([1] + [1 if d is None else d for d in shape[1:]], np.float32)
    return bool(np.all(np.asarray(layer(zeros)) == 0))


def _reshapedchannel_axis(tensor, out_shape):
    """Where a Reshape that keeps channels last, or only adds or drops axes
    of size 1, puts the channels; None for any other Reshape."""
    other_dims = [d for i, d in enumerate(tensor.shape[1:], 1) if i != tensor.axis]
    out_dims = list(out_shape[1:])
    if tensor.axis == len(tensor.shape) - 1 and out_dims[-1] == tensor.channels:
        return len(out_shape) - 1
    if any(d != 1 for d in other_dims) or out_dims.count(tensor.channels) != 1:
        return None
    axis = out_dims.index(tensor.channels)
    if any(d != 1 for i, d in enumerate(out_dims) if i != axis):
        return None
    return axis + 1


def _flatten_map(layer, tensor):
    """The input channel of each position of a Flatten's output."""
    rank = len(tensor.shape)
    if rank == 2:
        return np.arange(tensor.channels)
    dims = tensor.shape[1:]
    if any(d is None for d in dims):
        raise ShrinkError(f"shrink: Flatten {layer.name!r} has an input of unknown shape {tensor.shape}")
    shape = [1] * (rank - 1)
    shape[tensor.axis - 1] = tensor.channels
    channel = np.broadcast_to(np.arange(tensor.channels).reshape(shape), dims)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        channel = np.moveaxis(channel, 0, -1)
    return np.ascontiguousarray(channel).reshape(-1)


def _split(values, tensors):
    offsets = np.cumsum([t.channels for t in tensors])[:-1]
    return np.split(values, offsets)
