
import keras
import numpy as np
import pytest
import tensorflow as tf

import tarrl_tf
from tarrl_tf import divergences, losses, regularizers
from tarrl_tf.ssl.augment import ViewAugmentation
from tarrl_tf.testing import run_in_fresh_process, run_model_test


def _dataset(x, batch_size=8):
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size, drop_remainder=True)


def _model(encoder, weight=1.0, regularizer="pgd", seed=0, **kwargs):
    if regularizer == "pgd":
        regularizer = regularizers.PGD(epsilon=0.1, steps=2)
    model = tarrl_tf.TARRLModel(encoder, regularizer=regularizer, weight=weight, seed=seed, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def _smooth_images(n=160, held_out=32):
    """Smooth 12x12 gratings, `(train, held_out)`: easy to learn, with room to be perturbed."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:12, 0:12] / 11.0
    shapes = [np.sin(a * xx + b * yy + c) for a, b, c in rng.uniform(1, 6, size=(n, 3))]
    x = (0.5 + 0.45 * np.stack(shapes))[..., None].astype("float32")
    return x[:n - held_out], x[n - held_out:]


def _copy_weights(source, target):
    target.set_weights(source.get_weights())
    return target


def test_tarrl_model_works_end_to_end(images, make_cnn):
    model = run_model_test(lambda: _model(make_cnn()), images, fit_data=_dataset(images))
    assert model.optimizer.iterations.numpy() == 1


def test_fit_reports_the_contract_metrics(images, make_cnn):
    history = _model(make_cnn()).fit(_dataset(images), epochs=2, verbose=0,
                                     validation_data=_dataset(images))
    for name in ["loss", "ssl_loss", "robustness", "val_loss", "val_ssl_loss", "val_robustness"]:
        assert len(history.history[name]) == 2, name
    assert history.history["robustness"][0] > 0


def test_weight_zero_is_exactly_plain_ssl(images, make_cnn):
    """One step of weight=0 equals a hand-written SimCLR step on the same views."""
    encoder = make_cnn()
    reference_encoder = _copy_weights(encoder, make_cnn())
    model = _model(encoder, weight=0.0)
    plain = _copy_weights(model, _model(make_cnn(), weight=0.0, regularizer=None))
    projector = keras.models.clone_model(model.method.projector)
    projector.set_weights(model.method.projector.get_weights())
    model.fit(_dataset(images, 16), epochs=1, verbose=0)
    plain.fit(_dataset(images, 16), epochs=1, verbose=0)

    # The same step by hand: same seeded views, NT-Xent, Adam.
    views = ViewAugmentation.for_input_shape(images.shape[1:], seed=0)
    batch = tf.concat([views(images), views(images)], 0)
    variables = reference_encoder.trainable_variables + projector.trainable_variables
    with tf.GradientTape() as tape:
        z1, z2 = tf.split(projector(reference_encoder(batch, training=True)), 2)
        loss = losses.nt_xent(z1, z2, temperature=model.method.temperature)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.apply(tape.gradient(loss, variables), variables)

    for a, b, c in zip(model.encoder.get_weights(), plain.encoder.get_weights(),
                       reference_encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=1e-6)


def test_regularized_training_lowers_held_out_r(make_cnn):
    train, held_out = _smooth_images()
    probe = regularizers.PGD(epsilon=0.1, steps=10)

    def trained_r(weight):
        keras.utils.set_random_seed(0)
        model = _model(make_cnn(), weight=weight, regularizer=regularizers.PGD(epsilon=0.1, steps=3))
        history = model.fit(_dataset(train, 32), epochs=6, verbose=0)
        return float(probe(model.encoder, held_out, seed=1)), history

    r_control, _ = trained_r(0.0)
    r_tarrl, history = trained_r(5.0)
    assert r_tarrl < 0.5 * r_control
    assert history.history["robustness"][-1] < history.history["robustness"][0]


@pytest.mark.parametrize("batch_statistics", [True, False])
def test_perturbed_passes_leave_batchnorm_statistics_alone(make_resnet, batch_statistics):
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    encoder = make_resnet()
    control = _model(_copy_weights(encoder, make_resnet()), weight=0.0)
    regularized = _model(encoder, weight=1.0, batch_statistics=batch_statistics,
                         shared_statistics=False)
    assert not regularized.share_anchor  # BatchNorm: the anchor gets its own pass.
    assert _model(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()])).share_anchor
    control.fit(_dataset(x, 16), epochs=1, verbose=0)
    regularized.fit(_dataset(x, 16), epochs=1, verbose=0)
    # Same clean views in both, so only the perturbed passes could make these differ.
    moving = [v for v in encoder.non_trainable_weights if "moving" in v.path]
    assert moving
    for a, b in zip(control.encoder.non_trainable_weights, regularized.encoder.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_batchnorm_encoders_differentiate_r_with_batch_statistics(make_resnet, make_cnn):
    assert _model(make_resnet()).batch_statistics
    assert not _model(make_cnn()).batch_statistics
    model = _model(make_resnet(), batch_statistics=False)
    restored = tarrl_tf.TARRLModel.from_config(model.get_config())
    assert restored.batch_statistics is False
    shared = _model(make_resnet(), shared_statistics=True)
    assert tarrl_tf.TARRLModel.from_config(shared.get_config()).shared_statistics


def test_batchnorm_encoders_share_statistics_by_default_and_old_configs_keep_theirs(make_resnet,
                                                                                   make_cnn):
    assert _model(make_resnet()).shared_statistics
    assert not _model(make_resnet(), batch_statistics=False).shared_statistics
    assert not _model(make_cnn()).shared_statistics
    # A config saved before the setting existed trained with separate passes: it still does.
    config = _model(make_resnet()).get_config()
    del config["shared_statistics"]
    assert not tarrl_tf.TARRLModel.from_config(config).shared_statistics


@keras.saving.register_keras_serializable(package="tarrl_tf_tests")
class InvertedViews(keras.layers.Layer):
    """A deterministic "view": 1 - x, so the views' statistics differ from the images'."""

    def call(self, x, training=None):
        return 1.0 - x


@pytest.mark.parametrize("shared_statistics, weight", [(True, 1.0), (False, 1.0), (True, 0.0)])
def test_shared_statistics_set_the_moving_statistics_from_views_and_pair(shared_statistics,
                                                                          weight):
    # Momentum 0: the moving mean is the last training batch's mean.
    encoder = keras.Sequential([keras.Input((4, 4, 1)),
                                keras.layers.BatchNormalization(momentum=0.0),
                                keras.layers.Flatten(), keras.layers.Dense(4)])
    x = np.random.default_rng(0).uniform(0.0, 0.2, (8, 4, 4, 1)).astype("float32")
    model = _model(encoder, weight=weight, augmentation=InvertedViews(),
                   regularizer=regularizers.PGD(epsilon=0.05, steps=2),
                   shared_statistics=shared_statistics)
    model.fit(_dataset(x, 8), epochs=1, verbose=0)
    moving_mean = float(encoder.layers[0].moving_mean.numpy()[0])
    views, images = 1.0 - x.mean(), x.mean()
    if shared_statistics and weight > 0:
        # Views, x and x' (within 0.05 of x) in one batch, as inference will normalize them.
        assert abs(moving_mean - (2 * views + 2 * images) / 4) <= 0.05 / 4 + 1e-6
    else:
        # Only the views set them: R's pass restores them, and weight 0 has no R.
        np.testing.assert_allclose(moving_mean, views, rtol=1e-5)


@pytest.mark.parametrize("shared_statistics", [False, True])
def test_r_through_batch_statistics_falls_on_a_batchnorm_encoder(make_resnet, shared_statistics):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:8, 0:8] / 7.0
    shapes = [np.sin(a * xx + b * yy + c) for a, b, c in rng.uniform(1, 6, size=(96, 3))]
    x = np.repeat((0.5 + 0.45 * np.stack(shapes))[..., None], 3, axis=-1).astype("float32")
    probe = regularizers.PGD(epsilon=0.1, steps=10)

    def trained_r(weight):
        keras.utils.set_random_seed(0)
        model = _model(make_resnet(), weight=weight, regularizer=regularizers.PGD(epsilon=0.1, steps=3),
                       shared_statistics=shared_statistics and weight > 0)
        model.fit(_dataset(x[:64], 32), epochs=20, verbose=0)  # Long enough for the moving statistics.
        # The deployed function: inference mode, moving statistics.
        return float(probe(model.encoder, x[64:], seed=1))

    assert trained_r(5.0) < 0.5 * trained_r(0.0)


def test_warmups_scale_weight_and_epsilon(images, make_cnn):
    model = _model(make_cnn(), weight=2.0, weight_warmup_steps=4)
    logs = model.fit(_dataset(images, 16), epochs=1, verbose=0).history
    expected = logs["ssl_loss"][0] + 2.0 * 0.25 * logs["robustness"][0]
    np.testing.assert_allclose(logs["loss"][0], expected, rtol=1e-5)

    tiny_eps = _model(make_cnn(), epsilon_warmup_steps=10**6)
    full_eps = _model(make_cnn())
    r_tiny = tiny_eps.fit(_dataset(images, 16), verbose=0).history["robustness"][0]
    r_full = full_eps.fit(_dataset(images, 16), verbose=0).history["robustness"][0]
    assert r_tiny < 1e-3 * r_full


def test_barlow_twins_with_the_same_regularizer(images, make_cnn):
    model = _model(make_cnn(), method="barlow_twins")
    model.method.projector  # Built with the model.
    history = model.fit(_dataset(images, 16), epochs=3, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert history.history["robustness"][-1] < history.history["robustness"][0]


def test_any_keras_model_is_an_encoder(images):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, strides=2)

        def call(self, x):
            return self.conv(x)  # A feature map, not a vector: flattened where needed.

    model = _model(Subclassed(), augmentation=ViewAugmentation(seed=0))
    history = model.fit(_dataset(images, 16), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("bad, message", [
    (lambda x: (x * 255).astype("uint8"), "floating point"),
    (lambda x: x[..., 0], "rank 4"),
    (lambda x: x + 1.0, "outside"),
    (lambda x: np.where(x > 0.5, np.nan, x), "Input image values are not finite"),
])
def test_bad_images_raise_value_error(images, make_cnn, bad, message):
    with pytest.raises(ValueError, match=message):
        _model(make_cnn()).fit(_dataset(bad(images)), verbose=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="moco-v9"), "method"),
    (dict(weight=-1.0), "weight"),
    (dict(regularizer=None, weight=1.0), "needs a regularizer"),
    (dict(regularizer="pgd"), "regularizer must be"),
    (dict(epsilon_warmup_steps=-1), "epsilon_warmup_steps"),
    (dict(regularize_on="crops"), "regularize_on"),
    (dict(regularize_output="logits"), "regularize_output"),
    (dict(keep_weight=-1.0), "keep_weight must be >= 0"),
    (dict(keep_weight=1.0), "keep_weight > 0 needs a reference"),
    (dict(reference="copy"), "reference is only used with keep_weight > 0"),
    (dict(keep_weight=1.0, reference="itself"), "not the encoder itself"),
    (dict(keep_weight=1.0, reference="narrower"), "representation shape"),
    (dict(shared_statistics=True), "needs batch_statistics"),
])
def test_bad_settings_raise_value_error(make_cnn, kwargs, message):
    kwargs.setdefault("regularizer", regularizers.PGD(epsilon=0.1))
    encoder = make_cnn()
    references = {"copy": make_cnn(), "itself": encoder, "narrower": make_cnn(representation_dim=8)}
    if "reference" in kwargs:
        kwargs["reference"] = references[kwargs["reference"]]
    with pytest.raises(ValueError, match=message):
        tarrl_tf.TARRLModel(encoder, **kwargs)


@pytest.mark.large
def test_save_and_load_in_a_fresh_process(tmp_path, images, make_resnet):
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    model = _model(make_resnet(), regularizer=regularizers.PowerIteration(epsilon=0.5))
    model.fit(_dataset(x, 8), epochs=1, verbose=0)
    model.encoder.save(tmp_path / "encoder.keras")
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.encoder.predict(x, verbose=0))
    run_in_fresh_process(f"""
        import numpy as np, keras, tensorflow as tf, tarrl_tf
        x = np.load(r"{tmp_path}/x.npy"); expected = np.load(r"{tmp_path}/expected.npy")
        encoder = keras.models.load_model(r"{tmp_path}/encoder.keras")
        np.testing.assert_allclose(encoder.predict(x, verbose=0), expected, atol=1e-5)
        model = keras.models.load_model(r"{tmp_path}/model.keras")
        assert isinstance(model, tarrl_tf.TARRLModel), type(model)
        assert isinstance(model.regularizer, tarrl_tf.regularizers.PowerIteration)
        np.testing.assert_allclose(model.encoder.predict(x, verbose=0), expected, atol=1e-5)
        assert int(model.optimizer.iterations.numpy()) == 2
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(8), epochs=1, verbose=0)
        assert int(model.optimizer.iterations.numpy()) == 4  # Training resumes.
        print("ok")
    """)


def test_regularized_fraction_estimates_r_on_part_of_the_batch(images, make_cnn):
    class Spy(regularizers.PGD):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.batch = tf.Variable(0)

        def perturb(self, encoder, x, **kwargs):
            self.batch.assign(tf.shape(x)[0])
            return super().perturb(encoder, x, **kwargs)

    spy = Spy(epsilon=0.1, steps=1)
    _model(make_cnn(), regularizer=spy, regularized_fraction=0.25).fit(_dataset(images, 16), verbose=0)
    assert int(spy.batch.numpy()) == 4
    with pytest.raises(ValueError, match="regularized_fraction"):
        _model(make_cnn(), regularized_fraction=0.0)


@pytest.mark.parametrize("regularize_on", ["images", "views"])
def test_r_is_estimated_on_the_images_or_on_the_first_view(images, make_cnn, regularize_on):
    class Spy(regularizers.PGD):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seen = tf.Variable(tf.zeros(images.shape))

        def perturb(self, encoder, x, **kwargs):
            self.seen.assign(x)
            return super().perturb(encoder, x, **kwargs)

    spy = Spy(epsilon=0.1, steps=1)
    model = _model(make_cnn(), regularizer=spy, regularize_on=regularize_on)
    model.fit(_dataset(images, 16), verbose=0)
    assert model.get_config()["regularize_on"] == regularize_on
    # The views are cropped and jittered, so they never equal the images.
    assert np.array_equal(spy.seen.numpy(), images) == (regularize_on == "images")


def test_r_on_the_projector_measures_and_lowers_the_projection_shift(make_cnn):
    train, held_out = _smooth_images()
    probe = regularizers.PGD(epsilon=0.1, steps=10)

    def trained(weight):
        keras.utils.set_random_seed(0)
        model = _model(make_cnn(), weight=weight, regularize_output="projector",
                       regularizer=regularizers.PGD(epsilon=0.1, steps=3))
        model.fit(_dataset(train, 32), epochs=6, verbose=0)
        return model

    control, regularized = trained(0.0), trained(5.0)

    def projected(model):
        return lambda z, training=False: model.method(model.encoder(z, training=training),
                                                      training=training)

    # R is measured where it is trained: on the projection, not on the features.
    held = tf.constant(held_out)
    r = float(regularized.regularizer(regularized.regularized, held, seed=1))
    assert r == pytest.approx(float(regularized.regularizer(projected(regularized), held, seed=1)))
    assert r != pytest.approx(float(regularized.regularizer(regularized.encoder, held, seed=1)))
    assert (float(probe(projected(regularized), held_out, seed=1))
            < 0.5 * float(probe(projected(control), held_out, seed=1)))
    assert regularized.get_config()["regularize_output"] == "projector"
    clone = tarrl_tf.TARRLModel.from_config(regularized.get_config())
    assert clone.regularize_output == "projector"


def test_r_on_a_batchnorm_projector_goes_through_its_batch_statistics(make_cnn):
    # Barlow Twins' projector has BatchNorm: R on it needs the training-mode pass,
    # whatever the encoder holds.
    encoder = make_cnn()
    on_features = _model(encoder, method="barlow_twins")
    on_projection = _model(make_cnn(), method="barlow_twins", regularize_output="projector")
    assert not on_features.batch_statistics and on_projection.batch_statistics
    assert on_features.share_anchor and not on_projection.share_anchor


def test_keep_weight_holds_the_features_near_the_reference(make_cnn, tmp_path):
    train, held_out = _smooth_images()
    keras.utils.set_random_seed(0)
    first_stage = make_cnn()

    def second_stage(keep_weight):
        encoder = _copy_weights(first_stage, make_cnn())
        reference = _copy_weights(first_stage, make_cnn()) if keep_weight else None
        model = _model(encoder, weight=5.0, regularizer=regularizers.PGD(epsilon=0.1, steps=2),
                       keep_weight=keep_weight, reference=reference)
        history = model.fit(_dataset(train, 32), epochs=4, verbose=0)
        drift = float(tf.reduce_mean(divergences.cosine_distance(
            model.encoder(held_out), first_stage(held_out))))
        return model, history.history, drift

    _, free_history, free = second_stage(0.0)
    kept_model, kept_history, kept = second_stage(5.0)
    assert "keep_loss" not in free_history and kept_history["keep_loss"][-1] > 0
    assert kept < 0.5 * free
    # The reference never trains, and the term serializes with it.
    np.testing.assert_array_equal(kept_model.reference.get_weights()[0],
                                  first_stage.get_weights()[0])
    kept_model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.keep_weight == 5.0
    np.testing.assert_allclose(loaded.reference(held_out), first_stage(held_out), atol=1e-6)
