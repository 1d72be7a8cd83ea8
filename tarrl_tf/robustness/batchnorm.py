"""BatchNorm and the robustness terms: which encoders need care, and the batch-statistics pass.

The search for a worst-case input runs the encoder in inference mode; the
terms that training differentiates run through `batch_statistics_pass` when
the encoder has BatchNormalization (`TARRLModel`, `ACLModel`, `DeACLModel`).
"""

import tensorflow as tf
from keras import layers

# Layers whose output depends on `training`. Without any, a clean training-mode
# pass equals the inference-mode pass, and the training models can reuse it.
_TRAINING_DEPENDENT = (
    layers.BatchNormalization,
    layers.Dropout,
    layers.GaussianNoise,
    layers.GaussianDropout,
    layers.AlphaDropout,
)


def behaves_same_in_training(*models):
    """True if none of `models` holds a layer whose output depends on `training`."""
    return not any(
        isinstance(layer, _TRAINING_DEPENDENT) for model in models for layer in model._flatten_layers()
    )


def _batch_norm_layers(models):
    return [layer for model in models for layer in model._flatten_layers()
            if isinstance(layer, layers.BatchNormalization)]


def has_batch_normalization(*models):
    """True if any of `models` holds a BatchNormalization layer."""
    return bool(_batch_norm_layers(models))


def resolve_batch_statistics(batch_statistics, *models):
    """A model's `batch_statistics` argument: None means whether `models` have BatchNorm."""
    return has_batch_normalization(*models) if batch_statistics is None else bool(batch_statistics)


def batch_statistics_pass(call, first, second, models):
    """`call(first)` and `call(second)` as one training-mode batch; `models` keep their moving statistics.

    `call` runs the models with `training=True`. One batch for both, so the
    two are normalized alike and their difference is measured in the same
    coordinates.

    A loss differentiated through inference-mode BatchNorm treats the moving
    statistics as constants, but every training pass moves them: training
    can lower the loss with weights that only suit statistics about to
    change. On a small CIFAR-10 ResNet, R taken that way stayed near 0.03
    for twelve epochs and then rose to 1.4 in the last two, and the trained
    encoder's worst-case shift was 120 times that of one trained through
    batch statistics (RESULTS.md). With the batch's own statistics the
    gradient accounts for the normalization; restoring the moving ones keeps
    perturbed inputs out of what downstream models see.
    """
    variables = [v for layer in _batch_norm_layers(models)
                 for v in (layer.moving_mean, layer.moving_variance)]
    saved = [tf.identity(v.value) for v in variables]
    outputs = call(tf.concat([first, second], 0))
    with tf.control_dependencies([outputs]):
        for variable, value in zip(variables, saved):
            variable.assign(value)
    return tf.split(outputs, 2)


def recalibrate(encoder, images, batch_size=250):
    """Sets the encoder's BatchNorm moving statistics to the mean batch statistics of `images`.

    The moving statistics of a pretrained encoder come from the augmented
    views its SSL loss saw, while downstream heads and attackers run it in
    inference mode on plain images. `R` taken through batch statistics
    (`batch_statistics_pass`) flattens the encoder as normalized by the
    plain images' own statistics; where those differ from the views', the
    inference-mode encoder can keep a worst-case shift many times larger
    (RESULTS.md, "Natural images"). One training-mode pass over plain,
    unlabeled images, averaging each layer's batch statistics equally
    ("precise BN"), aligns the two. Weights are untouched.

    Args:
        encoder: a Keras model with BatchNormalization layers.
        images: float images `[N, H, W, C]`, N >= batch_size; the first
            `N // batch_size` full batches are used.
        batch_size: images per pass.

    Returns:
        The number of batches averaged.
    """
    layers_ = _batch_norm_layers([encoder])
    if not layers_:
        raise ValueError(f"{encoder.name} has no BatchNormalization layer to recalibrate")
    batches = len(images) // batch_size
    if batches < 1:
        raise ValueError(f"recalibrate needs at least batch_size={batch_size} images, "
                         f"got {len(images)}")
    momenta = [layer.momentum for layer in layers_]
    try:
        for k in range(1, batches + 1):
            # Momentum (k-1)/k makes the moving value the running mean of the k batches so far.
            for layer in layers_:
                layer.momentum = (k - 1) / k
            encoder(tf.constant(images[(k - 1) * batch_size:k * batch_size]), training=True)
    finally:
        for layer, momentum in zip(layers_, momenta):
            layer.momentum = momentum
    return batches
