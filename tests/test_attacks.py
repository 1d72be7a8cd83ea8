"""Tests of the attack adapter: settings, invariants, and attack strength on a known weak model."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from tarrl_tf import attacks
from tarrl_tf.attacks import ATTACK_NAMES, AttackSpec, make_attack

NUM_CLASSES = 3
IMAGE_SHAPE = (8, 8, 1)
# Large budgets: the prototypes below differ by ~0.2 per pixel, so these reach another class.
LARGE_EPS = {"inf": 0.3, "2": 2.4}
# Small settings that keep each attack well under a second on tiny inputs.
FAST = {
    "fgsm": {},
    "pgd_linf": {"steps": 5},
    "pgd_l2": {"steps": 5},
    "bim": {"steps": 5},
    "mim": {"steps": 5},
    "cw_l2": {"steps": 10, "binary_search_steps": 2, "learning_rate": 0.1, "initial_const": 1.0},
    "spsa": {"steps": 10, "spsa_samples": 16},
    "apgd_ce": {"steps": 10},
    "apgd_t": {"steps": 10},
    "square": {"steps": 200},
}


def fast_spec(name, epsilon, **settings):
    return make_attack(name, epsilon=epsilon, **{**FAST[name], **settings})


def default_norm(name):
    return make_attack(name, epsilon=0.1).norm


def perturbation_norm(delta, norm):
    flat = delta.reshape(len(delta), -1)
    if norm == "inf":
        return np.abs(flat).max(axis=1)
    return np.linalg.norm(flat.astype(np.float64), axis=1)


@pytest.fixture(scope="module")
def data():
    """Three classes of 8x8 images: a random prototype per class plus small noise."""
    rng = np.random.default_rng(0)
    prototypes = rng.uniform(0.2, 0.8, size=(NUM_CLASSES, *IMAGE_SHAPE))

    def sample(n):
        y = rng.integers(0, NUM_CLASSES, n)
        x = np.clip(prototypes[y] + rng.uniform(-0.05, 0.05, (n, *IMAGE_SHAPE)), 0, 1)
        return x.astype("float32"), y

    return sample(300), sample(60)


@pytest.fixture(scope="module")
def classifier(data):
    """A plainly trained MLP: accurate on clean data, not robust."""
    keras.utils.set_random_seed(0)
    (x_train, y_train), _ = data
    model = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def test_set(data):
    return data[1]


class CountingModel(keras.Model):
    """Counts Python runs of `call`: once per trace in a tf.function, once per eager call."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.python_calls = 0

    def call(self, x, training=False):
        self.python_calls += 1
        return self.inner(x, training=training)


# --- Settings --------------------------------------------------------------------


def test_make_attack_field_standard_defaults():
    spec = make_attack("pgd_linf", epsilon=0.3)
    assert (spec.norm, spec.steps, spec.random_start, spec.restarts) == ("inf", 40, True, 1)
    assert spec.step_size == pytest.approx(2.5 * 0.3 / 40)
    # Few steps: the step is capped at epsilon (CleverHans requires eps_iter <= eps).
    assert make_attack("bim", epsilon=0.3, steps=2).step_size == pytest.approx(0.3)
    fgsm = make_attack("fgsm", epsilon=0.1)
    assert (fgsm.steps, fgsm.step_size) == (1, 0.1)
    assert make_attack("pgd_l2", epsilon=1.0).norm == "2"
    assert make_attack("cw_l2", epsilon=1.0).step_size is None
    # Other spellings of a norm are normalized.
    assert make_attack("bim", epsilon=0.1, norm=np.inf).norm == "inf"
    assert make_attack("bim", epsilon=0.1, norm="l2").norm == "2"


def test_report_dict_has_numbers_and_round_trips():
    spec = make_attack("pgd_l2", epsilon=np.float32(0.5), steps=10, restarts=2)
    report = spec.to_dict()
    assert report == {
        "name": "pgd_l2",
        "norm": "2",
        "epsilon": 0.5,
        "steps": 10,
        "step_size": pytest.approx(0.125),
        "random_start": True,
        "restarts": 2,
    }
    assert type(report["epsilon"]) is float and type(report["steps"]) is int
    assert json.loads(json.dumps(report)) == report
    assert AttackSpec.from_dict({**report, "robust_accuracy": 0.5}) == spec
    # SPSA's Adam learning rate: Uesato et al.'s 0.01, or more to cross a wide ball.
    assert make_attack("spsa", epsilon=8 / 255).learning_rate == 0.01
    assert make_attack("spsa", epsilon=0.3, steps=10).learning_rate == pytest.approx(0.075)
    cw = make_attack("cw_l2", epsilon=1.0).to_dict()
    assert cw["step_size"] is None and cw["learning_rate"] == 0.01 and "restarts" not in cw


def test_spec_is_frozen():
    spec = make_attack("fgsm", epsilon=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.epsilon = 0.2


def test_unknown_attack_name_raises():
    with pytest.raises(ValueError, match="attack 'deepfool'"):
        make_attack("deepfool", epsilon=0.1)
    with pytest.raises(ValueError, match="attack 'pgd'"):
        AttackSpec(name="pgd", norm="inf", epsilon=0.1, steps=10, step_size=0.01)


@pytest.mark.parametrize(
    "name, norm",
    [
        ("pgd_linf", "l3"),
        ("fgsm", 1),
        ("pgd_linf", "2"),
        ("pgd_l2", "inf"),
        ("cw_l2", "inf"),
        ("spsa", 2),
        ("square", "2"),  # ART's L2 Square is defective (art_attacks.py)
    ],
)
def test_invalid_norm_raises(name, norm):
    with pytest.raises(ValueError, match="norm"):
        make_attack(name, epsilon=0.1, norm=norm)


@pytest.mark.parametrize(
    "name, settings, message",
    [
        ("pgd_linf", {"epsilon": -0.1}, "epsilon must be >= 0"),
        ("pgd_linf", {"epsilon": float("nan")}, "epsilon must be finite"),
        ("pgd_linf", {"epsilon": "8/255"}, "epsilon must be a number"),
        ("pgd_linf", {"epsilon": 0.1, "steps": 0}, "steps must be >= 1"),
        ("pgd_linf", {"epsilon": 0.1, "steps": 2.5}, "steps must be an integer"),
        ("pgd_linf", {"epsilon": 0.1, "step_size": 0.2}, "must not exceed epsilon"),
        ("fgsm", {"epsilon": 0.1, "steps": 3}, "single-step"),
        ("pgd_linf", {"epsilon": 0.1, "confidence": 1.0}, "Unknown setting"),
        ("bim", {"epsilon": 0.1, "restarts": 3}, "Unknown setting"),
        ("pgd_linf", {"epsilon": 0.1, "restarts": 3, "random_start": False}, "random_start"),
        ("spsa", {"epsilon": 0.1, "spsa_samples": 15}, "even"),
        ("cw_l2", {"epsilon": 1.0, "step_size": 0.1}, "no step_size"),
        ("cw_l2", {"epsilon": 1.0, "learning_rate": 0.0}, "learning_rate must be > 0"),
        # APGD's first step is 2 epsilon (AutoAttack), no more.
        ("apgd_ce", {"epsilon": 0.1, "step_size": 0.3}, r"must not exceed 2 x epsilon \(0.2\)"),
        ("apgd_t", {"epsilon": 0.1, "target_classes": 0}, "target_classes must be >= 1"),
        ("square", {"epsilon": 0.1, "p_init": 1.0}, "p_init must lie strictly between 0 and 1"),
        ("square", {"epsilon": 0.1, "step_size": 0.1}, "no step_size"),
    ],
)
def test_invalid_settings_raise(name, settings, message):
    with pytest.raises(ValueError, match=message):
        make_attack(name, **settings)


def test_spec_fields_that_do_not_apply_raise():
    with pytest.raises(ValueError, match="'decay_factor' does not apply"):
        AttackSpec(name="fgsm", norm="inf", epsilon=0.1, steps=1, step_size=0.1, decay_factor=1.0)


# --- Invariants, for every attack ---------------------------------------------------


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_zero_epsilon_returns_x_unchanged(name, classifier, test_set):
    x, y = test_set[0][:4], test_set[1][:4]
    x_adv = attacks.run_attack(classifier, x, y, fast_spec(name, 0.0), seed=0)
    np.testing.assert_array_equal(x_adv, x)


@pytest.mark.parametrize("clip_min, clip_max", [(0.0, 1.0), (-1.0, 1.0)])
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_perturbation_within_ball_and_clip_range(name, clip_min, clip_max, classifier, test_set):
    # Binarized images: every pixel sits on a bound, so an unclipped step leaves the range.
    # CW works in tanh space, where pixels on a bound barely move: it gets the originals.
    x = test_set[0][:4] if name == "cw_l2" else np.round(test_set[0][:4])
    x = clip_min + (clip_max - clip_min) * x
    y = test_set[1][:4]
    norm = default_norm(name)
    # For CW (minimum distortion, no budget) a small ball makes the projection do the work.
    epsilon = 0.3 if name == "cw_l2" else 0.5 * LARGE_EPS[norm]
    spec = fast_spec(name, epsilon)
    x_adv = attacks.run_attack(
        classifier, x, y, spec, clip_min=clip_min, clip_max=clip_max, seed=0, batch_size=3
    )
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert np.any(x_adv != x), "the attack changed nothing, so the checks below are vacuous"
    assert perturbation_norm(x_adv - x, norm).max() <= epsilon + 1e-6
    assert x_adv.min() >= clip_min and x_adv.max() <= clip_max


# --- Strength on a known non-robust model --------------------------------------------


def test_non_robust_model_is_broken_by_pgd(classifier, test_set):
    x, y = test_set
    assert attacks.clean_accuracy(classifier, x, y) >= 0.95
    spec = make_attack("pgd_linf", epsilon=LARGE_EPS["inf"], steps=10)
    assert attacks.robust_accuracy(classifier, x, y, spec, seed=0) <= 0.05


@pytest.mark.parametrize("name", ["cw_l2", "spsa"])
def test_cw_and_spsa_break_non_robust_model(name, classifier, test_set):
    # With labels handed to CleverHans' CW constructor it would attack *towards*
    # the true class and leave accuracy at 100%; SPSA needs no gradients.
    x, y = test_set[0][:4], test_set[1][:4]
    spec = fast_spec(name, LARGE_EPS[default_norm(name)])
    assert attacks.clean_accuracy(classifier, x, y) == 1.0
    assert attacks.robust_accuracy(classifier, x, y, spec, seed=0) <= 0.25


def test_more_pgd_steps_never_give_higher_accuracy(classifier, test_set):
    x, y = test_set
    # Averaged over a few seeds: with one random start, 5 or 20 steps (each with its own step
    # size) can each come out ahead by an image or two of these 60, depending on the draw.
    accuracy = {
        steps: np.mean([attacks.robust_accuracy(
            classifier, x, y, make_attack("pgd_linf", epsilon=0.14, steps=steps), seed=seed
        ) for seed in range(4)])
        for steps in (1, 5, 20)
    }
    assert accuracy[5] <= accuracy[1] + 0.02
    assert accuracy[20] <= accuracy[5] + 0.02
    assert accuracy[20] < accuracy[1], f"eps 0.14 should sit between robust and broken: {accuracy}"


def test_restarts_never_give_higher_accuracy(classifier, test_set):
    x, y = test_set
    one, three = (
        attacks.robust_accuracy(
            classifier, x, y, make_attack("pgd_linf", epsilon=0.13, steps=5, restarts=r), seed=0
        )
        for r in (1, 3)
    )
    assert three <= one
    assert one > 0.0, "eps 0.13 should leave some accuracy for restarts to remove"


def test_evaluate_attacks_report_rows(classifier, test_set):
    x, y = test_set[0][:20], test_set[1][:20]
    specs = [make_attack("fgsm", epsilon=0.3), make_attack("bim", epsilon=0.05, steps=5)]
    rows = attacks.evaluate_attacks(classifier, x, y, specs, seed=0, batch_size=8)
    assert [row["name"] for row in rows] == ["fgsm", "bim"]
    for row, spec in zip(rows, specs):
        assert {k: row[k] for k in spec.to_dict()} == spec.to_dict()
        assert row["num_examples"] == 20
        assert isinstance(row["robust_accuracy"], float)
    assert rows[0]["robust_accuracy"] <= 0.05  # fgsm at a large epsilon
    assert rows[1]["robust_accuracy"] >= 0.9  # bim at a small one


def test_clean_accuracy_uses_labels(classifier, test_set):
    x, y = test_set
    assert attacks.clean_accuracy(classifier, x, y, batch_size=7) >= 0.95
    assert attacks.clean_accuracy(classifier, x, (y + 1) % NUM_CLASSES) <= 0.05


# --- Labels, tracing, seeds -------------------------------------------------------------


@pytest.mark.parametrize("name", ["fgsm", "pgd_linf", "bim", "mim", "cw_l2", "spsa", "apgd_ce",
                                  "apgd_t", "square"])
def test_labels_are_used(name, classifier, test_set):
    x, y = test_set[0][:4], test_set[1][:4]
    spec = fast_spec(name, LARGE_EPS[default_norm(name)])
    true = attacks.run_attack(classifier, x, y, spec, seed=0)
    wrong = attacks.run_attack(classifier, x, (y + 1) % NUM_CLASSES, spec, seed=0)
    assert np.abs(true - wrong).max() > 1e-3


def test_labels_are_required(classifier, test_set):
    with pytest.raises(ValueError, match="Labels y are required"):
        attacks.run_attack(classifier, test_set[0][:4], None, make_attack("fgsm", epsilon=0.1))


@pytest.mark.parametrize("name", ["pgd_linf", "mim", "spsa"])
def test_attack_is_traced_once_across_batches(name, classifier, test_set):
    x, y = test_set
    spec = fast_spec(name, 0.1)
    calls = {}
    for num_examples in (4, 10):  # one batch; three batches, the last one partial
        model = CountingModel(classifier)
        attacks.run_attack(model, x[:num_examples], y[:num_examples], spec, batch_size=4, seed=0)
        calls[num_examples] = model.python_calls
    assert calls[4] == calls[10] > 0


def test_trace_counter_sees_eager_cw(classifier, test_set):
    # CW runs eagerly (documented); the counter above would catch that for the others.
    x, y = test_set
    spec = fast_spec("cw_l2", 0.5, binary_search_steps=1, steps=2)
    calls = {}
    for num_examples in (1, 3):
        model = CountingModel(classifier)
        attacks.run_attack(model, x[:num_examples], y[:num_examples], spec, batch_size=4)
        calls[num_examples] = model.python_calls
    assert calls[3] > calls[1]


@pytest.mark.parametrize("name", ["pgd_linf", "pgd_l2", "spsa", "apgd_ce", "square"])
def test_seed_makes_random_starts_reproducible(name, classifier, test_set):
    x, y = test_set[0][:6], test_set[1][:6]
    spec = fast_spec(name, 0.5 * LARGE_EPS[default_norm(name)], steps=2)
    first, again, other = (
        attacks.run_attack(classifier, x, y, spec, seed=seed, batch_size=4) for seed in (1, 1, 2)
    )
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4


@pytest.mark.parametrize("name", ["pgd_linf", "pgd_l2", "spsa", "apgd_ce", "square"])
def test_a_slice_from_a_batch_boundary_is_attacked_as_in_the_whole_set(name, classifier, test_set):
    # Each batch's random numbers follow from (seed, its first image) alone: shards of a test
    # set reproduce the whole run image by image.
    x, y = test_set[0][:10], test_set[1][:10]
    spec = fast_spec(name, 0.5 * LARGE_EPS[default_norm(name)], steps=2)
    whole = attacks.run_attack(classifier, x, y, spec, seed=3, batch_size=4)
    part = attacks.run_attack(classifier, x[4:], y[4:], spec, seed=3, batch_size=4, first_index=4)
    np.testing.assert_array_equal(part, whole[4:])
    # Without first_index the slice's first batch would draw the set's first batch's numbers.
    if name != "spsa":  # (SPSA's perturbations may not change its few images' result)
        shifted = attacks.run_attack(classifier, x[4:], y[4:], spec, seed=3, batch_size=4)
        assert np.abs(shifted - whole[4:]).max() > 1e-6


# --- Input checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "transform, message",
    [
        (lambda x, y: ((x * 255).astype(np.uint8), y), "floating point"),
        (lambda x, y: (x[..., 0], y), "rank 4"),
        (lambda x, y: (x * 2.0, y), "values must lie in"),
        (lambda x, y: (np.where(x > 0.5, np.nan, x), y), "NaN"),
        (lambda x, y: (x, np.eye(NUM_CLASSES)[y]), "argmax"),
        (lambda x, y: (x, y.astype(np.float32)), "integer class labels"),
        (lambda x, y: (x, y[:-1]), "same length"),
        (lambda x, y: (x, y - 5), "Labels must be >= 0"),
        (lambda x, y: (x, y + NUM_CLASSES), "Labels must be < 3"),
    ],
)
def test_bad_inputs_raise(transform, message, classifier, test_set):
    x, y = transform(test_set[0][:4], test_set[1][:4])
    with pytest.raises(ValueError, match=message):
        attacks.run_attack(classifier, x, y, make_attack("fgsm", epsilon=0.1))


def test_range_is_checked_against_the_given_clip_range(classifier, test_set):
    x, y = test_set[0][:4], test_set[1][:4]
    with pytest.raises(ValueError, match=r"values must lie in \[0.0, 0.5\]"):
        attacks.run_attack(classifier, x, y, make_attack("fgsm", epsilon=0.1), clip_max=0.5)


def test_bad_call_arguments_raise(classifier, test_set):
    x, y = test_set[0][:4], test_set[1][:4]
    spec = make_attack("fgsm", epsilon=0.1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        attacks.run_attack(classifier, x, y, spec, batch_size=0)
    with pytest.raises(TypeError, match="AttackSpec"):
        attacks.run_attack(classifier, x, y, spec.to_dict())


def test_from_the_same_start_the_evaluations_pgd_fools_every_image_cleverhans_does(classifier,
                                                                                  test_set):
    # The bench's same-start comparison: one trajectory, the evaluation keeping each image's
    # first misclassified iterate; an image only CleverHans fools would be a weaker attack.
    from benchmarks import speed_attack

    x, y = test_set
    same = speed_attack.same_start(classifier, x, y, epsilon=0.14, steps=10, batch_size=16)
    accuracy = same["robust_accuracy"]
    assert same["fooled_by_cleverhans_only"] == 0
    assert 0 < accuracy["cleverhans_eager"] < 1  # the radius breaks some images, not all
    assert accuracy["evaluation"] == pytest.approx(
        accuracy["cleverhans_eager"] - same["fooled_by_evaluation_only"] / len(x))
