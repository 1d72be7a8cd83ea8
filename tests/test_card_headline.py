"""Tests of the model card's optional `headline` (tarrl_tf/zoo/headline.py): its shape, its
agreement with the card's threat model, and how it is taken from an evaluation report."""

import json

import pytest

from tarrl_tf import export, zoo
from tarrl_tf.zoo.headline import HEADLINE_FIELDS, card_headline


def _facts(**overrides):
    facts = dict(
        dataset="mnist", architecture="small_cnn", method="tarrl", regularizer={},
        threat_model={"norm": "linf", "epsilon": 0.3},
        training={"epochs": 2, "batch_size": 16, "wall_clock_seconds": 12.5},
        metrics=[{"head": "linear", "clean_accuracy": 0.9, "robust_accuracy": 0.5,
                  "num_examples": 64,
                  "attack": {"name": "pgd_linf", "norm": "inf", "epsilon": 0.3, "steps": 40}}],
    )
    facts.update(overrides)
    return facts


def _headline(**overrides):
    headline = {"task": "labels", "suite": "standard", "norm": "linf", "epsilon": 0.3,
                "clean_accuracy": 0.9, "robust_accuracy": 0.4, "num_examples": 64,
                "attacks": ["apgd_ce", "apgd_t", "square"]}
    headline.update(overrides)
    return headline


def _report(**overrides):
    """The shape `tarrl_tf.evaluation.evaluate_on_dataset` returns with a suite (trimmed)."""
    report = {"task": "labels", "head": "linear", "suite": "standard", "worst_case": [
        {"suite": "standard", "norm": "inf", "epsilon": 0.1, "attacks": ["apgd_ce"],
         "robust_accuracy": 0.8, "clean_accuracy": 0.9, "num_examples": 64},
        {"suite": "standard", "norm": "inf", "epsilon": 0.3, "attacks": ["apgd_ce", "square"],
         "robust_accuracy": 0.4, "clean_accuracy": 0.9, "num_examples": 64},
    ]}
    report.update(overrides)
    return report


def test_a_card_with_a_headline_is_written_and_read_back(tmp_path):
    (tmp_path / "encoder.keras").write_bytes(b"weights")
    card = export.write_model_card(tmp_path, name="toy_cnn_tarrl", headline=_headline(), **_facts())
    assert json.loads((tmp_path / zoo.MODEL_CARD_FILENAME).read_text())["headline"] == _headline()
    assert tuple(card["headline"]) == HEADLINE_FIELDS


def test_a_card_without_a_headline_is_refused_and_nothing_is_written(tmp_path):
    (tmp_path / "encoder.keras").write_bytes(b"weights")
    with pytest.raises(zoo.InvalidModelCardError, match="missing field 'headline' .*suite"):
        export.write_model_card(tmp_path, name="toy_cnn_tarrl", **_facts())
    assert not (tmp_path / zoo.MODEL_CARD_FILENAME).exists()


@pytest.mark.parametrize("change, message", [
    ({"task": "parity"}, "headline.task must be 'labels'"),
    ({"suite": "autoattack"}, "headline.suite must be one of"),
    ({"norm": "l3"}, "headline.norm must be 'linf' or 'l2'"),
    ({"epsilon": "0.3"}, "headline.epsilon must be a number > 0"),
    ({"robust_accuracy": 40.0}, r"headline.robust_accuracy must be a fraction"),
    ({"robust_accuracy": 0.95}, "must not exceed headline.clean_accuracy"),
    ({"num_examples": 0}, "headline.num_examples must be a positive integer"),
    ({"attacks": []}, "headline.attacks must be a non-empty list"),
    ({"attacks": ["autoattack"]}, "headline.attacks must be a non-empty list"),
    ({"epsilon": 0.2}, r"at the card's threat model \('linf', 0.3\)"),
    ({"note": "x"}, "unknown fields"),
])
def test_bad_headlines_are_rejected(change, message, tmp_path):
    (tmp_path / "encoder.keras").write_bytes(b"weights")
    with pytest.raises(zoo.InvalidModelCardError, match=message):
        export.write_model_card(tmp_path, name="toy_cnn_tarrl", headline=_headline(**change),
                                **_facts())


@pytest.mark.parametrize("field", HEADLINE_FIELDS)
def test_every_headline_field_is_required(field, tmp_path):
    headline = _headline()
    del headline[field]
    with pytest.raises(zoo.InvalidModelCardError, match=f"headline.{field} is missing"):
        export.write_model_card(tmp_path, name="toy_cnn_tarrl", headline=headline, **_facts())


def test_card_headline_takes_the_worst_case_at_the_threat_model():
    headline = card_headline(_report(), {"norm": "linf", "epsilon": 0.3})
    assert headline == {"task": "labels", "suite": "standard", "norm": "linf", "epsilon": 0.3,
                        "clean_accuracy": 0.9, "robust_accuracy": 0.4, "num_examples": 64,
                        "attacks": ["apgd_ce", "square"]}


def test_card_headline_without_a_suite_or_off_the_threat_model():
    assert card_headline({"task": "labels", "attacks": []}, {"norm": "linf", "epsilon": 0.3}) is None
    assert card_headline(_report(task="parity"), {"norm": "linf", "epsilon": 0.3}) is None
    with pytest.raises(ValueError, match="not at the card's threat model"):
        card_headline(_report(), {"norm": "linf", "epsilon": 0.2})
