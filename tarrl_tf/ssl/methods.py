"""Self-supervised methods: a projection head plus the objective it is trained with.

A method never touches the encoder: `TARRLModel` passes it the encoder's
representations of two views and adds the robustness regularizer on top, so
the regularizer is independent of the method.
"""

import keras
from keras import layers

from tarrl_tf.registry import Registry
from tarrl_tf.ssl import losses

METHODS = Registry("method")


class Method(keras.layers.Layer):
    """Base class: `call` projects representations, `loss` compares two views' projections."""

    def loss(self, z1, z2):
        raise NotImplementedError

    def networks(self):
        """The Keras models it trains (mixed precision runs them in bfloat16)."""
        return []


class ProjectorMethod(Method):
    """A method whose projector is a two-layer MLP (`Flatten -> Dense -> [BN] -> ReLU -> Dense`).

    Subclasses set `batch_norm` and implement `loss`. Under `tf.distribute`
    the projector's BatchNorm normalizes each replica's shard with its own
    statistics, unless `sync_batch_norm` (then with the global batch's, as on
    one device).
    """

    batch_norm = False

    def __init__(self, projection_dim, hidden_dim, sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim
        self.sync_batch_norm = bool(sync_batch_norm)
        stack = [layers.Flatten(), layers.Dense(hidden_dim, use_bias=not self.batch_norm)]
        if self.batch_norm:
            stack.append(layers.BatchNormalization(synchronized=self.sync_batch_norm))
        stack += [layers.ReLU(), layers.Dense(projection_dim)]
        self.projector = keras.Sequential(stack, name="projector")

    def build(self, input_shape):
        self.projector.build(input_shape)

    def networks(self):
        return [self.projector]

    def call(self, features, training=None):
        return self.projector(features, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(projection_dim=self.projection_dim, hidden_dim=self.hidden_dim)
        if self.batch_norm:
            config["sync_batch_norm"] = self.sync_batch_norm
        return config


@METHODS.register("simclr")
@keras.saving.register_keras_serializable(package="tarrl_tf")
class SimCLR(ProjectorMethod):
    """SimCLR: a two-layer MLP projector trained with the NT-Xent loss.

    Args:
        projection_dim: output size of the projector.
        hidden_dim: hidden size of the projector.
        temperature: NT-Xent temperature.

    Reference:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020.
    """

    def __init__(self, projection_dim=64, hidden_dim=256, temperature=0.2, **kwargs):
        super().__init__(projection_dim, hidden_dim, **kwargs)
        self.temperature = temperature

    def loss(self, z1, z2):
        return losses.nt_xent(z1, z2, temperature=self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@METHODS.register("barlow_twins")
@keras.saving.register_keras_serializable(package="tarrl_tf")
class BarlowTwins(ProjectorMethod):
    """Barlow Twins: a non-contrastive method (no negatives) with a BatchNorm projector.

    Args:
        projection_dim: output size of the projector.
        hidden_dim: hidden size of the projector.
        off_diagonal_weight: weight of the redundancy-reduction term.
        sync_batch_norm: under `tf.distribute`, the projector's BatchNorm uses
            the global batch's statistics (default: each replica's own).

    Reference:
        Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
        Reduction", ICML 2021.
    """

    batch_norm = True

    def __init__(self, projection_dim=128, hidden_dim=256, off_diagonal_weight=5e-3,
                 sync_batch_norm=False, **kwargs):
        super().__init__(projection_dim, hidden_dim, sync_batch_norm=sync_batch_norm, **kwargs)
        self.off_diagonal_weight = off_diagonal_weight

    def loss(self, z1, z2):
        return losses.barlow_twins(z1, z2, off_diagonal_weight=self.off_diagonal_weight)

    def get_config(self):
        return {**super().get_config(), "off_diagonal_weight": self.off_diagonal_weight}


NAMES = METHODS.names()


def get(method):
    """A method object from a name (one of `NAMES`), a config, or an object."""
    if isinstance(method, str):
        return METHODS.get(method)()
    if isinstance(method, dict):
        return keras.saving.deserialize_keras_object(method)
    if isinstance(method, Method):
        return method
    raise ValueError(f"method must be a name {sorted(NAMES)} or a Method, got {method!r}")
