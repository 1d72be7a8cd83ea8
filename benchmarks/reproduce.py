"""Re-runs any row of the results: pretrain, evaluate downstream, write the zoo entry and card.

Rows are data, in benchmarks/experiments.json. Each run writes its encoder and
one evaluation report per task to --output_dir/<row>/, and (unless --quick)
publishes the zoo entry `<row>` with its model card. `--quick` shrinks
everything (examples, epochs, attack steps) to check the pipeline in minutes,
and writes its zoo entry to a temporary zoo, never to zoo/.

`--reevaluate` trains nothing: it loads the encoder of the published entry
`<row>` from --zoo_dir, runs the row's current "evaluation" on it (the same
code as a full run), writes the reports, and replaces the entry with one that
keeps the old card's training facts, method, regularizer, threat model and
notes, with the new metrics and head (`training.evaluation_command` records
the re-evaluation). With --quick the replaced entry goes to a temporary zoo.

Examples:
    python benchmarks/reproduce.py --list
    python benchmarks/reproduce.py --row=mnist_cnn_tarrl_linf03 --quick
    python benchmarks/reproduce.py --row=mnist_cnn_simclr --row=mnist_cnn_tarrl_linf03
    python benchmarks/reproduce.py --row=mnist_cnn_tarrl_linf03 --reevaluate
    python benchmarks/reproduce.py --row=mnist_cnn_tarrl_linf03 --replace
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import pathlib
import tempfile

import keras
from absl import app, flags

from tarrl_tf import baselines, data, evaluation, export, pretraining, reports, zoo
from tarrl_tf.files import dumps_json, write_atomic

REPO = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_multi_string("row", None, "Row(s) of experiments.json to run.")
flags.DEFINE_boolean("list", False, "List the rows and exit.")
flags.DEFINE_boolean("quick", False, "Tiny budgets, temporary zoo: checks the pipeline in minutes.")
flags.DEFINE_string("experiments", str(REPO / "benchmarks" / "experiments.json"), "Rows file.")
flags.DEFINE_string("datasets_dir", str(REPO.parent / "shared" / "datasets"),
                    "Folder of <name>/<name>.npz offline datasets.")
flags.DEFINE_string("output_dir", None, "Encoders and reports (default: runs/reproduce[_quick]).")
flags.DEFINE_string("zoo_dir", None, "Zoo to publish into (default: zoo/; --quick: a temp zoo).")
flags.DEFINE_boolean("publish", True, "Publish the zoo entry.")
flags.DEFINE_boolean("replace", False,
                     "Train anew and replace the row's published entry (default: refuse to).")
flags.DEFINE_boolean("reevaluate", False,
                     "Re-evaluate the published entry of each --row without training, and "
                     "replace it with the new metrics.")
FLAGS = flags.FLAGS

QUICK_TRAINING = {"train_examples": 512, "epochs": 1, "batch_size": 128}
QUICK_EVALUATION = {"num_examples": 100, "attack_steps": 5, "head_epochs": 5, "spsa_examples": 10,
                    "subset_examples": 10}
# The card facts a re-evaluation keeps from the published entry.
KEPT_CARD_FACTS = ("dataset", "architecture", "method", "regularizer", "threat_model", "training")


def load_rows(path):
    rows = json.loads(pathlib.Path(path).read_text())["rows"]
    return {row["name"]: row for row in rows}


def source(dataset):
    path = pathlib.Path(FLAGS.datasets_dir) / dataset / f"{dataset}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the offline copy of {dataset!r} is needed")
    return f"npz:{path}"


def load_teacher(name):
    """The teacher row's encoder: from this output folder if it was trained here, else the zoo."""
    path = pathlib.Path(FLAGS.output_dir) / name / "encoder.keras"
    if path.exists():
        return keras.models.load_model(path)
    return zoo.load(name, zoo_dir=FLAGS.zoo_dir)


def train(row, images, labels, run_dir):
    """Trains the row's encoder; returns `(encoder, history, seconds)`."""
    threat, reg = row["threat_model"], row.get("regularizer", {})
    encoder = pretraining.make_encoder(images.shape[1:], architecture=row["architecture"],
                                       width=row.get("width"), seed=row.get("seed", 0))
    fit = dict(epochs=row["epochs"], learning_rate=row["learning_rate"],
               backup_dir=str(run_dir / "backup"), verbose=2)
    if row["method"] in ("simclr", "tarrl"):
        weight = reg.get("weight", 0.0) if row["method"] == "tarrl" else 0.0
        regularizer = pretraining.make_regularizer(
            reg.get("estimator", "pgd"), epsilon=threat["epsilon"], norm=threat["norm"],
            steps=reg.get("steps", 5), divergence=reg.get("divergence", "squared_l2"))
        model, history, seconds = pretraining.pretrain(
            encoder, images, regularizer=regularizer, weight=weight,
            batch_size=row["batch_size"], warmup_epochs=reg.get("warmup_epochs", 0),
            regularize_on=reg.get("regularize_on", "images"),
            regularized_fraction=reg.get("regularized_fraction", 1.0),
            batch_statistics=reg.get("batch_statistics"), seed=row.get("seed", 0), **fit)
        return encoder, history, seconds
    teacher, options = None, {}
    if row["method"] == "deacl":
        teacher = load_teacher(row["teacher"])
    if "batch_statistics" in reg:  # ACL and DeACL; supervised AT trains in training mode anyway.
        options["batch_statistics"] = reg["batch_statistics"]
    model = baselines.build(
        row["method"], encoder, epsilon=threat["epsilon"], norm=threat["norm"],
        steps=reg.get("steps", 5), teacher=teacher,
        num_classes=int(labels.max()) + 1 if row["method"] == "supervised_at" else None,
        epsilon_warmup_steps=reg.get("warmup_epochs", 0) * (len(images) // row["batch_size"]),
        seed=row.get("seed", 0), **options)
    if row["method"] == "supervised_at":
        dataset = data.supervised_dataset(images, labels, batch_size=row["batch_size"], shuffle=True,
                                          seed=row.get("seed", 0))
    else:
        dataset = data.pretraining_dataset(images, batch_size=row["batch_size"],
                                           seed=row.get("seed", 0))
    history, seconds = pretraining.fit_model(model, dataset,
                                             steps_per_epoch=len(images) // row["batch_size"], **fit)
    return encoder, history, seconds


def prepared(row):
    if FLAGS.quick:
        row = {**row, **QUICK_TRAINING, "evaluation": {**row["evaluation"], **QUICK_EVALUATION}}
    return row


def run(row):
    row = prepared(row)
    if FLAGS.publish and not FLAGS.replace:
        check_unpublished(row["name"])  # Before hours of training, not after.
    run_dir = pathlib.Path(FLAGS.output_dir) / row["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    images, labels = data.load_arrays(source(row["dataset"]), "train",
                                      max_examples=row.get("train_examples"))
    print(f"\n== {row['name']}: {row['method']} on {len(images)} {row['dataset']} images")
    encoder, history, seconds = train(row, images, labels, run_dir)
    encoder.save(run_dir / "encoder.keras")
    results, head = evaluate_row(
        row, encoder, run_dir, pretraining_seconds=seconds,
        final_training_metrics={k: v[-1] for k, v in history.items()})
    if FLAGS.publish:
        threat = row["threat_model"]
        publish(row, encoder, head, results, dict(
            dataset=row["dataset"], architecture=row["architecture"], method=row["method"],
            regularizer=row.get("regularizer", {}),
            threat_model={"norm": threat["norm"], "epsilon": threat["epsilon"]},
            training={"epochs": row["epochs"], "batch_size": row["batch_size"],
                      "wall_clock_seconds": round(seconds, 1),
                      "train_examples": row.get("train_examples") or 0,
                      "learning_rate": row["learning_rate"], "hardware": "2 CPU cores",
                      "command": f"python benchmarks/reproduce.py --row={row['name']}"},
            notes=row.get("notes")), replace=FLAGS.replace)
    return results


def reevaluate(row, source_zoo):
    """Evaluates the published encoder of `row` anew and replaces its zoo entry."""
    row = prepared(row)
    name = row["name"]
    card = zoo.info(name, zoo_dir=source_zoo)
    mismatched = [k for k in ("dataset", "architecture", "method") if card[k] != row[k]]
    if mismatched:
        raise ValueError(
            f"Zoo entry {name!r} in {source_zoo} differs from its row in {mismatched}: "
            f"card {[card[k] for k in mismatched]}, row {[row[k] for k in mismatched]}"
        )
    encoder = zoo.load(name, zoo_dir=source_zoo)
    run_dir = pathlib.Path(FLAGS.output_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"\n== {name}: re-evaluating the zoo entry in {source_zoo}")
    results, head = evaluate_row(row, encoder, run_dir, reevaluated_zoo_entry=name,
                                 pretraining_seconds=card["training"]["wall_clock_seconds"])
    if FLAGS.publish:
        facts = {k: card[k] for k in KEPT_CARD_FACTS}
        facts["training"] = {**facts["training"], "evaluation_command":
                             f"python benchmarks/reproduce.py --row={name} --reevaluate"}
        publish(row, encoder, head, results, {**facts, "notes": card.get("notes")}, replace=True)
    return results


def evaluate_row(row, encoder, run_dir, **facts):
    """Runs the row's evaluation on each task, writes the reports; returns `(results, head)`.

    `facts` are added to every report. The head shipped is the `labels` task's.
    """
    ev = row["evaluation"]
    dataset = source(row["dataset"])
    results, head = {}, None
    for task in ev["tasks"]:
        specs = attack_specs(ev, task)
        report, _, task_head = evaluation.evaluate_on_dataset(
            encoder, encoder_name=row["name"], dataset=dataset, task=task, attack_specs=specs,
            num_examples=ev["num_examples"], train_examples=ev.get("head_train_examples"),
            epochs=ev.get("head_epochs", 30), spsa_examples=ev.get("spsa_examples", 100),
            subset_examples=ev.get("subset_examples"), sanity_checks=task == "labels",
            verbose=True)
        report.update(row=row, **facts)
        reports.write_report(report, run_dir / task)
        results[task] = report
        head = task_head if task == "labels" else head
        print(reports.to_markdown(report))
    return results, head


def attack_specs(ev, task):
    """The attacks of a row's "evaluation" for one task.

    "attacks" are run at every radius of their norm ("epsilons", "l2_epsilons"),
    except where "attack_epsilons" names an attack's own radii (SPSA at the
    headline radius only); "task_attacks" may give a task fewer attacks (the
    costly CW-L2 on the labels task only).
    """
    specs = []
    for name in ev.get("task_attacks", {}).get(task, ev["attacks"]):
        own = ev.get("attack_epsilons", {}).get(name)
        specs += evaluation.attack_grid([name], own or ev["epsilons"],
                                        l2_epsilons=own or ev.get("l2_epsilons"),
                                        steps=ev.get("attack_steps"))
    return specs


def check_unpublished(name):
    target = zoo.resolve_zoo_dir(FLAGS.zoo_dir)
    if name in zoo.list(zoo_dir=target):
        raise ValueError(f"zoo entry {name!r} exists in {target}; pass --replace to train it anew "
                         "or --reevaluate to measure it anew")


def publish(row, encoder, head, results, facts, *, replace=False):
    """Writes the zoo entry `row["name"]` with the card `facts` and the results' metrics."""
    target = zoo.resolve_zoo_dir(FLAGS.zoo_dir)
    if not replace:
        check_unpublished(row["name"])
    metrics = [item for report in results.values() for item in export.card_metrics(report)]
    path = export.create_zoo_entry(
        encoder, name=row["name"], metrics=metrics, head=head, head_name="linear",
        zoo_dir=target, replace=replace, **facts)
    print(f"{'Replaced' if replace else 'Published'} {path}")


def main(argv):
    del argv
    rows = load_rows(FLAGS.experiments)
    if FLAGS.output_dir is None:
        FLAGS.output_dir = str(REPO / "runs" / ("reproduce_quick" if FLAGS.quick else "reproduce"))
    source_zoo = zoo.resolve_zoo_dir(FLAGS.zoo_dir)  # where --reevaluate finds the entries
    # Quick numbers never replace real ones: a quick re-evaluation publishes into a temp zoo too.
    if FLAGS.quick and (FLAGS.zoo_dir is None or FLAGS.reevaluate):
        FLAGS.zoo_dir = tempfile.mkdtemp(prefix="tarrl_quick_zoo_")
        write_atomic(os.path.join(FLAGS.zoo_dir, zoo.MANIFEST_FILENAME), dumps_json(zoo.empty_manifest()))
    if FLAGS.list or not FLAGS.row:
        for name, row in rows.items():
            print(f"{name:36s} {row['method']:14s} {row['dataset']:14s} "
                  f"{row['threat_model']['norm']} eps={row['threat_model']['epsilon']}")
        return
    unknown = [name for name in FLAGS.row if name not in rows]
    if unknown:
        raise ValueError(f"Unknown row(s) {unknown}; see --list")
    for name in FLAGS.row:
        if FLAGS.reevaluate:
            reevaluate(rows[name], source_zoo)
        else:
            run(rows[name])


if __name__ == "__main__":
    app.run(main)
