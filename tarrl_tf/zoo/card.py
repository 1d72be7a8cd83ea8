"""The model card: its schema (`validate_model_card`) and its writer (`write_model_card`).

Only the facts passed in are recorded: nothing is measured or invented here.
"""

import builtins
import copy
import math
import pathlib
import platform
import re

import keras
import numpy as np
import tensorflow as tf

from tarrl_tf import checks
from tarrl_tf._version import __version__
from tarrl_tf.files import dumps_json, write_atomic
from tarrl_tf.training.registry import METHODS as TRAINING_METHODS
from tarrl_tf.zoo.headline import headline_problems
from tarrl_tf.zoo.manifest import (MODEL_CARD_FILENAME, NAME_RE, InvalidModelCardError,
                                   describe_files, files_problems, is_int)

MODEL_CARD_SCHEMA_VERSION = 1
# The registered training methods: a card names how its encoder was trained.
METHODS = TRAINING_METHODS.names()
NORMS = ("linf", "l2")
REQUIRED_CARD_FIELDS = (
    "schema_version",
    "name",
    "dataset",
    "architecture",
    "method",
    "regularizer",
    "threat_model",
    "training",
    "metrics",
    "headline",
    "files",
    "software",
)
# Why a missing field cannot be left out, where the name alone does not say.
_WHY = {"headline": " (the suite's per-image worst case at the card's threat model: evaluate "
                    "with a suite, e.g. an experiments row's \"suite\": \"standard\")"}
REQUIRED_TRAINING_FIELDS = ("epochs", "batch_size", "wall_clock_seconds")
REQUIRED_METRIC_FIELDS = ("head", "clean_accuracy", "robust_accuracy", "attack", "num_examples")

# Strings that hold a number ("0.3", "8/255", "1e-3"): numbers must be stored as numbers.
_NUMERIC_STRING_RE = re.compile(
    r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(\s*/\s*(\d+\.?\d*|\.\d+))?\s*%?\s*$"
)


def _is_number(x):
    return (
        isinstance(x, (int, float, np.integer, np.floating))
        and not isinstance(x, bool)
        and math.isfinite(x)
    )


def _numeric_strings(obj, where):
    """Paths of string values that hold numbers (e.g. `"8/255"`), anywhere in `obj`."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _numeric_strings(value, f"{where}.{key}")
    elif isinstance(obj, (builtins.list, tuple)):
        for i, value in enumerate(obj):
            found += _numeric_strings(value, f"{where}[{i}]")
    elif isinstance(obj, str) and _NUMERIC_STRING_RE.match(obj):
        found.append(f"{where}={obj!r}")
    elif isinstance(obj, float) and not math.isfinite(obj):
        found.append(f"{where}={obj!r} (not finite)")
    return found


def _norm_problems(norm, where):
    if norm not in NORMS:
        return [f"{where} must be one of {NORMS}, got {norm!r}"]
    return []


def _epsilon_problems(eps, where):
    if not _is_number(eps) or eps < 0:
        return [f"{where} must be a non-negative number (e.g. 0.03137 for 8/255), got {eps!r}"]
    return []


def _accuracy_problems(acc, where):
    if not _is_number(acc) or not 0.0 <= acc <= 1.0:
        return [f"{where} must be a number in [0, 1] (a fraction, not a percentage), got {acc!r}"]
    return []


def validate_model_card(card):
    """Checks a model card; raises `InvalidModelCardError` (a ValueError) listing every problem.

    Required: the fields in `REQUIRED_CARD_FIELDS`; `method` in `METHODS`;
    `threat_model` with `norm` in `NORMS` and a numeric `epsilon`; `training`
    with integer `epochs` and `batch_size` and numeric `wall_clock_seconds`; a
    non-empty `metrics` list whose items name a `head`, give `clean_accuracy`
    and `robust_accuracy` as fractions, `num_examples`, and the `attack`
    (`name`, `norm`, `epsilon`, plus its other settings); `files` with the
    sha256 and size of every file; `software` with the TensorFlow and Keras
    versions. No value anywhere may be a number written as a string, nor hold
    an absolute local path. The `headline` (a suite's per-image worst case)
    must follow `tarrl_tf.zoo.headline` at the card's threat model.

    Returns:
        The card, unchanged.
    """
    if not isinstance(card, dict):
        raise InvalidModelCardError(f"A model card must be a dict, got {type(card).__name__}")
    problems = [f"missing field {f!r}" + (_WHY.get(f, "")) for f in REQUIRED_CARD_FIELDS
                if f not in card]
    get = card.get
    if "schema_version" in card and get("schema_version") != MODEL_CARD_SCHEMA_VERSION:
        problems.append(f"schema_version must be {MODEL_CARD_SCHEMA_VERSION}")
    if "name" in card and (not isinstance(get("name"), str) or not NAME_RE.match(get("name"))):
        problems.append(f"name must be a systematic zoo name, got {get('name')!r}")
    for field in ("dataset", "architecture"):
        if field in card and (not isinstance(get(field), str) or not get(field)):
            problems.append(f"{field} must be a non-empty string, got {get(field)!r}")
    if "method" in card and get("method") not in TRAINING_METHODS:
        problems.append(f"method must be one of {TRAINING_METHODS.names()}, got {get('method')!r}")
    if "regularizer" in card and not isinstance(get("regularizer"), dict):
        problems.append("regularizer must be an object of settings ({} when there is none)")

    threat = get("threat_model")
    if "threat_model" in card:
        if not isinstance(threat, dict):
            problems.append("threat_model must be an object with 'norm' and 'epsilon'")
        else:
            problems += _norm_problems(threat.get("norm"), "threat_model.norm")
            problems += _epsilon_problems(threat.get("epsilon"), "threat_model.epsilon")

    training = get("training")
    if "training" in card:
        if not isinstance(training, dict):
            problems.append("training must be an object")
        else:
            problems += [
                f"training.{f} is missing" for f in REQUIRED_TRAINING_FIELDS if f not in training
            ]
            for f in ("epochs", "batch_size"):
                if f in training and (not is_int(training[f]) or training[f] < 1):
                    problems.append(f"training.{f} must be a positive integer, got {training[f]!r}")
            wall = training.get("wall_clock_seconds")
            if "wall_clock_seconds" in training and (not _is_number(wall) or wall < 0):
                problems.append(f"training.wall_clock_seconds must be a number >= 0, got {wall!r}")

    metrics = get("metrics")
    if "metrics" in card:
        if not isinstance(metrics, builtins.list) or not metrics:
            problems.append("metrics must be a non-empty list (one item per head and attack)")
        else:
            for i, m in enumerate(metrics):
                problems += _metric_problems(m, f"metrics[{i}]")

    if "headline" in card:
        problems += headline_problems(get("headline"), threat)

    if "files" in card:
        problems += files_problems(get("files"), "files")
        if isinstance(get("files"), dict) and MODEL_CARD_FILENAME in get("files"):
            problems.append("files must not list the model card itself")

    software = get("software")
    if "software" in card:
        if not isinstance(software, dict) or not all(
            isinstance(software.get(k), str) for k in ("tensorflow", "keras")
        ):
            problems.append("software must give the 'tensorflow' and 'keras' versions as strings")

    problems += [
        f"{p}: store numbers as numbers, not strings"
        for p in _numeric_strings(
            {k: v for k, v in card.items() if k not in ("files", "software")}, "card"
        )
    ]
    problems += [
        f"{p}: a published card names things (a dataset by name and sha256), not local paths"
        for p in checks.local_paths(card, "card")
    ]
    if problems:
        raise InvalidModelCardError(
            f"Invalid model card {get('name')!r}: " + "; ".join(problems)
        )
    return card


def _metric_problems(m, where):
    if not isinstance(m, dict):
        return [f"{where} must be an object"]
    problems = [f"{where}.{f} is missing" for f in REQUIRED_METRIC_FIELDS if f not in m]
    if "head" in m and (not isinstance(m["head"], str) or not NAME_RE.match(m["head"])):
        problems.append(f"{where}.head must name the downstream head, e.g. 'linear_probe'")
    for f in ("clean_accuracy", "robust_accuracy"):
        if f in m:
            problems += _accuracy_problems(m[f], f"{where}.{f}")
    if "num_examples" in m and (not is_int(m["num_examples"]) or m["num_examples"] < 1):
        problems.append(f"{where}.num_examples must be a positive integer")
    attack = m.get("attack")
    if "attack" in m:
        if not isinstance(attack, dict) or not isinstance(attack.get("name"), str):
            problems.append(f"{where}.attack must be an object with a 'name' and its settings")
        else:
            problems += _norm_problems(attack.get("norm"), f"{where}.attack.norm")
            problems += _epsilon_problems(attack.get("epsilon"), f"{where}.attack.epsilon")
    return problems




def write_model_card(
    entry_dir,
    *,
    name,
    dataset,
    architecture,
    method,
    regularizer,
    threat_model,
    training,
    metrics,
    serving=None,
    notes=None,
    headline=None,
):
    """Writes `entry_dir/model_card.json` and returns the card.

    Only the facts passed in are recorded (nothing is measured or invented
    here); the writer adds the sha256 and size of every file already in
    `entry_dir` and the TensorFlow / Keras / Python versions, canonicalizes
    norms (`np.inf`, `"inf"` -> `"linf"`; `2` -> `"l2"`) and validates the card.

    Args:
        entry_dir: the entry's folder, with its other files already written.
        name: zoo name, e.g. `"mnist_cnn_tarrl_linf03"`.
        dataset: e.g. `"mnist"`.
        architecture: e.g. `"small_cnn"`.
        method: a registered training method (`tarrl_tf.training.METHODS`).
        regularizer: dict of the regularizer's settings (`{}` for none).
        threat_model: `{"norm": ..., "epsilon": <number>}` plus optional settings.
        training: `{"epochs": int, "batch_size": int, "wall_clock_seconds": number}`
            plus optional facts (hardware, optimizer, ...).
        metrics: list of `{"head", "clean_accuracy", "robust_accuracy",
            "num_examples", "attack": {"name", "norm", "epsilon", ...}}`,
            accuracies as fractions in [0, 1].
        serving: optional description of the exported signatures.
        notes: optional free text.
        headline: the suite's worst case (`tarrl_tf.zoo.headline.card_headline`);
            required.

    Raises:
        ValueError: the card is invalid (`tarrl_tf.zoo.InvalidModelCardError`).
    """
    entry_dir = pathlib.Path(entry_dir)
    card = make_card(
        name=name,
        dataset=dataset,
        architecture=architecture,
        method=method,
        regularizer=regularizer,
        threat_model=threat_model,
        training=training,
        metrics=metrics,
        serving=serving,
        notes=notes,
        headline=headline,
        files=describe_files(entry_dir, exclude=(MODEL_CARD_FILENAME,)),
    )
    validate_model_card(card)
    write_atomic(entry_dir / MODEL_CARD_FILENAME, dumps_json(card))
    return card


def card_metrics(report):
    """Model card `metrics` items from a `tarrl_tf.evaluation.evaluate` report.

    One item per attack row: the head, that row's clean and robust accuracy
    and number of examples, and the attack's exact settings. A row attacked on
    a subset (see `evaluate(subset_examples=...)`) carries the clean accuracy
    and loss of its own examples; rows without them take the report's. Values
    are copied, never recomputed.
    """
    measured = ("robust_accuracy", "adversarial_loss", "num_examples", "clean_accuracy",
                "clean_loss")
    items = []
    for row in report["attacks"]:
        item = {
            "head": report["head"],
            "clean_accuracy": row.get("clean_accuracy", report["clean_accuracy"]),
            "robust_accuracy": row["robust_accuracy"],
            "num_examples": row["num_examples"],
            "attack": {k: v for k, v in row.items() if k not in measured},
        }
        # `dataset` is a name (`tarrl_tf.data.describe`), never a path of the machine.
        for key in ("fine_tune", "dataset", "dataset_sha256", "task"):
            if key in report:
                item[key] = report[key]
        for key in ("clean_loss", "adversarial_loss"):
            if key in row or key in report:
                item[key] = row.get(key, report.get(key))
        items.append(plain(item))
    return items


def make_card(*, files, serving, notes, threat_model, metrics, headline=None, **facts):
    threat_model = _canonical_norm_in(plain(threat_model))
    metrics = plain(metrics)
    if isinstance(metrics, list):
        metrics = [
            {**m, "attack": _canonical_norm_in(m["attack"])}
            if isinstance(m, dict) and isinstance(m.get("attack"), dict)
            else m
            for m in metrics
        ]
    card = {"schema_version": MODEL_CARD_SCHEMA_VERSION}
    card.update({k: plain(facts[k]) for k in ("name", "dataset", "architecture", "method")})
    card["regularizer"] = plain(facts["regularizer"])
    card["threat_model"] = threat_model
    if headline is not None:
        card["headline"] = _canonical_norm_in(plain(headline))
    card["training"] = plain(facts["training"])
    card["metrics"] = metrics
    if serving is not None:
        card["serving"] = plain(serving)
    if notes is not None:
        card["notes"] = str(notes)
    card["files"] = files
    card["software"] = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tarrl_tf": __version__,
        "python": platform.python_version(),
    }
    return card


def _canonical_norm_in(d):
    """Rewrites `d["norm"]` as `"linf"` / `"l2"`; leaves anything unparsable to the validator."""
    if not isinstance(d, dict) or "norm" not in d:
        return d
    try:
        norm = checks.canonical_norm(d["norm"])
    except ValueError:
        return d
    return {**d, "norm": "linf" if norm == "inf" else "l2"}


def plain(obj):
    """A deep copy with NumPy scalars and tuples turned into JSON types (values unchanged)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return copy.deepcopy(obj)
