"""Ready-made encoders: headless Keras models that map images to a representation.

Both builders return plain functional `keras.Model`s, so they serialize with
`model.save(...)` / `keras.models.load_model(...)` without custom objects. Any
other `keras.Model` mapping `[batch, H, W, C]` images to features works too.
"""

import math

import keras
from keras import layers

from tarrl_tf.registry import Registry

ARCHITECTURES = Registry("architecture")
NORMS = ("batch", "group")


@ARCHITECTURES.register("small_cnn")
def small_cnn(input_shape=(28, 28, 1), width=32, representation_dim=128, name="small_cnn"):
    """A small VGG-style CNN for 28x28 (or other small) images.

    Four 3x3 convolutions (two strided), then a linear layer over the
    flattened feature map. Flattening keeps where strokes are, which global
    pooling would discard (it matters for digits); a linear representation
    has no dead units for SSL to lose. No BatchNormalization, so training and
    inference behave the same and the robustness regularizer can reuse the
    clean forward pass.

    Args:
        input_shape: `(H, W, C)` of the images.
        width: channels of the first convolution; later ones use 2x and 4x.
        representation_dim: size of the output representation.
        name: model name.

    Example:
    ```python
    encoder = tarrl_tf.encoders.small_cnn(input_shape=(28, 28, 1))
    features = encoder(images)  # [batch, 128]
    ```
    """
    _check_input_shape(input_shape)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(4 * width, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(representation_dim, name="representation")(x)
    return keras.Model(inputs, outputs, name=name)


@ARCHITECTURES.register("cifar_resnet")
def cifar_resnet(
    input_shape=(32, 32, 3),
    width=16,
    blocks_per_stage=(2, 2, 2, 2),
    bn_momentum=0.9,
    norm="batch",
    sync_batch_norm=False,
    name="cifar_resnet",
):
    """A CIFAR-style pre-activation ResNet (ResNet-18 layout by default).

    3x3 stem without pooling, four stages of basic blocks with widths
    `width * (1, 2, 4, 8)`, global average pooling. `width=64` is the
    ResNet-18 of the robust-SSL literature; the small default trains on a CPU.

    Args:
        input_shape: `(H, W, C)` of the images.
        width: channels of the first stage.
        blocks_per_stage: basic blocks in each of the four stages.
        bn_momentum: BatchNormalization momentum. Lower than Keras' 0.99 so
            the moving statistics (used by the regularizer's inference-mode
            passes) track the weights closely during short trainings.
        norm: `"batch"` (BatchNormalization) or `"group"` (GroupNormalization,
            up to 8 groups). Group normalization computes the same function in
            training and inference, so a regularizer that differentiates
            through inference-mode passes sees what the training pass sees
            (see RESULTS.md on CIFAR-10).
        sync_batch_norm: under `tf.distribute`, BatchNormalization uses the
            statistics of the global batch (as on one device) instead of each
            replica's shard. Costs an all-reduce per layer; with small
            per-replica batches it keeps the statistics (and R's batch pass)
            what one device would compute.
        name: model name.

    Reference:
        He et al., "Identity Mappings in Deep Residual Networks", 2016.
    """
    _check_input_shape(input_shape)
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}")
    if len(blocks_per_stage) != 4 or min(blocks_per_stage) < 1:
        raise ValueError(
            f"`blocks_per_stage` must be 4 positive integers, got {blocks_per_stage!r}"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    for stage, blocks in enumerate(blocks_per_stage):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, width * 2**stage, strides, norm, bn_momentum, sync_batch_norm,
                             name=f"stage{stage}_block{block}")
    x = _normalization(x, norm, bn_momentum, sync_batch_norm, name="final")
    x = layers.ReLU()(x)
    outputs = layers.GlobalAveragePooling2D(name="representation")(x)
    return keras.Model(inputs, outputs, name=name)


def _normalization(x, norm, bn_momentum, sync_batch_norm, name):
    """Normalizes `x`; the layer is `{name}_bn` or `{name}_gn`."""
    if norm == "batch":
        return layers.BatchNormalization(momentum=bn_momentum, synchronized=sync_batch_norm,
                                         name=f"{name}_bn")(x)
    return layers.GroupNormalization(math.gcd(x.shape[-1], 8), name=f"{name}_gn")(x)


def _basic_block(x, filters, strides, norm, bn_momentum, sync_batch_norm, name):
    shortcut = x
    x = _normalization(x, norm, bn_momentum, sync_batch_norm, name=f"{name}_1")
    x = layers.ReLU()(x)
    if strides != 1 or shortcut.shape[-1] != filters:
        # Project from the pre-activated tensor, as in the pre-activation ResNet.
        shortcut = layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut"
        )(x)
    x = layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv1"
    )(x)
    x = _normalization(x, norm, bn_momentum, sync_batch_norm, name=f"{name}_2")
    x = layers.ReLU()(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    return layers.Add(name=f"{name}_add")([shortcut, x])


def _check_input_shape(input_shape):
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            f"`input_shape` must be (height, width, channels) of positive ints, got {input_shape!r}"
        )


def image_input_shape(encoder):
    """`(None, H, W, C)` of an encoder with one known rank-4 input, else None."""
    try:
        shape = encoder.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list) or shape is None or len(shape) != 4:
        return None
    return tuple(shape)
