"""keras_rbp: Recursive Bayesian Pruning for Keras.

Wrap a model with `prune`, train it with `RecursivePruning`, remove the
pruned channels with `shrink`, and write mobile files with `export`.
"""

from keras_rbp import _quiet

if _quiet.running_as_command():  # `keras-rbp`, `python -m keras_rbp`: an entry point
    _quiet.set_entry_point_level()

with _quiet.quiet_stderr():  # the lines TensorFlow prints before its logging is set up
    import tensorflow
    from keras_rbp import _keras  # noqa: F401  (Keras, tf_keras)

    if _quiet.quiet():  # and where it looks for a GPU, which it does once
        tensorflow.config.list_physical_devices("GPU")

from keras_rbp import datasets, layer_rules, models, rules  # noqa: F401 (layer_rules registers Keras's layers)
from keras_rbp.distribute import check_strategy, is_chief
from keras_rbp.exporting import ExportCheckError, export
from keras_rbp.latency import benchmark_tflite
from keras_rbp.distillation import distilled
from keras_rbp.layers import RBPNoise
from keras_rbp.metrics import Report, report
from keras_rbp.quantize import quantize_aware
from keras_rbp.rules import LayerRule, ProducerRule, register_rule
from keras_rbp.schedule import PruningSummaries, RecursivePruning
from keras_rbp.surgery import ShrinkError, kept_channels, shrink
from keras_rbp.pruning import freeze, prune, pruning_groups
from keras_rbp.data_sources import ImageFolder
from keras_rbp.pipeline import PruningResult, prune_and_export
from keras_rbp.wrapper import RBPHeadWrapper, RBPWrapper

__version__ = "0.1.0"

__all__ = [
    "ExportCheckError",
    "ImageFolder",
    "LayerRule",
    "ProducerRule",
    "PruningResult",
    "PruningSummaries",
    "RBPNoise",
    "RBPHeadWrapper",
    "RBPWrapper",
    "RecursivePruning",
    "Report",
    "ShrinkError",
    "benchmark_tflite",
    "check_strategy",
    "distilled",
    "export",
    "freeze",
    "is_chief",
    "kept_channels",
    "prune",
    "prune_and_export",
    "pruning_groups",
    "quantize_aware",
    "register_rule",
    "report",
    "shrink",
]
