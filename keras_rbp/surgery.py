"""`shrink`: removes the pruned channels of a pruned model physically.

`dependency.ChannelPlan` decides which channels go; this module rebuilds the
model from its edited config: each layer's rule (`rules.py`) slices its
weights and folds the kept channels' theta into them, and the model is made
again with plain Keras layers.
"""

import copy
import dataclasses

import numpy as np

from keras_rbp import _keras
from keras_rbp import cloning
from keras_rbp import graph as graph_lib
from keras_rbp._keras import keras
from keras_rbp.dependency import ChannelPlan
from keras_rbp.rules import SELECTION_SUFFIX, ShrinkError
from keras_rbp.wrapper import RBPWrapper


def shrink(model, keep_input_shape=True, strict=False):
    """Returns a plain Keras model with the pruned channels removed.

    The user's model is not modified. Frozen groups remove the channels whose
    theta is 0 and fold theta into the kept channels; groups in mode "off"
    keep every channel (theta = 1); groups still "active" keep every channel
    and fold their keep probability pi (the inference theta), with a warning.
    The result's outputs equal ``model(x, training=False)`` to float32
    rounding, and it loads without keras_rbp.

    A channel is removed only where every layer sharing its index (through
    Add, BatchNormalization, activations, pooling, a shared layer's calls,
    ...) removed it or leaves it unread. Input-feature and Flatten-feature
    groups read by Dense layers fold their theta into those layers' kernel
    rows (zero rows for removed features: a Keras model has no cheaper
    gather); read by other layers, they become a non-trainable, bias-free
    Dense named ``<layer>_select`` that picks and scales the kept features.
    With ``keep_input_shape=False`` removed input features are physically
    gone. How each layer class is followed is its rule (`register_rule`).

    Args:
        model: a model returned by `prune`, its groups frozen with `freeze`
            or `RecursivePruning`.
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
    return shrink_as(model, None, keep_input_shape, strict)


def shrink_as(model, thetas, keep_input_shape=True, strict=False):
    """`shrink` as if the groups of `thetas` (a dict from group name to a
    theta array, frozen or not) had that theta: for example, all ones for
    the model with every channel kept."""
    plan = ChannelPlan(model, thetas=thetas)
    plan.check(strict)
    return _Builder(plan, keep_input_shape).build()


def kept_channels(model):
    """The channels `shrink` keeps in each group: a dict from group name to
    the sorted indices of its kept channels. For an input-feature group,
    these are the features a model shrunk with ``keep_input_shape=False``
    takes, in order."""
    plan = ChannelPlan(model)
    return {name: plan.kept(group.output) for name, group in plan.groups.items()}


class _Builder:
    """Edits the model's config and slices its weights as a plan says; the
    layer rules call `input_indices`, `set_layer`, `set_call`, `drop_layer`
    and `select_features`."""

    def __init__(self, plan, keep_input_shape):
        self.plan = plan
        self.keep_input_shape = keep_input_shape
        self.physical = {}  # tensor key -> indices of the channels the new model holds
        self.entries = {}  # (path, name) -> (layer to copy, config changes), or None to drop it
        self.calls = {}  # (path, name) -> {call index: new call record}
        self.renames = {}  # (path, name) -> new name
        self.weights = {}  # (path, name) -> weights of the new layer
        self.row_scales = {}  # tensor key -> theta of each physical feature, for its Dense readers
        self.made = cloning.MadeLayers()  # the layers of the new model

    def build(self):
        plan = self.plan
        for key in plan.inputs:
            tensor = plan.tensors[key]
            self.physical[key] = np.arange(tensor.channels) if self.keep_input_shape else plan.kept(key)
        first_inputs = {}
        for op in plan.ops:
            self.weights.setdefault((op.path, op.name), _weights(op.layer))
            ins = [self.physical[key] for key in op.inputs]
            first = first_inputs.setdefault((op.path, op.name), ins)
            if not op.rule.stateless and any(not np.array_equal(x, y) for x, y in zip(first, ins)):
                raise ShrinkError(
                    f"shrink: layer {op.name!r} is shared by calls whose inputs keep "
                    "different channels (a model input, or the layer's own output)"
                )
            for key, physical in zip(op.outputs, op.rule.rebuild(self, op, ins)):
                self.physical[key] = physical
        for key in plan.outputs:
            if len(self.physical[key]) != plan.tensors[key].channels:
                raise ShrinkError(f"shrink: the model output of layer {key[1]!r} would lose channels")
        model = plan.model
        sequential = isinstance(model, keras.Sequential)
        config = copy.deepcopy(graph_lib.model_config(model))
        self._edit(config, (), sequential)
        model_class = keras.Sequential if sequential else keras.Model
        small = cloning.model_from_config(model_class, config, self.made)
        for (path, name), weights in self.weights.items():
            if weights:
                _find_layer(small, path, self.renames.get((path, name), name)).set_weights(weights)
        return small

    # The interface of the layer rules.

    def input_indices(self, op, axis):
        """The input channels the new layer reads, along its channel `axis`."""
        key = op.inputs[0]
        tensor = self.plan.tensors[key]
        if axis % len(tensor.shape) == tensor.axis:
            indices = self.physical[key]
        else:
            indices = np.arange(tensor.shape[axis])
        return indices

    def set_layer(self, op, weights, config_changes):
        """The new layer of `op`: `weights`, and its config with
        `config_changes`. A wrapped layer replaces its RBPWrapper."""
        key = (op.path, op.name)
        if op.inputs[0] in self.row_scales:  # a Dense reading folded features
            weights[0] = weights[0] * self.row_scales[op.inputs[0]][:, None]
        self.weights[key] = weights
        if isinstance(op.layer, RBPWrapper) and hasattr(op.inner, "activation"):
            config_changes = dict(config_changes, activation=keras.activations.serialize(op.activation))
        self.entries[key] = (op.inner, config_changes)

    def set_call(self, op, record):
        """Replaces the config record of call `op.call_index` of `op`."""
        self.calls.setdefault((op.path, op.name), {})[op.call_index] = record

    def drop_layer(self, op):
        """Removes the layer of `op`: the readers of each call's output read
        that call's input."""
        self._drop((op.path, op.name))

    def select_features(self, op, in_index):
        """Drops a standalone RBPNoise. Where only Dense layers read it, its
        theta (0 for removed features) scales their kernel rows; elsewhere
        it becomes a Dense that selects and scales the kept features.
        Returns the physical channels of its output."""
        tensor = self.plan.tensors[op.outputs[0]]
        kept = self.plan.kept(op.outputs[0])
        key = (op.path, op.name)
        dense_inputs = self._dense_inputs(op.outputs[0])
        if dense_inputs:
            for dense_input in dense_inputs:
                self.row_scales[dense_input] = op.theta[in_index]
            self._drop(key)
            return in_index
        same_model_input = op.inputs[0][0] == op.path
        if same_model_input and np.array_equal(in_index, kept) and np.all(op.theta[kept] == 1):
            self._drop(key)
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
        selection = keras.layers.Dense(len(kept), use_bias=False, trainable=False, name=name)
        self.entries[key] = (selection, {})
        return kept

    # Helpers.

    def _drop(self, key):
        self.entries[key] = None
        del self.weights[key]

    def _dense_inputs(self, key):
        """The tensors, `key` or a rank-2 Flatten of it, through which only
        Dense layers read `key`; empty if anything else reads it."""
        found = []
        for reader in [op for op in self.plan.ops if key in op.inputs]:
            if type(reader.inner) is keras.layers.Dense and len(reader.inputs) == 1:
                found.append(key)
            elif type(reader.layer) is keras.layers.Flatten and len(self.plan.tensors[key].shape) == 2:
                through = self._dense_inputs(reader.outputs[0])
                if not through:
                    return []
                found.extend(through)
            else:
                return []
        return sorted(set(found))

    def _edit(self, config, path, sequential):
        """Edits the layer entries of a (nested) model config in place."""
        input_keys = {(p, name): key for p, name, key in self.plan.input_layers if p == path}
        entries, renames, dropped = [], {}, {}
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
                if not sequential:  # readers of call k read that call's input
                    for call_index, refs in enumerate(graph_lib.call_inputs(entry)):
                        dropped[(name, call_index)] = refs[0]
                continue
            elif key in self.entries:
                entry = self._replaced(entry, key, *self.entries[key])
                if entry["config"]["name"] != name:
                    renames[name] = entry["config"]["name"]
            elif entry["class_name"] != "InputLayer":
                self.made.replace(entry, cloning.copy_layer(_find_operation(self.plan.model, path, name)))
            for call_index, record in self.calls.get(key, {}).items():
                entry["inbound_nodes"][call_index] = record
            entries.append(entry)
        config["layers"] = entries
        if not sequential:

            def reroute(ref):
                while (ref.layer, ref.node_index) in dropped:
                    ref = dropped[(ref.layer, ref.node_index)]
                return dataclasses.replace(ref, layer=renames.get(ref.layer, ref.layer))

            for entry in entries:
                graph_lib.reroute_references(entry["inbound_nodes"], reroute)
            graph_lib.reroute_references(config["output_layers"], reroute)

    def _edit_input(self, entry, key):
        tensor = self.plan.tensors[key]
        if tensor.unknown:
            return
        layer_config = entry["config"]
        shape_key = "batch_shape" if "batch_shape" in layer_config else "batch_input_shape"
        shape = list(layer_config[shape_key])
        shape[tensor.axis] = len(self.physical[key])
        layer_config[shape_key] = shape

    def _replaced(self, entry, key, layer, config_changes):
        """A config entry for a new layer made from `layer`'s config with
        `config_changes`, wired as `entry` is."""
        name = self.renames.get(key, entry["config"]["name"])
        new_layer = type(layer).from_config(dict(layer.get_config(), name=name, **config_changes))
        new_entry = {"config": {"name": name}}
        if "inbound_nodes" in entry:
            new_entry["inbound_nodes"] = graph_lib.without_none_kwargs(entry["inbound_nodes"])
        self.made.replace(new_entry, new_layer)
        return new_entry


def _weights(layer):
    get_weights = getattr(layer, "get_weights", None)
    return get_weights() if get_weights else []


def _find_layer(model, path, name):
    for nested in path:
        model = model.get_layer(nested)
    return model.get_layer(name)


def _find_operation(model, path, name):
    """Layer or operation `name` of the model that `path` names in `model`."""
    for nested in path:
        model = model.get_layer(nested)
    return _keras.model_operations(model)[name]


def float32_copy(model):
    """`model` with every layer computing in float32: a copy when some layer
    runs under a mixed-precision policy ("mixed_float16", "mixed_bfloat16"),
    else `model` itself. Its variables are float32 already, so the copy's
    outputs are `model`'s computed without the reduced precision."""
    config = model.get_config()
    if not _drop_mixed_precision(config):
        return model
    copy_ = cloning.model_from_config(
        graph_lib.keras_model_class(model), config,
        custom_objects=_keras.custom_objects(graph_lib.all_layers(model)),
    )
    copy_.set_weights(model.get_weights())
    return copy_


def _drop_mixed_precision(config):
    """Replaces every mixed dtype policy in `config`, a nested structure of
    dicts and lists, by "float32"; returns whether it replaced any."""
    replaced = False
    if isinstance(config, list):
        for item in config:
            replaced = _drop_mixed_precision(item) or replaced
    elif isinstance(config, dict):
        for key, value in config.items():
            if key == "dtype" and _policy_name(value).startswith("mixed_"):
                config[key] = "float32"
                replaced = True
            else:
                replaced = _drop_mixed_precision(value) or replaced
    return replaced


def _policy_name(dtype):
    """The name of a layer config's dtype: a string, or a serialised policy
    ({"class_name": "DTypePolicy" or "Policy", "config": {"name": ...}})."""
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name")
    return dtype if isinstance(dtype, str) else ""
