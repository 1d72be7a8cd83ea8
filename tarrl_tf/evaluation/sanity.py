"""Checks against false robustness: gradient masking and weak attacks flag a report."""

import numpy as np

from tarrl_tf import attacks


def sanity_checks(attack_row, y, specs, report, spsa_examples):
    """Checks against false robustness (gradient masking, a weak attack).

    Args:
        attack_row: `attack_row(spec, n)`, the report row of `spec` run on the
            first `n` test examples.
        y: the test labels.
        specs: the report's attacks.
        report: the report so far (its `attacks` rows).
        spsa_examples: test examples for the gradient-free check.

    Returns:
        One `{"name", "passed", "detail"}` item per check.
    """
    checks = []
    class_share = float(np.max(np.bincount(y)) / len(y))
    # At L-inf radius 0.5 every image can become the same gray image, so no
    # classifier can beat the largest class's share.
    large = attacks.make_attack("pgd_linf", epsilon=0.5, steps=20)
    large_accuracy = attack_row(large, len(y))["robust_accuracy"]
    checks.append({
        "name": "large_epsilon_breaks_model", "passed": large_accuracy <= class_share + 0.05,
        "detail": f"pgd_linf eps=0.5: robust accuracy {large_accuracy:.4f}; "
                  f"largest class share {class_share:.4f}",
    })
    pgd = [s for s in specs if s.name.startswith("pgd") and s.epsilon > 0]
    if pgd:
        # Radii of different norms do not compare: the widest L-inf ball when there is one.
        spec = max(pgd, key=lambda s: (s.norm == "inf", s.epsilon))
        fewer = attacks.make_attack(spec.name, epsilon=spec.epsilon, steps=max(1, spec.steps // 4))
        few_accuracy = attack_row(fewer, len(y))["robust_accuracy"]
        accuracy = next(r["robust_accuracy"] for r in report["attacks"]
                        if r["name"] == spec.name and r["epsilon"] == spec.epsilon)
        checks.append({
            "name": "more_steps_do_not_raise_accuracy",
            "passed": accuracy <= few_accuracy + 1.0 / len(y),
            "detail": f"{spec.name} eps={spec.epsilon}: {fewer.steps} steps {few_accuracy:.4f}, "
                      f"{spec.steps} steps {accuracy:.4f}",
        })
        few = min(spsa_examples, len(y))
        linf = [s for s in pgd if s.norm == "inf"]
        if linf:
            spec = max(linf, key=lambda s: s.epsilon)
            spsa = attacks.make_attack("spsa", epsilon=spec.epsilon)
            spsa_accuracy = attack_row(spsa, few)
            pgd_accuracy = attack_row(spec, few)
            checks.append({
                "name": "gradient_free_attack_not_much_stronger",
                "passed": spsa_accuracy["robust_accuracy"] >= pgd_accuracy["robust_accuracy"] - 0.05,
                "detail": f"eps={spec.epsilon} on {few} examples: spsa "
                          f"{spsa_accuracy['robust_accuracy']:.4f}, {spec.name} "
                          f"{pgd_accuracy['robust_accuracy']:.4f}",
            })
    return checks
