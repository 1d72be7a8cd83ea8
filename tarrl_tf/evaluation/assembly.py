"""The report of an evaluation, computed from its per-image results alone.

`assemble(plan, results, lipschitz)` is the one place a report's rows are
made: `protocol.evaluate` calls it on the results it measures, `shards.merge`
on the results merged from shards, so both give the same report. The `plan`
is the evaluation's settings as plain JSON values (a shard carries it to the
merge); `results` answers `clean()`, `run(spec, n)`, `shifts(threat_models)`
and has `labels` (`per_image.Measured` or `per_image.Recorded`).
"""

import numpy as np

from tarrl_tf import attacks
from tarrl_tf.attacks.spec import AttackSpec
from tarrl_tf.evaluation import sanity, worst_case

BOUND_NOTE = (
    "PGD finds a lower estimate of each inner maximum, so 'bound' = clean loss + Lipschitz "
    "constant x estimated worst-case representation shift is an estimate, not a certificate."
)
# Too slow on a CPU for a full test set: with `subset_examples` they attack the first examples only.
SUBSET_ATTACKS = tuple(name for name, attack in attacks.ATTACKS.items() if attack.costly)
# The plan's keys that are copied into the report as they are.
_COPIED = ("head", "fine_tune", "num_classes", "num_train_examples", "num_examples")


def assemble(plan, results, lipschitz=None):
    """The report dict of `evaluate` (see there) from per-image `results`.

    Args:
        plan: the evaluation's settings (`protocol.evaluation_plan`).
        results: the per-image results (see the module doc).
        lipschitz: the linear head's Lipschitz constant (None for other heads).
    """
    specs = [AttackSpec.from_dict(settings) for settings in plan["attack_specs"]]
    count = plan["num_examples"]
    report = {key: plan[key] for key in _COPIED}
    clean = results.clean()
    report["clean_accuracy"] = float(np.mean(clean[0]))
    report["clean_loss"] = float(np.mean(clean[1]))

    def run(spec, n):
        robust, adversarial_loss = results.run(spec, n)
        return attack_row(spec, clean, robust, adversarial_loss), robust

    report["attacks"] = []
    for spec in specs:
        n = count
        if plan["subset_examples"] is not None and spec.name in SUBSET_ATTACKS:
            n = min(n, plan["subset_examples"])
        report["attacks"].append(run(spec, n)[0])
    suite_runs = None
    if plan["suite"] is not None:
        rows, report["worst_case"], suite_runs = worst_case.run_suite(
            run, plan["suite"], [tuple(t) for t in plan["suite_threat_models"]],
            min(count, plan["suite_examples"] or count))
        report["attacks"] += rows
        report["suite"] = plan["suite"]
    threat_models = sorted({(s.norm, s.epsilon) for s in specs if s.epsilon > 0})
    shifts = results.shifts(threat_models)
    steps = plan["regularizer_steps"]
    report["robustness"] = [
        {"norm": norm, "epsilon": eps, "estimator": "pgd", "steps": steps,
         "divergence": "squared_l2", "R": float(np.mean(d)),
         "mean_shift": float(np.mean(np.sqrt(d))), "num_examples": int(len(d))}
        for (norm, eps), d in shifts.items()
    ]
    if plan["head"] == "linear":
        report["bound"] = _bound_rows(report, lipschitz, shifts)
        report["bound_note"] = BOUND_NOTE
    if plan["sanity_checks"]:
        checks = sanity.sanity_checks(lambda spec, n: run(spec, n)[0], results.labels, specs,
                                      report, plan["spsa_examples"])
        if suite_runs:
            checks += sanity.suite_checks(run, suite_runs)
        report["sanity_checks"] = checks
        report["reliable"] = all(check["passed"] for check in checks)
    return report


def attack_row(spec, clean, robust, adversarial_loss):
    """The report row of `spec` on the first `len(robust)` examples.

    `clean` is `(correct, loss)` of every test example; `robust` says per
    example whether it is right both clean and under the attack.
    """
    n = len(robust)
    return {
        **spec.to_dict(),
        "robust_accuracy": float(np.mean(robust)),
        "adversarial_loss": float(np.mean(adversarial_loss)),
        "num_examples": int(n),
        "clean_accuracy": float(np.mean(clean[0][:n])),
        "clean_loss": float(np.mean(clean[1][:n])),
    }


def _bound_rows(report, lipschitz, shifts):
    rows = []
    for row in report["attacks"]:
        key = (row["norm"], row["epsilon"])
        if key not in shifts:
            continue
        # Both sides on the examples the row attacked (the first ones of the test set).
        n = row["num_examples"]
        shift = float(np.mean(np.sqrt(shifts[key][:n])))
        rows.append({
            "attack": row["name"], "norm": row["norm"], "epsilon": row["epsilon"],
            "clean_loss": row["clean_loss"], "lipschitz": lipschitz,
            "representation_shift": shift, "bound": row["clean_loss"] + lipschitz * shift,
            "adversarial_loss": row["adversarial_loss"], "num_examples": n,
        })
    return rows
