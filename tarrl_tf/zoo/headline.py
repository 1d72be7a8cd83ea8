"""The model card's `headline`: one robust accuracy, the per-image worst case over a suite.

A public contract (`model_card.json`, top level):

```json
"headline": {"task": "labels", "suite": "standard", "norm": "linf", "epsilon": 0.3,
             "clean_accuracy": 0.978, "robust_accuracy": 0.71, "num_examples": 500,
             "attacks": ["apgd_ce", "apgd_t", "square"]}
```

`robust_accuracy` is the share of the first `num_examples` test images that
the card's head classifies correctly both clean and under every attack of the
suite, at the card's threat model, on the `labels` task. Every card has one
(`zoo.validate_model_card` requires it).
"""

import math

from tarrl_tf import checks
from tarrl_tf.attacks import ATTACKS, SUITES
from tarrl_tf.zoo.manifest import is_int

HEADLINE_FIELDS = ("task", "suite", "norm", "epsilon", "clean_accuracy", "robust_accuracy",
                   "num_examples", "attacks")
HEADLINE_TASK = "labels"


def headline_problems(headline, threat_model):
    """Every problem of a card's `headline` (a list of strings; empty when it is valid)."""
    if not isinstance(headline, dict):
        return [f"headline must be an object with {list(HEADLINE_FIELDS)}"]
    problems = [f"headline.{f} is missing" for f in HEADLINE_FIELDS if f not in headline]
    unknown = sorted(set(headline) - set(HEADLINE_FIELDS))
    if unknown:
        problems.append(f"headline has unknown fields {unknown}; expected {list(HEADLINE_FIELDS)}")
    get = headline.get
    if "task" in headline and get("task") != HEADLINE_TASK:
        problems.append(f"headline.task must be {HEADLINE_TASK!r}, got {get('task')!r}")
    if "suite" in headline and get("suite") not in SUITES:
        problems.append(f"headline.suite must be one of {list(SUITES.names())}, got {get('suite')!r}")
    if "norm" in headline and get("norm") not in ("linf", "l2"):
        problems.append(f"headline.norm must be 'linf' or 'l2', got {get('norm')!r}")
    if "epsilon" in headline and (not _is_number(get("epsilon")) or get("epsilon") <= 0):
        problems.append(f"headline.epsilon must be a number > 0, got {get('epsilon')!r}")
    for field in ("clean_accuracy", "robust_accuracy"):
        if field in headline and (not _is_number(get(field)) or not 0 <= get(field) <= 1):
            problems.append(f"headline.{field} must be a fraction in [0, 1], got {get(field)!r}")
    if (_is_number(get("clean_accuracy")) and _is_number(get("robust_accuracy"))
            and get("robust_accuracy") > get("clean_accuracy")):
        problems.append("headline.robust_accuracy must not exceed headline.clean_accuracy")
    if "num_examples" in headline and (not is_int(get("num_examples")) or get("num_examples") < 1):
        problems.append(f"headline.num_examples must be a positive integer, got "
                        f"{get('num_examples')!r}")
    attacks = get("attacks")
    if "attacks" in headline and (not isinstance(attacks, list) or not attacks
                                  or any(a not in ATTACKS for a in attacks)):
        problems.append(f"headline.attacks must be a non-empty list of attack names of "
                        f"{list(ATTACKS.names())}, got {attacks!r}")
    if isinstance(threat_model, dict) and not problems:
        at = (threat_model.get("norm"), threat_model.get("epsilon"))
        if (get("norm"), get("epsilon")) != at:
            problems.append(f"headline must be measured at the card's threat model {at}, "
                            f"got {(get('norm'), get('epsilon'))}")
    return problems


def card_headline(report, threat_model):
    """The headline of an evaluation report with a suite, at `threat_model`; None without one.

    Args:
        report: a `tarrl_tf.evaluation.evaluate(_on_dataset)` report of the
            `labels` task.
        threat_model: the card's `{"norm", "epsilon"}`.

    Raises:
        ValueError: the report has a suite but no worst case at the threat model.
    """
    if not report.get("worst_case") or report.get("task", HEADLINE_TASK) != HEADLINE_TASK:
        return None
    norm = checks.canonical_norm(threat_model["norm"])
    epsilon = float(threat_model["epsilon"])
    row = next((w for w in report["worst_case"]
                if w["norm"] == norm and math.isclose(w["epsilon"], epsilon)), None)
    if row is None:
        raise ValueError(
            f"The report's {report['suite']!r} suite ran at "
            f"{[(w['norm'], w['epsilon']) for w in report['worst_case']]}, not at the card's "
            f"threat model ({norm}, {epsilon}): add that radius to the evaluation")
    return {"task": HEADLINE_TASK, "suite": row["suite"], "norm": "linf" if norm == "inf" else "l2",
            "epsilon": epsilon, "clean_accuracy": row["clean_accuracy"],
            "robust_accuracy": row["robust_accuracy"], "num_examples": row["num_examples"],
            "attacks": list(row["attacks"])}


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
