"""Prints the RESULTS.md tables from the zoo's model cards (numbers are read, never typed).

One table per dataset and task: clean accuracy of the linear probe, robust
accuracy under each attack and radius, and pretraining wall-clock relative
to plain SimCLR on the same dataset.

    python benchmarks/results_table.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

from tarrl_tf import zoo

flags.DEFINE_string("zoo_dir", None, "Zoo to read (default: zoo/).")
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


def main(argv):
    del argv
    cards = [zoo.info(name, zoo_dir=FLAGS.zoo_dir) for name in zoo.list(zoo_dir=FLAGS.zoo_dir)]
    print(tables(cards))


if __name__ == "__main__":
    app.run(main)
