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
