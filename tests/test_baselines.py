
import keras
import numpy as np
import pytest
import tensorflow as tf

from tarrl_tf import attacks, augment, baselines, downstream, regularizers
from tarrl_tf.robustness import search
from tarrl_tf.training.acl_model import ACLModel
from tarrl_tf.ssl.augment import ViewAugmentation
from tarrl_tf.training.deacl_model import DeACLModel
from tarrl_tf.training.supervised_at_model import SupervisedATModel
from tarrl_tf.testing import run_in_fresh_process, run_model_test

KINDS = ["acl", "deacl", "supervised_at"]


def _model(kind, encoder, *, teacher=None, epsilon=0.1, steps=2, learning_rate=1e-3, **kwargs):
    if kind == "acl":
        model = ACLModel(encoder, epsilon=epsilon, steps=steps, seed=0, **kwargs)
    elif kind == "deacl":
        teacher = teacher or keras.models.clone_model(encoder)
        model = DeACLModel(encoder, teacher, epsilon=epsilon, steps=steps, seed=0, **kwargs)
    else:
        model = SupervisedATModel(encoder, 3, epsilon=epsilon, steps=steps, seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model


def _labels(n, num_classes=3):
    return np.arange(n) % num_classes


def _dataset(kind, x, batch_size=8):
    data = (x, _labels(len(x))) if kind == "supervised_at" else x
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size, drop_remainder=True)


def _sinusoids(n=64):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:12, 0:12] / 11.0
    shapes = [np.sin(a * xx + b * yy + c) for a, b, c in rng.uniform(1, 6, size=(n, 3))]
    return (0.5 + 0.45 * np.stack(shapes))[..., None].astype("float32")


def _bands_and_checkerboard(n=128):
    """Two classes, told apart by a robust feature (horizontal or vertical bands, amplitude 0.2)
    and by a fragile one (a checkerboard of amplitude 0.04, sign given by the class)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    yy, xx = np.mgrid[0:12, 0:12]
    bands = np.stack([np.where((yy // 2) % 2 == 0, 1.0, -1.0), np.where((xx // 2) % 2 == 0, 1.0, -1.0)])
    phase = np.where(rng.integers(0, 2, n) == 1, -1.0, 1.0)[:, None, None]
    checker = np.where((xx + yy) % 2 == 0, 1.0, -1.0)
    x = 0.5 + 0.2 * bands[y] * phase + 0.04 * (2.0 * y - 1)[:, None, None] * checker
    x += 0.05 * rng.standard_normal((n, 12, 12))
    return np.clip(x, 0, 1)[..., None].astype("float32"), y.astype("int64")


def _craft(kind, model, x, **kwargs):
    """The model's attack and the objective it maximizes, on a batch of `x`."""
    if kind == "acl":
        second_view = np.clip(x[::-1] * 0.8 + 0.1, 0, 1)  # Any fixed positives will do.
        return model.craft(x, second_view, **kwargs), lambda x_adv: model.objective(x_adv, second_view)
    if kind == "deacl":
        return model.craft(x, **kwargs), lambda x_adv: model.objective(x_adv, x)
    y = _labels(len(x))
    return model.craft(x, y, **kwargs), lambda x_adv: model.objective(x_adv, y)


@pytest.mark.parametrize("kind", KINDS)
def test_models_work_end_to_end(kind, images, make_cnn):
    model = run_model_test(lambda: _model(kind, make_cnn()), images, fit_data=_dataset(kind, images))
    assert model.optimizer.iterations.numpy() == 1
    assert model.encoder is not None


@pytest.mark.parametrize("kind, metrics", [
    ("acl", ["loss", "ssl_loss", "adversarial_ssl_loss"]),
    ("deacl", ["loss", "distillation_loss", "robustness"]),
])
def test_self_supervised_losses_fall(kind, metrics, make_cnn):
    x = _sinusoids()
    model = _model(kind, make_cnn(), learning_rate=3e-3)
    history = model.fit(_dataset(kind, x, 32), epochs=6, verbose=0,
                        validation_data=_dataset(kind, x[:32], 32)).history
    assert sorted(history) == sorted(metrics + ["val_" + m for m in metrics])
    assert history["loss"][-1] < 0.9 * history["loss"][0]
    np.testing.assert_allclose(
        history["loss"][-1], history[metrics[1]][-1] + history[metrics[2]][-1], rtol=1e-5)


@pytest.mark.parametrize("norm, epsilon", [("inf", 0.3), (2, 1.0)])
@pytest.mark.parametrize("kind", KINDS)
def test_crafted_inputs_stay_in_the_ball_and_beat_clean_and_random_points(kind, norm, epsilon,
                                                                         images, make_cnn):
    model = _model(kind, make_cnn(), epsilon=epsilon, norm=norm, steps=5)
    x = images[:8]
    x_adv, objective = _craft(kind, model, x)
    x_adv = x_adv.numpy()
    delta = (x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "inf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= epsilon + 1e-5)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert x.max() + epsilon > 1.0 and np.any(x_adv == 1.0)  # The clip range was binding.
    random_point = search.project(
        x + search.random_in_ball(tf.constant(x), epsilon, model.norm, seed=1), x, epsilon,
        model.norm, 0.0, 1.0)
    value = float(objective(x_adv))
    assert value > float(objective(x))
    assert value > float(objective(random_point))

    unmoved, _ = _craft(kind, model, x, epsilon=0.0)
    np.testing.assert_array_equal(unmoved.numpy(), x)


def test_deacl_never_changes_the_teacher(make_resnet):
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    teacher = make_resnet()  # With BatchNorm: its moving statistics must not move either.
    model = _model("deacl", make_resnet(), teacher=teacher)
    assert not teacher.trainable
    teacher_variables = {id(v) for v in teacher.weights}
    assert not any(id(v) in teacher_variables for v in model.trainable_variables)
    teacher_before = [w.numpy().copy() for w in teacher.weights]
    student_before = [w.numpy().copy() for w in model.student.weights]
    model.fit(_dataset("deacl", x), epochs=2, verbose=0)
    assert any(np.any(w.numpy() != b) for w, b in zip(model.student.weights, student_before))
    for w, b in zip(teacher.weights, teacher_before):
        np.testing.assert_array_equal(w.numpy(), b)


@pytest.mark.parametrize("kind", ["acl", "deacl"])
@pytest.mark.parametrize("batch_statistics", [True, False])
def test_adversarial_passes_leave_batchnorm_statistics_alone(kind, batch_statistics, make_resnet):
    """The moving statistics after a step are those of the clean training-mode pass alone."""
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    encoder = make_resnet()
    control = make_resnet()
    control.set_weights(encoder.get_weights())
    model = _model(kind, encoder, batch_statistics=batch_statistics)
    model.fit(_dataset(kind, x, 16), epochs=1, verbose=0)
    if kind == "acl":
        assert not model.shares_clean_target
        views = ViewAugmentation.for_input_shape(x.shape[1:], seed=0)
        control(tf.concat([views(x), views(x)], 0), training=True)
    else:
        assert not model.shares_anchor
        control(augment.resolve(None, (None, 8, 8, 3), 0, weak=True)(x), training=True)
    moving = [(a, b) for a, b in zip(encoder.non_trainable_weights, control.non_trainable_weights)
              if "moving" in a.path]
    assert moving
    for a, b in moving:
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


@pytest.mark.parametrize("kind", ["acl", "deacl"])
def test_batchnorm_encoders_train_the_adversarial_term_with_batch_statistics(kind, make_resnet,
                                                                            make_cnn):
    assert _model(kind, make_resnet()).batch_statistics
    assert not _model(kind, make_cnn()).batch_statistics
    model = _model(kind, make_resnet(), batch_statistics=False)
    assert type(model).from_config(model.get_config()).batch_statistics is False


def test_supervised_at_is_more_robust_than_its_plainly_trained_twin(make_cnn):
    x, y = _bands_and_checkerboard()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    attack = attacks.make_attack("pgd_linf", epsilon=0.15, steps=10)

    def robust_accuracy(epsilon):
        keras.utils.set_random_seed(0)
        model = SupervisedATModel(make_cnn(width=8), 2, epsilon=epsilon, steps=3, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        history = model.fit(data, epochs=15, verbose=0).history
        assert history["loss"][-1] < 0.5 * history["loss"][0]
        # The protocol of the comparison: the encoder alone, a fresh plain linear probe.
        probe, _ = downstream.train_classifier(model.encoder, x, y, num_classes=2, epochs=30,
                                               batch_size=32)
        assert attacks.clean_accuracy(probe, x, y) > 0.95
        return attacks.robust_accuracy(probe, x, y, attack, seed=0)

    plain, adversarial = robust_accuracy(0.0), robust_accuracy(0.15)
    assert adversarial > 0.9
    assert adversarial > plain + 0.3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad, message", [
    (lambda x: (x * 255).astype("uint8"), "floating point"),
    (lambda x: x[..., 0], "rank 4"),
    (lambda x: x + 1.0, r"outside \[0.0, 1.0\]|must lie in \[0.0, 1.0\]"),
])
def test_bad_images_raise_value_error(kind, bad, message, images, make_cnn):
    model = _model(kind, make_cnn())
    with pytest.raises(ValueError, match=message):
        model.fit(_dataset(kind, bad(images)), verbose=0)
    if message != "rank 4":  # The test's own labels and second views assume rank 4.
        with pytest.raises(ValueError, match=message):
            _craft(kind, model, bad(images)[:8])


@pytest.mark.parametrize("labels, message", [
    (None, "needs labeled data"),
    (np.full(16, 0.5, "float32"), "integers"),
    (np.full(16, 3), r"labels outside \[0, 3\)"),
])
def test_bad_labels_raise_value_error(labels, message, images, make_cnn):
    data = images if labels is None else (images, labels)
    with pytest.raises(ValueError, match=message):
        _model("supervised_at", make_cnn()).fit(tf.data.Dataset.from_tensor_slices(data).batch(8),
                                                verbose=0)


@pytest.mark.parametrize("kind, kwargs, message", [
    ("acl", dict(epsilon=-0.1), "epsilon"),
    ("acl", dict(norm="l1"), "norm"),
    ("acl", dict(steps=0), "steps"),
    ("acl", dict(step_size=0.0), "step_size"),
    ("acl", dict(adversarial_weight=0.0), "adversarial_weight"),
    ("acl", dict(method="moco-v9"), "method"),
    ("deacl", dict(weight=-1.0), "weight"),
    ("deacl", dict(teacher="same"), "different models"),
    ("deacl", dict(teacher="wider"), "same size"),
    ("supervised_at", dict(num_classes=1), "num_classes"),
    ("supervised_at", dict(steps=2.5), "steps"),
])
def test_bad_settings_raise_value_error(kind, kwargs, message, make_cnn):
    encoder = make_cnn()
    teacher = {"same": encoder, "wider": make_cnn(representation_dim=8)}.get(kwargs.pop("teacher", None))
    settings = {"epsilon": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        if kind == "acl":
            ACLModel(encoder, **settings)
        elif kind == "deacl":
            DeACLModel(encoder, teacher or make_cnn(), **settings)
        else:
            SupervisedATModel(encoder, settings.pop("num_classes", 3), **settings)


def test_registry_builds_each_baseline_and_rejects_bad_requests(make_cnn):
    threat = dict(epsilon=0.1, norm="inf", steps=3, seed=0)
    acl = baselines.build("acl", make_cnn(), adversarial_weight=2.0, **threat)
    assert isinstance(acl, ACLModel) and acl.adversarial_weight == 2.0 and acl.steps == 3
    deacl = baselines.build("deacl", make_cnn(), teacher=make_cnn(), **threat)
    assert isinstance(deacl, DeACLModel) and not deacl.teacher.trainable
    at = baselines.build("supervised_at", make_cnn(), num_classes=4, **threat)
    assert isinstance(at, SupervisedATModel) and at.num_classes == 4

    for args, message in [
        (("simclr_at", make_cnn()), "Unknown baseline"),
        (("deacl", make_cnn()), "needs a teacher"),
        (("supervised_at", make_cnn()), "needs num_classes"),
    ]:
        with pytest.raises(ValueError, match=message):
            baselines.build(*args, **threat)
    with pytest.raises(ValueError, match="takes no teacher"):
        baselines.build("acl", make_cnn(), teacher=make_cnn(), **threat)
    with pytest.raises(ValueError, match="takes no num_classes"):
        baselines.build("deacl", make_cnn(), teacher=make_cnn(), num_classes=3, **threat)
    with pytest.raises(ValueError, match="Unrecognized keyword"):
        baselines.build("acl", make_cnn(), temperature=0.5, **threat)


def test_deacl_saves_and_resumes_in_a_fresh_process(tmp_path, images, make_cnn):
    model = _model("deacl", make_cnn())
    model.fit(_dataset("deacl", images), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "student.npy", model.student.predict(images, verbose=0))
    np.save(tmp_path / "teacher.npy", model.teacher.predict(images, verbose=0))
    run_in_fresh_process(f"""
        import numpy as np, keras, tensorflow as tf
        import tarrl_tf.deacl_model
        x = np.load(r"{tmp_path}/x.npy")
        model = keras.models.load_model(r"{tmp_path}/model.keras")
        assert isinstance(model, tarrl_tf.deacl_model.DeACLModel), type(model)
        assert not model.teacher.trainable
        np.testing.assert_allclose(model.student.predict(x, verbose=0),
                                   np.load(r"{tmp_path}/student.npy"), atol=1e-5)
        teacher = np.load(r"{tmp_path}/teacher.npy")
        np.testing.assert_allclose(model.teacher.predict(x, verbose=0), teacher, atol=1e-5)
        assert int(model.optimizer.iterations.numpy()) == 2
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(8), epochs=1, verbose=0)
        assert int(model.optimizer.iterations.numpy()) == 4  # Training resumes.
        np.testing.assert_allclose(model.teacher.predict(x, verbose=0), teacher, atol=1e-6)
        print("ok")
    """)


def test_epsilon_warmup_grows_the_radius(make_cnn):
    x = np.random.default_rng(0).random((8, 12, 12, 1), dtype=np.float32)
    model = baselines.build("acl", make_cnn(), epsilon=0.3, norm="inf", steps=2, seed=0,
                            epsilon_warmup_steps=100)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    v1, v2 = model.augmentation(x), model.augmentation(x)
    early = np.abs(model.craft(v1, v2).numpy() - v1.numpy()).max()
    model.optimizer.iterations.assign(99)
    late = np.abs(model.craft(v1, v2).numpy() - v1.numpy()).max()
    assert early <= 0.3 / 100 + 1e-6 and late > 0.2
    assert model.get_config()["epsilon_warmup_steps"] == 100
