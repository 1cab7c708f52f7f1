"""The reference networks of the pruning literature, as Keras models."""

from keras_rbp._keras import keras

layers = keras.layers


def lenet_300_100(input_shape=(28, 28, 1), classes=10):
    """LeNet-300-100: flattened input pixels, dense 300, dense 100, classifier."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(300, activation="relu", name="fc1")(x)
    x = layers.Dense(100, activation="relu", name="fc2")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet_300_100")


def lenet5_caffe(input_shape=(28, 28, 1), classes=10):
    """LeNet-5-Caffe: conv 20 (5x5), pool, conv 50 (5x5), pool, dense 500,
    classifier; 20-50-800-500 in the literature's notation."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(20, 5, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(50, 5, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(500, activation="relu", name="fc1")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet5_caffe")
