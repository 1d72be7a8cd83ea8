"""A bfloat16 attack search (`AttackSpec.precision`): steps in bfloat16, verdicts in float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tarrl_tf
from tarrl_tf import attacks, evaluation
from tarrl_tf.attacks import pgd
from tarrl_tf.attacks.compiled import compiled_attack

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 3


def _data(n=40):
    rng = np.random.default_rng(0)
    y = np.arange(n) % NUM_CLASSES
    x = np.clip(rng.normal(0.5, 0.05, (n, *IMAGE_SHAPE)) + 0.2 * y[:, None, None, None], 0, 1)
    return x.astype("float32"), y


def _classifier():
    """A small CNN with a linear head (functional, as the evaluation builds them), trained a bit."""
    keras.utils.set_random_seed(0)
    encoder = tarrl_tf.encoders.small_cnn(input_shape=IMAGE_SHAPE, width=4, representation_dim=8)
    inputs = keras.Input(IMAGE_SHAPE)
    model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(encoder(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(120)
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def classifier():
    return _classifier()


def test_the_spec_records_the_precision_and_round_trips():
    spec = attacks.make_attack("pgd_linf", epsilon=0.1, steps=5, precision="bfloat16")
    assert spec.to_dict()["precision"] == "bfloat16"
    assert attacks.AttackSpec.from_dict(spec.to_dict()) == spec
    # float32 is the default, spelled or not: old reports' rows stay as they were.
    plain = attacks.make_attack("pgd_linf", epsilon=0.1, steps=5, precision="float32")
    assert plain.precision is None and "precision" not in plain.to_dict()


def test_a_precision_is_refused_where_the_search_cannot_use_it():
    with pytest.raises(ValueError, match="float32 only.*pgd_linf"):
        attacks.make_attack("fgsm", epsilon=0.1, precision="bfloat16")
    with pytest.raises(ValueError, match="float16"):
        attacks.make_attack("pgd_linf", epsilon=0.1, precision="float16")


def test_attack_grid_gives_the_precision_to_the_attacks_that_take_it():
    specs = evaluation.attack_grid(["pgd_linf", "fgsm", "bim"], [0.1], steps=3,
                                   precision="bfloat16")
    assert {s.name: s.precision for s in specs} == {"pgd_linf": "bfloat16", "fgsm": None,
                                                    "bim": "bfloat16"}


def test_a_bfloat16_search_stays_in_the_ball_and_breaks_images(classifier):
    x, y = _data()
    spec = attacks.make_attack("pgd_linf", epsilon=0.15, steps=10, precision="bfloat16")
    x_adv = attacks.run_attack(classifier, x, y, spec, batch_size=16, seed=0)
    assert x_adv.dtype == np.float32
    assert np.abs(x_adv - x).max() <= 0.15 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    clean = attacks.clean_accuracy(classifier, x, y)
    robust = attacks.robust_accuracy(classifier, x, y, spec, batch_size=16, seed=0)
    assert clean > 0.8 and robust < clean - 0.2


def test_the_classifier_is_float32_after_a_bfloat16_attack(classifier):
    x, y = _data()
    before = classifier(x, training=False).numpy()
    spec = attacks.make_attack("pgd_linf", epsilon=0.1, steps=3, precision="bfloat16")
    attacks.run_attack(classifier, x, y, spec, batch_size=16, seed=0)
    policies = {layer.dtype_policy.name for layer in classifier._flatten_layers()}
    assert policies == {"float32"}
    np.testing.assert_array_equal(classifier(x, training=False).numpy(), before)


def test_a_bfloat16_search_traces_once_over_batches_with_a_partial_one(classifier):
    x, y = _data(10)
    spec = attacks.make_attack("pgd_linf", epsilon=0.1, steps=3, precision="bfloat16")
    attacks.run_attack(classifier, x, y, spec, batch_size=4, seed=0)
    attacks.run_attack(classifier, x, y, spec, batch_size=4, seed=1)
    compiled = compiled_attack(classifier, spec, image_shape=IMAGE_SHAPE,
                               num_classes=NUM_CLASSES, clip_min=0.0, clip_max=1.0)
    assert compiled.tracing_count() == 1


def _always(label):
    """A 'classifier' whose logits always pick `label`."""
    def logits(x):
        return tf.one_hot(tf.fill([tf.shape(x)[0]], label), NUM_CLASSES)
    return logits


def _wrong_then(x):
    # The search's model: its gradient is the sum of the pixels; it always says "class 1".
    return tf.concat([-tf.reduce_sum(x, axis=[1, 2, 3])[:, None],
                      tf.ones([tf.shape(x)[0], 1]) * 1e3, tf.zeros([tf.shape(x)[0], 1])], axis=1)


def test_only_the_float32_check_stops_an_image():
    x = np.full((4, *IMAGE_SHAPE), 0.5, np.float32)
    y = np.zeros(4, np.int64)
    spec = attacks.make_attack("bim", epsilon=0.1, steps=4)
    # Judged by the search's own model (always wrong), no image moves from its start...
    alone = pgd.projected_gradient_descent(_wrong_then, x, y, spec=spec, clip_min=0.0,
                                           clip_max=1.0).numpy()
    np.testing.assert_array_equal(alone, x)
    # ...but a float32 check that still classifies every image right keeps them stepping.
    checked = pgd.projected_gradient_descent(_wrong_then, x, y, spec=spec, clip_min=0.0,
                                             clip_max=1.0, check_fn=_always(0)).numpy()
    assert np.abs(checked - x).max() == pytest.approx(0.1, abs=1e-6)
    # And where the check agrees, the image stops at once, as without a check.
    agreed = pgd.projected_gradient_descent(_wrong_then, x, y, spec=spec, clip_min=0.0,
                                            clip_max=1.0, check_fn=_always(2)).numpy()
    np.testing.assert_array_equal(agreed, x)
