"""The reference networks of the pruning literature, as Keras models."""

from keras_rbp._keras import keras, register_serializable

layers = keras.layers


@register_serializable(package="keras_rbp")
class PositionEmbedding(layers.Layer):
    """Adds a learned vector to each position of a (batch, positions,
    channels) sequence: where each patch of a ViT sits."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            name="embedding", shape=tuple(input_shape[1:]), initializer=keras.initializers.RandomNormal(stddev=0.02)
        )

    def call(self, inputs):
        return inputs + self.embedding


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


def small_resnet(input_shape=(28, 28, 1), classes=10, width=8, blocks=2):
    """A ResNet-style network: a conv stem with BatchNormalization, `blocks`
    residual blocks (two 3x3 convs with BatchNormalization, an identity
    shortcut, a max pooling), a dense classifier. The stem and the blocks'
    second BatchNormalization write one residual stream."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(width, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for block in range(1, blocks + 1):
        y = layers.Conv2D(width, 3, padding="same", name=f"block{block}_conv1")(x)
        y = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn1")(y)
        y = layers.ReLU(name=f"block{block}_relu1")(y)
        y = layers.Conv2D(width, 3, padding="same", name=f"block{block}_conv2")(y)
        y = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn2")(y)
        x = layers.ReLU(name=f"block{block}_out")(layers.Add(name=f"block{block}_add")([x, y]))
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_resnet")


# VGG-16's conv channels, block by block, each block closed by a max pooling.
VGG16_CHANNELS = (
    64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool",
    512, 512, 512, "pool", 512, 512, 512, "pool",
)  # fmt: skip


def vgg16_cifar10(input_shape=(32, 32, 3), classes=10):
    """VGG-16 for CIFAR-10 images: 13 conv layers (3x3) with
    BatchNormalization and ReLU in five blocks, then dense 512 and the
    classifier, as in the pruning literature's CIFAR-10 experiments."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    conv, block = 0, 1
    for channels in VGG16_CHANNELS:
        if channels == "pool":
            x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
            block += 1
            continue
        conv += 1
        x = layers.Conv2D(channels, 3, padding="same", name=f"conv{conv}")(x)
        x = layers.BatchNormalization(name=f"bn{conv}")(x)
        x = layers.ReLU(name=f"relu{conv}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="fc1")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="vgg16_cifar10")


def small_vit(input_shape=(28, 28, 1), classes=10, patch_size=4, dim=64, blocks=2, heads=4, mlp_dim=128,
              conv_stem=0):
    """A small Vision Transformer, written as in the Keras examples: patches
    embedded by a strided Conv2D, a learned position embedding, `blocks`
    pre-norm transformer blocks
    (LayerNormalization, MultiHeadAttention of `heads` heads, a residual
    Add, LayerNormalization, a gelu Dense of `mlp_dim` and a Dense back to
    `dim`, a residual Add), a LayerNormalization, average pooling over the
    tokens and a dense classifier. With `conv_stem` channels, a 3x3
    convolution with BatchNormalization and ReLU comes first, as in hybrid
    models (MobileViT)."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if conv_stem:
        x = layers.Conv2D(conv_stem, 3, padding="same", name="stem")(x)
        x = layers.BatchNormalization(name="stem_bn")(x)
        x = layers.ReLU(name="stem_relu")(x)
    x = layers.Conv2D(dim, patch_size, strides=patch_size, name="patches")(x)
    grid = (input_shape[0] // patch_size) * (input_shape[1] // patch_size)
    x = layers.Reshape((grid, dim), name="tokens")(x)
    x = PositionEmbedding(name="positions")(x)
    for block in range(1, blocks + 1):
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm1")(x)
        y = layers.MultiHeadAttention(heads, dim // heads, name=f"block{block}_attention")(y, y)
        x = layers.Add(name=f"block{block}_add1")([x, y])
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm2")(x)
        y = layers.Dense(mlp_dim, activation="gelu", name=f"block{block}_mlp1")(y)
        y = layers.Dense(dim, name=f"block{block}_mlp2")(y)
        x = layers.Add(name=f"block{block}_add2")([x, y])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_vit")
