"""Batches whose order is a function of `(seed, epoch)`, so a resumed run replays its epochs.

`tf.data`'s `shuffle(seed=..., reshuffle_each_iteration=True)` draws each
epoch's order from a generator that lives in the process: a run restarted at
epoch 3 would get the order of epoch 1 again, and end with other weights than
the run that never stopped. Here epoch `e` takes the permutation that the
stateless generator gives for `(seed, e)`, and one dataset holds the batches
of the epochs `first_epoch, ..., epochs - 1`, so a run that restarts at an
epoch sees exactly the batches the uninterrupted run saw (fit it with
`steps_per_epoch`; see `training.pretraining.fit_model`).
"""

import numpy as np
import tensorflow as tf


def check_epochs(epochs, first_epoch):
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive int, got {epochs!r}")
    if (isinstance(first_epoch, bool) or not isinstance(first_epoch, int)
            or not 0 <= first_epoch < epochs):
        raise ValueError(f"`first_epoch` must be an int in [0, {epochs}), got {first_epoch!r}")


def batches_per_epoch(size, batch_size, drop_remainder):
    return size // batch_size if drop_remainder else -(-size // batch_size)


def permutation(size, seed, epoch):
    """The order of epoch `epoch`: a permutation of `range(size)` drawn at `(seed, epoch)`."""
    seeds = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), seed=seeds)


def epoch_batches(arrays, *, batch_size, epochs, first_epoch=0, shuffle=True, seed=None,
                  drop_remainder=True, with_indices=False):
    """The batches of `arrays` (sliced together) for the epochs `first_epoch, ..., epochs - 1`.

    Args:
        arrays: in-memory arrays with the same first dimension (images, or
            images and labels).
        batch_size: examples per batch.
        epochs, first_epoch: the epochs the dataset holds.
        shuffle: each epoch in its own order (else the arrays' order).
        seed: seed of the orders; None draws one (a resumed run then sees
            other orders).
        drop_remainder: drop each epoch's last partial batch.
        with_indices: add each example's position in `arrays` (int64).

    Returns:
        A prefetched dataset of batches: one array's batch alone, or a tuple.
    """
    check_epochs(epochs, first_epoch)
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    size = len(arrays[0])
    # Captured by the gather below: the arrays stay in memory once, never in a graph.
    tensors = [tf.convert_to_tensor(a) for a in arrays]

    def one_epoch(epoch):
        order = permutation(size, seed, epoch) if shuffle else tf.range(size, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder)

    def gather(indices):
        parts = tuple(tf.gather(t, indices) for t in tensors)
        parts += (indices,) if with_indices else ()
        return parts if len(parts) > 1 else parts[0]

    total = (epochs - first_epoch) * batches_per_epoch(size, batch_size, drop_remainder)
    dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    # flat_map hides the length; Keras counts on it to end the last epoch.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(total))
    return dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
