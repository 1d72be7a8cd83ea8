import numpy as np
import pytest
import tensorflow as tf

import tarrl_tf
from tarrl_tf.testing import run_model_test


def _regression_data(shape, dim):
    x = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    return x, tf.data.Dataset.from_tensor_slices((x, np.ones((8, dim), "float32"))).batch(4)


@pytest.mark.parametrize("build, shape, dim", [
    (lambda: tarrl_tf.encoders.small_cnn(input_shape=(12, 12, 1), width=4, representation_dim=16),
     (12, 12, 1), 16),
    (lambda: tarrl_tf.encoders.cifar_resnet(input_shape=(8, 8, 3), width=4,
                                            blocks_per_stage=(1, 1, 1, 1)), (8, 8, 3), 32),
])
def test_encoder_works_end_to_end(build, shape, dim):
    x, data = _regression_data(shape, dim)

    def compiled():
        encoder = build()
        encoder.compile(optimizer="adam", loss="mse")
        return encoder

    model = run_model_test(compiled, x, fit_data=data)
    assert model(x).shape == (8, dim)


def test_resnet18_layout_by_default():
    encoder = tarrl_tf.encoders.cifar_resnet(width=8)
    convs = [l for l in encoder.layers if "conv" in l.name and "shortcut" not in l.name]
    assert len(convs) == 17  # Stem + 4 stages x 2 blocks x 2 convs; the head is the probe's.
    assert encoder.output_shape == (None, 64)


@pytest.mark.parametrize("bad", [(28, 28), (28, 28, 0), (28.0, 28, 1)])
def test_bad_input_shape_raises(bad):
    with pytest.raises(ValueError, match="input_shape"):
        tarrl_tf.encoders.small_cnn(input_shape=bad)
