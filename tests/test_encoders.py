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
    (lambda: tarrl_tf.encoders.cifar_resnet(input_shape=(8, 8, 3), width=4, norm="group",
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


def test_group_norm_resnet_computes_the_same_function_in_training_and_inference():
    x = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    kwargs = dict(input_shape=(8, 8, 3), width=4, blocks_per_stage=(1, 1, 1, 1))
    group = tarrl_tf.encoders.cifar_resnet(norm="group", **kwargs)
    batch = tarrl_tf.encoders.cifar_resnet(**kwargs)
    assert tarrl_tf.robustness.batchnorm.behaves_same_in_training(group)
    np.testing.assert_allclose(group(x, training=True), group(x, training=False), atol=1e-5)
    assert not np.allclose(batch(x, training=True), batch(x, training=False), atol=1e-3)


def test_batch_statistics_pass_trains_through_batch_statistics_and_keeps_moving_ones():
    x = tf.constant(np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32))
    encoder = tarrl_tf.encoders.cifar_resnet(input_shape=(8, 8, 3), width=4,
                                             blocks_per_stage=(1, 1, 1, 1))
    assert tarrl_tf.robustness.batchnorm.has_batch_normalization(encoder)
    before = [w.numpy() for w in encoder.non_trainable_weights]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = tf.concat(tarrl_tf.robustness.batchnorm.batch_statistics_pass(
                lambda z: encoder(z, training=True), x[:4], x[4:], [encoder]), 0)
            loss = tf.reduce_sum(tf.square(out))
        return out, tape.gradient(loss, encoder.trainable_variables)

    out, gradients = step()
    for a, b in zip(before, encoder.non_trainable_weights):
        np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_allclose(out, encoder(x, training=True), atol=1e-5)
    assert not np.allclose(out, encoder(x, training=False), atol=1e-3)
    assert all(g is not None for g in gradients)
    # Without the helper the same pass moves the statistics.
    encoder(x, training=True)
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, encoder.non_trainable_weights))


def test_unknown_norm_raises():
    with pytest.raises(ValueError, match="norm"):
        tarrl_tf.encoders.cifar_resnet(norm="layer")


@pytest.mark.parametrize("bad", [(28, 28), (28, 28, 0), (28.0, 28, 1)])
def test_bad_input_shape_raises(bad):
    with pytest.raises(ValueError, match="input_shape"):
        tarrl_tf.encoders.small_cnn(input_shape=bad)
