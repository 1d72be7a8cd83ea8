"""Self-supervised objectives as pure tensor functions of two batches of projections."""

import tensorflow as tf


def nt_xent(z1, z2, temperature=0.2):
    """SimCLR's normalized-temperature cross-entropy over the 2N views of a batch.

    Each view's positive is the other view of the same image; the other
    `2N - 2` views in the batch are its negatives.

    Args:
        z1: projections of the first views, `[N, D]`.
        z2: projections of the second views, `[N, D]`.
        temperature: softmax temperature.

    Returns:
        The mean loss over the 2N views, a scalar.

    Reference:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020.
    """
    z = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=-1)
    n = tf.shape(z1)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    # A view is not its own negative: push the diagonal out of the softmax.
    logits -= 1e9 * tf.eye(2 * n, dtype=logits.dtype)
    positives = tf.concat([tf.range(n, 2 * n), tf.range(n)], axis=0)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positives, logits=logits)
    )


def barlow_twins(z1, z2, off_diagonal_weight=5e-3):
    """Barlow Twins: the cross-correlation of the two views' projections driven to identity.

    Args:
        z1: projections of the first views, `[N, D]`.
        z2: projections of the second views, `[N, D]`.
        off_diagonal_weight: weight of the redundancy-reduction term.

    Returns:
        A scalar loss.

    Reference:
        Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
        Reduction", ICML 2021.
    """
    n = tf.cast(tf.shape(z1)[0], z1.dtype)

    def standardized(z):
        mean, variance = tf.nn.moments(z, axes=[0])
        return (z - mean) / tf.sqrt(variance + 1e-5)

    correlation = tf.matmul(standardized(z1), standardized(z2), transpose_a=True) / n
    diagonal = tf.linalg.diag_part(correlation)
    on_diagonal = tf.reduce_sum(tf.square(1.0 - diagonal))
    off_diagonal = tf.reduce_sum(tf.square(correlation)) - tf.reduce_sum(tf.square(diagonal))
    return on_diagonal + off_diagonal_weight * off_diagonal
