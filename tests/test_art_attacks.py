"""Tests of the ART attacks (APGD-CE, APGD-T, Square) and the suites; the invariants every
attack shares (ball, clip range, labels, seeds) are in test_attacks.py."""

import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from tarrl_tf import attacks
from tarrl_tf.attacks import art_attacks, make_attack

IMAGE_SHAPE = (8, 8, 1)


def prototype_problem(num_classes, *, spread=0.05, seed=0):
    """A random prototype per class plus noise; a plainly trained MLP (accurate, not robust)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0.2, 0.8, size=(num_classes, *IMAGE_SHAPE))

    def sample(n):
        y = rng.integers(0, num_classes, n)
        x = np.clip(prototypes[y] + rng.uniform(-spread, spread, (n, *IMAGE_SHAPE)), 0, 1)
        return x.astype("float32"), y

    (x_train, y_train), test = sample(300), sample(60)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(IMAGE_SHAPE), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(num_classes)])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    return model, test


@pytest.fixture(scope="module")
def three_classes():
    return prototype_problem(3)


@pytest.fixture(scope="module")
def ten_classes():
    return prototype_problem(10, seed=1)


@pytest.fixture(scope="module")
def noisy_three_classes():
    return prototype_problem(3, spread=0.2)


@pytest.fixture(scope="module")
def noisy_ten_classes():
    return prototype_problem(10, spread=0.2, seed=1)


def linf(delta):
    return np.abs(delta.reshape(len(delta), -1)).max(axis=1)


# --- strength --------------------------------------------------------------------------


# Radii between robust and broken, where the attacks' strength shows. (On these near-linear
# toy models, at radii where only a few images break, APGD-CE's single random start can also
# miss one image that PGD-40 finds; RESULTS-scale comparisons use hundreds of images.)
@pytest.mark.parametrize("problem, epsilon", [("noisy_three_classes", 0.13),
                                              ("noisy_ten_classes", 0.1)])
def test_apgd_ce_is_at_least_as_strong_as_pgd40(problem, epsilon, request):
    model, (x, y) = request.getfixturevalue(problem)
    assert attacks.clean_accuracy(model, x, y) >= 0.95
    pgd = make_attack("pgd_linf", epsilon=epsilon)
    apgd = make_attack("apgd_ce", epsilon=epsilon)
    assert (pgd.steps, apgd.steps, apgd.step_size) == (40, 100, pytest.approx(2 * epsilon))
    pgd_accuracy = attacks.robust_accuracy(model, x, y, pgd, seed=0)
    x_adv = attacks.run_attack(model, x, y, apgd, seed=0)
    apgd_accuracy = attacks.robust_accuracy(model, x, y, apgd, seed=0)
    assert 0.0 < pgd_accuracy < 0.95, "the radius should leave PGD-40 something to find"
    assert apgd_accuracy <= pgd_accuracy
    assert linf(x_adv - x).max() <= epsilon + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_apgd_t_targets_the_likely_classes_of_a_ten_class_task(ten_classes):
    model, (x, y) = ten_classes
    one = make_attack("apgd_t", epsilon=0.1, steps=30, target_classes=1)
    three = make_attack("apgd_t", epsilon=0.1, steps=30, target_classes=3)
    accuracy_one, accuracy_three = (attacks.robust_accuracy(model, x, y, s, seed=0)
                                    for s in (one, three))
    # Each extra target attacks the images the earlier ones missed: never weaker.
    assert accuracy_three <= accuracy_one < attacks.clean_accuracy(model, x, y)


def test_apgd_t_breaks_a_two_class_task():
    model, (x, y) = prototype_problem(2, seed=2)
    accuracy = attacks.robust_accuracy(model, x, y, make_attack("apgd_t", epsilon=0.3, steps=20),
                                       seed=0)
    assert attacks.clean_accuracy(model, x, y) >= 0.95 and accuracy <= 0.05


def test_square_breaks_the_model_without_gradients(three_classes):
    model, (x, y) = three_classes
    spec = make_attack("square", epsilon=0.3, steps=300)
    assert spec.to_dict() == {"name": "square", "norm": "inf", "epsilon": 0.3, "steps": 300,
                              "step_size": None, "restarts": 1, "p_init": 0.8}
    assert attacks.robust_accuracy(model, x[:20], y[:20], spec, seed=0) <= 0.1


# --- losses ----------------------------------------------------------------------------


def test_losses_follow_their_formulas():
    logits = np.array([[3.0, 1.0, 2.0, 0.0, -1.0]], np.float32)
    one_hot = np.eye(5, dtype=np.float32)[[0]]
    # Sorted logits 3, 2, 1, 0, -1; true class 0, best other class 2.
    assert float(art_attacks.dlr(logits, one_hot)[0]) == pytest.approx(-(3 - 2) / (3 - 1))
    towards_3 = one_hot - np.eye(5, dtype=np.float32)[[3]]
    assert float(art_attacks.targeted_dlr(logits, towards_3)[0]) == pytest.approx(
        -(3 - 0) / (3 - (1 + 0) / 2))
    assert float(art_attacks.cross_entropy(logits, one_hot)[0]) == pytest.approx(
        -np.log(np.exp(3) / np.exp(logits).sum()), rel=1e-5)
    two = np.array([[0.5, 2.0]], np.float32)
    assert float(art_attacks.margin(two, np.eye(2, dtype=np.float32)[[0]])[0]) == pytest.approx(1.5)


# --- the adapter's guards ---------------------------------------------------------------


@pytest.mark.parametrize("output, message", [
    (lambda x: np.clip(x + 0.2, 0, 1), "perturbation of size"),
    (lambda x: x * np.nan, "non-finite"),
    (lambda x: x - 1.0, "values outside"),
])
def test_results_outside_the_contract_raise(output, message, three_classes):
    model, (x, y) = three_classes
    build = art_attacks._checked(lambda spec, model_fn, **_: lambda x, y: output(x))
    craft = build(make_attack("apgd_ce", epsilon=0.1), model, image_shape=IMAGE_SHAPE,
                  num_classes=3, clip_min=0.0, clip_max=1.0)
    with pytest.raises(RuntimeError, match=message):
        craft(x[:4], y[:4])


def test_eager_attacks_leave_the_global_generators_as_they_were(three_classes):
    model, (x, y) = three_classes
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    attacks.run_attack(model, x[:4], y[:4], make_attack("square", epsilon=0.1, steps=20), seed=7)
    assert (np.random.rand(), random.random()) == expected


# --- suites -----------------------------------------------------------------------------


def test_standard_suite_is_autoattacks_standard_version_without_fab():
    suite = attacks.SUITES.get("standard")
    specs = {spec.name: (spec, subset) for spec, subset in suite.specs("inf", 0.3)}
    assert list(specs) == ["apgd_ce", "apgd_t", "square"]
    assert all(subset is None for _, subset in specs.values())  # every image
    assert (specs["apgd_ce"][0].steps, specs["apgd_ce"][0].restarts) == (100, 1)
    assert (specs["apgd_t"][0].steps, specs["apgd_t"][0].target_classes) == (100, 9)
    assert (specs["square"][0].steps, specs["square"][0].p_init) == (5000, 0.8)
    # L2: ART's Square is defective, the APGD attacks run alone.
    assert [spec.name for spec, _ in suite.specs("2", 1.0)] == ["apgd_ce", "apgd_t"]


def test_quick_suite_is_cheaper_than_standard():
    quick = {spec.name: (spec, subset) for spec, subset in attacks.SUITES.get("quick").specs("inf", 0.3)}
    assert list(quick) == ["apgd_ce", "apgd_t", "square"]
    assert quick["apgd_ce"][0].steps < 100 and quick["apgd_t"][0].steps < 100
    assert quick["square"][0].steps < 5000 and quick["square"][1] is not None
    assert attacks.SUITE_NAMES == ("standard", "quick")


def test_a_suite_with_a_bad_attack_setting_is_refused_when_registered():
    bad = attacks.Suite("broken", (attacks.SuiteAttack("apgd_ce", {"restarts": 0}),))
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        attacks.register_suite(bad)
    assert "broken" not in attacks.SUITES


def test_the_art_adapter_computes_only_the_rows_it_has_not_seen():
    from tarrl_tf.attacks.compat import ARTClassifier

    rows = tf.Variable(0, dtype=tf.int64)
    weights = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")

    def model_fn(x):
        rows.assign_add(tf.cast(tf.shape(x)[0], tf.int64))  # counts the rows the model sees
        return tf.reshape(x, (-1, 12)) @ weights

    classifier = ARTClassifier(model_fn, loss=art_attacks.cross_entropy, num_classes=3,
                               image_shape=(2, 2, 3), clip_min=0.0, clip_max=1.0)
    x = np.random.default_rng(1).uniform(size=(6, 2, 2, 3)).astype("float32")
    expected = x.reshape(6, 12) @ weights
    np.testing.assert_allclose(classifier.predict(x, batch_size=4), expected, rtol=1e-5)
    assert int(rows.numpy()) == 6
    # Seen rows come back without a pass, in any order and subset; a changed row is computed.
    changed = x[[4, 0, 2]].copy()
    changed[1, 0, 0, 0] += 0.25
    got = classifier.predict(changed, batch_size=4)
    assert int(rows.numpy()) == 7
    np.testing.assert_allclose(got, changed.reshape(3, 12) @ weights, rtol=1e-5)
    # Only the last three calls are remembered.
    for _ in range(3):
        classifier.predict(np.random.default_rng(2).uniform(size=(1, 2, 2, 3)).astype("float32"))
    classifier.predict(x[:1])
    assert int(rows.numpy()) == 7 + 1 + 1
