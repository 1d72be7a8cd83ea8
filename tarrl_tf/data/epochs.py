"""Training batches whose order is a function of the seed and the epoch alone.

`Dataset.shuffle` draws each epoch's order from a generator that advances with
every pass over the dataset, and `tf.distribute` re-seeds it when it rewrites
the input pipeline for its replicas. A run on two devices then sees other
batches than a run on one, and a run resumed from a backup sees epoch 1's order
again at epoch 5. Here epoch `e` is the permutation drawn from `(seed, e)` by a
stateless shuffle: the same everywhere, and a resumed run starts at its epoch.
"""

import numpy as np
import tensorflow as tf

from tarrl_tf import checks
from tarrl_tf.data import npz


def epoch_batches(images, labels=None, *, batch_size, seed, epochs, first_epoch=0,
                  with_indices=False):
    """The batches of the epochs `first_epoch` to `epochs - 1`, one dataset for `fit`.

    Each epoch is a permutation of the images drawn from `(seed, epoch)`, cut
    into `len(images) // batch_size` full batches (the rest of the permutation
    waits for another epoch); fit with that `steps_per_epoch`. Under
    `tf.distribute` the batches are global: Keras splits each over the replicas.

    Args:
        images: float `[N, H, W, C]` images in `[0, 1]`.
        labels: optional integer `[N]` labels: the batches are `(images, labels)`.
        batch_size: images per batch.
        seed: an int; the orders of all epochs follow from it.
        epochs: the run's number of epochs.
        first_epoch: the first epoch to yield (a resumed run's).
        with_indices: the batches are `(images, indices)`, each image's
            position in `images` (int64), for estimators that remember each image.

    Returns:
        A prefetched `tf.data.Dataset` of `(epochs - first_epoch) * (N // batch_size)` batches.
    """
    checks.check_images(images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    if labels is not None and with_indices:
        raise ValueError("batches carry labels or indices, not both")
    count = len(images)
    if count < batch_size:
        raise ValueError(f"{count} images make no full batch of {batch_size}; lower `batch_size`")
    if not 0 <= first_epoch <= epochs:
        raise ValueError(f"first_epoch must lie in [0, {epochs}], got {first_epoch}")
    keep = count // batch_size * batch_size
    seed = tf.constant(int(seed), tf.int64)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([seed, epoch]))
        return tf.data.Dataset.from_tensor_slices(order[:keep]).batch(batch_size)

    batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    images = tf.constant(np.asarray(images, np.float32))
    if labels is not None:
        labels = tf.constant(npz.check_labels(labels, count, name="labels"))
        batches = batches.map(lambda rows: (tf.gather(images, rows), tf.gather(labels, rows)))
    elif with_indices:
        batches = batches.map(lambda rows: (tf.gather(images, rows), rows))
    else:
        batches = batches.map(lambda rows: tf.gather(images, rows))
    return batches.prefetch(tf.data.AUTOTUNE)
