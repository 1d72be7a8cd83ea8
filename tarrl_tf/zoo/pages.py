"""Pages for people browsing a zoo, rendered from the model cards (never edited by hand).

`zoo/README.md` is the index: one row per entry (dataset, architecture,
method, threat model, clean accuracy, the card's suite headline with PGD
beside it, pretraining cost, load line). `zoo/<name>/README.md` is the
entry's card in words (what it is, how it was trained, how to load and
serve it, its numbers, its limits) beside
`zoo/<name>/sweep.svg`, its robust accuracy against the attack radius.

Pages hold nothing that is not in the card, so they are not checksummed:
`verify` accepts them beside the listed files, and `stale_pages` (run by the
tests) finds any that no longer match their card. `write_pages` is run by
the zoo pipeline after publishing and by `python -m tools.zoo pages`.
"""

import math
import pathlib

from tarrl_tf.files import write_atomic
from tarrl_tf.zoo.entry import read_card
from tarrl_tf.zoo.manifest import (FIGURE_FILENAME, MODEL_CARD_FILENAME, PAGE_FILENAME,
                                   check_files, read_manifest)

INDEX_FILENAME = "README.md"
_GENERATED = ("<!-- Rendered from the model cards by `python -m tools.zoo pages`; "
              "edit the cards, not this file. -->")
_NORM_NAMES = {"linf": "L-inf", "l2": "L2"}
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def write_pages(zoo_dir):
    """Renders the index and every entry's page and figure; returns the paths that changed."""
    written = []
    for path, text in rendered(zoo_dir).items():
        if not path.is_file() or path.read_text() != text:
            write_atomic(path, text)
            written.append(path)
    return written


def stale_pages(zoo_dir):
    """The rendered files that are missing or differ from what their cards render to."""
    return [path for path, text in rendered(zoo_dir).items()
            if not path.is_file() or path.read_text() != text]


def rendered(zoo_dir):
    """`{path: text}` of every page of the zoo at `zoo_dir`."""
    zoo_dir = pathlib.Path(zoo_dir)
    cards = []
    pages = {}
    for name, entry in sorted(read_manifest(zoo_dir)["entries"].items()):
        check_files(zoo_dir / name, entry["files"], [MODEL_CARD_FILENAME])
        card = read_card(zoo_dir / name, name, entry)
        cards.append(card)
        pages[zoo_dir / name / PAGE_FILENAME] = render_page(card)
        pages[zoo_dir / name / FIGURE_FILENAME] = render_sweep(card)
    pages[zoo_dir / INDEX_FILENAME] = render_index(cards)
    return pages


def pgd_at_threat(card):
    """The PGD metric item on the labels task at the card's threat model.

    Where no PGD attack ran there, the lowest robust accuracy of the attacks
    that did; None if none ran at the threat model. Shown beside the
    headline, so that the gap between PGD and the suite stays visible.
    """
    threat = card["threat_model"]
    at_threat = [m for m in card["metrics"]
                 if m.get("task", "labels") == "labels" and m["attack"]["norm"] == threat["norm"]
                 and math.isclose(m["attack"]["epsilon"], threat["epsilon"])]
    pool = [m for m in at_threat if m["attack"]["name"].startswith("pgd")] or at_threat
    return min(pool, key=lambda m: m["robust_accuracy"]) if pool else None


def render_index(cards):
    lines = [
        "# Model zoo", "", _GENERATED, "",
        f"{len(cards)} encoders, each with its model card (`<name>/model_card.json`), a Keras file, "
        "a SavedModel for TF Serving and, where shipped, the linear probe it was measured with. "
        "Robust accuracy: a plain linear probe on the frozen encoder at the entry's threat model "
        "(labels task, first test images), counted per image over every attack of the card's "
        "suite (the card's `headline`); PGD alone, beside it, is higher. Each entry's page lists "
        "every attack, radius and task.", "",
        "| entry | dataset | architecture | method | threat model | clean | robust (suite) "
        "| PGD | pretraining | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for card in cards:
        top, pgd = card.get("headline"), pgd_at_threat(card)
        clean = top or pgd
        lines.append(
            f"| [{card['name']}]({card['name']}/{PAGE_FILENAME}) | {card['dataset']} "
            f"| {card['architecture']} | {card['method']} | {_threat(card['threat_model'])} "
            f"| {_percent(clean['clean_accuracy']) if clean else '-'} "
            f"| {_suite(top) if top else '-'} "
            f"| {_with_attack(pgd) if pgd else '-'} "
            f"| {_cost(card['training'])} | `tarrl_tf.zoo.load(\"{card['name']}\")` |")
    lines += ["", "Load any entry by name from a clone, or from an installed package with "
              "`TARRL_ZOO_URL` set to the base URL of a zoo like this folder (see the repository "
              "README, \"The zoo\").", ""]
    return "\n".join(lines)


def _suite(headline):
    return f"{_percent(headline['robust_accuracy'])} ({headline['suite']})"


def _with_attack(metric):
    return f"{_percent(metric['robust_accuracy'])} ({_attack(metric['attack'])})"


def render_page(card):
    name, training, threat = card["name"], card["training"], card["threat_model"]
    serving = card.get("serving", {})
    lines = [f"# {name}", "", _GENERATED, "",
             f"A `{card['architecture']}` encoder trained with `{card['method']}` on "
             f"`{card['dataset']}`, against {_threat(threat)} perturbations "
             f"(tarrl_tf {card['software'].get('tarrl_tf', '?')}).", ""]
    top, pgd = card.get("headline"), pgd_at_threat(card)
    if top:
        lines += [f"Headline: {_percent(top['robust_accuracy'])} robust accuracy at "
                  f"{_threat(threat)}, per image over every attack of the `{top['suite']}` suite "
                  f"({', '.join(top['attacks'])}), {_percent(top['clean_accuracy'])} clean, "
                  f"{top['num_examples']} test images."]
    if pgd:
        lines += [f"{'PGD alone' if top else 'Headline'}: {_percent(pgd['robust_accuracy'])} "
                  f"robust accuracy ({_attack(pgd['attack'])}), {_percent(pgd['clean_accuracy'])} "
                  f"clean, {pgd['head']} head, {pgd['num_examples']} test images."]
    if top or pgd:
        lines.append("")
    if card.get("notes"):
        lines += [card["notes"], ""]
    lines += ["## How it was trained", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {_value(value)} |" for key, value in training.items()
              if key not in ("command", "evaluation_command")]
    lines += [f"| regularizer.{key} | {_value(value)} |"
              for key, value in card["regularizer"].items()]
    lines.append("")
    for key, what in (("command", "Trained by"), ("evaluation_command", "Measured anew by")):
        if key in training:
            lines += [f"{what}: `{training[key]}`", ""]
    lines += ["## Load it", "", "```python", "import tarrl_tf", "",
              f'encoder = tarrl_tf.zoo.load("{name}")']
    if card.get("serving", {}).get("head"):
        lines.append(f'head = tarrl_tf.zoo.load_head("{name}")      # embeddings -> logits')
    lines += ["```", "", "Outside a clone, set `TARRL_ZOO_URL` to a zoo's base URL first.", ""]
    lines += _serving_lines(name, serving)
    lines += ["## Numbers", "", f"![Robust accuracy against the radius]({FIGURE_FILENAME})", ""]
    for task in _tasks(card):
        lines += [f"Task `{task}`:", "",
                  "| head | attack | norm | epsilon | steps | clean | robust | images |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in card["metrics"]:
            if m.get("task", "labels") == task:
                a = m["attack"]
                lines.append(f"| {m['head']} | {a['name']} | {_NORM_NAMES[a['norm']]} "
                             f"| {_epsilon(a['epsilon'], a['norm'])} | {a.get('steps', '-')} "
                             f"| {_percent(m['clean_accuracy'])} | {_percent(m['robust_accuracy'])} "
                             f"| {m['num_examples']} |")
        lines.append("")
    lines += ["## Limits", ""] + [f"- {limit}" for limit in _limits(card, top or pgd)] + [""]
    return "\n".join(lines)


def _serving_lines(name, serving):
    if not serving:
        return []
    shape = "x".join(str(d) for d in serving["input"]["shape"][1:])
    signatures = "; ".join(f"`{sig}` -> {', '.join(f'`{o}`' for o in outputs)}"
                           for sig, outputs in serving["signatures"].items())
    return ["## Serve it", "",
            f"`serving/` is a TF Serving base path. Input `{serving['input']['name']}`: float32 "
            f"images `[batch, {shape}]` in [0, 1]; signatures {signatures}.", "",
            "```bash",
            f'docker run -p 8501:8501 -v "$PWD/zoo/{name}/serving:/models/{name}" '
            f"-e MODEL_NAME={name} tensorflow/serving",
            "```", ""]


def _limits(card, best):
    metrics = card["metrics"]
    limits = []
    if best:
        n, p = best["num_examples"], best["robust_accuracy"]
        limits.append(f"Measured on the first {n} test images: the headline's standard error is "
                      f"about {_percent(math.sqrt(p * (1 - p) / n))}.")
    small = sorted({(m["attack"]["name"], m["num_examples"]) for m in metrics
                    if best and m["num_examples"] < best["num_examples"]})
    if small:
        limits.append("Costly attacks ran on fewer images: "
                      + ", ".join(f"{a} on {n}" for a, n in small) + ".")
    heads = sorted({m["head"] + (" (fine-tuned)" if m.get("fine_tune") else "") for m in metrics})
    limits.append(f"Robustness was measured through the {', '.join(heads)} head(s) on the "
                  "encoder; other heads and fine-tuning were not measured.")
    attacks = sorted({m["attack"]["name"] for m in metrics})
    limits.append(f"Only these attacks ran: {', '.join(attacks)}. A stronger or adaptive "
                  "attack can only lower the robust accuracy.")
    training = card["training"]
    limits.append(f"Trained on {training.get('train_examples') or 'all the training'} images "
                  f"({_cost(training)}).")
    return limits


def render_sweep(card):
    """An SVG of robust accuracy against the radius: one panel per norm, one line per attack
    and task with at least two radii (the clean accuracy at radius 0)."""
    panels = {}
    for m in card["metrics"]:
        a = m["attack"]
        key = (m.get("task", "labels"), m["head"], a["name"])
        panels.setdefault(a["norm"], {}).setdefault(key, []).append(
            (a["epsilon"], m["robust_accuracy"], m["clean_accuracy"]))
    panels = {norm: {k: sorted(v) for k, v in lines.items() if len({e for e, _, _ in v}) > 1}
              for norm, lines in sorted(panels.items(),
                                        key=lambda kv: kv[0] != card["threat_model"]["norm"])}
    panels = {norm: lines for norm, lines in panels.items() if lines}
    width, height, left, top, plot_w, plot_h = 300, 220, 50, 30, 230, 150
    legend = sorted({key for lines in panels.values() for key in lines})
    total_w = max(1, len(panels)) * width + 230
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{total_w}" height="{height}" fill="white"/>']
    if not panels:
        out.append(f'<text x="20" y="{height // 2}">No attack ran at more than one radius.</text>')
    for i, (norm, lines) in enumerate(panels.items()):
        x0 = i * width + left
        x_max = max(e for points in lines.values() for e, _, _ in points)
        x_of = lambda e: x0 + plot_w * e / x_max  # noqa: E731
        y_of = lambda acc: top + plot_h * (1 - acc)  # noqa: E731
        out.append(f'<text x="{x0}" y="{top - 12}" font-weight="bold">{card["name"]}: '
                   f'{_NORM_NAMES[norm]}</text>')
        for acc in (0, 0.25, 0.5, 0.75, 1):
            out.append(f'<line x1="{x0}" x2="{x0 + plot_w}" y1="{y_of(acc):.1f}" '
                       f'y2="{y_of(acc):.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{x0 - 6}" y="{y_of(acc) + 4:.1f}" text-anchor="end">'
                       f'{acc:.2f}</text>')
        radii = sorted({0.0} | {e for points in lines.values() for e, _, _ in points})
        for e in radii:
            out.append(f'<text x="{x_of(e):.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                       f'{_epsilon(e, norm)}</text>')
        out.append(f'<text x="{x0 + plot_w / 2:.1f}" y="{top + plot_h + 30}" '
                   f'text-anchor="middle">epsilon</text>')
        for key, points in lines.items():
            style = _style(legend.index(key), key[0])
            coords = [(0.0, points[0][2])] + [(e, robust) for e, robust, _ in points]
            path = " ".join(f"{x_of(e):.1f},{y_of(acc):.1f}" for e, acc in coords)
            out.append(f'<polyline points="{path}" fill="none" {style}/>')
    for j, key in enumerate(legend):
        x, y = max(1, len(panels)) * width + 10, top + 14 * j
        out.append(f'<line x1="{x}" x2="{x + 22}" y1="{y - 4}" y2="{y - 4}" '
                   f'{_style(j, key[0])}/>')
        out.append(f'<text x="{x + 28}" y="{y}">{key[0]}: {key[2]} ({key[1]})</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _style(index, task):
    dash = "" if task == "labels" else ' stroke-dasharray="5,3"'
    return f'stroke="{_COLORS[index % len(_COLORS)]}" stroke-width="2"{dash}'


def _tasks(card):
    tasks = []
    for m in card["metrics"]:
        if m.get("task", "labels") not in tasks:
            tasks.append(m.get("task", "labels"))
    return tasks


def _epsilon(eps, norm):
    """`8/255` for the usual L-inf radii of 8-bit images, else the plain number."""
    k = eps * 255
    if norm == "linf" and 0 < eps < 0.2 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:g}"


def _threat(threat):
    return f"{_NORM_NAMES[threat['norm']]} {_epsilon(threat['epsilon'], threat['norm'])}"


def _attack(attack):
    steps = f"-{attack['steps']}" if attack.get("steps", 1) > 1 else ""
    return f"{attack['name']}{steps}"


def _percent(x):
    return f"{100 * x:.1f}%"


def _cost(training):
    seconds = training["wall_clock_seconds"]
    took = (f"{seconds / 3600:.1f} h" if seconds >= 3600 else
            f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s")
    where = f" on {training['hardware']}" if training.get("hardware") else ""
    # A second stage or a student: its time does not include the encoder it needed first.
    start = f" from `{training['init_encoder']}`" if training.get("init_encoder") else ""
    teacher = f", teacher `{training['teacher']}`" if training.get("teacher") else ""
    return f"{training['epochs']} epochs{start}{teacher}, {took}{where}"


def _value(value):
    return f"`{value}`" if isinstance(value, str) else f"{value:g}" if isinstance(
        value, float) else str(value)
