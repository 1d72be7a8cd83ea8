r"""The fixed-budget comparison of the natural-images search: robust accuracy against pretraining cost.

Cost is counted in plain-SimCLR training steps, so it does not depend on the
machine's load: each configuration's step time relative to a SimCLR step is
measured once in one process, the configurations interleaved (`--measure`,
written to --costs), and a run's cost is its number of steps times that
ratio, plus what it was built on (DeACL's teacher, a first stage it started
from). The table ranks every run of --results (JSON lines of
`benchmarks/ablation.py`) by its linear probe's robust accuracy at --epsilon
and writes one JSON line per run (--output) and a figure (--figure).

    python benchmarks/budget.py --measure        # step-cost ratios of the proxy's configurations
    python benchmarks/budget.py                  # the table, JSON lines and figure
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools
import io
import json
import pathlib
import statistics
import time

import numpy as np
from absl import app, flags
from matplotlib.figure import Figure

from tarrl_tf import files

REPO = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_boolean("measure", False, "Measure the step-cost ratios (minutes) instead of ranking.")
flags.DEFINE_list("results", [str(REPO / "benchmarks" / "cifar_proxy.jsonl")],
                  "JSON lines files of the runs to rank (the proxy's settings, any number of files).")
flags.DEFINE_string("costs", str(REPO / "benchmarks" / "cifar_proxy_costs.json"), "Step-cost ratios.")
flags.DEFINE_string("output", str(REPO / "benchmarks" / "cifar_proxy_budget.jsonl"), "Ranked runs.")
flags.DEFINE_string("figure", str(REPO / "benchmarks" / "figures" / "cifar_proxy_budget.png"),
                    "Robust accuracy against cost.")
flags.DEFINE_float("epsilon", 0.0313725, "The radius robust accuracy is ranked at.")
flags.DEFINE_string("zoo_dir", str(REPO / "zoo"), "Zoo of the entries runs were built on.")
flags.DEFINE_enum("rank_by", "pgd", ["pgd", "suite"],
                  "Rank by the PGD row, or by the suite's worst case (runs evaluated with --suite).")
flags.DEFINE_list("names", None, "Rank only these runs (default: every run of --results).")
flags.DEFINE_string("task", "labels", "The downstream task ranked (runs record theirs; none: labels).")
flags.DEFINE_integer("width", 8, "Proxy ResNet width (--measure).")
flags.DEFINE_integer("batch_size", 256, "Images per step (--measure).")
flags.DEFINE_integer("rounds", 12, "Timed rounds per configuration after 3 warm-up rounds (--measure).")
FLAGS = flags.FLAGS

# What a step's cost depends on: the method and, for TARRL, the estimator's settings.
COST_KEYS = ("method", "estimator", "steps", "regularized_fraction", "detach_anchor",
             "shared_statistics", "keep")
# The configurations --measure times (TARRL's weight does not change the cost).
CONFIGURATIONS = [
    {"method": "simclr"},
    {"method": "tarrl", "estimator": "pgd", "steps": 1},
    {"method": "tarrl", "estimator": "pgd", "steps": 3},
    {"method": "tarrl", "estimator": "pgd", "steps": 5},
    {"method": "tarrl", "estimator": "pgd", "steps": 3, "detach_anchor": True},
    {"method": "tarrl", "estimator": "pgd", "steps": 3, "regularized_fraction": 0.5},
    {"method": "tarrl", "estimator": "persistent_pgd", "steps": 1},
    {"method": "tarrl", "estimator": "persistent_pgd", "steps": 1, "regularized_fraction": 0.5},
    {"method": "tarrl", "estimator": "fgsm", "steps": 1},
    {"method": "tarrl", "estimator": "pgd", "steps": 3, "shared_statistics": True},
    {"method": "tarrl", "estimator": "pgd", "steps": 3, "shared_statistics": True,
     "keep_weight": 10.0},
    {"method": "acl", "steps": 3},
    {"method": "deacl", "steps": 3},
    {"method": "supervised_at", "steps": 3},
]


def cost_key(run):
    """The part of a run (an ablation line or a configuration) that sets its step cost."""
    method = run.get("method", "tarrl")
    if method == "tarrl" and not run.get("weight", 1.0):
        method = "simclr"
    if method == "simclr":
        return "simclr"
    values = {"method": method, "steps": run.get("steps", 3)}
    if method == "tarrl":
        values.update(estimator=run.get("estimator", "pgd"),
                      regularized_fraction=run.get("regularized_fraction", 1.0),
                      detach_anchor=bool(run.get("detach_anchor", False)))
        # Named only when on, so the keys measured before these options existed stay valid.
        if run.get("shared_statistics"):
            values["shared_statistics"] = True
        if run.get("keep_weight"):
            values["keep"] = True  # the frozen reference's forward pass of the first view
    return ",".join(f"{k}={values[k]}" for k in COST_KEYS if k in values)


def measure():
    import keras
    import tensorflow as tf

    from tarrl_tf import data, encoders, training

    shape, epsilon = (32, 32, 3), 8 / 255
    images = np.random.default_rng(0).random((FLAGS.batch_size, *shape), dtype=np.float32)
    labels = np.arange(FLAGS.batch_size) % 10
    functions = {}
    for config in CONFIGURATIONS:
        keras.utils.set_random_seed(0)

        def encoder():
            return encoders.cifar_resnet(input_shape=shape, width=FLAGS.width)

        method = config["method"]
        options = {k: v for k, v in config.items() if k not in ("method", "steps")}
        needs = {"teacher": encoder()} if method == "deacl" else {}
        if options.get("keep_weight"):
            needs["reference"] = encoder()
        if method == "supervised_at":
            needs["num_classes"] = 10
        if options.get("estimator") == "persistent_pgd":
            options["num_examples"] = FLAGS.batch_size
        model = training.build(method, encoder(), epsilon=epsilon, norm="inf",
                               steps=config.get("steps", 3), seed=0, **needs, **options)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        if method == "supervised_at":
            batch = (tf.constant(images), tf.constant(labels))
        elif options.get("estimator") == "persistent_pgd":
            batch = (tf.constant(images), tf.range(FLAGS.batch_size, dtype=tf.int64))
        else:
            batch = tf.constant(images)
        model.make_train_function()
        functions[cost_key(config)] = (model.train_function, batch)
    times = {key: [] for key in functions}
    for round_ in range(FLAGS.rounds + 3):
        # Round-robin, so load from other processes hits every configuration alike.
        for key, (function, batch) in functions.items():
            start = time.perf_counter()
            float(function(iter([batch]))["loss"])
            if round_ >= 3:  # the first rounds trace and warm up
                times[key].append(time.perf_counter() - start)
    simclr = statistics.median(times["simclr"])
    ratios = {key: round(statistics.median(t) / simclr, 3) for key, t in times.items()}
    result = {"architecture": "cifar_resnet", "width": FLAGS.width, "batch_size": FLAGS.batch_size,
              "rounds": FLAGS.rounds, "simclr_step_seconds": round(simclr, 4), "ratios": ratios,
              "command": f"python benchmarks/budget.py --measure --width={FLAGS.width} "
                         f"--batch_size={FLAGS.batch_size} --rounds={FLAGS.rounds}"
                         + _relative_flag("costs", FLAGS.costs)}
    files.write_atomic(FLAGS.costs, json.dumps(result, indent=1) + "\n")
    for key, ratio in ratios.items():
        print(f"{key:80s} {ratio:5.2f}x simclr")


def _relative_flag(name, path):
    """` --name=path` with the path relative to the repository (none for the default)."""
    if path == flags.FLAGS[name].default:
        return ""
    path = pathlib.Path(path).resolve()
    return f" --{name}={path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}"


def rank():
    costs = json.loads(pathlib.Path(FLAGS.costs).read_text())["ratios"]
    lines = [json.loads(line) for path in FLAGS.results
             for line in pathlib.Path(path).read_text().splitlines() if line.strip()]
    # One run per name and task: a later line of the same encoder (a suite's evaluation) adds
    # its fields. A line that trained nothing (--evaluate_encoder) costs its zoo entry's training.
    runs, trained = {}, {}
    for line in lines:
        key = (line["name"], line.get("task", "labels"))
        runs[key] = {**runs.get(key, {}), **line}
        if "epochs" in line:
            trained.setdefault(line["name"], line)

    def training_of(run):
        if run["name"] in trained:
            return trained[run["name"]]
        if run.get("encoder"):
            return zoo_run(run["encoder"])
        return run

    def cost(run):
        key = cost_key(run)
        if key not in costs:
            raise ValueError(f"No measured step cost for {key!r} ({run['name']}): run --measure "
                             "with that configuration")
        steps = run["epochs"] * (run["train_examples"] // run["batch_size"])
        total = steps * costs[key]
        for built_on in (run.get("init_encoder"), run.get("teacher")):
            if built_on:  # <runs_dir>/<name>/encoder.keras of an earlier run, or a zoo entry
                earlier = trained.get(pathlib.Path(built_on).parent.name) or zoo_run(built_on)
                total += cost(earlier)
        return total

    if FLAGS.names:
        unknown = sorted(set(FLAGS.names) - {name for name, _ in runs})
        if unknown:
            raise ValueError(f"--names: no run {unknown} in --results")
    ranked = []
    for (name, task), run in runs.items():
        if task != FLAGS.task or (FLAGS.names and name not in FLAGS.names):
            continue
        training = training_of(run)
        ranked.append({
            "name": name, "seed": training.get("seed", run.get("seed", 0)),
            "method": "simclr" if cost_key(training) == "simclr" else training.get("method",
                                                                                  "tarrl"),
            "task": task, "cost_simclr_steps": round(cost(training)),
            "clean_accuracy": run["clean_accuracy"], **robust_accuracy(run, str(FLAGS.epsilon)),
            "epsilon": FLAGS.epsilon})
    if not ranked:
        raise ValueError(f"No run of task {FLAGS.task!r} in --results")
    ranked.sort(key=lambda r: (-r["robust_accuracy"], r["cost_simclr_steps"]))
    files.write_atomic(FLAGS.output, "".join(json.dumps(r) + "\n" for r in ranked))
    print(_table(ranked))
    _figure(ranked)


def _table(ranked):
    """The ranking as Markdown; ranked by a suite, the PGD row of the same lines beside it."""
    by_suite = FLAGS.rank_by == "suite"
    first = ranked[0]
    pgd = f"{first['pgd_eval_attack']}-{first['pgd_eval_steps']}" if by_suite else "robust"
    header = ["run", "method", "cost (SimCLR steps)", "clean", pgd]
    if by_suite:
        header.append("suite worst case")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in ranked:
        cells = [r["name"], r["method"], str(r["cost_simclr_steps"]), f"{r['clean_accuracy']:.3f}",
                 f"{r['pgd_robust_accuracy' if by_suite else 'robust_accuracy']:.3f}"]
        if by_suite:
            cells.append(f"{r['robust_accuracy']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def zoo_run(name):
    """A zoo entry's training as a run of its own (what a second stage built on it paid)."""
    from tarrl_tf import zoo

    try:
        card = zoo.info(name, zoo_dir=FLAGS.zoo_dir)
    except zoo.ZooError as error:
        raise ValueError(f"{name!r} is neither a run of --results nor a zoo entry: {error}")
    regularizer = card.get("regularizer") or {}
    # What the entry was built on (DeACL's teacher, a first stage) is in its experiments row.
    row = _experiment_rows().get(name, {})
    return {"name": name, "method": card["method"], "weight": regularizer.get("weight", 0.0),
            "steps": regularizer.get("steps", 3), "estimator": regularizer.get("estimator", "pgd"),
            "shared_statistics": regularizer.get("shared_statistics", False),
            "keep_weight": regularizer.get("keep_weight", 0.0),
            **{k: row[k] for k in ("teacher", "init_encoder") if row.get(k)},
            **{k: card["training"][k] for k in ("epochs", "train_examples", "batch_size")}}


@functools.cache
def _experiment_rows():
    from tarrl_tf import pipeline

    return pipeline.load_rows(REPO / "benchmarks" / "experiments.json")


def robust_accuracy(run, epsilon):
    """The run's strongest measured robust accuracy at `epsilon`, with the attack that gave it.

    With `--rank_by=suite` a run evaluated with a suite (`ablation.py --suite`) is
    ranked by the suite's per-image worst case on all attacked images (when its
    Square saw a subset: the gradient attacks' worst case on every image, the
    larger sample); `--rank_by=pgd` ranks every run by its PGD row.
    """
    fields = {"eval_examples": run["eval_examples"]}
    if FLAGS.rank_by == "suite":
        if "worst_case" not in run:
            raise ValueError(f"{run['name']} has no suite evaluation: re-evaluate it with "
                             "benchmarks/ablation.py --evaluate_only --suite=..., or "
                             "--rank_by=pgd")
        on_all = run.get("worst_case_on_all", {})
        value = on_all.get(epsilon, run["worst_case"][epsilon])
        return {"robust_accuracy": value, "eval_attack": f"{run['suite']} suite worst case",
                "eval_steps": None, **fields,
                # The PGD row of the same lines, so one table shows how much the suite adds.
                "pgd_robust_accuracy": run["robust_accuracy"][epsilon],
                "pgd_eval_attack": run["eval_attack"], "pgd_eval_steps": run["eval_steps"]}
    return {"robust_accuracy": run["robust_accuracy"][epsilon], "eval_attack": run["eval_attack"],
            "eval_steps": run["eval_steps"], **fields}


def _short(name):
    for prefix in ("cifar_proxy_", "zoo_two_stage_", "zoo_cifar10_resnet_", "zoo_"):
        name = name.removeprefix(prefix)
    return name


def _figure(ranked):
    figure = Figure(figsize=(6.5, 4.2))
    axes = figure.subplots()
    for method in sorted({r["method"] for r in ranked}):
        points = [r for r in ranked if r["method"] == method]
        axes.scatter([r["cost_simclr_steps"] for r in points],
                     [r["robust_accuracy"] for r in points], label=method)
        for r in points:
            axes.annotate(_short(r["name"]), (r["cost_simclr_steps"],
                          r["robust_accuracy"]), fontsize=6, xytext=(3, 3),
                          textcoords="offset points")
    first = ranked[0]
    axes.set_xlabel("pretraining cost (plain-SimCLR steps)")
    attack = first["eval_attack"] + (f"-{first['eval_steps']}" if first["eval_steps"] else "")
    axes.set_ylabel(f"robust accuracy ({attack}, eps {FLAGS.epsilon:.4g})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    files.write_atomic(FLAGS.figure, buffer.getvalue())


def main(argv):
    del argv
    measure() if FLAGS.measure else rank()


if __name__ == "__main__":
    app.run(main)
