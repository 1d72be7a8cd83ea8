"""Checks each zoo card against its experiments row, and re-measures its clean accuracy on real
data (RobustBench's `test_clean_acc.py` idea).

The datasets are the offline copies in ../shared/datasets (CI has them
there); `TARRL_DATASETS_DIR` points elsewhere. Where a card's dataset is
absent the test says so plainly and skips that entry.
"""

import functools
import json
import os
import pathlib

import numpy as np
import pytest

from tarrl_tf import attacks, checks, data, downstream, tasks, zoo

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "benchmarks" / "experiments.json"
DATASETS = pathlib.Path(os.environ.get("TARRL_DATASETS_DIR", REPO.parent / "shared" / "datasets"))
SUBSET = 300


def _entries():
    return zoo.list(zoo_dir=zoo.default_zoo_dir())


def test_the_zoo_is_not_empty():
    assert _entries(), "zoo/manifest.json lists no encoder"


@functools.cache
def _rows():
    return {row["name"]: row for row in json.loads(EXPERIMENTS.read_text())["rows"]}


def _settings(facts, training):
    """What training depended on, from a card (`facts`, `facts["training"]`) or a row (both the row)."""
    threat = facts["threat_model"]
    return {"method": facts["method"], "dataset": facts["dataset"],
            "architecture": facts["architecture"], "regularizer": facts.get("regularizer", {}),
            "threat_model": (checks.canonical_norm(threat["norm"]), threat["epsilon"]),
            **{key: training.get(key)
               for key in ("epochs", "batch_size", "learning_rate", "train_examples")}}


@pytest.mark.parametrize("name", _entries())
def test_card_was_trained_with_its_rows_settings(name):
    # A row edited after its entry was published (e.g. more PGD steps) leaves a card that
    # RESULTS.md would compare under settings it was not trained with.
    row = _rows().get(name)
    if row is None:
        pytest.fail(f"{name} is in the zoo but has no row in {EXPERIMENTS.name}")
    card = zoo.info(name)
    trained, wanted = _settings(card, card["training"]), _settings(row, row)
    stale = {key: (trained[key], wanted[key]) for key in trained if trained[key] != wanted[key]}
    assert not stale, f"{name}: card vs row (card, row): {stale}; retrain with --replace"


@pytest.mark.large
@pytest.mark.parametrize("name", _entries())
def test_card_clean_accuracy_is_reproduced(name):
    card = zoo.info(name)
    path = DATASETS / card["dataset"] / f"{card['dataset']}.npz"
    if not path.exists():
        pytest.skip(f"{path} is absent: cannot re-measure {name}'s card without its dataset")
    metric = next(m for m in card["metrics"] if m.get("task") == "labels" and m["head"] == "linear")
    encoder, head = zoo.load(name), zoo.load_head(name)
    task = tasks.get_task(card["dataset"], "labels")
    # The card measured the first `num_examples` test images; take the first of those.
    count = min(SUBSET, metric["num_examples"])
    x, y = data.load_arrays(f"npz:{path}", "test", max_examples=count)
    classifier = downstream.build_classifier(encoder, head)
    accuracy = attacks.clean_accuracy(classifier, x, task.map_labels(y))
    # Same model, same first images: only the subset differs from the card's count.
    tolerance = 0.005 if count == metric["num_examples"] else 3 * np.sqrt(0.25 / count)
    assert abs(accuracy - metric["clean_accuracy"]) <= tolerance, (accuracy, metric["clean_accuracy"])


@pytest.mark.parametrize("name", _entries())
def test_a_cards_headline_names_its_rows_suite_and_settings(name):
    card, row = zoo.info(name), _rows()[name]
    headline, evaluation = card["headline"], row["evaluation"]
    assert headline["suite"] == "standard", (name, "published numbers come from the standard suite")
    assert headline["suite"] == evaluation.get("suite"), (name, headline["suite"])
    norm = checks.canonical_norm(card["threat_model"]["norm"])
    suite = attacks.SUITES.get(headline["suite"])
    assert headline["attacks"] == [spec.name for spec, _ in suite.specs(norm, 0.1)]
    wanted = evaluation.get("suite_examples") or evaluation["num_examples"]
    assert headline["num_examples"] == wanted, (name, headline["num_examples"], wanted)
    assert headline["epsilon"] == card["threat_model"]["epsilon"]
