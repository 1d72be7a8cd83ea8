"""Prints the RESULTS.md tables, and draws its figures, from the zoo's model cards and the ablation log.

Numbers are read, never typed or recomputed:
- one table per dataset and task: the linear probe's clean accuracy, robust
  accuracy under each attack and radius (a column measured on fewer test
  images than the table's says how many), pretraining wall-clock relative to
  plain SimCLR, counting the encoder a row starts from or distils from (its
  `init_encoder` / `teacher`, a zoo entry) as part of the row's cost;
- the transfer table: TARRL's robust-accuracy gap over SimCLR on each derived
  task as a fraction of its gap on the labels task;
- from `benchmarks/ablation.py`'s JSON lines: the ablation table, the mean and
  spread over seeds of runs that differ only in seed, and each weight sweep.

Figures (PNG, in --figures_dir): `<dataset>_epsilon_sweep.png`, robust
accuracy against the radius for every zoo entry of a dataset, one panel per
task (a second row for L2 when the cards have `pgd_l2` rows); and
`weight_tradeoff.png`, clean and robust accuracy against the regularizer's
weight for each weight sweep of the ablation.

    python benchmarks/results_table.py [--ablation=benchmarks/ablation.jsonl] [--figures_dir=DIR]
        [--markdown_out=tables.md] [--update=RESULTS.md]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import io
import json
import pathlib
import statistics

from absl import app, flags
from matplotlib.figure import Figure

from tarrl_tf import zoo
from tarrl_tf.files import write_atomic

REPO = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_string("zoo_dir", None, "Zoo to read (default: zoo/).")
flags.DEFINE_string("ablation", str(REPO / "benchmarks" / "ablation.jsonl"),
                    "JSON lines of benchmarks/ablation.py (skipped when absent).")
flags.DEFINE_string("experiments", str(REPO / "benchmarks" / "experiments.json"),
                    "Rows of the cards: where a card does not say which encoder its row started "
                    "from or distilled from (skipped when absent).")
flags.DEFINE_string("figures_dir", str(REPO / "benchmarks" / "figures"), "Where the PNG figures go.")
flags.DEFINE_string("markdown_out", None, "Also write the printed tables to this file.")
flags.DEFINE_string("update", None,
                    "A markdown file (RESULTS.md) whose text between the lines "
                    f"{'<!-- tables:start -->'!r} and {'<!-- tables:end -->'!r} is replaced by the tables.")
FLAGS = flags.FLAGS

ORDER = ("simclr", "tarrl", "acl", "deacl", "supervised_at")
SWEEP_ATTACKS = ("pgd_linf", "pgd_l2")

# Lines written before ablation.py recorded these ran with its values of that time
# (RESULTS.md's ablation setup).
OLD_LINE_SETTINGS = {
    "seed": 0, "norm": "inf", "epsilon": 0.3, "warmup_epochs": 2, "regularize_on": "views",
    "regularized_fraction": 1.0,
    "train_examples": 8000,
    "epochs": 8, "batch_size": 256, "learning_rate": 0.002, "width": 32, "dataset": "mnist",
    "eval_attack": "pgd_linf", "eval_steps": 20, "eval_examples": 500,
    "probe_train_examples": 10000,
}
REGULARIZER_SETTINGS = ("divergence", "estimator", "steps", "norm", "epsilon", "warmup_epochs",
                        "regularize_on", "regularized_fraction")
BUDGET_SETTINGS = ("dataset", "train_examples", "epochs", "batch_size", "learning_rate", "width",
                   "seed")
EVALUATION_SETTINGS = ("eval_attack", "eval_steps", "eval_examples", "probe_train_examples",
                       "eval_epsilons")


# --------------------------------------------------------------------------- model cards


def _sorted_cards(cards, dataset):
    return sorted((c for c in cards if c["dataset"] == dataset),
                  key=lambda c: ORDER.index(c["method"]) if c["method"] in ORDER else len(ORDER))


def _tasks(cards):
    """Tasks in the cards' order, `labels` first."""
    tasks = dict.fromkeys(m.get("task") for c in cards for m in c["metrics"])
    return sorted(tasks, key=lambda task: task != "labels")


def _task_metrics(card, task):
    return [m for m in card["metrics"] if m.get("task") == task]


def _full_count(metrics):
    return max(m["num_examples"] for m in metrics)


def clean_accuracy(metrics):
    """The clean accuracy of the full-size rows; a subset row's is measured on its subset only."""
    count = _full_count(metrics)
    return next(m["clean_accuracy"] for m in metrics if m["num_examples"] == count)


def _column(metric):
    return metric["attack"]["name"], metric["attack"]["epsilon"], metric["num_examples"]


# Encoders a row needs trained before its own pretraining starts.
SOURCE_KEYS = ("init_encoder", "teacher")


def sources(cards, rows=()):
    """`{card name: [zoo entries it starts from or distils from]}`: the card's training facts,
    else its row's (cards published before they recorded them)."""
    by_row = {row["name"]: row for row in rows}
    found = {}
    for card in cards:
        facts = card["training"] if any(k in card["training"] for k in SOURCE_KEYS) else \
            by_row.get(card["name"], {})
        found[card["name"]] = list(dict.fromkeys(facts[k] for k in SOURCE_KEYS if facts.get(k)))
    return found


def _cost(card, simclr, before):
    """`seconds (ratio)`; with `before` (cards trained first), their seconds are added and named."""
    own = card["training"]["wall_clock_seconds"]
    seconds = own + sum(c["training"]["wall_clock_seconds"] for c in before)
    ratio = f"{seconds / simclr['training']['wall_clock_seconds']:.1f}x" if simclr else ""
    parts = [f"`{c['name']}` {c['training']['wall_clock_seconds']:.0f}" for c in before]
    detail = "; ".join(([ratio] if ratio else []) + ([f"{own:.0f} + " + " + ".join(parts)]
                                                     if parts else []))
    return f"{seconds:.0f}" + (f" ({detail})" if detail else "")


def task_table(cards, task, simclr, before=None):
    """One dataset's table for `task`: a row per card, a column per (attack, radius, count).

    `before`: `{card name: [cards trained before it]}` (see `sources`), counted in its cost.
    """
    before = before or {}
    rows = [(card, _task_metrics(card, task)) for card in cards]
    rows = [(card, metrics) for card, metrics in rows if metrics]
    count = _full_count([m for _, metrics in rows for m in metrics])
    columns = list(dict.fromkeys(_column(m) for _, metrics in rows for m in metrics))
    columns.sort(key=lambda column: column[2] != count)  # Subset columns last.
    header = [f"{name} {eps:.3g}" + (f" (n={n})" if n != count else "") for name, eps, n in columns]
    # The headline (a suite's per-image worst case) is measured on the labels task only.
    headlines = task == "labels" and any(card.get("headline") for card, _ in rows)
    header = (["worst case"] if headlines else []) + header
    lines = [f"\n### {cards[0]['dataset']}, task `{task}` (linear probe, {count} test images)\n",
             "| entry | clean | " + " | ".join(header) + " | pretraining s (x simclr) |",
             "|---" * (len(header) + 3) + "|"]
    for card, metrics in rows:
        by_column = {_column(m): m["robust_accuracy"] for m in metrics}
        cells = [f"{by_column[c]:.3f}" if c in by_column else "-" for c in columns]
        if headlines:
            cells.insert(0, headline_cell(card.get("headline")))
        lines.append(f"| `{card['name']}` | {clean_accuracy(metrics):.3f} | " + " | ".join(cells)
                     + f" | {_cost(card, simclr, before.get(card['name'], []))} |")
    return lines


def headline_cell(headline):
    """`0.105 (standard, n=200)`: a card's headline robust accuracy, its suite and image count."""
    if not headline:
        return "-"
    return (f"{headline['robust_accuracy']:.3f} ({headline['suite']}, "
            f"{headline['norm']} {headline['epsilon']:.3g}, n={headline['num_examples']})")


def tables(cards, rows=()):
    """Every dataset's task tables; `rows` (experiments.json's) name what older cards started from."""
    by_name = {c["name"]: c for c in cards}
    before = {name: [by_name[s] for s in names if s in by_name]
              for name, names in sources(cards, rows).items()}
    lines = []
    for dataset in sorted({c["dataset"] for c in cards}):
        dataset_cards = _sorted_cards(cards, dataset)
        simclr = next((c for c in dataset_cards if c["method"] == "simclr"), None)
        for task in _tasks(dataset_cards):
            lines += task_table(dataset_cards, task, simclr, before)
    return "\n".join(lines)


def _robust(card, task):
    return {(m["attack"]["name"], m["attack"]["epsilon"]): m["robust_accuracy"]
            for m in card["metrics"] if m.get("task") == task}


def _gap(card, baseline, task):
    """`card`'s robust accuracy minus `baseline`'s, per (attack, epsilon) both measured on `task`."""
    base = _robust(baseline, task)
    return {k: v - base[k] for k, v in _robust(card, task).items() if k in base}


def transfer(cards):
    """TARRL's robust-accuracy gap over SimCLR on each derived task against the gap on the labels.

    One block per TARRL entry (a dataset may have an L-inf and an L2 one); the
    ratio is left out where the labels gap is not positive.
    """
    lines = ["| entry | derived task | attack | eps | gap on labels | gap on task | ratio |",
             "|---|---|---|---|---|---|---|"]
    for dataset in sorted({c["dataset"] for c in cards}):
        simclr = next((c for c in cards if c["dataset"] == dataset and c["method"] == "simclr"), None)
        if simclr is None:
            continue
        for tarrl in [c for c in cards if c["dataset"] == dataset and c["method"] == "tarrl"]:
            labels_gap = _gap(tarrl, simclr, "labels")
            derived = [t for t in dict.fromkeys(m.get("task") for m in tarrl["metrics"])
                       if t != "labels"]
            for task in derived:
                task_gap = _gap(tarrl, simclr, task)
                for key in [k for k in labels_gap if k in task_gap]:
                    ratio = (f"{task_gap[key] / labels_gap[key]:.2f}" if labels_gap[key] > 0
                             else "-")
                    lines.append(f"| `{tarrl['name']}` | {task} | {key[0]} | {key[1]:.3g} "
                                 f"| {labels_gap[key]:+.3f} | {task_gap[key]:+.3f} | {ratio} |")
    return "\n".join(lines)


def _sweep_points(metrics, attack):
    """`(epsilon, accuracy)` pairs of one attack, `(0, clean)` first; per radius the largest count."""
    largest = {}
    for m in sorted(metrics, key=lambda m: m["num_examples"]):
        if m["attack"]["name"] == attack:
            largest[m["attack"]["epsilon"]] = m["robust_accuracy"]
    return [(0.0, clean_accuracy(metrics))] + sorted(largest.items())


def epsilon_sweep_figure(cards, dataset):
    """Robust accuracy against epsilon, a line per entry: a panel per task, a row per norm."""
    rows = _sorted_cards(cards, dataset)
    present = {m["attack"]["name"] for c in rows for m in c["metrics"]}
    sweep_attacks = [a for a in SWEEP_ATTACKS if a in present]
    if not sweep_attacks:
        return None
    tasks = _tasks(rows)
    figure = Figure(figsize=(5 * len(tasks), 3.8 * len(sweep_attacks)))
    grid = figure.subplots(len(sweep_attacks), len(tasks), squeeze=False)
    for attack, panels in zip(sweep_attacks, grid):
        for task, axes in zip(tasks, panels):
            # A fixed color per entry: one that lacks a task or attack shifts no other.
            for color, card in enumerate(rows):
                metrics = _task_metrics(card, task)
                points = _sweep_points(metrics, attack) if metrics else []
                if len(points) > 1:
                    axes.plot(*zip(*points), marker="o", color=f"C{color}", label=card["name"])
            axes.set(title=f"{dataset}, {task}: {attack}", xlabel="epsilon (0: clean)",
                     ylabel="accuracy", ylim=(0, 1.02))
            axes.grid(alpha=0.3)
            if axes.lines:
                axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- ablation log


def read_lines(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def settings(line):
    """Every setting of an ablation line, old lines completed. Plain SimCLR (weight 0) has no
    regularizer, so its regularizer settings are None whatever flags it was run with."""
    full = {**OLD_LINE_SETTINGS, **line, "eval_epsilons": tuple(line["robust_accuracy"])}
    result = {k: full[k] for k in BUDGET_SETTINGS + EVALUATION_SETTINGS + ("weight",)}
    result.update({k: full[k] if full["weight"] else None for k in REGULARIZER_SETTINGS})
    return result


def _key(line, without):
    return tuple((k, v) for k, v in sorted(settings(line).items()) if k not in without)


def _groups(lines, without):
    """Lines whose settings agree except for `without`, in order of first appearance."""
    groups = {}
    for line in lines:
        groups.setdefault(_key(line, without), []).append(line)
    return list(groups.values())


def seed_groups(lines):
    """Groups of two or more lines that differ only in seed (and name)."""
    return [group for group in _groups(lines, ("seed",)) if len(group) > 1]


def weight_sweeps(lines):
    """Lines that differ only in weight, at two weights > 0 or more, by increasing weight. A
    weight-0 line (plain SimCLR) joins every sweep with its data budget, seed and evaluation."""
    regularized = [line for line in lines if line["weight"]]
    plain = [line for line in lines if not line["weight"]]
    sweeps = []
    for group in _groups(regularized, ("weight",)):
        if len({line["weight"] for line in group}) < 2:
            continue  # One regularized run beside SimCLR is a row of the ablation table, not a sweep.
        budget = _key(group[0], ("weight",) + REGULARIZER_SETTINGS)
        sweep = [line for line in plain if _key(line, ("weight",) + REGULARIZER_SETTINGS) == budget]
        sweeps.append(sorted(sweep + group, key=lambda line: line["weight"]))
    return sweeps


def _regularizer_text(s):
    return (f"{s['divergence']}, {_estimator_text(s)} at L{s['norm']} {s['epsilon']:g}, "
            f"warm-up {s['warmup_epochs']} epochs, on {_target_text(s)}")


def _estimator_text(s):
    return s["estimator"] if s["estimator"] == "fgsm" else f"{s['estimator']}-{s['steps']}"


def _target_text(s):
    """What R is estimated on: the images or the views, and on how much of each batch."""
    fraction = s["regularized_fraction"]
    return s["regularize_on"] + (f", {fraction:g} of each batch" if fraction < 1 else "")


def _budget_text(s):
    return f"{s['dataset']}, {s['train_examples']} images x {s['epochs']} epochs"


def _evaluation_text(s):
    return (f"{s['eval_attack']}-{s['eval_steps']} on {s['eval_examples']} test images, "
            f"probe trained on {s['probe_train_examples']} labels")


def _attack_header(line):
    s = settings(line)
    return [f"{s['eval_attack']}-{s['eval_steps']} {float(e):g}" for e in s["eval_epsilons"]]


def _by_evaluation(lines):
    """Lines grouped by evaluation protocol: the lines of one table share their columns."""
    return _groups(lines, BUDGET_SETTINGS + REGULARIZER_SETTINGS + ("weight",))


def _r_cell(line):
    last = list(line["robust_accuracy"])[-1]
    return f"{line['R_squared_l2'][last]:.4f}" if last in line["R_squared_l2"] else "-"


def ablation_table(lines):
    """One evaluation protocol's lines, a row each. The training threat model is shown when it
    varies or is not L-inf, the pretraining budget when it varies."""
    threats = {(s["norm"], s["epsilon"]) for s in map(settings, lines) if s["weight"]}
    show_threat = len(threats) > 1 or any(norm != "inf" for norm, _ in threats)
    show_budget = len({(s["train_examples"], s["epochs"]) for s in map(settings, lines)}) > 1
    show_target = len({_target_text(s) for s in map(settings, lines) if s["weight"]}) > 1
    epsilons = list(lines[0]["robust_accuracy"])
    columns = (["run", "divergence", "weight", "estimator", "seed"] + ["threat"] * show_threat
               + ["R on"] * show_target + ["budget"] * show_budget + ["clean"]
               + _attack_header(lines[0])
               + [f"R at {float(epsilons[-1]):g}", "training s"])
    rows = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for line in lines:
        s = settings(line)
        regularized = bool(s["weight"])
        cells = [line["name"], s["divergence"] if regularized else "-", f"{s['weight']:g}",
                 _estimator_text(s) if regularized else "-", str(s["seed"])]
        if show_threat:
            cells.append(f"L{s['norm']} {s['epsilon']:g}" if regularized else "-")
        if show_target:
            cells.append(_target_text(s) if regularized else "-")
        if show_budget:
            cells.append(f"{s['train_examples']} x {s['epochs']}")
        cells += [f"{line['clean_accuracy']:.3f}"]
        cells += [f"{line['robust_accuracy'][e]:.3f}" for e in epsilons]
        cells += [_r_cell(line), str(line["seconds"])]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _mean_std(values):
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def seed_table(groups):
    """Mean ± sample standard deviation over seeds, a row per group of one evaluation protocol."""
    epsilons = list(groups[0][0]["robust_accuracy"])
    columns = ["configuration", "seeds", "n", "clean"] + _attack_header(groups[0][0])
    rows = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for group in groups:
        s = settings(group[0])
        configuration = f"w={s['weight']:g}, {_regularizer_text(s)}" if s["weight"] else "simclr"
        cells = [f"{configuration}; {_budget_text(s)}",
                 ", ".join(str(settings(line)["seed"]) for line in group), str(len(group)),
                 _mean_std([line["clean_accuracy"] for line in group])]
        cells += [_mean_std([line["robust_accuracy"][e] for line in group]) for e in epsilons]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _sweep_title(sweep):
    s = settings(sweep[-1])  # The heaviest line has a regularizer.
    return f"{_regularizer_text(s)}; {_budget_text(s)}, seed {s['seed']}"


def sweep_table(sweep):
    epsilons = list(sweep[0]["robust_accuracy"])
    columns = ["weight", "run", "clean"] + _attack_header(sweep[0]) + [
        f"R at {float(epsilons[-1]):g}", "training s"]
    rows = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for line in sweep:
        cells = [f"{line['weight']:g}", line["name"], f"{line['clean_accuracy']:.3f}"]
        cells += [f"{line['robust_accuracy'][e]:.3f}" for e in epsilons]
        cells += [_r_cell(line), str(line["seconds"])]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def weight_tradeoff_figure(sweeps):
    """Clean and robust accuracy against the weight, a panel per sweep. The weights are placed
    as categories, so weight 0 (plain SimCLR) shows and uneven steps stay readable."""
    if not sweeps:
        return None
    figure = Figure(figsize=(6 * len(sweeps), 4.5))
    for sweep, axes in zip(sweeps, figure.subplots(1, len(sweeps), squeeze=False)[0]):
        weights = sorted({line["weight"] for line in sweep})
        x = [weights.index(line["weight"]) for line in sweep]
        axes.plot(x, [line["clean_accuracy"] for line in sweep], marker="o", color="black",
                  label="clean")
        for header, eps in zip(_attack_header(sweep[0]), sweep[0]["robust_accuracy"]):
            axes.plot(x, [line["robust_accuracy"][eps] for line in sweep], marker="o", label=header)
        axes.set_xticks(range(len(weights)), [f"{w:g}" for w in weights])
        axes.set(xlabel="weight (0: plain SimCLR)", ylabel="accuracy", ylim=(0, 1.02))
        axes.set_title(_sweep_title(sweep).replace("; ", "\n"), fontsize=8)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def ablation_sections(lines):
    """The ablation's markdown: all runs, then seed groups and weight sweeps, by evaluation."""
    sections = ["\n### Ablation"]
    for group in _by_evaluation(lines):
        sections += [f"\n#### {_evaluation_text(settings(group[0]))}\n", ablation_table(group)]
    for group in _by_evaluation(lines):
        groups = seed_groups(group)
        if groups:
            sections += [f"\n### Spread over seeds ({_evaluation_text(settings(group[0]))}; "
                         "mean ± sample std)\n", seed_table(groups)]
    for sweep in weight_sweeps(lines):
        sections += [f"\n### Weight sweep: {_sweep_title(sweep)} "
                     f"({_evaluation_text(settings(sweep[0]))})\n", sweep_table(sweep)]
    return sections


# --------------------------------------------------------------------------- output


def report(cards, lines, rows=()):
    """`(markdown, figures)`: the tables' text and `{file name: matplotlib Figure}`."""
    sections = [tables(cards, rows), "\n### Transfer to derived tasks\n", transfer(cards)]
    figures = {f"{d}_epsilon_sweep.png": epsilon_sweep_figure(cards, d)
               for d in sorted({c["dataset"] for c in cards})}
    if lines:
        sections += ablation_sections(lines)
        figures["weight_tradeoff.png"] = weight_tradeoff_figure(weight_sweeps(lines))
    return "\n".join(sections) + "\n", {k: v for k, v in figures.items() if v is not None}


START, END = "<!-- tables:start -->", "<!-- tables:end -->"


def spliced(document, markdown):
    """`document` with the text between its START and END marker lines replaced by `markdown`."""
    head, found, rest = document.partition(START + "\n")
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"The document needs a line {START!r} followed later by a line {END!r}")
    return head + START + "\n" + markdown.strip("\n") + "\n" + END + tail


def png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)  # Figure without pyplot: rendered by Agg.
    return buffer.getvalue()


def write_figures(figures, directory):
    """Writes each figure atomically as `directory/<name>`; returns the paths."""
    paths = [os.path.join(directory, name) for name in figures]
    for path, figure in zip(paths, figures.values()):
        write_atomic(path, png(figure))
    return paths


def main(argv):
    del argv
    cards = [zoo.info(name, zoo_dir=FLAGS.zoo_dir) for name in zoo.list(zoo_dir=FLAGS.zoo_dir)]
    lines = read_lines(FLAGS.ablation) if os.path.exists(FLAGS.ablation) else []
    rows = json.loads(pathlib.Path(FLAGS.experiments).read_text())["rows"] \
        if os.path.exists(FLAGS.experiments) else []
    markdown, figures = report(cards, lines, rows)
    print(markdown)
    if FLAGS.markdown_out:
        write_atomic(FLAGS.markdown_out, markdown)
        print(f"Tables written to {FLAGS.markdown_out}")
    if FLAGS.update:
        document = pathlib.Path(FLAGS.update).read_text()
        write_atomic(FLAGS.update, spliced(document, markdown))
        print(f"Tables updated in {FLAGS.update}")
    for path in write_figures(figures, FLAGS.figures_dir):
        print(f"Figure written to {path}")


if __name__ == "__main__":
    app.run(main)
