"""Training on several processes: which tf.distribute strategies the Keras
in use can train under (`check_strategy`), and which process writes files
(a tf.distribute cluster's chief, or the first process of a JAX
`keras.distribution` job)."""

import tensorflow as tf

from keras_rbp import _keras
from keras_rbp._keras import check_strategy  # noqa: F401 (public here)


def is_chief(strategy=None):
    """Whether this process writes summaries, checkpoints and exports: the
    chief of a multi-worker cluster (task "chief", else worker 0), and any
    process that trains on one machine.

    Args:
        strategy: the tf.distribute strategy; by default the current one.
            On the JAX backend, the process of index 0 is the chief.
    """
    if _keras.BACKEND == "jax":
        import jax  # noqa: PLC0415  (the JAX backend only)

        return jax.process_index() == 0
    resolver = getattr(strategy or tf.distribute.get_strategy(), "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
