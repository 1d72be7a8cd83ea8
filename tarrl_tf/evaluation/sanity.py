"""Checks against false robustness: gradient masking and weak attacks flag a report."""

import numpy as np

from tarrl_tf import attacks

# Attacks that query only the model's outputs.
GRADIENT_FREE_ATTACKS = ("square", "spsa")


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
        fewer = attacks.make_attack(spec.name, epsilon=spec.epsilon, steps=max(1, spec.steps // 4),
                                    precision=spec.precision)
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


# Square searches without gradients: far stronger than the gradient attacks on
# the same images means their gradients mislead them (masking). Far weaker
# means it cannot serve as that check: a weak budget, or a model whose logits
# barely move under small squares; the worst case then rests on gradients alone.
SQUARE_BELOW_TOLERANCE = 0.05
SQUARE_ABOVE_TOLERANCE = 0.25
# The budget of the re-run in `more_iterations_do_not_raise_worst_case`.
FEWER_ITERATIONS_DIVISOR = 4


def suite_checks(run, suite_runs):
    """Checks of a suite's worst case (see `worst_case.run_suite`).

    Args:
        run: `run(spec, n) -> (row, robust)` on the first `n` test examples.
        suite_runs: per threat model `(norm, epsilon)`, the suite's
            `(spec, row, robust)` there.

    Returns:
        Up to two `{"name", "passed", "detail"}` items:
        `gradient_free_attack_agrees_with_gradient_attacks` (at every threat
        model with a gradient-free attack: its accuracy within
        -SQUARE_BELOW_TOLERANCE / +SQUARE_ABOVE_TOLERANCE of the gradient
        attacks' worst case on the same images) and
        `more_iterations_do_not_raise_worst_case` (at the widest L-inf ball,
        else the widest one: the gradient attacks' worst case with a quarter of
        their iterations is no lower than with all of them, within one image).
    """
    checks, details, agree = [], [], True
    for (norm, epsilon), members in suite_runs.items():
        free = [m for m in members if not _uses_gradients(m[0])]
        gradient = [m for m in members if _uses_gradients(m[0])]
        for spec, row, robust in free:
            if not gradient:
                continue
            n = len(robust)
            gradient_accuracy = float(np.mean(_all_robust([m[2][:n] for m in gradient])))
            accuracy = row["robust_accuracy"]
            ok = (gradient_accuracy - SQUARE_BELOW_TOLERANCE <= accuracy
                  <= gradient_accuracy + SQUARE_ABOVE_TOLERANCE)
            agree &= ok
            details.append(f"{norm} eps={epsilon:g} on {n} examples: {spec.name} {accuracy:.4f}, "
                           f"gradient attacks' worst case {gradient_accuracy:.4f}")
    if details:
        checks.append({"name": "gradient_free_attack_agrees_with_gradient_attacks",
                       "passed": bool(agree), "detail": "; ".join(details)})

    (norm, epsilon), members = max(suite_runs.items(), key=lambda t: (t[0][0] == "inf", t[0][1]))
    gradient = [m for m in members if _uses_gradients(m[0])]
    if gradient:
        n = min(len(m[2]) for m in gradient)
        full = float(np.mean(_all_robust([m[2][:n] for m in gradient])))
        fewer = []
        for spec, _, _ in gradient:
            settings = {**spec.to_dict(), "steps": max(1, spec.steps // FEWER_ITERATIONS_DIVISOR)}
            settings.pop("step_size")  # the attack's own rule at the new number of steps
            name = settings.pop("name")
            fewer.append(run(attacks.make_attack(name, **settings), n)[1])
        few = float(np.mean(_all_robust(fewer)))
        checks.append({
            "name": "more_iterations_do_not_raise_worst_case",
            "passed": full <= few + 1.0 / n,
            "detail": f"{norm} eps={epsilon:g} on {n} examples, worst case of "
                      f"{', '.join(m[0].name for m in gradient)}: "
                      f"1/{FEWER_ITERATIONS_DIVISOR} of the iterations {few:.4f}, all {full:.4f}",
        })
    return checks


def _uses_gradients(spec):
    return spec.name not in GRADIENT_FREE_ATTACKS


def _all_robust(masks):
    return np.logical_and.reduce([np.asarray(m, bool) for m in masks])
