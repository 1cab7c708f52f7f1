"""`prune`, which puts RBP noise on a model's prunable layers, and the
groups of a pruned model: `pruning_groups` and `freeze`."""

import copy
import warnings

import tensorflow as tf

from keras_rbp import _keras
from keras_rbp import cloning
from keras_rbp import composite
from keras_rbp import dependency
from keras_rbp import graph as graph_lib
from keras_rbp import metrics
from keras_rbp import rules
from keras_rbp._keras import keras, serialize
from keras_rbp.layers import RBPNoise
from keras_rbp.rules import activation_name
from keras_rbp.wrapper import RBPWrapper, is_wrappable, supported_names, wrap


def is_prunable(layer):
    """Whether `prune` puts a noise on `layer` of its own accord: a wrappable
    layer other than BatchNormalization, which is wrapped only where it
    directly follows one of the others (see `prune`)."""
    return is_wrappable(layer) and not isinstance(layer, keras.layers.BatchNormalization)


def pruning_groups(model):
    """The prunable groups of a pruned model, in topological order (the
    order in which the recursive schedule visits them), nested models
    included: a dict from group name to its `RBPNoise`. A group is named
    after its RBPWrapper, or after the standalone RBPNoise layer."""
    groups = {}
    for layer in _topological_layers(model):
        if isinstance(layer, RBPWrapper):
            groups[layer.name] = layer.noise
        elif isinstance(layer, RBPNoise):
            groups[layer.name] = layer
        elif isinstance(layer, keras.Model):
            groups.update(pruning_groups(layer))
    return groups


def freeze(model, masks, values=None):
    """Freezes chosen groups with the keep masks given.

    Lets channels chosen by any other means be removed by `shrink` too.

    Args:
        model: a model returned by `prune`.
        masks: a dict from group name (see `pruning_groups`) to a boolean
            array with one entry per channel, True for the channels kept.
        values: an optional dict from group name to the frozen theta of each
            channel; by default the group's current keep probability pi.
    """
    groups = pruning_groups(model)
    values = values or {}
    for name in list(masks) + list(values):
        if name not in groups:
            raise ValueError(
                f"freeze: model {model.name!r} has no pruning group {name!r}; "
                f"its groups are {list(groups)}"
            )
    for name, mask in masks.items():
        groups[name].freeze(mask, values.get(name))


def _topological_layers(model):
    by_name = {layer.name: layer for layer in model.layers}
    return [by_name[name] for name in graph_lib.graph_of(model).topological_order() if name in by_name]


def prune(
    model,
    dataset_size,
    layers=None,
    kl_weight=10.0,
    prior_keep_prob=0.01,
    initial_keep_prob=0.9,
    logit_scale=10.0,
    noise_after_batchnorm=True,
    input_features=False,
    flatten_features=False,
    cost_aware=False,
    coupled_groups=True,
    seed=0,
    method="rbp",
):
    """Returns a copy of `model` with an RBP noise on every prunable layer.

    The user's model is left untouched; the copy has its weights. By default
    every Dense and Conv layer is wrapped except those that produce a model
    output (the classifier).

    Args:
        model: a Sequential or Functional Keras model; nested models, several
            inputs and several outputs are supported.
        dataset_size: the number of training examples, by which the KL is
            divided: an int, or the finite, batched `tf.data.Dataset` that
            fit will read, whose examples are then counted in one pass. A
            repeated dataset or one of unknown length cannot be counted:
            give its size as an int (steps_per_epoch * batch size).
        layers: which layers to wrap: a list of layer names (then exactly
            those, output layers included), or a predicate called with each
            prunable layer. None wraps every prunable layer but the outputs
            and those every one of whose channels `shrink` must keep (a
            transformer's residual stream, which passes through
            LayerNormalization); so does a predicate. Prunable layers
            include MultiHeadAttention, pruned by head.
        kl_weight: multiplies the KL term of every noise.
        prior_keep_prob: pi_0 of the Bernoulli prior.
        initial_keep_prob: the keep probability pi of every channel at start.
        logit_scale: the logits are logit_scale times a trainable variable.
        noise_after_batchnorm: where a layer's only consumer is a
            BatchNormalization, put the noise after the BatchNormalization.
        input_features: also put a noise on each model input's last axis
            (the input pixels of LeNet-300-100).
        flatten_features: also put a noise after each Flatten layer (the
            inputs of a LeNet-5's first dense layer).
        cost_aware: weigh each group's KL by the MACs one of its channels
            carries (see `metrics.channel_costs`), over the mean of the groups,
            so that expensive channels are removed first. Conv nets need it:
            with equal prices the cheap dense neurons go first. A group
            whose channels carry no MACs is priced as the cheapest group
            that carries some; if none does, every group keeps cost 1, with
            a warning.
        coupled_groups: layers whose output channels `shrink` joins one to
            one (the producers of a residual stream, both sides of a
            squeeze-and-excitation product, a convolution and the depthwise
            convolution after it) share one standalone RBPNoise, called
            after each of them (before its activation, which becomes an
            Activation layer): one set of logits, one mask, one KL and one
            recursive stage, so what the mask removes is what `shrink`
            removes. The group is named after its first layer,
            ``<layer>_rbp_noise``. False gives each layer its own noise;
            `shrink` then keeps a channel that any of them keeps.
        seed: seeds every noise of the copy.
        method: the noise of every group: "rbp" (Recursive Bayesian
            Pruning), "rbp_relaxed" (its gates with relaxed-Bernoulli
            samples), or a peer method for comparison, "sbp" (Structured
            Bayesian Pruning), "vib" (VIBNet), "l0" (L0 hard-concrete
            gates) or "magnitude" (no noise: a budget of `RecursivePruning`
            keeps the channels of largest filter L1 norm or
            BatchNormalization |gamma|); see `keras_rbp.methods`. Every
            method uses the same schedules, budgets, `shrink` and `export`.

    Returns:
        A new, uncompiled Keras model with `RBPWrapper` and `RBPNoise` layers.

    Raises:
        ValueError: for a model in which no layer would get a noise, naming
            the blocks whose calls could not be traced (a decoder whose
            causal mask reads the sequence length: GPT-2's, Llama's).
    """
    _check_model(model)
    _keras.check_strategy(tf.distribute.get_strategy(), "prune")
    dataset_size = _count_examples(dataset_size)
    noise_config = dict(
        dataset_size=dataset_size,
        kl_weight=kl_weight,
        prior_keep_prob=prior_keep_prob,
        initial_keep_prob=initial_keep_prob,
        logit_scale=logit_scale,
        method=method,
    )
    RBPNoise(**noise_config)  # checks the arguments before any work
    with composite.expanded_view(model) as view:
        by_name = {layer.name: layer for layer in graph_lib.all_layers(view)}
        chosen = _choose_layers(view, by_name, layers)
        rewriter = _Rewriter(by_name, chosen, noise_config, seed, noise_after_batchnorm)
        config = copy.deepcopy(graph_lib.model_config(view))
        class_name = graph_lib.model_class(view)
        plan = dependency.ChannelPlan(view)
        if layers is None or callable(layers):
            rewriter.skipped = _always_kept(plan, rewriter.targets(class_name, config))
        if coupled_groups:
            rewriter.coupled = dependency.coupled_layers(plan, rewriter.targets(class_name, config))
        rewriter.rewrite(class_name, config, input_features, flatten_features)
        if not rewriter.count:
            raise ValueError(_nothing_to_prune(view, by_name.values()))
        rewriter.copy_other_layers(config)
        pruned = cloning.model_from_config(graph_lib.keras_model_class(view), config, rewriter.made)
        _copy_weights(view, pruned)
    if cost_aware:
        _set_costs(pruned)
    return pruned


def _nothing_to_prune(model, layers):
    """prune's error for a model in which no layer gets a noise."""
    opaque = [f"{layer.name!r} ({type(layer).__name__})" for layer in layers if composite.is_composite(layer)]
    return (
        f"prune: model {model.name!r} has no channels keras_rbp can prune: "
        + (f"layers {', '.join(opaque)} hold others, but their calls could not be traced (see the "
           "warnings), so they stay whole; and no other " if opaque else "no ")
        + f"layer of the classes it prunes ({supported_names(batch_normalization=False)}) has "
        "channels that shrink could remove, outside the layers that make the model's outputs"
    )


def _always_kept(plan, targets):
    """The targets every one of whose channels `shrink` keeps, with a
    warning that names them and why."""
    kept = dependency.always_kept(plan, targets)
    if kept:
        by_reason = {}
        for name, reason in kept.items():
            by_reason.setdefault(reason, []).append(name)
        details = "; ".join(f"{', '.join(map(repr, names))}: {reason}" for reason, names in by_reason.items())
        warnings.warn(
            f"prune: no noise on {len(kept)} layer(s) whose every channel shrink must keep ({details})",
            stacklevel=3,
        )
    return set(kept)


def _count_examples(dataset_size):
    """`prune`'s dataset_size as a positive int: the int given, or the
    examples of a finite batched tf.data.Dataset, counted by one pass."""
    if isinstance(dataset_size, tf.data.Dataset):
        cardinality = int(dataset_size.cardinality())
        if cardinality in (tf.data.INFINITE_CARDINALITY, tf.data.UNKNOWN_CARDINALITY):
            length = "infinite (repeated)" if cardinality == tf.data.INFINITE_CARDINALITY else "of unknown length"
            raise ValueError(
                f"prune: dataset_size is a tf.data.Dataset {length}, whose examples cannot be "
                "counted; pass the number of training examples as an int, for example "
                "steps_per_epoch * batch_size"
            )
        if any(spec.shape.rank == 0 for spec in tf.nest.flatten(dataset_size.element_spec)):
            raise ValueError(
                "prune: dataset_size is a tf.data.Dataset of single examples; pass the batched "
                "dataset that fit reads, or the number of examples as an int"
            )
        dataset_size = int(dataset_size.reduce(
            tf.constant(0, tf.int64),
            lambda count, batch: count + tf.shape(tf.nest.flatten(batch)[0], out_type=tf.int64)[0],
        ))
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size <= 0:
        raise ValueError(
            f"prune: dataset_size must be a positive integer, received: {dataset_size!r}"
        )
    return dataset_size


def _set_costs(pruned):
    """Sets each noise's cost to its MACs per channel over the groups' mean;
    a group whose channels carry no MACs costs what the cheapest group that
    carries some costs. Done before the model is first trained, when the KL
    term is traced."""
    costs = metrics.channel_costs(pruned)
    carrying = [cost for cost in costs.values() if cost > 0]
    if not carrying:
        warnings.warn(
            "prune: cost_aware=True, but no pruning group carries MACs; every group keeps cost 1",
            stacklevel=3,
        )
        return
    mean = sum(costs.values()) / len(costs)
    cheapest = min(carrying) / mean
    for name, noise in pruning_groups(pruned).items():
        noise.cost = costs[name] / mean if costs[name] > 0 else cheapest


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"prune: expected a Keras model, received {type(model).__name__}")
    if not (_keras.is_functional(model) or isinstance(model, keras.Sequential)):
        raise TypeError(
            f"prune: model {model.name!r} is a subclassed model "
            f"({type(model).__name__}); keras_rbp supports Sequential and "
            "Functional models (and their subclasses), whose graph it can read"
        )
    for layer in graph_lib.all_layers(model):
        if isinstance(layer, keras.Model):
            _check_model(layer)
        if isinstance(layer, (RBPWrapper, RBPNoise)):
            raise ValueError(f"prune: model {model.name!r} is already pruned (layer {layer.name!r})")


def _choose_layers(model, by_name, layers):
    """Names of the layers to put a noise on."""
    if layers is None or callable(layers):
        outputs = _output_producers(model)
        return {
            name
            for name, layer in by_name.items()
            if is_prunable(layer)
            and name not in outputs
            and (layers is None or layers(layer))
        }
    names = [layers] if isinstance(layers, str) else list(layers)
    for name in names:
        if name not in by_name:
            raise ValueError(f"prune: layers names {name!r}, which model {model.name!r} lacks")
        layer = by_name[name]
        if not is_prunable(layer):
            raise ValueError(
                f"prune: layer {name!r} of class {type(layer).__name__} cannot be "
                f"pruned; supported: {supported_names(batch_normalization=False)}"
            )
    return set(names)


def _output_producers(model):
    """Prunable layers whose channels reach a model output unchanged or
    through non-prunable layers only: the classifier and its kin. An
    attention layer, whose noise is on its heads, is never one."""
    found = set()

    def walk_back(sub_model, refs):
        """Marks the producers behind `refs`; tells whether the walk went
        through to the inputs of `sub_model`."""
        graph = graph_lib.graph_of(sub_model)
        inputs = {ref.layer for ref in graph.inputs}
        layers = {layer.name: layer for layer in sub_model.layers}
        pending, seen, reached_inputs = list(refs), set(), False
        while pending:
            ref = pending.pop()
            name = ref.layer
            if (name, ref.node_index) in seen:
                continue
            seen.add((name, ref.node_index))
            layer = layers.get(name)
            if name in inputs:
                reached_inputs = True
            elif is_prunable(layer):
                if rules.rule_for(layer).noise_on_outputs:
                    found.add(name)
            elif not isinstance(layer, keras.Model) or walk_back(layer, graph_lib.graph_of(layer).outputs):
                pending.extend(graph.layers[name].calls[ref.node_index])  # the inputs of that call
        return reached_inputs

    walk_back(model, graph_lib.graph_of(model).outputs)
    return found


class _Rewriter:
    """Rewrites a model config: wraps the chosen layers, inserts noises."""

    def __init__(self, by_name, chosen, noise_config, seed, noise_after_batchnorm):
        self.by_name = by_name
        self.chosen = chosen
        self.noise_config = noise_config
        self.seed = seed
        self.noise_after_batchnorm = noise_after_batchnorm
        self.coupled = []  # lists of layer names that share one noise
        self.skipped = set()  # placements whose channels shrink always keeps
        self.count = 0
        self.made = cloning.MadeLayers()  # the layers of the new model

    def _noise(self, **kwargs):
        self.count += 1
        return dict(self.noise_config, seed=self.seed * 100003 + self.count, **kwargs)

    def targets(self, class_name, config):
        """The names of the layers that get a noise, nested models included."""
        graph = graph_lib.Graph.from_config(class_name, config)
        found = self._graph_targets(graph)
        for entry in config["layers"]:
            nested = graph_lib.model_class_name(entry)
            if nested:
                found |= self.targets(nested, entry["config"])
        return found

    def rewrite(self, class_name, config, input_features=False, flatten_features=False):
        graph = graph_lib.Graph.from_config(class_name, config)
        targets = self._graph_targets(graph)
        coupled = [names for names in self.coupled if names[0] in targets]
        shared = {name for names in coupled for name in names}
        for entry in config["layers"]:
            name = entry["config"]["name"]
            nested = graph_lib.model_class_name(entry)
            if nested:
                self.rewrite(nested, entry["config"], flatten_features=flatten_features)
            elif name in targets - shared:
                self._wrap(entry)
        for names in coupled:
            self._insert_shared_noise(config, names)
        inserts = []
        if input_features:
            inserts += [ref.layer for ref in graph.inputs]
        if flatten_features:
            inserts += [n for n, node in graph.layers.items() if node.class_name == "Flatten"]
        for name in inserts:
            self._insert_noise_after(class_name, config, graph, name)

    def _graph_targets(self, graph):
        """The layers of `graph` (one model's) that get a noise."""
        return {self._placement(graph, name) for name in self.chosen & set(graph.layers)} - self.skipped

    def _placement(self, graph, name):
        """The layer to wrap for a chosen layer: itself, or the
        BatchNormalization that is its only consumer."""
        consumers = graph.consumers(name)
        if (
            self.noise_after_batchnorm
            and len(consumers) == 1
            and len(graph.layers[name].calls) <= 1
            and not graph.is_output(name)
            and isinstance(self.by_name.get(consumers[0]), keras.layers.BatchNormalization)
        ):
            return consumers[0]
        return name

    def _wrap(self, entry):
        layer = self.by_name[entry["config"]["name"]]
        calls = max(1, len(entry.get("inbound_nodes", ())))  # a shared layer's noise draws once a step
        self.made.replace(entry, wrap(cloning.copy_layer(layer), self._noise(calls=calls)))

    def copy_other_layers(self, config):
        """Makes every layer of the user's model that `rewrite` left alone
        a copy of that layer, nested models included."""
        for entry in config["layers"]:
            name = entry["config"]["name"]
            if graph_lib.model_class_name(entry):
                self.copy_other_layers(entry["config"])
            elif not cloning.is_made(entry) and entry["class_name"] != "InputLayer" and name in self.by_name:
                self.made.replace(entry, cloning.copy_layer(self.by_name[name]))

    def _insert_shared_noise(self, config, names):
        """Puts one RBPNoise, called once after each layer of `names`, on
        their outputs; a layer's activation moves after the noise."""
        noise_name = f"{names[0]}_rbp_noise"
        noise = serialize(RBPNoise(name=noise_name, calls=len(names), **self._noise()))
        noise.update(name=noise_name, inbound_nodes=[])
        taken = {entry["config"]["name"] for entry in config["layers"]}
        after = {}  # layer name -> the entries to insert after it
        outputs = {}  # layer name -> the tensor its readers read instead
        split = set()  # layers whose activation moves after the noise
        for call_index, name in enumerate(names):
            layer = self.by_name[name]
            noise["inbound_nodes"].append(_call_node(layer))
            outputs[name] = graph_lib.TensorRef(noise_name, call_index)
            after[name] = [noise] if call_index == 0 else []
            activation = getattr(layer, "activation", None)
            if activation is not None and activation_name(activation) != "linear":
                activation_layer = keras.layers.Activation(activation, name=graph_lib.unique_name(f"{name}_activation", taken))
                entry = serialize(activation_layer)
                entry.update(name=activation_layer.name, inbound_nodes=[_call_node(layer, outputs[name])])
                outputs[name] = graph_lib.TensorRef(activation_layer.name)
                after[name].append(entry)
                split.add(name)

        def reroute(ref):
            return outputs.get(ref.layer, ref) if ref.node_index == 0 else ref

        for entry in config["layers"]:
            graph_lib.reroute_references(entry["inbound_nodes"], reroute)
        graph_lib.reroute_references(config["output_layers"], reroute)
        layers = []
        for entry in config["layers"]:
            layers.append(entry)
            name = entry["config"]["name"]
            if name in split:
                self.made.replace(entry, _without_activation(self.by_name[name]))
            layers.extend(after.get(name, []))
        config["layers"] = layers

    def _insert_noise_after(self, class_name, config, graph, name):
        """Puts a standalone RBPNoise on the (only) output of layer `name`."""
        noise_name = f"{name}_rbp_noise"
        entry = serialize(RBPNoise(name=noise_name, **self._noise()))
        layer_names = [e["config"]["name"] for e in config["layers"]]
        position = layer_names.index(name) + 1
        if class_name != graph_lib.SEQUENTIAL:
            for other in config["layers"]:
                graph_lib.rename_references(other["inbound_nodes"], name, noise_name)
            graph_lib.rename_references(config["output_layers"], name, noise_name)
            entry["name"] = noise_name
            entry["inbound_nodes"] = [_call_node(self.by_name[name])]
        config["layers"].insert(position, entry)


def _without_activation(layer):
    """A copy of `layer` with a linear activation."""
    copied = cloning.copy_layer(layer)
    copied.activation = keras.activations.get("linear")
    return copied


def _call_node(layer, source=None):
    """A config's record of one call on the output of `layer`, or on the
    tensor `source` (a `graph.TensorRef`) of the same shape."""
    source = source or graph_lib.TensorRef(layer.name)
    history = [source.layer, source.node_index, source.tensor_index]
    return _keras.call_record(layer.output, history, graph_lib.KERAS_TENSOR)


def _copy_weights(source, target):
    for layer in source.layers:
        new = target.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            _copy_weights(layer, new)
        elif isinstance(new, RBPWrapper):
            new.layer.set_weights(layer.get_weights())
        else:
            new.set_weights(layer.get_weights())
