"""Parameters and MACs per layer, architecture strings, and `report`.

MACs are multiply-accumulates for one example, as each layer's rule counts
them (`LayerRule.macs`): the Dense and convolution layers, and any layer a
user's rule prices (the FLOPs of SBP and Bayesian Compression tables; some
papers print 2 x MACs). Parameters are every weight of a layer, BatchNormalization moving
statistics included, as Keras's `count_params` counts them. The feature
selection layers `shrink` writes (``<layer>_select``) are gathers: they are
listed, but their weights and MACs are left out of the totals.
"""

import dataclasses

import numpy as np

from keras_rbp import composite
from keras_rbp import graph as graph_lib
from keras_rbp._keras import first_call_argument_shapes, first_call_shapes, keras
from keras_rbp.layers import RBPNoise
from keras_rbp.rules import SELECTION_SUFFIX, channel_axis, rule_for
from keras_rbp.wrapper import RBPHeadWrapper, RBPWrapper

L = keras.layers
CONVOLUTIONS = tuple(
    getattr(L, name)
    for name in ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D",
                 "SeparableConv1D", "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose",
                 "Conv3DTranspose")
    if hasattr(L, name)
)


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """One layer's output channels, parameters and MACs."""

    name: str
    kind: str  # the layer class, or "selection"
    channels: int
    params: int
    macs: int


def layer_stats(model):
    """`LayerStats` of every layer of `model` that has weights, nested
    models flattened, in model order. RBPWrapper counts as the layer it
    wraps; RBPNoise layers are left out."""
    with composite.expanded_view(model) as view:
        return [_stats(layer) for layer in graph_lib.all_layers(view) if _counted(layer)]


def _counted(layer):
    inner = layer.layer if isinstance(layer, RBPWrapper) else layer
    return not isinstance(layer, (RBPNoise, keras.Model)) and bool(inner.weights)


def _stats(layer):
    """The `LayerStats` of `layer`'s first call."""
    inner = layer.layer if isinstance(layer, RBPWrapper) else layer
    input_shape, output_shape = first_call_shapes(layer)
    argument_shapes = first_call_argument_shapes(layer) or {"inputs": input_shape}
    return LayerStats(
        name=layer.name,
        kind="selection" if is_selection(inner) else type(inner).__name__,
        channels=int(output_shape[channel_axis(inner)] or 0),
        params=int(sum(np.prod(w.shape) for w in inner.weights)),
        macs=_macs(inner, argument_shapes, output_shape),
    )


def is_selection(layer):
    """Whether `layer` is a feature selection written by `shrink`: a
    non-trainable Dense without bias named ``<layer>_select``. A user's own
    frozen Dense, whatever its weights, counts as a layer."""
    return (
        type(layer) is L.Dense
        and not layer.trainable
        and not layer.use_bias
        and layer.name.endswith(SELECTION_SUFFIX)
    )


def architecture(model):
    """The architecture string of the literature (method.md section 6): the
    filters of each convolution, then the input features of the first Dense
    layer and the units of each Dense layer, the layers that produce a model
    output left out. LeNet-5-Caffe is "20-50-800-500", LeNet-300-100
    "784-300-100"."""
    with composite.expanded_view(model) as view:
        outputs = _output_producers(view)
        widths, dense_seen = [], False
        for layer in graph_lib.all_layers(view):
            inner = layer.layer if isinstance(layer, RBPWrapper) else layer
            if layer.name in outputs or is_selection(inner):
                continue
            if isinstance(inner, CONVOLUTIONS):
                widths.append(int(first_call_shapes(layer)[1][channel_axis(inner)]))
            elif type(inner) is L.Dense:
                if not dense_seen:
                    widths.append(int(inner.kernel.shape[0]))
                    dense_seen = True
                widths.append(int(inner.units))
    return "-".join(str(width) for width in widths)


class Report:
    """Channels, parameters and MACs of each layer before and after `shrink`.

    `str(report)` is a text table; `report.to_dict()` is plain data for JSON.
    """

    def __init__(self, original, small):
        before = {stats.name: stats for stats in layer_stats(original)}
        self.rows = []
        for after in layer_stats(small):
            old = before.get(after.name)
            self.rows.append(
                {
                    "layer": after.name,
                    "kind": after.kind,
                    "channels_before": old.channels if old else None,
                    "channels_after": after.channels,
                    "params_before": old.params if old else 0,
                    "params_after": after.params,
                    "macs_before": old.macs if old else 0,
                    "macs_after": after.macs,
                }
            )
        counted = [row for row in self.rows if row["kind"] != "selection"]
        self.totals = {
            key: sum(row[key] for row in counted)
            for key in ("params_before", "params_after", "macs_before", "macs_after")
        }
        self.totals["params_reduction"] = _ratio(
            self.totals["params_before"], self.totals["params_after"]
        )
        self.totals["macs_reduction"] = _ratio(self.totals["macs_before"], self.totals["macs_after"])
        self.architecture_before = architecture(original)
        self.architecture_after = architecture(small)

    def to_dict(self):
        return {
            "architecture_before": self.architecture_before,
            "architecture_after": self.architecture_after,
            "layers": self.rows,
            "totals": self.totals,
            "macs_unit": "multiply-accumulates per example",
        }

    def __str__(self):
        header = ("layer", "kind", "channels", "params", "MACs", "params kept", "MACs kept")
        lines = [header]
        for row in self.rows:
            lines.append(
                (
                    row["layer"],
                    row["kind"],
                    f"{row['channels_before']} -> {row['channels_after']}",
                    f"{row['params_before']:,} -> {row['params_after']:,}",
                    f"{row['macs_before']:,} -> {row['macs_after']:,}",
                    _percent(row["params_after"], row["params_before"]),
                    _percent(row["macs_after"], row["macs_before"]),
                )
            )
        totals = self.totals
        lines.append(
            (
                "total",
                "",
                "",
                f"{totals['params_before']:,} -> {totals['params_after']:,}",
                f"{totals['macs_before']:,} -> {totals['macs_after']:,}",
                _percent(totals["params_after"], totals["params_before"]),
                _percent(totals["macs_after"], totals["macs_before"]),
            )
        )
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        text = [
            "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in lines
        ]
        text.append(f"architecture: {self.architecture_before} -> {self.architecture_after}")
        text.append(
            f"reduction: params {totals['params_reduction']:.2f}x, "
            f"MACs {totals['macs_reduction']:.2f}x (MACs = multiply-accumulates per example)"
        )
        return "\n".join(text)


def report(original, small):
    """A `Report` comparing the user's model (or the pruned one) with the
    model `shrink` returned."""
    return Report(original, small)


def _ratio(before, after):
    return before / after if after else float("inf")


def _percent(after, before):
    return f"{100.0 * after / before:.1f} %" if before else "-"


def _output_producers(model):
    return {ref.layer for ref in graph_lib.graph_of(model).outputs}


def _macs(layer, argument_shapes, output_shape):
    """The MACs of one call of `layer`, as its rule counts them, from the
    shapes of its call's tensor arguments (by parameter name)."""
    if is_selection(layer):
        return 0
    try:
        return int(rule_for(layer).call_macs(layer, argument_shapes, output_shape))
    except TypeError as error:
        sizes = [size for shape in (*argument_shapes.values(), output_shape) for size in shape[1:]]
        if None not in sizes:
            raise
        raise ValueError(
            f"keras_rbp: the MACs of layer {layer.name!r} depend on sizes its input shape "
            f"{tuple(next(iter(argument_shapes.values())))} leaves unknown; build the model with a fixed input "
            "shape (for example keras.Input((224, 224, 3)), or a KerasHub backbone's image_shape)"
        ) from error


def channel_costs(model):
    """MACs carried by one channel of each group of a pruned model: the MACs
    of the layers that make the group's channels (every producer of a
    coupled group) and of the layers that read them (for attention heads,
    their layer's MACs), over the number of channels. A dict from group
    name (see `pruning_groups`) to MACs per channel; the cost-aware prior
    of `prune` weighs each group's KL by it. Channels that reach a nested model's
    boundary count only the MACs inside that model."""
    costs = {}
    for sub_model in [model] + [layer for layer in graph_lib.all_layers(model) if isinstance(layer, keras.Model)]:
        macs = {stats.name: stats.macs for stats in layer_stats(sub_model)}
        layers = {layer.name: layer for layer in sub_model.layers}
        graph = graph_lib.graph_of(sub_model)
        for name, layer in layers.items():
            noise = layer.noise if isinstance(layer, RBPWrapper) else layer
            if not isinstance(noise, RBPNoise):
                continue
            if isinstance(layer, RBPHeadWrapper):  # its heads are read by nothing outside it
                costs[name] = macs.get(name, 0) / noise.channels
                continue
            if isinstance(layer, RBPWrapper):
                producer = _producer_macs(graph, layers, macs, name)
            else:  # a standalone noise: the layers it follows in each call
                producer = sum(_producer_macs(graph, layers, macs, ref.layer) for ref in graph.layers[name].inputs)
            costs[name] = (producer + _reader_macs(graph, macs, name)) / noise.channels
    return costs


def _producer_macs(graph, layers, macs, name):
    """MACs of layer `name`, or for a BatchNormalization (wrapped or not),
    of the layers it normalises."""
    layer = layers.get(name)
    inner = layer.layer if isinstance(layer, RBPWrapper) else layer
    if isinstance(inner, L.BatchNormalization):
        return sum(macs.get(ref.layer, 0) for ref in graph.layers[name].inputs)
    return macs.get(name, 0)


def _reader_macs(graph, macs, name):
    """MACs of the first layers with MACs downstream of layer `name`."""
    total, pending, seen = 0, graph.consumers(name), set()
    while pending:
        consumer = pending.pop()
        if consumer in seen:
            continue
        seen.add(consumer)
        if macs.get(consumer):
            total += macs[consumer]
        else:
            pending.extend(graph.consumers(consumer))
    return total
