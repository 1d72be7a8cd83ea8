import keras
import numpy as np
import pytest
import tensorflow as tf

from tarrl_tf import divergences, regularizers



def _build(name, eps, norm, **kwargs):
    """Any registered estimator, with 3 steps where it has steps."""
    cls = regularizers.ESTIMATORS.get(name)
    if cls.steps_argument:
        kwargs[cls.steps_argument] = 3
    if cls.needs_indices:
        kwargs["num_examples"] = 64
    return cls(eps, norm=norm, **kwargs)


# Every registered estimator goes through the shared tests below (none is listed by hand).
ESTIMATORS = {name: (lambda eps, norm, _name=name, **kw: _build(_name, eps, norm, **kw))
              for name in regularizers.ESTIMATORS.names()}


def _norms(delta):
    flat = delta.reshape(len(delta), -1)
    return {"inf": np.abs(flat).max(axis=1), "2": np.linalg.norm(flat, axis=1)}


@pytest.mark.parametrize("name", divergences.NAMES)
def test_divergence_is_zero_on_equal_inputs_and_ignores_scale(name):
    d = divergences.get(name)
    z = tf.random.normal([8, 16], seed=1)
    z_other = tf.random.normal([8, 16], seed=2)
    np.testing.assert_allclose(d(z, z).numpy(), 0.0, atol=1e-6)
    value = d(z, z_other).numpy()
    assert value.shape == (8,) and np.all(value > 0)
    # The scale trap: shrinking the representation must not shrink d.
    np.testing.assert_allclose(d(0.01 * z, 0.01 * z_other).numpy(), value, rtol=1e-4)


def test_unknown_divergence_raises():
    with pytest.raises(ValueError, match="divergence"):
        divergences.get("cosine-ish")


@pytest.mark.parametrize("norm", ["inf", 2])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_zero_epsilon_gives_zero_and_leaves_inputs_unchanged(images, make_cnn, name, norm):
    encoder = make_cnn()
    regularizer = ESTIMATORS[name](0.0, norm)
    anchor = encoder(images, training=False)
    x_adv = regularizer.perturb(encoder, images, anchor=anchor, seed=0).numpy()
    np.testing.assert_array_equal(x_adv, images)
    assert float(regularizer(encoder, images, seed=0)) == 0.0


@pytest.mark.parametrize("clip", [(0.0, 1.0), (0.2, 0.9)])
@pytest.mark.parametrize("norm", ["inf", 2])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_perturbation_stays_in_ball_and_clip_range(images, make_cnn, name, norm, clip):
    clip_min, clip_max = clip
    x = np.clip(images, clip_min, clip_max)
    eps = 0.3 if norm == "inf" else 1.5
    encoder = make_cnn()
    regularizer = ESTIMATORS[name](eps, norm, clip_min=clip_min, clip_max=clip_max)
    x_adv = regularizer.perturb(encoder, x, anchor=encoder(x), seed=0).numpy()
    distance = _norms(x_adv - x)[str(norm)]
    assert np.all(distance <= eps + 1e-5)
    assert distance.max() > 0.5 * eps  # It moved, not a no-op.
    assert x_adv.min() >= clip_min and x_adv.max() <= clip_max


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_beats_random_perturbation_of_same_size(images, make_cnn, norm):
    encoder = make_cnn()
    eps = 0.1 if norm == "inf" else 0.5
    regularizer = regularizers.PGD(epsilon=eps, norm=norm, steps=10)
    anchor = encoder(images)
    rng = np.random.default_rng(0)
    if norm == "inf":
        noise = eps * rng.choice([-1.0, 1.0], size=images.shape)
    else:
        noise = rng.standard_normal(images.shape)
        noise *= eps / np.linalg.norm(noise.reshape(len(noise), -1), axis=1)[:, None, None, None]
    x_random = np.clip(images + noise, 0, 1).astype("float32")
    random_value = float(tf.reduce_mean(regularizer.divergence(anchor, encoder(x_random))))
    pgd_value = float(regularizer(encoder, images, seed=0))
    assert pgd_value > 2 * random_value


def test_gradients_reach_every_encoder_weight(images, make_cnn):
    encoder = make_cnn()
    regularizer = regularizers.PGD(epsilon=0.2, steps=2)
    with tf.GradientTape() as tape:
        value = regularizer(encoder, images, seed=0)
    gradients = tape.gradient(value, encoder.trainable_weights)
    assert all(g is not None for g in gradients)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_shrinking_the_representation_does_not_reduce_r(images, make_cnn, name):
    encoder = make_cnn()
    shrunk = keras.Sequential([encoder, keras.layers.Rescaling(0.01)])
    regularizer = ESTIMATORS[name](0.2, "inf")
    value = float(regularizer(encoder, images, seed=0))
    shrunk_value = float(regularizer(shrunk, images, seed=0))
    assert value > 0
    assert shrunk_value >= 0.99 * value


def test_kl_divergence_estimator_is_scale_free_too(images, make_cnn):
    encoder = make_cnn()
    shrunk = keras.Sequential([encoder, keras.layers.Rescaling(0.01)])
    regularizer = regularizers.PGD(epsilon=0.2, steps=2, divergence="kl")
    assert float(regularizer(shrunk, images, seed=0)) >= 0.99 * float(regularizer(encoder, images, seed=0))


def test_regularizer_leaves_batchnorm_statistics_alone(make_resnet):
    encoder = make_resnet()
    x = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    before = [v.numpy().copy() for v in encoder.non_trainable_weights]
    regularizers.PGD(epsilon=0.1, steps=2)(encoder, x, seed=0)
    for old, new in zip(before, encoder.non_trainable_weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_epsilon_override_runs_in_one_trace(images, make_cnn):
    encoder = make_cnn()
    regularizer = regularizers.PGD(epsilon=0.3, steps=2)
    traces = []

    @tf.function
    def measure(x, epsilon):
        traces.append(1)
        return regularizer(encoder, x, epsilon=epsilon, seed=0)

    small = float(measure(images, tf.constant(0.0)))
    large = float(measure(images, tf.constant(0.3)))
    assert len(traces) == 1
    assert small == 0.0 and large > 0


@pytest.mark.parametrize("bad, message", [
    (lambda x: (x * 255).astype("uint8"), "floating point"),
    (lambda x: x[..., 0], "rank 4"),
    (lambda x: x * 2.0, "must lie in"),
])
def test_bad_images_raise_value_error(images, make_cnn, bad, message):
    with pytest.raises(ValueError, match=message):
        regularizers.PGD(epsilon=0.1)(make_cnn(), bad(images))


@pytest.mark.parametrize("kwargs, message", [
    (dict(epsilon=0.1, norm="l1"), "norm"),
    (dict(epsilon=-0.1), "epsilon"),
    (dict(epsilon=0.1, steps=0), "steps"),
    (dict(epsilon=0.1, clip_min=1.0, clip_max=0.0), "clip_min"),
])
def test_bad_settings_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        regularizers.PGD(**kwargs)


@pytest.mark.parametrize("regularizer", [
    regularizers.PGD(epsilon=0.3, norm=2, steps=7, step_size=0.05, divergence="kl"),
    regularizers.FGSM(epsilon=0.1),
    regularizers.PowerIteration(epsilon=0.5, iterations=3, xi=1e-2),
])
def test_serialization_round_trip(regularizer):
    config = keras.saving.serialize_keras_object(regularizer)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(regularizer)
    assert restored.get_config() == regularizer.get_config()


@pytest.mark.parametrize("relative", [divergences.relative_squared_l2,
                                      divergences.normalized_relative_squared_l2])
def test_relative_divergences_close_the_local_scale_trap(relative):
    """Crowding every representation into a small cap around a common direction.

    The normalized distance then shrinks with the cap (the trap seen on MNIST),
    while the shift relative to the batch's spread does not.
    """
    rng = np.random.default_rng(0)
    mean = 10.0 * np.ones(16, "float32")
    spread = rng.standard_normal((32, 16)).astype("float32")
    shift = 0.1 * rng.standard_normal((32, 16)).astype("float32")

    def crowded(scale):
        return mean + scale * spread, mean + scale * (spread + shift)

    normalized = [float(tf.reduce_mean(divergences.squared_l2(*crowded(s)))) for s in (1.0, 0.01)]
    relatives = [float(tf.reduce_mean(relative(*crowded(s)))) for s in (1.0, 0.01)]
    assert normalized[1] < 0.01 * normalized[0]
    # Exact for relative_l2; on the sphere the cap is curved, hence the looser tolerance.
    np.testing.assert_allclose(relatives[1], relatives[0], rtol=0.05)


def test_only_normalized_relative_l2_ignores_far_out_representations():
    """relative_l2's spread grows with a few far-away representations; on the sphere it cannot."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((32, 16)).astype("float32")
    z_shifted = z + 0.1 * rng.standard_normal((32, 16)).astype("float32")
    far = np.ones((32, 1), "float32")
    far[:2] = 100.0  # Two representations pushed 100 times further out, directions unchanged.
    for d, changes in [(divergences.relative_squared_l2, True),
                       (divergences.normalized_relative_squared_l2, False)]:
        rest = d(z, z_shifted).numpy()[2:]
        gamed = d(far * z, far * z_shifted).numpy()[2:]
        assert (np.max(gamed / rest) < 0.1) == changes, d.__name__
        if not changes:
            np.testing.assert_allclose(gamed, rest, rtol=1e-5)
