"""Which Keras keras_rbp runs on.

Keras 3 on any of its backends (TensorFlow by default, JAX or PyTorch as
``KERAS_BACKEND`` says); tf_keras (Keras 2) when the environment sets
``TF_USE_LEGACY_KERAS=1``, as tensorflow-model-optimization does. Every other
module imports Keras from here, and computes with `ops`: Keras 3's
`keras.ops`, which under tf_keras run on TensorFlow tensors.
"""

import contextlib
import inspect
import os
import re

import tensorflow as tf
from absl import logging as absl_logging

IS_KERAS_3 = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() not in ("1", "true")

import keras as keras_3  # noqa: E402  (Keras 3: its ops serve tf_keras too)

ops = keras_3.ops
tree = keras_3.tree
BACKEND = keras_3.backend.backend()
if not IS_KERAS_3 and BACKEND != "tensorflow":
    raise ImportError(
        "keras_rbp under tf_keras (TF_USE_LEGACY_KERAS=1) computes with TensorFlow; "
        f"KERAS_BACKEND is {BACKEND!r}. Unset KERAS_BACKEND or set it to 'tensorflow'."
    )
# Whether models run on TensorFlow: Keras 3's TensorFlow backend, or tf_keras.
ON_TENSORFLOW = BACKEND == "tensorflow"

if IS_KERAS_3:
    keras = keras_3
    register_serializable = keras.saving.register_keras_serializable
    serialize = keras.saving.serialize_keras_object
    ONLY_FIRST_REPLICA = "only_first_replica"
    # add_weight's argument that keeps a float variable in its own dtype
    # under a mixed-precision policy.
    NO_AUTOCAST = {"autocast": False}
    # Keras 3 records `x + 3.0` and `keras.ops.*` calls as operations that
    # are not layers.
    OPERATION_CLASSES = (keras.Operation,)
    from keras.src.models.functional import Functional as FUNCTIONAL
else:
    import tf_keras as keras

    register_serializable = keras.utils.register_keras_serializable
    serialize = keras.utils.serialize_keras_object
    ONLY_FIRST_REPLICA = tf.VariableAggregation.ONLY_FIRST_REPLICA
    NO_AUTOCAST = {"experimental_autocast": False}
    from tf_keras.src.layers.core import TFOpLambda

    # tf_keras records TensorFlow functions called on Keras tensors as
    # TFOpLambda layers (SlicingOpLambda for `x[...]`).
    OPERATION_CLASSES = (TFOpLambda,)
    from tf_keras.src.engine.functional import Functional as FUNCTIONAL

layers = keras.layers


def is_functional(model):
    """Whether `model` has a functional graph: a Functional model or any
    subclass of it (KerasHub's `Backbone` and `Task` classes, a user's
    class that calls the functional constructor)."""
    return isinstance(model, FUNCTIONAL)


def is_plain_model(model):
    """Whether `model` is a plain Sequential or Functional model, whose
    `get_config` writes its graph."""
    return type(model) in (FUNCTIONAL, keras.Sequential)


def functional_view(model):
    """A plain Functional model over the layers and calls of the
    Functional subclass `model` (no layer is copied), with its structure
    of inputs and outputs (a dict stays a dict)."""
    return keras.Model(model.input, model.output, name=model.name)


def output_shapes(layer, input_shapes):
    """The shapes of the outputs of `layer` called on inputs of
    `input_shapes` (a list, one shape per input), as a list."""
    if IS_KERAS_3:
        try:
            shapes = layer.compute_output_shape(input_shapes[0] if len(input_shapes) == 1 else input_shapes)
        except NotImplementedError:  # a user's layer without it: its call is traced
            inputs = [keras.KerasTensor(shape) for shape in input_shapes]
            outputs = layer.compute_output_spec(inputs[0] if len(inputs) == 1 else inputs)
            return [tuple(output.shape) for output in tf.nest.flatten(outputs)]
        return [tuple(shape) for shape in shapes] if isinstance(shapes[0], (list, tuple)) else [tuple(shapes)]
    try:
        shapes = layer.compute_output_shape(input_shapes[0] if len(input_shapes) == 1 else input_shapes)
    except TypeError:  # a layer whose call takes its inputs as arguments (MultiHeadAttention's query, value)
        shapes = layer.compute_output_shape(*input_shapes)
    return [tuple(shape) for shape in shapes] if isinstance(shapes[0], (list, tuple)) else [tuple(shapes)]


def replay(model, inputs, call):
    """The outputs of the calls of Keras 3 Functional `model`, made again on
    the symbolic tensors `inputs` (one per model input), each call made by
    ``call(layer, *args, **kwargs)``: the model's layers become part of the
    graph `inputs` belong to. Keras has no public API for it."""
    return model._run_through_graph(inputs, operation_fn=lambda operation: operation, call_fn=call)


def rename(layer, name):
    """Sets the name of `layer`."""
    if IS_KERAS_3:
        layer.name = name
    else:
        layer._name = name


def shallow_copy(layer):
    """A new layer object with the attributes of `layer` (its sublayers and
    variables shared) and no calls of its own."""
    copied = object.__new__(type(layer))
    copied.__dict__.update(layer.__dict__)
    # tf_keras keeps a layer's calls in *_value attributes behind properties.
    for key in ("_inbound_nodes", "_outbound_nodes", "_inbound_nodes_value", "_outbound_nodes_value"):
        if key in copied.__dict__:
            copied.__dict__[key] = []
    return copied


def constructor_arguments(layer):
    """The arguments `layer` was constructed with, its name left out, where
    Keras recorded them (Keras 3 does when all are plain values), else None."""
    recorded = getattr(layer, "_auto_config", None) if IS_KERAS_3 else None
    return None if recorded is None else dict(recorded.config)


def model_entry_fields(model):
    """The fields of a config entry that make Keras re-create a nested
    model as a plain Sequential or Functional model."""
    cls = keras.Sequential if isinstance(model, keras.Sequential) else FUNCTIONAL
    return {"module": cls.__module__, "class_name": cls.__name__, "registered_name": cls.__name__}

def model_operations(model):
    """Every layer and operation of a Functional or Sequential model, by
    name: Keras 3 keeps operation layers out of `model.layers`."""
    return {op.name: op for op in getattr(model, "operations", model.layers)}


def first_call_shapes(layer):
    """The input and output shapes of the first call of `layer`; a shared
    layer has no single `layer.input`."""
    if IS_KERAS_3:
        node = layer._inbound_nodes[0]
        inputs, outputs = node.input_tensors, node.output_tensors
    else:
        inputs, outputs = layer.get_input_at(0), layer.get_output_at(0)
    first = lambda tensors: tensors[0] if isinstance(tensors, (list, tuple)) else tensors  # noqa: E731
    return tuple(first(inputs).shape), tuple(first(outputs).shape)


def first_call_argument_shapes(layer):
    """The shapes of the tensor arguments of the first call of `layer`, by
    the name of its `call`'s parameter: a dict, in the call's order."""
    node = layer._inbound_nodes[0]
    args, kwargs = (node.arguments.args, node.arguments.kwargs) if IS_KERAS_3 else (node.call_args, node.call_kwargs)
    try:
        bound = inspect.signature(layer.call).bind_partial(*args, **kwargs).arguments
    except TypeError:  # a call recorded with arguments its signature does not name
        return {}
    return {name: tuple(value.shape) for name, value in bound.items() if hasattr(value, "shape")}


def operation_name(operation):
    """The snake_case name of the function an operation layer calls:
    'add' for Keras 3's Add and tf_keras's ``__operators__.add``."""
    if IS_KERAS_3:
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type(operation).__name__).lower()
    return operation.get_config()["function"].rsplit(".", 1)[-1]


def custom_objects(layers):
    """The classes of `layers` that are not public Keras layers, by class
    name, for `from_config`. Keras's own layers are left to Keras: a layer
    and an operation may share a class name (Keras 3's Add)."""
    return {
        type(layer).__name__: type(layer)
        for layer in layers
        if getattr(keras.layers, type(layer).__name__, None) is not type(layer)
    }


__all__ = [
    "IS_KERAS_3",
    "OPERATION_CLASSES",
    "call_record",
    "custom_objects",
    "constructor_arguments",
    "first_call_shapes",
    "first_call_argument_shapes",
    "functional_view",
    "is_functional",
    "is_plain_model",
    "model_entry_fields",
    "input_names",
    "loads_saved_model_folders",
    "model_operations",
    "operation_name",
    "output_shapes",
    "output_names",
    "require_tf_keras",
    "save_tf_saved_model",
    "ONLY_FIRST_REPLICA",
    "BACKEND",
    "ON_TENSORFLOW",
    "erfc",
    "ops",
    "tree",
    "replica",
    "strategy",
    "strategy_scope",
    "own_variables",
    "sync_variables",
    "to_numpy",
    "uniform",
    "keras",
    "layers",
    "register_serializable",
    "rename",
    "replay",
    "serialize",
    "tensorflow_warnings_only",
]


def call_record(output, history, graph_tensor_class):
    """A functional config's record of one call of a layer on a tensor
    shaped like `output`, which `history` ([layer, node index, tensor
    index]) names."""
    if IS_KERAS_3:
        tensor = {
            "class_name": graph_tensor_class,
            "config": {"shape": list(output.shape), "dtype": output.dtype, "keras_history": history},
        }
        return {"args": [tensor], "kwargs": {}}
    return [history + [{}]]


def save_tf_saved_model(model, path):
    """Writes `model` as a TensorFlow SavedModel with a serving_default
    signature."""
    if IS_KERAS_3:
        model.export(path, format="tf_saved_model", verbose=False)
    else:
        tf.saved_model.save(model, path)


def input_names(model):
    """The names of a model's inputs, as its SavedModel signature has them."""
    return [x.name for x in model.inputs] if IS_KERAS_3 else list(model.input_names)


def output_names(model):
    """The names of a model's outputs in its SavedModel signature, in order."""
    if IS_KERAS_3:
        if isinstance(model.output, dict):  # named by key, in flatten order
            return sorted(model.output)
        return [f"output_{i}" for i in range(len(model.outputs))]
    return list(model.output_names)


def loads_saved_model_folders():
    """Whether `keras.models.load_model` reads SavedModel folders (tf_keras
    does; Keras 3 reads .keras files)."""
    return not IS_KERAS_3


def require_tf_keras(caller):
    """Raises when running on Keras 3: `caller` needs tf_keras, on which
    tensorflow-model-optimization runs."""
    if IS_KERAS_3:
        raise RuntimeError(
            f"{caller}: quantization-aware training runs on tensorflow-model-optimization, "
            "which needs Keras 2: install tf-keras and set TF_USE_LEGACY_KERAS=1 before "
            "importing keras_rbp"
        )


@contextlib.contextmanager
def tensorflow_warnings_only():
    """Silences TensorFlow's INFO lines (assets, fingerprints, shards) while
    it writes a SavedModel, which it logs through absl."""
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(min(verbosity, absl_logging.WARNING))
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)


def check_strategy(strategy, caller="keras_rbp"):
    """Raises before any training where Keras cannot train under `strategy`:
    Keras 3's fit fails under MultiWorkerMirroredStrategy (keras-team/keras
    issue 20585), while tf_keras trains there. `prune` and
    `RecursivePruning` call it; call it first to fail before a baseline's
    training."""
    if IS_KERAS_3 and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise RuntimeError(
            f"{caller}: Keras 3 cannot train under MultiWorkerMirroredStrategy (its fit fails "
            "on the strategy's per-replica values, keras-team/keras issue 20585); run the "
            "workers with tf_keras: install tf-keras and set TF_USE_LEGACY_KERAS=1 before "
            "importing keras_rbp"
        )


def uniform(shape, seed, minval=0.0, maxval=1.0):
    """Uniform float32 draws of `shape` in [minval, maxval), the same for
    the same seed: an integer, or a layer's own seed (a
    `keras.random.SeedGenerator` under Keras 3, a tensor of two int64 under
    tf_keras)."""
    if IS_KERAS_3:
        return keras.random.uniform(shape, minval, maxval, dtype="float32", seed=seed)
    if isinstance(seed, int):
        seed = [seed, 0]
    return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval)


def replica():
    """(this replica's index, the number of replicas) under a tf.distribute
    strategy; (0, 1) elsewhere."""
    if not ON_TENSORFLOW:
        return 0, 1
    context = tf.distribute.get_replica_context()
    return (context.replica_id_in_sync_group, context.num_replicas_in_sync) if context else (0, 1)


if IS_KERAS_3:

    class StepSeedGenerator(keras.random.SeedGenerator):
        """A `keras.random.SeedGenerator` whose seed changes once every
        `calls` draws, so that the `calls` calls of one shared noise in a
        training step draw alike, and differs between the replicas of a
        tf.distribute strategy.

        Args:
            seed: the integer seed.
            calls: how many draws share a seed.
        """

        def __init__(self, seed, calls=1, **kwargs):
            super().__init__(seed, **kwargs)
            self.calls = calls

        def next(self, ordered=True):
            del ordered  # always ordered: the counter counts the draws
            state = self.state.value * 1
            dtype = self.state.dtype
            self.state.assign(ops.add(state, ops.convert_to_tensor([0, 1], dtype=dtype)))
            index, replicas = replica()
            step = ops.floor_divide(state[1], ops.cast(self.calls, dtype))
            counter = step * ops.cast(replicas, dtype) + ops.cast(index, dtype)
            return ops.stack([state[0], counter])

        def get_config(self):
            return dict(super().get_config(), calls=self.calls)


def erfc(x):
    """The complementary error function, exact far in the tail where
    1 - erf(x) rounds to 0 (keras.ops has erf only)."""
    if BACKEND == "jax":
        import jax  # noqa: PLC0415  (the JAX backend only)

        return jax.lax.erfc(x)
    if BACKEND == "torch":
        import torch  # noqa: PLC0415  (the PyTorch backend only)

        return torch.special.erfc(ops.convert_to_tensor(x))
    return tf.math.erfc(x)


def sync_variables(model):
    """Makes the variables of `model` hold its training state in the middle
    of `fit`, for a callback to read or change: the JAX backend keeps that
    state apart until the epoch ends."""
    if IS_KERAS_3 and BACKEND == "jax":
        model.jax_state_sync()


def strategy(model):
    """The tf.distribute strategy `model` trains under; None on the JAX and
    PyTorch backends, which have none."""
    return getattr(model, "distribute_strategy", None) if ON_TENSORFLOW else None


def strategy_scope(model):
    """The scope of the strategy of `model`, for variables made for it."""
    chosen = strategy(model)
    return chosen.scope() if chosen is not None else contextlib.nullcontext()


def to_numpy(value):
    """A tensor or variable of the backend in use, or an array, as a numpy
    array (a PyTorch tensor that takes part in gradients too)."""
    if IS_KERAS_3 and isinstance(value, keras.Variable):
        value = value.value
    elif not IS_KERAS_3 and hasattr(value, "numpy"):
        return value.numpy()
    return ops.convert_to_numpy(value)


def own_variables(layer):
    """The variables of `layer` itself, in the order its saved file holds
    them."""
    if IS_KERAS_3:
        return layer._trainable_variables + layer._non_trainable_variables
    return layer._trainable_weights + layer._non_trainable_weights
