"""Self-supervised objectives as pure tensor functions of two batches of projections.

Under `tf.distribute` (in a replica context with several replicas) both
objectives see the GLOBAL batch: the replicas' projections are gathered, so
NT-Xent's negatives and Barlow Twins' cross-correlation do not depend on the
number of devices. Each replica returns a mean over its own rows (NT-Xent) or
the global value (Barlow Twins); `training.base.TrainingModel` scales the
gradients so that their sum over replicas is the one-device gradient.
"""

import tensorflow as tf

from tarrl_tf.replicas import gather


def nt_xent(z1, z2, temperature=0.2):
    """SimCLR's normalized-temperature cross-entropy over the 2N views of a batch.

    Each view's positive is the other view of the same image; the other
    `2N - 2` views in the batch are its negatives (of the global batch, under
    `tf.distribute`: this replica's views are the anchors, every replica's are
    the candidates).

    Args:
        z1: projections of the first views, `[N, D]`.
        z2: projections of the second views, `[N, D]`.
        temperature: softmax temperature.

    Returns:
        The mean loss over this replica's 2N views, a scalar.

    Reference:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020.
    """
    all_z1, offset = gather(z1)
    all_z2, _ = gather(z2)
    anchors = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=-1)
    candidates = tf.math.l2_normalize(tf.concat([all_z1, all_z2], axis=0), axis=-1)
    n, total = tf.shape(z1)[0], tf.shape(all_z1)[0]
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    rows = offset + tf.range(n)  # this replica's images among the candidates
    # A view is not its own negative: push it out of the softmax.
    itself = tf.concat([rows, total + rows], axis=0)
    logits -= 1e9 * tf.one_hot(itself, 2 * total, dtype=logits.dtype)
    positives = tf.concat([total + rows, rows], axis=0)
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
        A scalar loss (of the global batch under `tf.distribute`).

    Reference:
        Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
        Reduction", ICML 2021.
    """
    z1, _ = gather(z1)
    z2, _ = gather(z2)
    n = tf.cast(tf.shape(z1)[0], z1.dtype)

    def standardized(z):
        mean, variance = tf.nn.moments(z, axes=[0])
        return (z - mean) / tf.sqrt(variance + 1e-5)

    correlation = tf.matmul(standardized(z1), standardized(z2), transpose_a=True) / n
    diagonal = tf.linalg.diag_part(correlation)
    on_diagonal = tf.reduce_sum(tf.square(1.0 - diagonal))
    off_diagonal = tf.reduce_sum(tf.square(correlation)) - tf.reduce_sum(tf.square(diagonal))
    return on_diagonal + off_diagonal_weight * off_diagonal
