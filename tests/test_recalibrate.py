"""`robustness.batchnorm.recalibrate`: moving statistics set from plain images, weights untouched."""

import keras
import numpy as np
import pytest

from tarrl_tf.robustness.batchnorm import recalibrate


def _encoder():
    inputs = keras.Input((6, 6, 2))
    normalized = keras.layers.BatchNormalization(momentum=0.9)(inputs)
    h = keras.layers.Conv2D(3, 3)(normalized)
    return keras.Model(inputs, keras.layers.BatchNormalization()(h))


def test_moving_statistics_become_the_mean_batch_statistics():
    keras.utils.set_random_seed(0)
    encoder = _encoder()
    x = np.random.default_rng(0).normal(2.0, 3.0, (40, 6, 6, 2)).astype("float32")
    weights = [w.copy() for w in encoder.get_weights()]
    assert recalibrate(encoder, x, batch_size=10) == 4
    first = encoder.layers[1]
    batches = x.reshape(4, 10, 6, 6, 2)
    np.testing.assert_allclose(first.moving_mean.numpy(), batches.mean(axis=(1, 2, 3)).mean(0),
                               rtol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(), batches.var(axis=(1, 2, 3)).mean(0),
                               rtol=1e-4)
    assert first.momentum == 0.9  # restored
    changed = [not np.allclose(a, b) for a, b in zip(weights, encoder.get_weights())]
    # Only the moving statistics moved (gamma, beta and the kernel did not).
    names = [w.path for w in encoder.weights]
    assert {n.split("/")[-1] for n, c in zip(names, changed) if c} == {"moving_mean",
                                                                       "moving_variance"}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no BatchNormalization"):
        recalibrate(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten()]),
                    np.zeros((8, 4, 4, 1), "float32"))
    with pytest.raises(ValueError, match="at least batch_size=10"):
        recalibrate(_encoder(), np.zeros((8, 6, 6, 2), "float32"), batch_size=10)
