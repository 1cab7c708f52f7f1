"""Tests of RBPNoise and RBPWrapper on every supported layer type."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_rbp import noise as noise_lib
from keras_rbp._keras import keras
from keras_rbp.layers import RBPNoise
from keras_rbp.rules import channel_axis
from keras_rbp.wrapper import RBPWrapper
from noise_test import moments_match

L = keras.layers
N = 1000


def _shape(channels_last_shape, data_format):
    if data_format == "channels_last":
        return channels_last_shape
    return (channels_last_shape[-1],) + channels_last_shape[:-1]


# name -> (layer factory taking data_format, channels_last input shape)
LAYERS = {
    "dense": (lambda df: L.Dense(6, activation="relu"), (5,)),
    "conv1d": (lambda df: L.Conv1D(6, 3, activation="relu", data_format=df), (9, 4)),
    "conv2d": (lambda df: L.Conv2D(6, 3, activation="relu", data_format=df), (7, 7, 3)),
    "conv3d": (lambda df: L.Conv3D(4, 2, activation="tanh", data_format=df), (4, 4, 4, 2)),
    "depthwise_conv2d": (
        lambda df: L.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", data_format=df),
        (6, 6, 3),
    ),
    "separable_conv2d": (
        lambda df: L.SeparableConv2D(5, 3, activation="relu", data_format=df),
        (6, 6, 3),
    ),
    "batch_normalization": (
        lambda df: L.BatchNormalization(axis=-1 if df == "channels_last" else 1),
        (4, 4, 3),
    ),
}
CASES = [
    (name, df)
    for name in LAYERS
    for df in ("channels_last", "channels_first")
    if not (name == "dense" and df == "channels_first")
]


def _call(layer, x, training=False):
    """Calls `layer` in a tf.function, returning its outputs and loss values.
    Channels_first convolutions are compiled with XLA, which runs them on
    the CPU (TensorFlow's own CPU kernels support channels_last only)."""
    inner = getattr(layer, "layer", layer)
    xla = getattr(inner, "data_format", None) == "channels_first"

    @tf.function(jit_compile=xla)
    def run():
        outputs = layer(x, training=training)
        return outputs, list(layer.losses)

    outputs, losses = run()
    return outputs.numpy(), [float(loss) for loss in losses]


def _random_weights(layer):
    rng = np.random.RandomState(0)
    return [
        rng.uniform(0.5, 1.5, w.shape).astype("float32")
        if "variance" in w.name
        else rng.normal(size=w.shape).astype("float32")
        for w in layer.weights
    ]


def _pair(name, data_format, **noise_kwargs):
    """An unwrapped layer and a wrapper of its twin with the same weights."""
    factory, shape = LAYERS[name]
    shape = (4,) + _shape(shape, data_format)
    layer = factory(data_format)
    layer.build(shape)
    layer.set_weights(_random_weights(layer))
    twin = type(layer).from_config(layer.get_config())
    wrapper = RBPWrapper(twin, dict(dataset_size=N, seed=7, **noise_kwargs))
    wrapper.build(shape)
    twin.set_weights(layer.get_weights())
    x = np.random.RandomState(1).normal(size=shape).astype("float32")
    return layer, wrapper, x


@pytest.mark.parametrize("name,data_format", CASES)
def test_off_mode_is_bit_exact(name, data_format):
    layer, wrapper, x = _pair(name, data_format)
    assert wrapper.noise.mode == "off"
    for training in (False, True):
        expected, _ = _call(layer, x, training)
        outputs, losses = _call(wrapper, x, training)
        np.testing.assert_array_equal(outputs, expected)
        assert losses == [0.0]


def _folded_layer(layer, input_shape, theta):
    """A copy of `layer` with theta folded into its weights by hand."""
    weights = [w.copy() for w in layer.get_weights()]
    if isinstance(layer, L.BatchNormalization):
        weights[0] *= theta  # gamma
        weights[1] *= theta  # beta
    elif isinstance(layer, L.DepthwiseConv2D):
        kernel = weights[0]
        weights[0] = kernel * theta.reshape(kernel.shape[2], kernel.shape[3])
        weights[1] *= theta
    else:  # Dense, Conv*, SeparableConv2D (pointwise kernel): output axis last
        k = 1 if isinstance(layer, L.SeparableConv2D) else 0
        weights[k] = weights[k] * theta
        weights[-1] = weights[-1] * theta
    folded = type(layer).from_config(layer.get_config())
    folded.build(input_shape)
    folded.set_weights(weights)
    return folded


@pytest.mark.parametrize("name,data_format", CASES)
def test_frozen_mode_equals_folded_layer(name, data_format):
    layer, wrapper, x = _pair(name, data_format)
    channels = wrapper.noise.channels
    rng = np.random.RandomState(3)
    mask = rng.rand(channels) > 0.4
    value = rng.uniform(0.2, 1.0, channels).astype("float32")
    wrapper.noise.freeze(mask, value)
    folded = _folded_layer(layer, x.shape, (mask * value).astype("float32"))
    for training in (False, True):
        outputs, losses = _call(wrapper, x, training)
        np.testing.assert_allclose(outputs, _call(folded, x, training)[0], rtol=1e-5, atol=1e-5)
        assert losses == [0.0]


@pytest.mark.parametrize("name,data_format", CASES)
def test_active_mode_adds_one_kl_term(name, data_format):
    layer, wrapper, x = _pair(name, data_format, kl_weight=3.0, prior_keep_prob=0.05)
    noise = wrapper.noise
    noise.scaled_logits.assign(np.linspace(-0.5, 0.5, noise.channels).astype("float32"))
    noise.mode = "active"
    _, losses = _call(wrapper, x, training=True)
    pi = noise.keep_probability().astype("float64")
    kl = pi * np.log(pi / 0.05) + (1 - pi) * np.log((1 - pi) / 0.95)
    assert len(losses) == 1
    assert losses[0] == pytest.approx(3.0 * kl.sum() / N, rel=1e-5)


@pytest.mark.parametrize("name,data_format", CASES)
def test_active_inference_uses_the_mean(name, data_format):
    layer, wrapper, x = _pair(name, data_format)
    wrapper.noise.mode = "active"
    folded = _folded_layer(layer, x.shape, wrapper.noise.keep_probability())
    np.testing.assert_allclose(_call(wrapper, x)[0], _call(folded, x)[0], rtol=1e-5, atol=1e-5)


def test_noise_is_seeded_per_example_and_per_step():
    def run(seed):
        layer = RBPNoise(dataset_size=N, seed=seed, initial_keep_prob=0.5)
        layer.build((None, 8))
        layer.mode = "active"
        x = tf.ones([3, 8])
        return [layer(x, training=True).numpy() for _ in range(2)]

    first, second = run(5), run(5)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.allclose(first[0], first[1])  # a new draw each step
    assert not np.allclose(first[0][0], first[0][1])  # and each example
    assert not np.allclose(run(6)[0], first[0])


def test_a_noise_called_at_several_places_draws_once_and_adds_one_kl():
    """A coupled group's noise: each call of a step multiplies by the same
    theta, and the calls' losses add up to one KL."""
    noise = RBPNoise(dataset_size=N, kl_weight=2.0, calls=3, seed=4, initial_keep_prob=0.5)
    inputs = keras.Input((4,))
    outputs = [noise(L.Identity()(inputs)) for _ in range(3)]
    model = keras.Model(inputs, L.Concatenate()(outputs))
    noise.mode = "active"
    x = tf.ones([5, 4])
    steps = [model(x, training=True).numpy().reshape(5, 3, 4) for _ in range(2)]
    for theta in steps:
        np.testing.assert_array_equal(theta[:, 0], theta[:, 1])
        np.testing.assert_array_equal(theta[:, 0], theta[:, 2])
    assert not np.allclose(steps[0], steps[1])
    pi = noise.keep_probability().astype("float64")
    kl = pi * np.log(pi / 0.01) + (1 - pi) * np.log((1 - pi) / 0.99)
    assert float(sum(model.losses)) == pytest.approx(2.0 * kl.sum() / N, rel=1e-5)
    assert noise.kl_loss() == pytest.approx(2.0 * kl.sum() / N, rel=1e-5)


def test_sampled_theta_has_the_noise_moments():
    layer = RBPNoise(dataset_size=N, seed=1, initial_keep_prob=0.3)
    layer.build((None, 4))
    layer.mode = "active"
    layer.noise_scale.assign(2.0)
    theta = layer(tf.ones([50_000, 4]), training=True).numpy()
    assert moments_match(theta.ravel(), 0.3, 4.0 * 0.3 * 0.7)


def test_frozen_and_off_modes_give_no_gradient_to_the_logits():
    layer = RBPNoise(dataset_size=N, seed=1)
    layer.build((None, 4))
    for mode in ("off", "frozen"):
        layer.mode = mode
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(tf.ones([2, 4]), training=True)) + sum(layer.losses)
        grad = tape.gradient(loss, layer.scaled_logits)
        assert grad is None or not np.any(tf.convert_to_tensor(grad).numpy())
    layer.mode = "active"
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.ones([2, 4]), training=True)) + sum(layer.losses)
    assert np.all(tape.gradient(loss, layer.scaled_logits).numpy() != 0)


def test_non_trainable_noise_is_deterministic_in_training():
    layer = RBPNoise(dataset_size=N, seed=1, initial_keep_prob=0.4)
    layer.build((None, 4))
    layer.mode = "active"
    layer.trainable = False
    assert layer.trainable_weights == []
    outputs = layer(tf.ones([3, 4]), training=True)
    np.testing.assert_allclose(outputs.numpy(), np.full([3, 4], 0.4), rtol=1e-6)
    assert [float(term) for term in layer.losses] == [0.0]
    assert "trainable" not in layer.get_config()
    assert RBPNoise.from_config(layer.get_config()).trainable


def test_logit_scale_multiplies_the_variable():
    layer = RBPNoise(dataset_size=N, logit_scale=10.0, initial_keep_prob=0.9)
    layer.build((None, 2))
    np.testing.assert_allclose(layer.keep_probability(), [0.9, 0.9], rtol=1e-6)
    np.testing.assert_allclose(
        layer.scaled_logits.numpy(), [noise_lib.logit(0.9) / 10.0] * 2, rtol=1e-6
    )


def test_config_is_plain_data_and_round_trips():
    factory, shape = LAYERS["conv2d"]
    wrapper = RBPWrapper(factory("channels_last"), dict(dataset_size=N, kl_weight=2.0, seed=3))
    wrapper(np.zeros((1,) + shape, "float32"))
    config = wrapper.get_config()
    json.dumps(config)
    clone = RBPWrapper.from_config(config)
    assert clone.noise.get_config() == wrapper.noise.get_config()
    assert clone.get_config()["activation"] == "relu"
    assert clone.layer.get_config()["activation"] == "linear"
    assert channel_axis(clone.layer) == -1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dataset_size=0), "dataset_size must be a positive integer, received: 0"),
        (dict(dataset_size=10, prior_keep_prob=1.0), "prior_keep_prob must be in"),
        (dict(dataset_size=10, kl_weight=-1.0), "kl_weight must be positive, received: -1.0"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RBPNoise(**kwargs)


def test_unsupported_layer_is_refused():
    with pytest.raises(ValueError, match="cannot wrap layer 'norm' of class LayerNormalization"):
        RBPWrapper(L.LayerNormalization(name="norm"), dict(dataset_size=N))


def test_bad_mode_and_mask_are_refused():
    layer = RBPNoise(dataset_size=N, name="gate")
    layer.build((None, 3))
    with pytest.raises(ValueError, match="mode must be one of .* received: 'on'"):
        layer.mode = "on"
    with pytest.raises(ValueError, match=r"'gate': mask must have shape \(3,\)"):
        layer.freeze(np.ones(4))
