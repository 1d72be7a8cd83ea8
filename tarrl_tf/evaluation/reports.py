"""Writes an evaluation report: `report.json`, `report.md` and `robust_accuracy.png`.

Each file is written to a temporary name and renamed, so a crash never leaves
a half-written report behind.
"""

import io
import os

import matplotlib

matplotlib.use("Agg")  # Headless: reports are written on servers and CI.
import matplotlib.pyplot as plt

from tarrl_tf.files import dumps_json, write_atomic


def write_report(report, output_dir):
    """Writes the three report files into `output_dir`; returns their paths."""
    paths = {name: os.path.join(output_dir, name)
             for name in ("report.json", "report.md", "robust_accuracy.png")}
    # Render everything before writing anything: a failure leaves no mixed set.
    contents = {"report.json": dumps_json(report), "report.md": to_markdown(report),
                "robust_accuracy.png": _plot(report)}
    for name, content in contents.items():
        write_atomic(paths[name], content)
    return paths


def to_markdown(report):
    lines = [
        f"# Robustness report: `{report.get('encoder', '?')}`",
        "",
        f"Dataset `{report.get('dataset', '?')}`, task `{report.get('task', '?')}`, "
        f"{report['head']} head{' (fine-tuned)' if report.get('fine_tune') else ' on the frozen encoder'}, "
        f"trained on {report['num_train_examples']} examples without adversarial training; "
        f"{report['num_examples']} test examples.",
        "",
        f"Clean accuracy: **{report['clean_accuracy']:.4f}** (loss {report['clean_loss']:.4f})",
        "",
        *_worst_case_lines(report),
        "| attack | norm | epsilon | steps | step size | clean accuracy | robust accuracy "
        "| adversarial loss | examples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["attacks"]:
        step_size = "-" if row.get("step_size") is None else f"{row['step_size']:.4g}"
        name = f"{row['name']} ({row['suite']})" if row.get("suite") else row["name"]
        lines.append(
            f"| {name} | {row['norm']} | {row['epsilon']:.4g} | {row['steps']} | {step_size} "
            f"| {_clean_accuracy(report, row):.4f} | {row['robust_accuracy']:.4f} "
            f"| {row['adversarial_loss']:.4f} | {row['num_examples']} |"
        )
    subset = dict.fromkeys(f"{r['name']} ({r['num_examples']})" for r in report["attacks"]
                           if r["num_examples"] != report["num_examples"])
    if subset:
        lines += ["", "Attacked on the first test examples only (costly attacks, suite subsets): "
                  f"{', '.join(subset)}; the clean accuracy in their rows is that of those examples."]
    if report.get("robustness"):
        lines += ["", "## The encoder's regularizer R (PGD on the normalized representation)", "",
                  "| norm | epsilon | steps | R = mean d | mean shift = mean sqrt(d) |", "|---|---|---|---|---|"]
        lines += [f"| {r['norm']} | {r['epsilon']:.4g} | {r['steps']} | {r['R']:.5f} | {r['mean_shift']:.5f} |"
                  for r in report["robustness"]]
    if report.get("bound"):
        lines += ["", "## Task-agnostic bound (linear head)", "", report["bound_note"], "",
                  "| attack | epsilon | clean loss | Lipschitz | shift | bound | measured adversarial loss "
                  "| examples |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {b['attack']} | {b['epsilon']:.4g} | {b['clean_loss']:.4f} | {b['lipschitz']:.3f} "
                  f"| {b['representation_shift']:.4f} | {b['bound']:.4f} | {b['adversarial_loss']:.4f} "
                  f"| {b.get('num_examples', report['num_examples'])} |"
                  for b in report["bound"]]
    if report.get("sanity_checks"):
        lines += ["", "## Sanity checks against false robustness", ""]
        if report.get("reliable") is False:
            lines += ["**Unreliable**: a check failed; the robust accuracies above may be "
                      "overestimates.", ""]
        lines += [f"- {'PASS' if c['passed'] else 'FAIL'} `{c['name']}`: {c['detail']}"
                  for c in report["sanity_checks"]]
    return "\n".join(lines) + "\n"


def _worst_case_lines(report):
    """The headline: the suite's per-image worst case at each threat model."""
    if not report.get("worst_case"):
        return []
    lines = [f"Robust accuracy, per-image worst case over the `{report['suite']}` suite "
             "(an image counts only if every attack of the suite fails on it):", "",
             "| norm | epsilon | attacks | examples | clean accuracy | robust accuracy |",
             "|---|---|---|---|---|---|"]
    for w in report["worst_case"]:
        lines.append(f"| {w['norm']} | {w['epsilon']:.4g} | {', '.join(w['attacks'])} "
                     f"| {w['num_examples']} | {w['clean_accuracy']:.4f} "
                     f"| **{w['robust_accuracy']:.4f}** |")
        if "on_all_examples" in w:
            a = w["on_all_examples"]
            lines.append(f"| {w['norm']} | {w['epsilon']:.4g} | {', '.join(a['attacks'])} "
                         f"(not the headline) | {a['num_examples']} | - | {a['robust_accuracy']:.4f} |")
    return lines + ["", "Each attack's own row:", ""]


def _clean_accuracy(report, row):
    """The row's own clean accuracy; reports written before rows carried one use the report's."""
    return row.get("clean_accuracy", report["clean_accuracy"])


def _plot(report):
    figure, axes = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(row["name"] for row in report["attacks"]):
        rows = sorted((r for r in report["attacks"] if r["name"] == name), key=lambda r: r["epsilon"])
        epsilons = [0.0] + [r["epsilon"] for r in rows]
        # A curve starts at the clean accuracy of the examples its attack saw.
        accuracies = [_clean_accuracy(report, rows[0])] + [r["robust_accuracy"] for r in rows]
        n = rows[0]["num_examples"]  # the same for every radius of one attack
        label = name if n == report["num_examples"] else f"{name} (n={n})"
        axes.plot(epsilons, accuracies, marker="o", label=label)
    axes.set_xlabel("epsilon")
    axes.set_ylabel("robust accuracy")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"{report.get('encoder', '')} - {report.get('task', '')}", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
