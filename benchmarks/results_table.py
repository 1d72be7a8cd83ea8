"""Prints the RESULTS.md tables from the zoo's model cards and the ablation log.

Numbers are read, never typed:
- one table per dataset and task: the linear probe's clean accuracy, robust
  accuracy under each attack and radius, pretraining wall-clock relative to
  plain SimCLR;
- the transfer table: TARRL's robust-accuracy gap over SimCLR on each derived
  task as a fraction of its gap on the labels task;
- the ablation table from `benchmarks/ablation.py`'s JSON lines.

    python benchmarks/results_table.py [--ablation=runs/ablation.jsonl]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import pathlib

from absl import app, flags

from tarrl_tf import zoo

flags.DEFINE_string("zoo_dir", None, "Zoo to read (default: zoo/).")
flags.DEFINE_string("ablation", str(pathlib.Path(__file__).resolve().parents[1] / "runs" / "ablation.jsonl"),
                    "JSON lines of benchmarks/ablation.py (skipped when absent).")
FLAGS = flags.FLAGS

ORDER = ("simclr", "tarrl", "acl", "deacl", "supervised_at")


def tables(cards):
    lines = []
    for dataset in sorted({c["dataset"] for c in cards}):
        rows = sorted((c for c in cards if c["dataset"] == dataset),
                      key=lambda c: ORDER.index(c["method"]) if c["method"] in ORDER else 99)
        simclr = next((c for c in rows if c["method"] == "simclr"), None)
        for task in dict.fromkeys(m.get("task") for c in rows for m in c["metrics"]):
            columns = list(dict.fromkeys(
                (m["attack"]["name"], m["attack"]["epsilon"]) for c in rows for m in c["metrics"]
                if m.get("task") == task))
            lines += [f"\n### {dataset}, task `{task}` (linear probe, "
                      f"{rows[0]['metrics'][0]['num_examples']} test images)\n",
                      "| entry | clean | " + " | ".join(f"{n} {e:.3g}" for n, e in columns)
                      + " | pretraining s (x simclr) |",
                      "|---" * (len(columns) + 3) + "|"]
            for card in rows:
                metrics = {(m["attack"]["name"], m["attack"]["epsilon"]): m
                           for m in card["metrics"] if m.get("task") == task}
                if not metrics:
                    continue
                clean = next(iter(metrics.values()))["clean_accuracy"]
                seconds = card["training"]["wall_clock_seconds"]
                ratio = f" ({seconds / simclr['training']['wall_clock_seconds']:.1f}x)" if simclr else ""
                cells = [f"{metrics[c]['robust_accuracy']:.3f}" if c in metrics else "-"
                         for c in columns]
                lines.append(f"| `{card['name']}` | {clean:.3f} | " + " | ".join(cells)
                             + f" | {seconds:.0f}{ratio} |")
    return "\n".join(lines)


def _robust(card, task):
    return {(m["attack"]["name"], m["attack"]["epsilon"]): m["robust_accuracy"]
            for m in card["metrics"] if m.get("task") == task}


def transfer(cards):
    lines = ["| dataset | derived task | attack | eps | gap on labels | gap on task | ratio |",
             "|---|---|---|---|---|---|---|"]
    for dataset in sorted({c["dataset"] for c in cards}):
        by_method = {c["method"]: c for c in cards if c["dataset"] == dataset}
        if not {"simclr", "tarrl"} <= set(by_method):
            continue
        tarrl, simclr = by_method["tarrl"], by_method["simclr"]
        derived = [t for t in dict.fromkeys(m.get("task") for m in tarrl["metrics"]) if t != "labels"]
        for task in derived:
            labels_gap = {k: v - _robust(simclr, "labels").get(k, float("nan"))
                          for k, v in _robust(tarrl, "labels").items()}
            task_gap = {k: v - _robust(simclr, task).get(k, float("nan"))
                        for k, v in _robust(tarrl, task).items()}
            for key in labels_gap:
                ratio = task_gap[key] / labels_gap[key] if labels_gap[key] > 0 else float("nan")
                lines.append(f"| {dataset} | {task} | {key[0]} | {key[1]:.3g} | {labels_gap[key]:+.3f} "
                             f"| {task_gap[key]:+.3f} | {ratio:.2f} |")
    return "\n".join(lines)


def ablation(path):
    rows = [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line]
    epsilons = list(rows[0]["robust_accuracy"])
    lines = ["| run | divergence | weight | estimator | clean | "
             + " | ".join(f"PGD-20 {e}" for e in epsilons)
             + " | R at " + epsilons[-1] + " | training s |",
             "|---" * (len(epsilons) + 7) + "|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['divergence'] if r['weight'] else '-'} | {r['weight']:g} "
            f"| {r['estimator'] if r['weight'] else '-'} | {r['clean_accuracy']:.3f} | "
            + " | ".join(f"{r['robust_accuracy'][e]:.3f}" for e in epsilons)
            + f" | {r['R_squared_l2'][epsilons[-1]]:.4f} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv):
    del argv
    cards = [zoo.info(name, zoo_dir=FLAGS.zoo_dir) for name in zoo.list(zoo_dir=FLAGS.zoo_dir)]
    print(tables(cards))
    print("\n### Transfer to derived tasks\n")
    print(transfer(cards))
    if os.path.exists(FLAGS.ablation):
        print("\n### Ablation\n")
        print(ablation(FLAGS.ablation))


if __name__ == "__main__":
    app.run(main)
