"""Downstream classifiers on a pretrained encoder, trained plainly (no adversarial training).

A head reads the L2-normalized representation: the same quantity the
robustness regularizer measures, so the task-agnostic bound (docs/method.md)
applies to it directly (see `linear_head_lipschitz`). The frozen encoder's
features are computed once and the head is trained on them, which makes a
linear probe cost seconds, not an encoder pass per epoch.
"""

import keras
import numpy as np
import tensorflow as tf

from tarrl_tf.checks import check_choice, check_images

HEADS = ("linear", "mlp")


def build_head(num_classes, *, head="linear", hidden_dim=256, name="head"):
    """A head mapping representations to logits.

    Args:
        num_classes: number of classes of the task.
        head: `"linear"` (a linear probe) or `"mlp"` (one hidden ReLU layer).
        hidden_dim: hidden size of the MLP head.
        name: model name.
    """
    check_choice(head, HEADS, name="head")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    stack = [keras.layers.UnitNormalization(name="normalize")]
    if head == "mlp":
        stack.append(keras.layers.Dense(hidden_dim, activation="relu", name="hidden"))
    stack.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(stack, name=name)


def build_classifier(encoder, head, *, name="classifier"):
    """Encoder followed by head: one Keras model from images to logits, for attacking."""
    inputs = keras.Input(shape=encoder.input_shape[1:], name="images")
    return keras.Model(inputs, head(encoder(inputs)), name=name)


def train_classifier(
    encoder,
    x,
    y,
    *,
    num_classes,
    head="linear",
    fine_tune=False,
    epochs=30,
    batch_size=256,
    learning_rate=None,
    hidden_dim=256,
    seed=0,
    verbose=0,
):
    """Trains a head (and, with `fine_tune`, the encoder) with plain cross-entropy.

    Args:
        encoder: a pretrained encoder. Left untouched unless `fine_tune`; with
            `fine_tune` a copy is trained, so the caller's encoder is unchanged.
        x: float images `[N, H, W, C]` in [0, 1].
        y: integer labels `[N]` in `[0, num_classes)`.
        num_classes: number of classes of the task.
        head: `"linear"` or `"mlp"`.
        fine_tune: also train the encoder (a copy), end to end.
        epochs: training epochs.
        batch_size: examples per step.
        learning_rate: Adam's learning rate; defaults to 3e-2 for a frozen
            encoder (heads on unit-norm features need large weights) and 1e-4
            for fine-tuning.
        hidden_dim: hidden size of the MLP head.
        seed: seed for initialization and shuffling.
        verbose: Keras verbosity.

    Returns:
        `(classifier, head)`: the images-to-logits model and its head.
    """
    check_images(x)
    y = _checked_labels(y, len(x), num_classes)
    keras.utils.set_random_seed(seed)
    head_model = build_head(num_classes, head=head, hidden_dim=hidden_dim)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if fine_tune:
        encoder = _trainable_copy(encoder)
        classifier = build_classifier(encoder, head_model)
        classifier.compile(optimizer=keras.optimizers.Adam(learning_rate or 1e-4), loss=loss,
                           metrics=["accuracy"])
        classifier.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)
        return classifier, head_model
    features = encoder.predict(x, batch_size=512, verbose=0)
    head_model.compile(optimizer=keras.optimizers.Adam(learning_rate or 3e-2), loss=loss,
                       metrics=["accuracy"])
    head_model.fit(features, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)
    return build_classifier(encoder, head_model), head_model


def linear_head_lipschitz(head):
    """Lipschitz constant of softmax cross-entropy through a linear head, w.r.t. its input.

    `grad_z l(Wz + b, y) = W^T (p - e_y)` and `||p - e_y||_2 <= sqrt(2)`, so
    the constant is `sqrt(2) ||W||_2` (spectral norm). The head's input is the
    normalized representation, so this multiplies the worst-case shift
    `max ||n(f(x')) - n(f(x))||_2`, the square root of the `squared_l2`
    divergence.
    """
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) != 1:
        raise ValueError("The bound is computed for linear heads only (one Dense layer)")
    kernel = keras.ops.convert_to_numpy(dense[0].kernel)
    return float(np.sqrt(2.0) * np.linalg.norm(kernel, ord=2))


def cross_entropy(classifier, x, y, *, batch_size=512):
    """Mean softmax cross-entropy of a logits model on `(x, y)`."""
    logits = classifier.predict(x, batch_size=batch_size, verbose=0)
    return float(tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=np.asarray(y, "int64"), logits=logits)
    ))


def _trainable_copy(encoder):
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    copy.trainable = True
    return copy


def _checked_labels(y, count, num_classes):
    y = np.asarray(y)
    if y.shape != (count,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {count} integers, got shape {y.shape} dtype {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    return y.astype("int64")
