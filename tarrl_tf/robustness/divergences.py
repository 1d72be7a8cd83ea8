"""Divergences `d(f(x), f(x'))` between a clean and a perturbed representation.

None of them can be satisfied by shrinking the representation (the "scale
trap" of docs/method.md): they measure it after L2 normalization, through a
distribution of fixed temperature, or relative to its spread over the batch.
The relative ones also close the trap's local form, where every
representation crowds into a small cap of the sphere around a common
direction: small shifts then look small to a normalized distance, but so do
the distances between classes. `normalized_relative_l2` closes both at once,
and its spread, taken on the sphere, cannot be inflated by a few far-away
representations. Each returns one value per example, shape `[batch]`.
"""

import keras
import tensorflow as tf

from tarrl_tf import replicas
from tarrl_tf.registry import Registry

DIVERGENCES = Registry("divergence")


def _normalized(z):
    z = tf.reshape(z, [tf.shape(z)[0], -1])
    return tf.math.l2_normalize(z, axis=-1, epsilon=1e-12)


def _spread(v):
    """Mean squared distance of the rows of `v` from their mean: over the global batch under
    `tf.distribute`, so that a replica's divergence does not depend on the number of replicas."""
    if not replicas.cooperating():
        return tf.reduce_mean(tf.reduce_sum(tf.square(v - tf.reduce_mean(v, 0)), axis=-1))
    count = replicas.sum_over_replicas(tf.cast(tf.shape(v)[0], v.dtype))
    # Two passes, as on one device: E[v^2] - E[v]^2 would cancel away a small spread.
    mean = replicas.sum_over_replicas(tf.reduce_sum(v, 0)) / count
    return replicas.sum_over_replicas(tf.reduce_sum(tf.square(v - mean))) / count


def squared_l2(z_clean, z_perturbed):
    """`||z/|z| - z'/|z'|||^2`, in [0, 4]; equals `2 - 2 cos(z, z')`."""
    return tf.reduce_sum(tf.square(_normalized(z_clean) - _normalized(z_perturbed)), axis=-1)


def cosine_distance(a, b):
    """`1 - cos(a, b)` per example (representations flattened), in [0, 2]."""
    # On unit vectors ||a - b||^2 = 2 - 2 cos(a, b).
    return 0.5 * squared_l2(a, b)


def softmax_kl(z_clean, z_perturbed, temperature=0.1):
    """`KL(softmax(n(z)/t) || softmax(n(z')/t))` with `n` the L2 normalization."""
    log_p = tf.nn.log_softmax(_normalized(z_clean) / temperature, axis=-1)
    log_q = tf.nn.log_softmax(_normalized(z_perturbed) / temperature, axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def relative_squared_l2(z_clean, z_perturbed):
    """`||z - z'||^2 / mean_batch ||z - mean(z)||^2`: the shift relative to the batch's spread.

    About 2 for two unrelated inputs. Needs a batch of clean representations
    (the spread is taken over `z_clean`), and rewards spreading the batch out
    as much as holding each example still.
    """
    z = tf.reshape(z_clean, [tf.shape(z_clean)[0], -1])
    z_p = tf.reshape(z_perturbed, [tf.shape(z_perturbed)[0], -1])
    return tf.reduce_sum(tf.square(z - z_p), axis=-1) / (_spread(z) + 1e-12)


def normalized_relative_squared_l2(z_clean, z_perturbed):
    """`||n(z) - n(z')||^2 / mean_batch ||n(z) - mean(n(z))||^2`, with `n` the L2 normalization.

    The normalized shift relative to the normalized batch's spread, which is
    `1 - ||mean(n(z))||^2`: at most 1 (representations spread over the
    sphere), near 0 when they crowd into a cap. About 2 for two unrelated
    inputs, like `relative_squared_l2`, but the encoder cannot lower it by
    pushing a few representations far out: only directions count.
    """
    n, n_p = _normalized(z_clean), _normalized(z_perturbed)
    # Not `1 - ||mean||^2`, which loses a small cap's spread to float32 cancellation.
    return tf.reduce_sum(tf.square(n - n_p), axis=-1) / (_spread(n) + 1e-12)


def _registered(cls):
    """Registers a divergence class under its `name`."""
    return DIVERGENCES.register(cls.name, cls)


class Divergence:
    """Base class: a named, serializable `d(z_clean, z_perturbed)` returning `[batch]` values."""

    name = None

    def __call__(self, z_clean, z_perturbed):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@_registered
@keras.saving.register_keras_serializable(package="tarrl_tf")
class RelativeSquaredL2(Divergence):
    """Squared L2 shift relative to the representation's spread over the batch."""

    name = "relative_l2"

    def __call__(self, z_clean, z_perturbed):
        return relative_squared_l2(z_clean, z_perturbed)


@_registered
@keras.saving.register_keras_serializable(package="tarrl_tf")
class NormalizedRelativeSquaredL2(Divergence):
    """Squared L2 shift of normalized representations relative to their spread over the batch."""

    name = "normalized_relative_l2"

    def __call__(self, z_clean, z_perturbed):
        return normalized_relative_squared_l2(z_clean, z_perturbed)


@_registered
@keras.saving.register_keras_serializable(package="tarrl_tf")
class SquaredL2(Divergence):
    """Squared L2 distance between L2-normalized representations.

    Through the Gaussian view of docs/method.md, it is also `2 s^2` times the KL
    between `N(n(z), s^2 I)` and `N(n(z'), s^2 I)`.
    """

    name = "squared_l2"

    def __call__(self, z_clean, z_perturbed):
        return squared_l2(z_clean, z_perturbed)


@_registered
@keras.saving.register_keras_serializable(package="tarrl_tf")
class SoftmaxKL(Divergence):
    """KL between softmax distributions of normalized representations.

    Args:
        temperature: softmax temperature; fixed, so the distribution's
            sharpness cannot be traded against the divergence.
    """

    name = "kl"

    def __init__(self, temperature=0.1):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, z_clean, z_perturbed):
        return softmax_kl(z_clean, z_perturbed, temperature=self.temperature)

    def get_config(self):
        return {"temperature": self.temperature}


NAMES = tuple(sorted(DIVERGENCES.names()))


def get(divergence):
    """A divergence object from a name (one of `NAMES`), a config, or passed through."""
    if isinstance(divergence, str):
        return DIVERGENCES.get(divergence)()
    if isinstance(divergence, dict):
        return keras.saving.deserialize_keras_object(divergence)
    if not callable(divergence):
        raise ValueError(f"divergence must be a name or a callable, got {divergence!r}")
    return divergence
