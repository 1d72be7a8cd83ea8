"""Tests of `tarrl_tf.evaluation` (the report behind tools/evaluate.py) and `tarrl_tf.reports`."""

import hashlib
import json
import math
import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tarrl_tf import attacks, downstream, evaluation, export, files, reports, zoo
from tarrl_tf.testing import dense_encoder as make_dense_encoder
from tarrl_tf.testing import prototype_data

NUM_CLASSES = 3  # of `testing.prototype_data`'s default problem
IMAGE_SHAPE = (8, 8, 1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Report keys whose values must be JSON numbers (never strings such as "0.3").
NUMERIC_KEYS = {
    "clean_accuracy", "clean_loss", "num_examples", "num_train_examples", "num_classes",
    "epsilon", "steps", "step_size", "robust_accuracy", "adversarial_loss", "R", "mean_shift",
    "lipschitz", "representation_shift", "bound",
}


def numeric_values(report):
    """Yields (key, value) for every numeric key anywhere in the report."""
    stack = [report]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in NUMERIC_KEYS and not isinstance(value, (dict, list, type(None))):
                    yield key, value
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


@pytest.fixture(scope="module")
def problem():
    return prototype_data(150, seed=1), prototype_data(30, seed=2)


@pytest.fixture(scope="module")
def specs():
    return evaluation.attack_grid(["pgd_linf", "fgsm"], [0.1, 0.3], steps=3)


@pytest.fixture(scope="module")
def linear_run(problem, specs):
    """One evaluation with a linear head on the frozen encoder (no sanity checks: tested below)."""
    encoder = make_dense_encoder()
    train, test = problem
    report, classifier, head = evaluation.evaluate(
        encoder, train=train, test=test, num_classes=NUM_CLASSES, attack_specs=specs,
        epochs=15, batch_size=32, regularizer_steps=3, sanity_checks=False, seed=0,
    )
    return encoder, report, classifier, head


# --- representation_shift -----------------------------------------------------------------


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_representation_shift_is_zero_at_epsilon_zero(norm, problem):
    x = problem[1][0]
    d = evaluation.representation_shift(make_dense_encoder(), x, epsilon=0.0, norm=norm, steps=3)
    assert d.shape == (len(x),)
    np.testing.assert_array_equal(d, 0.0)


@pytest.mark.parametrize("norm, scale", [("inf", 1.0), ("2", 8.0)])
def test_representation_shift_grows_with_epsilon_and_stays_in_range(norm, scale, problem):
    x = problem[1][0]
    encoder = make_dense_encoder()
    means = []
    for eps in (0.02, 0.05, 0.1, 0.3):
        d = evaluation.representation_shift(encoder, x, epsilon=eps * scale, norm=norm, steps=3,
                                            batch_size=16)
        # squared_l2 of unit vectors lies in [0, 4].
        assert d.shape == (len(x),) and np.all(d >= 0) and np.all(d <= 4 + 1e-5)
        means.append(float(np.mean(d)))
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert means[0] > 0


def test_representation_shift_is_reproducible(problem):
    x = problem[1][0]
    encoder = make_dense_encoder()
    runs = [evaluation.representation_shift(encoder, x, epsilon=0.1, norm="inf", steps=3, seed=5)
            for _ in range(2)]
    np.testing.assert_array_equal(*runs)


# --- evaluate: the report -----------------------------------------------------------------


def test_report_has_the_contract_fields(linear_run, specs, problem):
    _, report, _, _ = linear_run
    test_x = problem[1][0]
    assert report["head"] == "linear" and report["fine_tune"] is False
    assert report["num_classes"] == NUM_CLASSES
    assert report["num_examples"] == len(test_x)
    assert report["num_train_examples"] == len(problem[0][0])
    assert 0.0 <= report["clean_accuracy"] <= 1.0
    assert report["clean_accuracy"] > 0.8  # separable task: an attack has something to break
    assert report["clean_loss"] > 0
    assert len(report["attacks"]) == len(specs) == 4
    for row, spec in zip(report["attacks"], specs):
        assert {"name", "norm", "epsilon", "steps", "robust_accuracy", "num_examples",
                "adversarial_loss"} <= set(row)
        assert attacks.AttackSpec.from_dict(row) == spec  # the exact settings are recorded
        assert row["num_examples"] == len(test_x)
        # Every row carries the clean numbers of the examples it attacked: here all of them.
        assert row["clean_accuracy"] == report["clean_accuracy"]
        assert row["clean_loss"] == report["clean_loss"]
        assert 0.0 <= row["robust_accuracy"] <= report["clean_accuracy"]
    for key, value in numeric_values(report):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)


def test_attacks_break_the_plain_head(linear_run):
    """A plainly trained head is not robust: the largest radius costs accuracy and raises the loss."""
    _, report, _, _ = linear_run
    strongest = max(report["attacks"], key=lambda r: r["epsilon"])
    assert strongest["robust_accuracy"] < report["clean_accuracy"]
    assert all(row["adversarial_loss"] > report["clean_loss"] for row in report["attacks"])


def test_robustness_rows_measure_R_of_the_encoder(linear_run, problem):
    encoder, report, _, _ = linear_run
    rows = report["robustness"]
    assert [(r["norm"], r["epsilon"]) for r in rows] == [("inf", 0.1), ("inf", 0.3)]
    for r in rows:
        assert r["estimator"] == "pgd" and r["divergence"] == "squared_l2" and r["steps"] == 3
        assert r["num_examples"] == len(problem[1][0])
        # mean(sqrt(d)) <= sqrt(mean(d)) (Jensen); d lies in [0, 4].
        assert 0 < r["mean_shift"] <= math.sqrt(r["R"]) + 1e-6 and r["R"] <= 4
        d = evaluation.representation_shift(encoder, problem[1][0], epsilon=r["epsilon"],
                                            norm=r["norm"], steps=3, batch_size=32, seed=0)
        assert r["R"] == pytest.approx(float(np.mean(d)), rel=1e-5)
    assert rows[0]["R"] < rows[1]["R"]


def test_bound_rows_follow_the_formula(linear_run, specs):
    _, report, _, head = linear_run
    bound = report["bound"]
    assert len(bound) == len(specs)  # one per attack with epsilon > 0
    assert "estimate" in report["bound_note"] and "lower" in report["bound_note"]
    lipschitz = downstream.linear_head_lipschitz(head)
    shift = {(r["norm"], r["epsilon"]): r["mean_shift"] for r in report["robustness"]}
    for row, attack in zip(bound, report["attacks"]):
        assert row["attack"] == attack["name"] and row["epsilon"] == attack["epsilon"]
        assert row["lipschitz"] == pytest.approx(lipschitz)
        assert row["representation_shift"] == pytest.approx(shift[(row["norm"], row["epsilon"])])
        assert row["clean_loss"] == report["clean_loss"]
        assert row["adversarial_loss"] == attack["adversarial_loss"]
        assert row["bound"] == pytest.approx(row["clean_loss"] + lipschitz * row["representation_shift"])
        assert row["bound"] >= row["clean_loss"]
        # Both sides are PGD estimates, but on this tiny problem the bound is far from tight.
        assert row["bound"] >= row["adversarial_loss"]


def test_report_round_trips_through_json(linear_run):
    _, report, _, _ = linear_run
    assert json.loads(json.dumps(report)) == report


def test_epsilon_zero_attacks_have_no_robustness_or_bound_rows(problem):
    train, test = problem
    specs = [attacks.make_attack("fgsm", epsilon=0.0), attacks.make_attack("fgsm", epsilon=0.1)]
    report, _, _ = evaluation.evaluate(
        make_dense_encoder(), train=train, test=test, num_classes=NUM_CLASSES, attack_specs=specs,
        epochs=3, batch_size=32, regularizer_steps=2, sanity_checks=False,
    )
    assert report["attacks"][0]["robust_accuracy"] == report["clean_accuracy"]
    assert [r["epsilon"] for r in report["robustness"]] == [0.1]
    assert [r["epsilon"] for r in report["bound"]] == [0.1]


def test_mlp_head_fine_tuned_has_no_bound_and_measures_the_tuned_encoder(problem):
    train, test = problem
    encoder = make_dense_encoder()
    before = [w.copy() for w in encoder.get_weights()]
    specs = [attacks.make_attack("pgd_linf", epsilon=0.1, steps=2)]
    report, classifier, _ = evaluation.evaluate(
        encoder, train=train, test=test, num_classes=NUM_CLASSES, attack_specs=specs, head="mlp",
        fine_tune=True, epochs=2, batch_size=32, regularizer_steps=2, sanity_checks=False,
    )
    assert report["head"] == "mlp" and report["fine_tune"] is True
    assert "bound" not in report and "bound_note" not in report
    assert len(report["attacks"]) == 1 and len(report["robustness"]) == 1
    for b, a in zip(before, encoder.get_weights()):
        np.testing.assert_array_equal(b, a)
    # R is measured on the encoder that the attacked classifier uses: the fine-tuned copy.
    d = evaluation.representation_shift(classifier.layers[1], test[0], epsilon=0.1, norm="inf",
                                        steps=2, batch_size=32, seed=0)
    assert report["robustness"][0]["R"] == pytest.approx(float(np.mean(d)), rel=1e-5)
    assert json.loads(json.dumps(report)) == report


# --- costly attacks on a subset -----------------------------------------------------------


SUBSET = 7


@pytest.fixture(scope="module")
def subset_run(problem):
    """fgsm on every test example, cw_l2 and spsa (tiny budgets) on the first SUBSET only.

    Two labels inside the subset are wrong on purpose, so its clean accuracy differs from the
    whole test set's.
    """
    train, (x_test, y_test) = problem
    y_test = y_test.copy()
    y_test[:2] = (y_test[:2] + 1) % NUM_CLASSES
    specs = [attacks.make_attack("fgsm", epsilon=0.1),
             attacks.make_attack("cw_l2", epsilon=1.0, steps=3, binary_search_steps=1),
             attacks.make_attack("spsa", epsilon=0.1, steps=2, spsa_samples=4)]
    attacked = []  # (attack name, the images it was given)
    real_run_attack = attacks.run_attack

    def spy(model, x, y, spec, **kwargs):
        attacked.append((spec.name, np.array(x)))
        return real_run_attack(model, x, y, spec, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attacks, "run_attack", spy)
        report, classifier, _ = evaluation.evaluate(
            make_dense_encoder(), train=train, test=(x_test, y_test), num_classes=NUM_CLASSES,
            attack_specs=specs, epochs=15, batch_size=32, regularizer_steps=2,
            sanity_checks=False, subset_examples=SUBSET,
        )
    return report, classifier, (x_test, y_test), attacked


def test_subset_attacks_run_on_the_first_examples_only(subset_run):
    report, classifier, (x, y), attacked = subset_run
    assert evaluation.SUBSET_ATTACKS == ("cw_l2", "spsa")
    assert [name for name, _ in attacked] == ["fgsm", "cw_l2", "spsa"]
    for name, images in attacked:
        expected = x[:SUBSET] if name in evaluation.SUBSET_ATTACKS else x
        np.testing.assert_array_equal(images, expected)

    rows = {row["name"]: row for row in report["attacks"]}
    assert report["num_examples"] == len(x)
    assert rows["fgsm"]["num_examples"] == len(x)
    assert rows["fgsm"]["clean_accuracy"] == report["clean_accuracy"]
    subset_clean = attacks.clean_accuracy(classifier, x[:SUBSET], y[:SUBSET])
    assert subset_clean != report["clean_accuracy"]  # the test can tell them apart
    for name in evaluation.SUBSET_ATTACKS:
        row = rows[name]
        assert row["num_examples"] == SUBSET
        assert row["clean_accuracy"] == pytest.approx(subset_clean)
        assert row["clean_loss"] == pytest.approx(downstream.cross_entropy(classifier, x[:SUBSET],
                                                                           y[:SUBSET]), rel=1e-5)
        assert 0.0 <= row["robust_accuracy"] <= row["clean_accuracy"]
    # R is measured on every example; the bound of a subset row uses that row's examples.
    assert all(r["num_examples"] == len(x) for r in report["robustness"])
    bound = {b["attack"]: b for b in report["bound"]}
    assert bound["cw_l2"]["num_examples"] == SUBSET and bound["fgsm"]["num_examples"] == len(x)
    assert bound["cw_l2"]["clean_loss"] == rows["cw_l2"]["clean_loss"]
    assert json.loads(json.dumps(report)) == report


def test_card_metrics_take_each_rows_own_clean_accuracy(subset_run):
    report = subset_run[0]
    metrics = export.card_metrics(report)
    for item, row in zip(metrics, report["attacks"]):
        assert item["num_examples"] == row["num_examples"]
        assert item["clean_accuracy"] == row["clean_accuracy"]
        assert item["clean_loss"] == row["clean_loss"]
        assert not {"clean_accuracy", "clean_loss", "num_examples"} & set(item["attack"])
        assert attacks.AttackSpec.from_dict(item["attack"]).to_dict() == item["attack"]
    assert metrics[1]["clean_accuracy"] != report["clean_accuracy"]


def test_reports_show_the_subset_rows(subset_run, tmp_path):
    report = subset_run[0]
    reports.write_report(report, str(tmp_path))
    markdown = (tmp_path / "report.md").read_text()
    for row in report["attacks"]:
        assert (f"| {row['clean_accuracy']:.4f} | {row['robust_accuracy']:.4f} "
                f"| {row['adversarial_loss']:.4f} | {row['num_examples']} |") in markdown
    assert f"first test examples only (costly attacks, suite subsets): cw_l2 ({SUBSET}), spsa ({SUBSET})" in markdown
    assert (tmp_path / "robust_accuracy.png").read_bytes().startswith(PNG_MAGIC)


def test_subset_larger_than_the_test_set_attacks_all(problem):
    train, test = problem
    report, _, _ = evaluation.evaluate(
        make_dense_encoder(), train=train, test=test, num_classes=NUM_CLASSES,
        attack_specs=[attacks.make_attack("spsa", epsilon=0.1, steps=1, spsa_samples=2)],
        epochs=2, batch_size=32, regularizer_steps=1, sanity_checks=False, subset_examples=1000,
    )
    assert report["attacks"][0]["num_examples"] == len(test[0])
    assert "first test examples only" not in reports.to_markdown(report)


@pytest.mark.parametrize("value", [0, -3, 2.5, "10", True])
def test_subset_examples_must_be_a_positive_integer(problem, value):
    train, test = problem
    with pytest.raises(ValueError, match="subset_examples must be a positive integer"):
        evaluation.evaluate(make_dense_encoder(), train=train, test=test,
                            num_classes=NUM_CLASSES, attack_specs=[], subset_examples=value)


# --- sanity checks against false robustness -----------------------------------------------


class MaskedMean(keras.layers.Layer):
    """Represents an image by its mean brightness, with the input gradient masked to zero.

    Gradient attacks see a zero gradient and cannot move; the model is nevertheless easy to
    break (move the mean across 0.5), which a gradient-free attack finds.
    """

    def call(self, x):
        m = tf.reduce_mean(x, axis=[1, 2, 3])[:, None]
        m = tf.stop_gradient(m) + 0.0 * m
        return tf.concat([m, 1.0 - m], axis=-1)


def brightness_data(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    level = np.where(y == 0, 0.3, 0.7)[:, None, None, None]
    x = np.clip(level + rng.uniform(-0.1, 0.1, (n, *IMAGE_SHAPE)), 0, 1)
    return x.astype("float32"), y.astype("int64")


def test_sanity_checks_pass_on_an_honest_model(problem):
    train, test = problem
    # An L2 radius of 1.0 is larger than any L-inf one, but it is not the headline threat model.
    specs = evaluation.attack_grid(["pgd_linf", "pgd_l2"], [0.1, 0.3], l2_epsilons=[1.0], steps=3)
    report, _, _ = evaluation.evaluate(
        make_dense_encoder(), train=train, test=test, num_classes=NUM_CLASSES, attack_specs=specs,
        epochs=15, batch_size=32, regularizer_steps=2, spsa_examples=12,
    )
    checks = {c["name"]: c for c in report["sanity_checks"]}
    assert set(checks) == {"large_epsilon_breaks_model", "more_steps_do_not_raise_accuracy",
                           "gradient_free_attack_not_much_stronger"}
    for check in checks.values():
        assert check["passed"] is True, check
        assert isinstance(check["detail"], str) and check["detail"]
    assert "12 examples" in checks["gradient_free_attack_not_much_stronger"]["detail"]
    assert checks["more_steps_do_not_raise_accuracy"]["detail"].startswith("pgd_linf eps=0.3")
    assert json.loads(json.dumps(report)) == report


def test_sanity_checks_flag_gradient_masking():
    inputs = keras.Input(IMAGE_SHAPE)
    encoder = keras.Model(inputs, MaskedMean()(inputs))
    train, test = brightness_data(100, seed=0), brightness_data(20, seed=1)
    specs = evaluation.attack_grid(["pgd_linf"], [0.3], steps=3)
    report, _, _ = evaluation.evaluate(
        encoder, train=train, test=test, num_classes=2, attack_specs=specs, epochs=30,
        batch_size=32, regularizer_steps=2, spsa_examples=20,
    )
    assert report["clean_accuracy"] == 1.0
    # PGD is blind here: the report alone would claim full robustness at eps 0.3.
    assert report["attacks"][0]["robust_accuracy"] == 1.0
    checks = {c["name"]: c["passed"] for c in report["sanity_checks"]}
    assert checks["large_epsilon_breaks_model"] is False
    assert checks["gradient_free_attack_not_much_stronger"] is False
    assert "FAIL `large_epsilon_breaks_model`" in reports.to_markdown(report)


# --- attack_grid / load_encoder / evaluate_on_dataset ---------------------------------------


def test_attack_grid_is_attacks_times_epsilons():
    specs = evaluation.attack_grid(["pgd_linf", "fgsm"], [0.1, 0.2, 0.3], steps=3)
    assert [(s.name, s.epsilon) for s in specs] == [
        ("pgd_linf", 0.1), ("pgd_linf", 0.2), ("pgd_linf", 0.3),
        ("fgsm", 0.1), ("fgsm", 0.2), ("fgsm", 0.3),
    ]
    assert [s.steps for s in specs] == [3, 3, 3, 1, 1, 1]  # fgsm is one step whatever --steps


def test_attack_grid_l2_attacks_use_l2_epsilons():
    specs = evaluation.attack_grid(["pgd_linf", "pgd_l2"], [0.1, 0.3], l2_epsilons=[1.5])
    assert [(s.name, s.norm, s.epsilon) for s in specs] == [
        ("pgd_linf", "inf", 0.1), ("pgd_linf", "inf", 0.3), ("pgd_l2", "2", 1.5)]
    assert specs[0].steps == attacks.make_attack("pgd_linf", epsilon=0.1).steps  # default steps
    # Without (or with empty) l2_epsilons, L2 attacks take the common radii.
    for l2 in (None, []):
        specs = evaluation.attack_grid(["pgd_l2"], [0.1, 0.3], l2_epsilons=l2)
        assert [s.epsilon for s in specs] == [0.1, 0.3]


def test_attack_grid_rejects_an_unknown_attack():
    with pytest.raises(ValueError, match="Unknown attack 'bogus'"):
        evaluation.attack_grid(["pgd_linf", "bogus"], [0.1])


def empty_zoo(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / zoo.MANIFEST_FILENAME).write_text(json.dumps(zoo.empty_manifest()))
    return path


def test_load_encoder_reads_a_keras_file(tmp_path, problem):
    encoder = make_dense_encoder()
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    loaded = evaluation.load_encoder(path, zoo_dir=empty_zoo(tmp_path / "zoo"))
    x = problem[1][0][:4]
    np.testing.assert_allclose(loaded(x), encoder(x), rtol=1e-6, atol=1e-6)


def test_load_encoder_names_a_missing_path(tmp_path):
    missing = str(tmp_path / "nope.keras")
    with pytest.raises(ValueError, match="No encoder file and no zoo entry named .*nope.keras"):
        evaluation.load_encoder(missing, zoo_dir=empty_zoo(tmp_path / "zoo"))


def test_load_encoder_names_a_missing_path_when_there_is_no_zoo(tmp_path):
    missing = str(tmp_path / "nope.keras")
    with pytest.raises(ValueError, match="nope.keras"):
        evaluation.load_encoder(missing, zoo_dir=tmp_path / "no_zoo_here")


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """A three-class 8x8x1 uint8 dataset in the npz layout of `tarrl_tf.data`."""
    (x_train, y_train), (x_test, y_test) = prototype_data(120, seed=3), prototype_data(60, seed=4)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    to_uint8 = lambda x: np.round(x * 255).astype("uint8")  # noqa: E731
    np.savez(path, x_train=to_uint8(x_train), y_train=y_train, x_test=to_uint8(x_test),
             y_test=y_test)
    return f"npz:{path}"


def test_evaluate_on_dataset_report(tiny_npz):
    specs = evaluation.attack_grid(["fgsm"], [0.1])
    report, classifier, _ = evaluation.evaluate_on_dataset(
        make_dense_encoder(), encoder_name="my_encoder", dataset=tiny_npz, attack_specs=specs,
        num_examples=25, train_examples=50, epochs=3, batch_size=32, regularizer_steps=2,
        sanity_checks=False,
    )
    assert report["encoder"] == "my_encoder"
    # Named by name and the file's sha256, never by its path.
    assert report["dataset"] == "tiny" and tiny_npz[len("npz:"):] not in json.dumps(report)
    assert report["dataset_sha256"] == hashlib.sha256(
        pathlib.Path(tiny_npz[len("npz:"):]).read_bytes()).hexdigest()
    assert report["task"] == "labels" and report["class_names"] == ["0", "1", "2"]
    assert report["num_examples"] == 25 and report["num_train_examples"] == 50
    assert report["attacks"][0]["num_examples"] == 25
    assert set(report["versions"]) == {"tensorflow", "keras"}
    assert classifier.output_shape == (None, NUM_CLASSES)
    assert json.loads(json.dumps(report)) == report


def test_evaluate_on_dataset_uses_the_task_labels():
    encoder = make_dense_encoder()
    report, classifier, _ = evaluation.evaluate_on_dataset(
        encoder, encoder_name="e", dataset="digits", task="parity",
        attack_specs=evaluation.attack_grid(["fgsm"], [0.1]), num_examples=20, train_examples=60,
        epochs=2, batch_size=32, regularizer_steps=1, sanity_checks=False,
    )
    assert report["num_classes"] == 2 and report["class_names"] == ["even", "odd"]
    assert classifier.output_shape == (None, 2)


def test_evaluate_on_dataset_names_both_shapes_on_a_mismatch(tiny_npz):
    encoder = make_dense_encoder(input_shape=(12, 12, 1))
    with pytest.raises(ValueError, match=r"\(12, 12, 1\).*\(8, 8, 1\)"):
        evaluation.evaluate_on_dataset(
            encoder, encoder_name="e", dataset=tiny_npz,
            attack_specs=evaluation.attack_grid(["fgsm"], [0.1]), num_examples=10,
        )


def test_evaluate_on_dataset_accepts_a_size_agnostic_encoder(tiny_npz):
    inputs = keras.Input((None, None, 1))
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    encoder = keras.Model(inputs, keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(hidden)))
    report, _, _ = evaluation.evaluate_on_dataset(
        encoder, encoder_name="e", dataset=tiny_npz,
        attack_specs=evaluation.attack_grid(["fgsm"], [0.1]), num_examples=10, train_examples=30,
        epochs=1, regularizer_steps=1, sanity_checks=False,
    )
    assert report["num_examples"] == 10


def test_evaluate_on_dataset_rejects_an_unknown_dataset_and_task(tmp_path, tiny_npz):
    specs = evaluation.attack_grid(["fgsm"], [0.1])
    with pytest.raises(ValueError, match="npz file not found"):
        evaluation.evaluate_on_dataset(make_dense_encoder(), encoder_name="e",
                                       dataset=f"npz:{tmp_path}/missing.npz", attack_specs=specs)
    with pytest.raises(ValueError, match="Unknown dataset 'tiny'"):  # no derived tasks for it
        evaluation.evaluate_on_dataset(make_dense_encoder(), encoder_name="e", dataset=tiny_npz,
                                       task="parity", attack_specs=specs)


# --- reports.write_report -----------------------------------------------------------------


def sample_report():
    """A small report shaped like `evaluate_on_dataset`'s, built without TensorFlow."""
    rows = [{**attacks.make_attack(name, epsilon=eps, steps=None if name == "fgsm" else 5).to_dict(),
             "robust_accuracy": acc, "adversarial_loss": 1.0 + eps, "num_examples": 40}
            for name, eps, acc in [("pgd_linf", 0.1, 0.5), ("pgd_linf", 0.3, 0.0),
                                   ("fgsm", 0.1, 0.6), ("fgsm", 0.3, 0.1)]]
    return {
        "encoder": "runs/x/encoder.keras", "dataset": "digits", "task": "labels", "head": "linear",
        "fine_tune": False, "num_classes": 10, "num_train_examples": 100, "num_examples": 40,
        "clean_accuracy": 0.9, "clean_loss": 0.4, "attacks": rows,
        "robustness": [{"norm": "inf", "epsilon": e, "estimator": "pgd", "steps": 5,
                        "divergence": "squared_l2", "R": e, "mean_shift": e, "num_examples": 40}
                       for e in (0.1, 0.3)],
        "bound": [{"attack": r["name"], "norm": "inf", "epsilon": r["epsilon"], "clean_loss": 0.4,
                   "lipschitz": 3.0, "representation_shift": r["epsilon"],
                   "bound": 0.4 + 3 * r["epsilon"], "adversarial_loss": r["adversarial_loss"]}
                  for r in rows],
        "bound_note": evaluation.BOUND_NOTE,
        "sanity_checks": [{"name": "large_epsilon_breaks_model", "passed": True, "detail": "ok"}],
    }


def test_write_report_writes_three_files_and_no_temporaries(tmp_path):
    report = sample_report()
    out = tmp_path / "out" / "nested"  # created on demand
    paths = reports.write_report(report, str(out))
    assert sorted(os.listdir(out)) == ["report.json", "report.md", "robust_accuracy.png"]
    assert set(paths) == {"report.json", "report.md", "robust_accuracy.png"}
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "robust_accuracy.png").read_bytes().startswith(PNG_MAGIC)
    markdown = (out / "report.md").read_text()
    table_rows = [line for line in markdown.splitlines()
                  if line.startswith(("| pgd_linf | inf |", "| fgsm | inf |"))]
    assert len(table_rows) == len(report["attacks"])
    for row in report["attacks"]:
        assert f"| {row['name']} | {row['norm']} | {row['epsilon']:.4g} | {row['steps']} |" in markdown
    assert evaluation.BOUND_NOTE in markdown and "PASS `large_epsilon_breaks_model`" in markdown
    # Writing again replaces the files in place.
    report["clean_accuracy"] = 0.5
    reports.write_report(report, str(out))
    assert json.loads((out / "report.json").read_text())["clean_accuracy"] == 0.5
    assert len(os.listdir(out)) == 3


def test_failed_report_writes_no_file(tmp_path, monkeypatch):
    def broken_plot(report):
        raise OSError("disk full")

    monkeypatch.setattr(reports, "_plot", broken_plot)
    with pytest.raises(OSError, match="disk full"):
        reports.write_report(sample_report(), str(tmp_path))
    assert os.listdir(tmp_path) == []  # Not a mixed set, and no temporaries.


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    files.write_atomic(path, files.dumps_json({"clean_accuracy": 0.9}))

    def interrupted(src, dst):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        files.write_atomic(path, files.dumps_json({"clean_accuracy": 0.1}))
    assert json.loads(path.read_text()) == {"clean_accuracy": 0.9}
    assert os.listdir(tmp_path) == ["report.json"]


def test_reports_refuse_nan():
    with pytest.raises(ValueError):
        files.dumps_json({"clean_loss": float("nan")})


def test_report_files_are_readable_as_with_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        reports.write_report(sample_report(), str(tmp_path))
    finally:
        os.umask(old)
    for name in ("report.json", "report.md", "robust_accuracy.png"):
        assert oct(os.stat(tmp_path / name).st_mode & 0o777) == oct(0o644), name


# --- suites: the per-image worst case ------------------------------------------------------


def _register_tiny_suite(name, square_subset):
    return attacks.register_suite(attacks.Suite(name, (
        attacks.SuiteAttack("apgd_ce", {"steps": 8}),
        attacks.SuiteAttack("apgd_t", {"steps": 8}),
        attacks.SuiteAttack("square", {"steps": 200}, subset=square_subset),
    ))).name


@pytest.fixture
def tiny_suite():
    """A suite with small budgets, registered for the test only."""
    yield _register_tiny_suite("tiny_test", None)
    attacks.SUITES.unregister("tiny_test")


@pytest.fixture
def tiny_subset_suite():
    """The same, with Square on the first 10 test examples only."""
    yield _register_tiny_suite("tiny_subset_test", 10)
    attacks.SUITES.unregister("tiny_subset_test")


def test_worst_case_is_per_image_over_the_examples_every_mask_covers():
    masks = [np.array([1, 1, 0, 1, 1], bool), np.array([1, 0, 1, 1, 1], bool),
             np.array([1, 1, 1, 0], bool)]
    np.testing.assert_array_equal(evaluation.worst_case.worst_case(masks), [1, 0, 0, 0])


def test_suite_rows_and_worst_case(problem, tiny_suite):
    train, test = problem
    specs = evaluation.attack_grid(["pgd_linf"], [0.05, 0.1])
    report, _, _ = evaluation.evaluate(
        make_dense_encoder(), train=train, test=test, num_classes=NUM_CLASSES, attack_specs=specs,
        epochs=15, batch_size=32, regularizer_steps=2, sanity_checks=False, suite=tiny_suite)
    assert report["suite"] == tiny_suite
    # The PGD-40 rows stay, the suite's rows follow, marked.
    assert [(r["name"], r.get("suite")) for r in report["attacks"][:2]] == [("pgd_linf", None)] * 2
    suite_rows = report["attacks"][2:]
    assert [(r["name"], r["epsilon"], r["suite"]) for r in suite_rows] == [
        (name, eps, tiny_suite) for eps in (0.05, 0.1) for name in ("apgd_ce", "apgd_t", "square")]
    assert [(w["norm"], w["epsilon"]) for w in report["worst_case"]] == [("inf", 0.05), ("inf", 0.1)]
    for w in report["worst_case"]:
        rows = [r for r in suite_rows if r["epsilon"] == w["epsilon"]]
        assert w["attacks"] == [r["name"] for r in rows] == ["apgd_ce", "apgd_t", "square"]
        assert w["num_examples"] == len(test[0]) and w["clean_accuracy"] == report["clean_accuracy"]
        assert "on_all_examples" not in w
        # Every row attacked the same images: the worst case is no higher than any of them.
        assert all(w["robust_accuracy"] <= r["robust_accuracy"] for r in rows)
        assert 0 <= w["robust_accuracy"] <= w["clean_accuracy"]
    assert report["worst_case"][0]["robust_accuracy"] > 0, "a radius the model partly survives"
    markdown = reports.to_markdown(report)
    assert "per-image worst case over the `tiny_test` suite" in markdown
    assert "| apgd_t (tiny_test) |" in markdown
    assert json.loads(json.dumps(report)) == report


def test_suite_worst_case_is_taken_on_the_examples_every_attack_saw(problem, tiny_subset_suite):
    train, test = problem
    report, _, _ = evaluation.evaluate(
        make_dense_encoder(), train=train, test=test, num_classes=NUM_CLASSES,
        attack_specs=evaluation.attack_grid(["pgd_linf"], [0.1]), epochs=15, batch_size=32,
        regularizer_steps=2, sanity_checks=False, suite=tiny_subset_suite)
    (worst,) = report["worst_case"]
    square = next(r for r in report["attacks"] if r["name"] == "square")
    assert square["num_examples"] == worst["num_examples"] == 10
    assert worst["clean_accuracy"] == square["clean_accuracy"]
    assert worst["robust_accuracy"] <= square["robust_accuracy"]
    # Beside the headline: the attacks that saw every image, on all of them.
    beside = worst["on_all_examples"]
    assert beside["attacks"] == ["apgd_ce", "apgd_t"] and beside["num_examples"] == len(test[0])
    rows = [r for r in report["attacks"] if r["name"] in beside["attacks"]]
    assert all(beside["robust_accuracy"] <= r["robust_accuracy"] for r in rows)
    assert "(not the headline)" in reports.to_markdown(report)


def test_suite_at_chosen_threat_models_on_the_first_examples(problem, tiny_suite):
    train, test = problem
    report, _, _ = evaluation.evaluate(
        make_dense_encoder(), train=train, test=test, num_classes=NUM_CLASSES,
        attack_specs=evaluation.attack_grid(["pgd_linf"], [0.05, 0.1]), epochs=2, batch_size=32,
        regularizer_steps=2, sanity_checks=False, suite=tiny_suite,
        suite_threat_models=[("linf", 0.1)], suite_examples=12)
    # PGD rows at both radii on every image; the suite at 0.1 only, on the first 12.
    assert [(r["name"], r["epsilon"], r["num_examples"]) for r in report["attacks"]] == [
        ("pgd_linf", 0.05, len(test[0])), ("pgd_linf", 0.1, len(test[0]))] + [
        (name, 0.1, 12) for name in ("apgd_ce", "apgd_t", "square")]
    (worst,) = report["worst_case"]
    assert (worst["norm"], worst["epsilon"], worst["num_examples"]) == ("inf", 0.1, 12)


def test_suite_threat_models_must_be_among_the_attacks(problem):
    train, test = problem
    kwargs = dict(train=train, test=test, num_classes=NUM_CLASSES, epochs=1, suite="quick",
                  attack_specs=evaluation.attack_grid(["pgd_linf"], [0.1]))
    with pytest.raises(ValueError, match=r"suite threat model \('inf', 0.2\) is not"):
        evaluation.evaluate(make_dense_encoder(), suite_threat_models=[("inf", 0.2)], **kwargs)
    with pytest.raises(ValueError, match="suite_threat_models is empty"):
        evaluation.evaluate(make_dense_encoder(), suite_threat_models=[], **kwargs)
    with pytest.raises(ValueError, match="suite_examples must be a positive integer"):
        evaluation.evaluate(make_dense_encoder(), suite_examples=0, **kwargs)


def test_suite_needs_a_registered_name_and_a_threat_model(problem):
    train, test = problem
    kwargs = dict(train=train, test=test, num_classes=NUM_CLASSES, epochs=1)
    with pytest.raises(ValueError, match="Unknown suite 'autoattack'"):
        evaluation.evaluate(make_dense_encoder(), attack_specs=[], suite="autoattack", **kwargs)
    with pytest.raises(ValueError, match="suite 'quick' needs a threat model"):
        evaluation.evaluate(make_dense_encoder(), suite="quick", **kwargs,
                            attack_specs=evaluation.attack_grid(["pgd_linf"], [0.0]))


def test_suite_checks_pass_on_an_honest_model(problem, tiny_suite):
    train, test = problem
    report, _, _ = evaluation.evaluate(
        make_dense_encoder(), train=train, test=test, num_classes=NUM_CLASSES,
        attack_specs=evaluation.attack_grid(["pgd_linf"], [0.3], steps=3), epochs=15,
        batch_size=32, regularizer_steps=2, spsa_examples=12, suite=tiny_suite)
    checks = {c["name"]: c for c in report["sanity_checks"]}
    assert {"gradient_free_attack_agrees_with_gradient_attacks",
            "more_iterations_do_not_raise_worst_case"} <= set(checks)
    assert all(c["passed"] is True for c in checks.values()), checks
    assert report["reliable"] is True
    assert "1/4 of the iterations" in checks["more_iterations_do_not_raise_worst_case"]["detail"]


def test_suite_checks_flag_gradient_masking(tiny_subset_suite):
    inputs = keras.Input(IMAGE_SHAPE)
    encoder = keras.Model(inputs, MaskedMean()(inputs))
    train, test = brightness_data(100, seed=0), brightness_data(20, seed=1)
    report, _, _ = evaluation.evaluate(
        encoder, train=train, test=test, num_classes=2, attack_specs=evaluation.attack_grid(
            ["pgd_linf"], [0.3], steps=3), epochs=30, batch_size=32, regularizer_steps=2,
        spsa_examples=20, suite=tiny_subset_suite)
    rows = {r["name"]: r for r in report["attacks"] if r.get("suite")}
    # The gradient attacks of the suite are blind too; Square is not.
    assert rows["apgd_ce"]["robust_accuracy"] == rows["apgd_t"]["robust_accuracy"] == 1.0
    assert rows["square"]["robust_accuracy"] < 0.5
    checks = {c["name"]: c["passed"] for c in report["sanity_checks"]}
    assert checks["gradient_free_attack_agrees_with_gradient_attacks"] is False
    assert report["reliable"] is False
    assert "**Unreliable**" in reports.to_markdown(report)


def _fake_spec(name, steps):
    return attacks.make_attack(name, epsilon=0.3, steps=steps)


def test_worst_case_rising_with_more_iterations_is_flagged():
    full = np.ones(10, bool)  # with all iterations, every image survives ...
    runs = {("inf", 0.3): [(_fake_spec("apgd_ce", 20), {"robust_accuracy": 1.0}, full)]}

    def run(spec, n):  # ... with a quarter of them, none does: the attack is not converging
        assert spec.steps == 5 and n == 10
        return {}, np.zeros(n, bool)

    (check,) = evaluation.sanity.suite_checks(run, runs)
    assert check["name"] == "more_iterations_do_not_raise_worst_case" and check["passed"] is False
