"""keras_rbp: Recursive Bayesian Pruning for Keras.

Wrap a model with `prune`, train it with `RecursivePruning`, remove the
pruned channels with `shrink`, and write mobile files with `export`.
"""

from keras_rbp.layers import RBPNoise
from keras_rbp.wrapper import RBPWrapper, freeze, prune, pruning_groups

__version__ = "0.1.0"

__all__ = ["RBPNoise", "RBPWrapper", "freeze", "prune", "pruning_groups"]
