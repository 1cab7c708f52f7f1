"""Knowledge distillation from the unpruned model (Hinton et al., 2015).

`distilled(pruned, teacher)` is a model to compile and fit in place of a
pruned one: the same inputs, layers and outputs, and a loss that adds,
beside the labels' loss, the temperature-softened KL divergence from the
teacher's outputs to the pruned model's: logits, or the probabilities of
a softmax or sigmoid output layer. The teacher (the model given to
`prune`) runs in inference and never trains; it is not part of the
distilled model's weights, so it is neither updated nor saved with it.
Every method, schedule and budget of `RecursivePruning` works on the
distilled model; `shrink` the pruned model afterwards, as always.
"""

from keras_rbp._keras import keras, ops, tree

TEMPERATURE = 4.0
WEIGHT = 1.0
EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] before their logarithm


def distillation_loss(student, teacher, temperature=TEMPERATURE, probabilities=False, binary=False):
    """``T**2 * KL(teacher_T || student_T)``, the KL summed over the last
    axis and averaged over the rest, in float32. The T**2 keeps its
    gradients' scale as T changes.

    Args:
        student, teacher: the two models' outputs: logits, or with
            `probabilities` the softmax's (the sigmoid's, where `binary`)
            probabilities, whose logarithms are logits up to a constant.
        temperature: T, which divides both models' logits.
        probabilities: whether the outputs are probabilities.
        binary: whether each unit is a class of its own (a sigmoid output,
            or a single logit), softened as a two-class softmax of (z, 0).
    """
    teacher = _logits(teacher, probabilities, binary) / temperature
    student = _logits(student, probabilities, binary) / temperature
    if binary:
        teacher, student = (ops.stack([z, ops.zeros_like(z)], -1) for z in (teacher, student))
    kl = ops.sum(ops.softmax(teacher) * (ops.log_softmax(teacher) - ops.log_softmax(student)), -1)
    if binary:
        kl = ops.sum(kl, -1)
    return temperature**2 * ops.mean(kl)


def _logits(outputs, probabilities, binary):
    outputs = ops.cast(outputs, "float32")
    if not probabilities:
        return outputs
    p = ops.clip(outputs, EPSILON, 1.0 - EPSILON)
    return ops.log(p) - ops.log1p(-p) if binary else ops.log(p)


def output_kinds(model):
    """(probabilities, binary) for each output of `model`, as
    `distillation_loss` takes them: probabilities where the layer that
    writes the output ends in a softmax or a sigmoid, binary for a sigmoid
    or a single unit."""
    kinds = []
    for tensor in model.outputs:
        layer, _, index = tensor._keras_history
        while isinstance(layer, keras.Model):  # the nested model's own output layer
            layer, _, index = layer.outputs[index]._keras_history
        activation = getattr(getattr(layer, "activation", None), "__name__", "")
        if isinstance(layer, keras.layers.Softmax):
            activation = "softmax"
        probabilities = activation in ("softmax", "sigmoid")
        kinds.append((probabilities, activation == "sigmoid" or (not probabilities and tensor.shape[-1] == 1)))
    return kinds


class Distillation(keras.layers.Layer):
    """Returns the student's outputs unchanged, and adds `weight` times
    `distillation_loss` to the teacher's outputs on the same inputs.

    The teacher is held outside the layer's tracked attributes: none of
    its weights is the layer's, so none trains or is saved with it."""

    def __init__(self, teacher, temperature=TEMPERATURE, weight=WEIGHT, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_teacher", teacher)
        object.__setattr__(self, "_kinds", output_kinds(teacher))
        self.temperature = float(temperature)
        self.weight = float(weight)

    def call(self, inputs, outputs):
        teacher = self._teacher(inputs, training=False)
        terms = [distillation_loss(student, target, self.temperature, *kind)
                 for student, target, kind in zip(tree.flatten(outputs), tree.flatten(teacher), self._kinds)]
        self.add_loss(self.weight * sum(terms))
        return tree.map_structure(ops.copy, outputs)

    def get_config(self):
        return dict(super().get_config(), temperature=self.temperature, weight=self.weight)


def distilled(pruned, teacher, temperature=TEMPERATURE, weight=WEIGHT):
    """A model to compile and fit in place of `pruned`, whose loss adds
    `weight` times the distillation loss to `teacher`'s outputs.

    Args:
        pruned: a model returned by `prune`; the distilled model shares its
            layers, so what it learns `pruned` holds.
        teacher: the model given to `prune` (or any model with the same
            inputs and outputs), run in inference; it never trains.
        temperature: T, which softens both softmaxes (Hinton et al. use 2
            to 20); 4 by default.
        weight: the distillation term's weight beside the labels' loss;
            1 by default (Hinton et al.'s equal mix, up to a factor 2).
    """
    if not temperature > 0:
        raise ValueError(f"distilled: temperature must be > 0, received: {temperature!r}")
    if not weight >= 0:
        raise ValueError(f"distilled: weight must be >= 0, received: {weight!r}")
    if len(pruned.inputs) != len(teacher.inputs) or len(pruned.outputs) != len(teacher.outputs):
        raise ValueError(
            f"distilled: teacher {teacher.name!r} has {len(teacher.inputs)} input(s) and "
            f"{len(teacher.outputs)} output(s), model {pruned.name!r} {len(pruned.inputs)} and "
            f"{len(pruned.outputs)}; they must match"
        )
    inputs = [keras.Input(batch_shape=tuple(tensor.shape), dtype=tensor.dtype) for tensor in pruned.inputs]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    distillation = Distillation(teacher, temperature, weight, name="distillation")
    return keras.Model(inputs, distillation(inputs, pruned(inputs)), name=f"{pruned.name}_distilled")


def student(model):
    """The pruned model that `model` (from `distilled`) trains, or `model`
    itself: what a budget counts."""
    if any(isinstance(layer, Distillation) for layer in model.layers):
        return next(layer for layer in model.layers if isinstance(layer, keras.Model))
    return model
