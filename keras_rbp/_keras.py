"""Which Keras keras_rbp runs on.

Keras 3 with the TensorFlow backend by default; tf_keras (Keras 2) when the
environment sets ``TF_USE_LEGACY_KERAS=1``, as tensorflow-model-optimization
does. Every other module imports Keras from here.
"""

import os

import tensorflow as tf

IS_KERAS_3 = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() not in ("1", "true")

if IS_KERAS_3:
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            "keras_rbp needs the TensorFlow backend of Keras 3; "
            f"KERAS_BACKEND is {keras.backend.backend()!r}. "
            "Set KERAS_BACKEND=tensorflow."
        )
    register_serializable = keras.saving.register_keras_serializable
    serialize = keras.saving.serialize_keras_object
    ONLY_FIRST_REPLICA = "only_first_replica"
else:
    import tf_keras as keras

    register_serializable = keras.utils.register_keras_serializable
    serialize = keras.utils.serialize_keras_object
    ONLY_FIRST_REPLICA = tf.VariableAggregation.ONLY_FIRST_REPLICA

layers = keras.layers

__all__ = [
    "IS_KERAS_3",
    "ONLY_FIRST_REPLICA",
    "keras",
    "layers",
    "register_serializable",
    "serialize",
]
