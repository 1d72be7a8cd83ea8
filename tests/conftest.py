import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import keras


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.fixture
def images():
    """A small batch of float images in [0, 1] with some structure (not pure noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:12, 0:12] / 11.0
    base = np.stack([np.sin(3 * xx + k) * np.cos(2 * yy - k) for k in range(16)])
    x = 0.5 + 0.4 * base + 0.05 * rng.standard_normal(base.shape)
    return np.clip(x, 0, 1)[..., None].astype("float32")


@pytest.fixture
def make_cnn():
    """Builds a tiny `small_cnn` (no BatchNorm)."""
    import tarrl_tf

    def make(input_shape=(12, 12, 1), width=4, representation_dim=16):
        return tarrl_tf.encoders.small_cnn(
            input_shape=input_shape, width=width, representation_dim=representation_dim
        )

    return make


@pytest.fixture
def make_resnet():
    """Builds a tiny `cifar_resnet` (with BatchNorm)."""
    import tarrl_tf

    def make(input_shape=(8, 8, 3)):
        return tarrl_tf.encoders.cifar_resnet(
            input_shape=input_shape, width=4, blocks_per_stage=(1, 1, 1, 1)
        )

    return make
