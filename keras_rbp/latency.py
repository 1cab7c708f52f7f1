"""LiteRT latency: timing a TFLite file, and the per-layer latency table a
latency budget predicts from.

The table follows NetAdapt (Yang et al., ECCV 2018): each Dense and
convolution layer is converted alone to TFLite at a few input and output
widths and timed with one LiteRT thread on the machine at hand. The
timings are noisy (a tenth or more on a busy machine), so each layer's are
fitted by least squares with a constant, the product of its input and
output widths, and each width. A model's latency is predicted from the sum
of its layers' fitted latencies at their kept widths, calibrated against
two whole models (see `LatencyTable`).
"""

import dataclasses
import os
import statistics
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from keras_rbp import _keras, _quiet
from keras_rbp._keras import keras
from keras_rbp.rules import rule_for

from ai_edge_litert.interpreter import Interpreter

# The widths each prunable dimension is timed at, as fractions of its
# channels (and one channel).
FRACTIONS = (0.25, 0.5, 1.0)


def benchmark_tflite(path, num_threads=None, warmup=10, runs=100):
    """LiteRT latency of a TFLite file on one example, in milliseconds.

    Runs the file on random inputs `warmup` times, then times `runs` calls
    of `invoke` and takes the median, once with one thread and once with
    `num_threads`.

    Args:
        path: the TFLite file.
        num_threads: the threads of the multi-thread run; by default every
            CPU of the machine.
        warmup: the untimed runs before timing.
        runs: the timed runs.

    Returns:
        A dict with "single_thread" and "multi_thread" medians, "num_threads"
        and "runs".
    """
    num_threads = num_threads or os.cpu_count()
    for arg, value, low in (("num_threads", num_threads, 1), ("warmup", warmup, 0), ("runs", runs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"benchmark_tflite: {arg} must be an integer >= {low}, received: {value!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"benchmark_tflite: path {path!r} is not a file")
    return {
        "single_thread": median_latency(_interpreter(path, 1), warmup, runs),
        "multi_thread": median_latency(_interpreter(path, num_threads), warmup, runs),
        "num_threads": num_threads,
        "runs": runs,
    }


def _interpreter(path, num_threads):
    """A LiteRT interpreter of a TFLite file, without LiteRT's "Created
    TensorFlow Lite XNNPACK delegate" line where the entry point asked for
    quiet (see `_quiet`)."""
    with _quiet.quiet_stderr():
        return Interpreter(model_path=path, num_threads=num_threads)


def median_latency(interpreter, warmup, runs, batches=1):
    """LiteRT latency of an interpreter on random inputs, in milliseconds:
    after `warmup` calls, the median over `batches` batches of the median
    time of `runs` calls. Other processes slow a machine in bursts; the
    median of short batches' medians stays near the quiet latency."""
    with _quiet.quiet_stderr():  # the delegate's line comes with the first allocation
        interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        shape = [max(1, int(d)) for d in detail["shape"]]
        if detail["dtype"] in (np.int8, np.uint8):  # quantised values: any in range
            info = np.iinfo(detail["dtype"])
            value = rng.integers(info.min, info.max, size=shape, endpoint=True)
        elif np.issubdtype(detail["dtype"], np.integer):  # ids or masks: 0 and 1 are valid in any
            value = rng.integers(0, 1, size=shape, endpoint=True)
        else:
            value = rng.random(shape)
        interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))
    for _ in range(warmup):
        interpreter.invoke()
    medians = []
    for _ in range(batches):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return 1000.0 * statistics.median(medians)


def model_latency(model, warmup=10, runs=25, batches=20, interpreters=4):
    """Single-thread LiteRT latency of a Keras model with one input, on
    one example, in milliseconds, converted in memory to a float32 TFLite
    model with its weights as constants, as `export` writes it.

    The `batches` are shared among `interpreters` interpreters of the one
    file, one after the other, and the least of their `median_latency` is
    the model's: on a shared machine an interpreter's latency wanders by a
    tenth or more for a second at a time, or for its whole life, and only
    the quiet latency repeats from one measurement to the next.
    """
    spec = tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), model.inputs[0].dtype)
    function = tf.function(lambda x: model(x, training=False), autograph=False)
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(spec))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    with tempfile.TemporaryDirectory() as folder, _keras.tensorflow_warnings_only():
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as file:
            file.write(converter.convert())
        each = max(1, batches // interpreters)
        return min(median_latency(_interpreter(path, 1), warmup, runs, each)
                   for _ in range(interpreters))


@dataclasses.dataclass(frozen=True)
class LayerSlot:
    """A layer of a model, as the latency table times it."""

    name: str
    layer: object  # the Keras layer (the wrapped one, for an RBPWrapper)
    input_shape: tuple  # one example's input shape
    axis: int  # the channel axis of input_shape
    in_channels: int
    out_channels: int
    in_prunable: bool
    out_prunable: bool
    passes_channels: bool  # a depthwise layer: as many outputs as inputs


class LatencyTable:
    """Per-layer single-thread LiteRT latencies of a model, in milliseconds.

    A model's layers, timed alone, do not add up to the model: the
    interpreter overlaps and fuses work, and each layer timed alone pays
    the call's overhead that the model pays once. Two whole models
    calibrate the sum (`rest_ms` may be negative, `scale` is kept within
    [0.5, 2]): latency = correction * (rest_ms + scale * (sum of the
    layers' latencies)), where `correction` starts at 1 and a budget
    updates it from measured models.

    Args:
        slots: the `LayerSlot` of each Dense and convolution layer.
        models: two (Keras model of one input, kept fraction) pairs: the
            model with every channel kept, and one keeping a fraction of
            every prunable dimension.
        warmup, runs, batches: timing of each TFLite model (see
            `median_latency`).
    """

    def __init__(self, slots, models, warmup=10, runs=25, batches=20):
        self.warmup, self.runs, self.batches = warmup, runs, batches
        self._measured = {}
        self.grids = {slot.name: self._grid(slot) for slot in slots}
        self.calibration = [
            (model_latency(model, warmup, runs, batches),
             sum(self.layer_ms(name, ratio, ratio) for name in self.grids))
            for model, ratio in models
        ]
        self.scale = calibration_scale(*self.calibration)
        (full_ms, full_sum), _ = self.calibration
        self.rest_ms = full_ms - self.scale * full_sum
        self.correction = 1.0

    def predict(self, layer_ratios):
        """The model's latency when each layer keeps the given fractions:
        a dict from layer name to (input fraction, output fraction)."""
        return self.correction * (self.rest_ms + self.scale * sum(
            self.layer_ms(name, *layer_ratios.get(name, (1.0, 1.0))) for name in self.grids
        ))

    def layer_ms(self, name, in_ratio, out_ratio):
        """A layer's latency alone with the given kept fractions of its
        input and output channels, from the table's fit."""
        in_channels, out_channels, _, coefficients = self.grids[name]
        return float(_features(in_ratio * in_channels, out_ratio * out_channels) @ coefficients)

    def to_dict(self):
        return {
            "calibration": [{"measured_ms": ms, "layers_ms": layers} for ms, layers in self.calibration],
            "rest_ms": self.rest_ms,
            "scale": self.scale,
            "correction": self.correction,
            "layers": {name: {"in_channels": ins, "out_channels": outs, "timed": points, "fit": coefficients.tolist()}
                       for name, (ins, outs, points, coefficients) in self.grids.items()},
        }

    def _grid(self, slot):
        """(input channels, output channels, timed points, fit) of a layer:
        each point is (input width, output width, ms)."""
        groups = getattr(slot.layer, "groups", 1) or 1
        ins = _widths(slot.in_channels, slot.in_prunable, groups)
        if slot.passes_channels:  # its output width is its input's
            widths = [(c_in, c_in) for c_in in ins]
        else:
            widths = [(c_in, c_out) for c_in in ins for c_out in _widths(slot.out_channels, slot.out_prunable, groups)]
        points = [(c_in, c_out, self._time(slot, c_in, None if slot.passes_channels else c_out))
                  for c_in, c_out in widths]
        grid_in, grid_out, ms = np.array(points, float).T
        coefficients = np.linalg.lstsq(_features(grid_in, grid_out), ms, rcond=None)[0]
        return slot.in_channels, slot.out_channels, points, coefficients

    def _time(self, slot, in_channels, out_channels):
        config = slot.layer.get_config()
        for key in ("filters", "units", "num_heads"):
            if key in config and out_channels is not None:
                config[key] = out_channels
        shape = list(slot.input_shape)
        shape[slot.axis] = in_channels
        key = (type(slot.layer).__name__, repr(sorted(config.items(), key=str)), tuple(shape))
        if key not in self._measured:
            config["name"] = "timed"
            inputs = keras.Input(tuple(shape), batch_size=1)
            layer = type(slot.layer).from_config(config)
            model = keras.Model(inputs, rule_for(layer).call_alone(layer, inputs))
            self._measured[key] = model_latency(model, self.warmup, self.runs, self.batches)
        return self._measured[key]


def _features(in_channels, out_channels):
    """The terms a layer's latency is fitted on: a constant, the product of
    its widths (the MACs) and each width (reading and writing)."""
    in_channels, out_channels = np.asarray(in_channels, float), np.asarray(out_channels, float)
    return np.stack([np.ones_like(in_channels), in_channels * out_channels, in_channels, out_channels], -1)


def _widths(channels, prunable, groups):
    """The channel counts a dimension is timed at: one (group), the
    FRACTIONS of its channels, all of them; multiples of `groups`."""
    if not prunable:
        return [channels]
    counts = {groups, channels} | {max(groups, int(round(channels * f / groups)) * groups) for f in FRACTIONS}
    return sorted(counts)


def calibration_scale(full, part):
    """The factor from a layer table's summed milliseconds to a model's
    measured ones: the measured difference between the calibration models
    (full and part, each a (measured ms, table sum) pair) over the table's,
    kept within [0.5, 2]. A factor outside, or none (the part model's sum
    not below the full one's), is clamped or set to 1, with a warning."""
    (full_ms, full_sum), (part_ms, part_sum) = full, part
    measured = (full_ms - part_ms) / (full_sum - part_sum) if full_sum > part_sum else None
    scale = 1.0 if measured is None else min(2.0, max(0.5, measured))
    if measured != scale:
        found = "none" if measured is None else f"{measured:.3g}"
        warnings.warn(
            f"LatencyTable: the calibration models measured {full_ms:.3f} and {part_ms:.3f} ms where "
            f"the layer table sums {full_sum:.3f} and {part_sum:.3f} ms, a scale of {found}; using "
            f"{scale:g}, so latency predictions on this machine are rough",
            stacklevel=3,
        )
    return scale
