"""`PersistentPGD` (perturbations carried from one visit of an image to the next) and
`TARRLModel(detach_anchor=True)`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tarrl_tf
from tarrl_tf import data, divergences, regularizers
from tarrl_tf.robustness.persistent import PersistentPGD


def _images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:12, 0:12] / 11.0
    shapes = [np.sin(a * xx + b * yy + c) for a, b, c in rng.uniform(1, 6, size=(n, 3))]
    return (0.5 + 0.45 * np.stack(shapes))[..., None].astype("float32")


def _estimator(n, **kwargs):
    estimator = PersistentPGD(epsilon=0.1, num_examples=n, divergence="squared_l2", **kwargs)
    estimator.build((None, 12, 12, 1))
    return estimator


def test_each_visit_starts_where_the_last_one_ended(make_cnn):
    encoder, x = make_cnn(), _images(8)
    estimator = _estimator(8)
    anchor = encoder(x, training=False)
    indices = tf.range(8)
    first = estimator.perturb(encoder, x, anchor=anchor, indices=indices, seed=0).numpy()
    np.testing.assert_allclose(estimator.memory.numpy(), first - x, atol=1e-6)
    assert estimator.visited.numpy().all()
    # A zero-size step keeps the remembered point: the second visit starts there.
    still = PersistentPGD(epsilon=0.1, num_examples=8, step_size=1e-9)
    still.memory, still.visited = estimator.memory, estimator.visited
    second = still.perturb(encoder, x, anchor=anchor, indices=indices, seed=1).numpy()
    np.testing.assert_allclose(second, first, atol=1e-6)


def test_visits_add_up_to_a_stronger_search(make_cnn):
    """Five one-step visits find a larger divergence than one step from a random start, and
    stay in the ball and the valid range."""
    encoder, x = make_cnn(), _images(16)
    anchor = encoder(x, training=False)
    estimator = _estimator(16)

    def divergence(x_adv):
        return float(tf.reduce_mean(divergences.squared_l2(anchor, encoder(x_adv, training=False))))

    found = [divergence(estimator.perturb(encoder, x, anchor=anchor, indices=tf.range(16), seed=i))
             for i in range(5)]
    x_adv = estimator.perturb(encoder, x, anchor=anchor, indices=tf.range(16), seed=5).numpy()
    assert found[-1] > 1.5 * found[0]
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1


def test_images_keep_their_own_perturbations(make_cnn):
    encoder, x = make_cnn(), _images(8)
    estimator = _estimator(8)
    anchor = encoder(x, training=False)
    estimator.perturb(encoder, x[:4], anchor=anchor[:4], indices=tf.constant([4, 5, 6, 7]), seed=0)
    visited = estimator.visited.numpy()
    assert not visited[:4].any() and visited[4:].all()
    assert np.abs(estimator.memory.numpy()[:4]).max() == 0


def test_an_index_outside_the_memory_is_refused(make_cnn):
    encoder, x = make_cnn(), _images(4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_examples"):
        _estimator(4).perturb(encoder, x, anchor=encoder(x), indices=tf.constant([0, 1, 2, 9]))


def test_build_from_the_registry_needs_the_number_of_images():
    with pytest.raises(ValueError, match="num_examples"):
        regularizers.build("persistent_pgd", epsilon=0.1)
    estimator = regularizers.build("persistent_pgd", epsilon=0.1, steps=2, num_examples=10)
    assert isinstance(estimator, PersistentPGD) and estimator.steps == 2
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(estimator))
    assert restored.get_config() == estimator.get_config()


def _model(encoder, estimator, **kwargs):
    model = tarrl_tf.TARRLModel(encoder, regularizer=estimator, weight=5.0, seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    return model


def test_tarrl_trains_on_indexed_images_and_lowers_r(make_cnn):
    x = _images(64)
    keras.utils.set_random_seed(0)
    model = _model(make_cnn(), PersistentPGD(epsilon=0.1, num_examples=64, divergence="squared_l2"))
    assert model.regularizer.memory.shape == (64, 12, 12, 1)  # built with the model
    dataset = data.pretraining_dataset(x, batch_size=16, seed=0, with_indices=True)
    history = model.fit(dataset, epochs=6, verbose=0).history
    assert history["robustness"][-1] < history["robustness"][0]
    assert model.regularizer.visited.numpy().all()  # every image was visited


def test_tarrl_refuses_images_without_indices_and_views(make_cnn):
    model = _model(make_cnn(), PersistentPGD(epsilon=0.1, num_examples=32))
    with pytest.raises(ValueError, match="with_indices=True"):
        model.fit(data.pretraining_dataset(_images(32), batch_size=16), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="regularize_on='images'"):
        _model(make_cnn(), PersistentPGD(epsilon=0.1, num_examples=32), regularize_on="views")


def test_pretraining_dataset_yields_each_images_position():
    x = _images(10)
    batches = list(data.pretraining_dataset(x, batch_size=5, seed=0, with_indices=True))
    images = np.concatenate([b[0].numpy() for b in batches])
    indices = np.concatenate([b[1].numpy() for b in batches])
    assert sorted(indices) == list(range(10))
    np.testing.assert_array_equal(images, x[indices])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_detached_anchor_sends_no_gradient_through_f_x(make_cnn, make_resnet, batch_norm):
    """Same R, but its gradient is that of d(stop_gradient(f(x)), f(x'))."""
    encoder = make_resnet() if batch_norm else make_cnn()
    shape = (8, 8, 3) if batch_norm else (12, 12, 1)
    x = tf.constant(np.random.default_rng(0).random((8, *shape), dtype=np.float32))
    estimator = regularizers.PGD(epsilon=0.1, steps=2, divergence="normalized_relative_l2")

    def r_and_gradients(detach):
        model = tarrl_tf.TARRLModel(encoder, regularizer=estimator, weight=1.0, seed=0,
                                    detach_anchor=detach)
        with tf.GradientTape() as tape:
            r = model._robustness(x, None, None, None, tape, epsilon=0.1)
        return float(r), tape.gradient(r, encoder.trainable_variables)

    r_joint, joint = r_and_gradients(False)
    r_detached, detached = r_and_gradients(True)
    assert r_detached == pytest.approx(r_joint, rel=1e-5)
    assert any(not np.allclose(a, b, atol=1e-7) for a, b in zip(joint, detached))
    assert tarrl_tf.TARRLModel(encoder, weight=0.0, detach_anchor=True).get_config()["detach_anchor"]
