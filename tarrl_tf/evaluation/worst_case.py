"""A suite's headline: the per-image worst case over its attacks at each threat model.

An image counts as robust at a threat model only if it is classified
correctly clean and under every attack of the suite (as AutoAttack and
RobustBench count). Each attack keeps its own report row; the worst case is
taken over the images that every attack of the suite attacked (the first
`num_examples` of the smallest subset); where a subset attack leaves images
out, `on_all_examples` gives the worst case of the other attacks on all of
them, beside the headline.
"""

import numpy as np

from tarrl_tf import attacks


def run_suite(run, suite, threat_models, num_examples):
    """Runs `suite` at every threat model.

    Args:
        run: `run(spec, n) -> (row, robust)`, the report row of `spec` on the
            first `n` test examples and, per example, whether it is classified
            correctly both clean and under the attack.
        suite: a registered suite name (`tarrl_tf.attacks.SUITES`).
        threat_models: `[(norm, epsilon)]`, epsilon > 0.
        num_examples: test examples.

    Returns:
        `(rows, worst_case, runs)`: the attack rows (each marked with
        `"suite"`), one worst-case row per threat model, and per threat model
        the list of `(spec, row, robust)` behind it (for the sanity checks).
    """
    suite = attacks.SUITES.get(suite)
    rows, worst, runs = [], [], {}
    for norm, epsilon in threat_models:
        members = []
        for spec, subset in suite.specs(norm, epsilon):
            n = num_examples if subset is None else min(subset, num_examples)
            row, robust = run(spec, n)
            row["suite"] = suite.name
            rows.append(row)
            members.append((spec, row, robust))
        runs[(norm, epsilon)] = members
        worst.append(worst_case_row(suite.name, norm, epsilon, members))
    return rows, worst, runs


def worst_case(masks):
    """Per image: robust under every mask, on the images all of them cover."""
    n = min(len(m) for m in masks)
    return np.logical_and.reduce([np.asarray(m[:n], bool) for m in masks])


def worst_case_row(suite, norm, epsilon, members):
    robust = worst_case([mask for _, _, mask in members])
    n = len(robust)
    row = {
        "suite": suite, "norm": norm, "epsilon": epsilon,
        "attacks": [spec.name for spec, _, _ in members],
        "robust_accuracy": float(np.mean(robust)),
        # Every member row starts from the same clean pass: the first n images' share.
        "clean_accuracy": _clean_accuracy_of_first(members, n),
        "num_examples": n,
    }
    most = max(len(mask) for _, _, mask in members)
    if most > n:
        # Beside it, on every image: the attacks that saw them all (not the headline).
        full = [(spec, r, mask) for spec, r, mask in members if len(mask) == most]
        row["on_all_examples"] = {
            "attacks": [spec.name for spec, _, _ in full],
            "robust_accuracy": float(np.mean(worst_case([mask for _, _, mask in full]))),
            "num_examples": most,
        }
    return row


def _clean_accuracy_of_first(members, n):
    # The row attacked on exactly n images carries their clean accuracy.
    row = next(row for _, row, _ in members if row["num_examples"] == n)
    return row["clean_accuracy"]
