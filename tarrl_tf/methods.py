"""Self-supervised methods: a projection head plus the objective it is trained with.

A method never touches the encoder: `TARRLModel` passes it the encoder's
representations of two views and adds the robustness regularizer on top, so
the regularizer is independent of the method.
"""

import keras
from keras import layers

from tarrl_tf import losses
from tarrl_tf.checks import check_choice


class Method(keras.layers.Layer):
    """Base class: `call` projects representations, `loss` compares two views' projections."""

    def loss(self, z1, z2):
        raise NotImplementedError


def _projector(hidden_dim, projection_dim, batch_norm):
    stack = [layers.Flatten()]
    stack.append(layers.Dense(hidden_dim, use_bias=not batch_norm))
    if batch_norm:
        stack.append(layers.BatchNormalization())
    stack += [layers.ReLU(), layers.Dense(projection_dim)]
    return keras.Sequential(stack, name="projector")


@keras.saving.register_keras_serializable(package="tarrl_tf")
class SimCLR(Method):
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
        super().__init__(**kwargs)
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim
        self.temperature = temperature
        self.projector = _projector(hidden_dim, projection_dim, batch_norm=False)

    def build(self, input_shape):
        self.projector.build(input_shape)

    def call(self, features, training=None):
        return self.projector(features, training=training)

    def loss(self, z1, z2):
        return losses.nt_xent(z1, z2, temperature=self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update(
            projection_dim=self.projection_dim,
            hidden_dim=self.hidden_dim,
            temperature=self.temperature,
        )
        return config


@keras.saving.register_keras_serializable(package="tarrl_tf")
class BarlowTwins(Method):
    """Barlow Twins: a non-contrastive method (no negatives) with a BatchNorm projector.

    Args:
        projection_dim: output size of the projector.
        hidden_dim: hidden size of the projector.
        off_diagonal_weight: weight of the redundancy-reduction term.

    Reference:
        Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
        Reduction", ICML 2021.
    """

    def __init__(self, projection_dim=128, hidden_dim=256, off_diagonal_weight=5e-3, **kwargs):
        super().__init__(**kwargs)
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim
        self.off_diagonal_weight = off_diagonal_weight
        self.projector = _projector(hidden_dim, projection_dim, batch_norm=True)

    def build(self, input_shape):
        self.projector.build(input_shape)

    def call(self, features, training=None):
        return self.projector(features, training=training)

    def loss(self, z1, z2):
        return losses.barlow_twins(z1, z2, off_diagonal_weight=self.off_diagonal_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            projection_dim=self.projection_dim,
            hidden_dim=self.hidden_dim,
            off_diagonal_weight=self.off_diagonal_weight,
        )
        return config


_BY_NAME = {"simclr": SimCLR, "barlow_twins": BarlowTwins}


def get(method):
    """A method object from a name (`"simclr"`, `"barlow_twins"`), a config, or an object."""
    if isinstance(method, str):
        return _BY_NAME[check_choice(method, _BY_NAME, name="method")]()
    if isinstance(method, dict):
        return keras.saving.deserialize_keras_object(method)
    if isinstance(method, Method):
        return method
    raise ValueError(f"method must be a name {sorted(_BY_NAME)} or a Method, got {method!r}")
