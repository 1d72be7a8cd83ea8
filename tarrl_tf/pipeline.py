"""The zoo pipeline: one row of an experiments file trained, evaluated and published.

Rows are data (`benchmarks/experiments.json`): method, dataset, architecture,
training budget, threat model, regularizer settings and the evaluation; an
optional "mixed_precision" (`"bfloat16"`) trains the networks in bfloat16
(`tarrl_tf.precision`; the encoder is saved in float32). One
`run_row` pretrains the row's encoder, writes it and one evaluation report
per task to `<output_dir>/<row>/`, and publishes the zoo entry `<row>` with
its model card. `reevaluate_row` trains nothing: it measures a published
entry anew with the row's current evaluation and replaces the entry, keeping
the card's training facts. `benchmarks/reproduce.py` is the command around it.

Example:
```python
from tarrl_tf import pipeline

rows = pipeline.load_rows("benchmarks/experiments.json")
settings = pipeline.Settings(datasets_dir="../shared/datasets", output_dir="runs/reproduce",
                             zoo_dir="zoo")
pipeline.run_row(rows["mnist_cnn_tarrl_linf03"], settings)
```
"""

import dataclasses
import json
import pathlib

import keras
import tensorflow as tf

from tarrl_tf import attacks, data, evaluation, training, zoo
from tarrl_tf.evaluation import reports
from tarrl_tf.robustness import regularizers
from tarrl_tf.training import distribute, pretraining
from tarrl_tf.zoo import pages
from tarrl_tf.zoo.card import card_metrics
from tarrl_tf.zoo.headline import card_headline
from tarrl_tf.zoo.publish import create_zoo_entry

# `quick` shrinks a row to check the pipeline in minutes (never for published numbers).
QUICK_TRAINING = {"train_examples": 512, "epochs": 1, "batch_size": 128}
QUICK_EVALUATION = {"num_examples": 100, "attack_steps": 5, "head_epochs": 5, "spsa_examples": 10,
                    "subset_examples": 10}
# The card facts a re-evaluation keeps from the published entry.
KEPT_CARD_FACTS = ("dataset", "architecture", "method", "regularizer", "threat_model", "training")
# Keys of a row's "regularizer" that are not arguments of the training model.
_ROW_ONLY_KEYS = ("steps", "warmup_epochs")
# Row keys that name another encoder the row needs before it trains.
_SOURCE_KEYS = ("init_encoder", "teacher")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where a pipeline run reads and writes, and how.

    Attributes:
        datasets_dir: folder of `<name>/<name>.npz` offline datasets.
        output_dir: encoders and reports go to `<output_dir>/<row>/`.
        zoo_dir: the zoo to publish into (and, for `reevaluate_row`, to read from).
        publish: publish the zoo entry.
        replace: replace a published entry of the same name (else refuse to).
        quick: tiny budgets (`QUICK_TRAINING`, `QUICK_EVALUATION`).
        strategy: the `tf.distribute` strategy training runs under, by name
            (`tarrl_tf.training.distribute.STRATEGIES`); the row's batch size is global.
    """

    datasets_dir: str
    output_dir: str
    zoo_dir: str = None
    publish: bool = True
    replace: bool = False
    quick: bool = False
    strategy: str = "default"


def load_rows(path):
    """The rows of an experiments file, by name."""
    rows = json.loads(pathlib.Path(path).read_text())["rows"]
    return {row["name"]: row for row in rows}


def dataset_source(dataset, datasets_dir):
    """The `npz:` source of a dataset's offline copy; an error naming the file if it is absent."""
    path = pathlib.Path(datasets_dir) / dataset / f"{dataset}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the offline copy of {dataset!r} is needed")
    return f"npz:{path}"


def prepared(row, settings):
    """The row as it will run: shrunk by `QUICK_*` with `settings.quick`.

    A row to publish must name a suite in its evaluation: its card's headline
    is the suite's worst case (refused here, before any training).
    """
    suite = row.get("evaluation", {}).get("suite")
    if settings.publish and suite not in attacks.SUITES:
        raise ValueError(
            f"row {row['name']!r}: a published card needs a headline, the worst case of an "
            f"attack suite; its evaluation names none of {list(attacks.SUITES.names())} "
            f"(\"suite\": {suite!r})")
    if settings.quick:
        evaluation = {**row["evaluation"], **QUICK_EVALUATION}
        if evaluation.get("suite"):
            evaluation["suite"] = "quick"
        row = {**row, **QUICK_TRAINING, "evaluation": evaluation}
    return row


def train(row, images, labels, run_dir, settings):
    """Trains the row's encoder with its registered method; returns `(encoder, history, seconds)`.

    Models and optimizer are built in the scope of `settings.strategy`.
    """
    with distribute.make_strategy(settings.strategy).scope():
        return _train(row, images, labels, run_dir, settings)


def _train(row, images, labels, run_dir, settings):
    threat, regularizer = row["threat_model"], row.get("regularizer", {})
    seed = row.get("seed", 0)
    if regularizer.get("keep_weight") and not row.get("init_encoder"):
        raise ValueError(f"row {row['name']!r}: keep_weight keeps the encoder near the one it "
                         "starts from, so it needs an init_encoder")
    encoder = pretraining.make_encoder(images.shape[1:], architecture=row["architecture"],
                                       width=row.get("width"), norm=row.get("normalization"),
                                       seed=seed)
    first_stage = None
    if row.get("init_encoder"):
        # Two stages: start from a trained encoder (e.g. plain SimCLR) instead of from scratch.
        first_stage = _load_encoder(row["init_encoder"], settings)
        _copy_weights(first_stage, encoder)
    method = training.METHODS.get(row["method"])
    steps_per_epoch = len(images) // row["batch_size"]
    needs = {}
    if "teacher" in method.needs:
        needs["teacher"] = _load_encoder(row["teacher"], settings)
    if "num_classes" in method.needs:
        needs["num_classes"] = int(labels.max()) + 1
    options = {k: v for k, v in regularizer.items() if k not in _ROW_ONLY_KEYS}
    if "estimator" in options and regularizers.ESTIMATORS.get(options["estimator"]).needs_indices:
        options["num_examples"] = len(images)
    if options.get("keep_weight"):
        # The loaded first stage stays as it was (its weights were copied): the frozen reference.
        options["reference"] = first_stage
    model = training.build(
        row["method"], encoder, epsilon=threat["epsilon"], norm=threat["norm"],
        steps=regularizer.get("steps", 5), seed=seed,
        epsilon_warmup_steps=regularizer.get("warmup_epochs", 0) * steps_per_epoch,
        mixed_precision=row.get("mixed_precision"), **needs, **options)
    distribute.check_global_batch(row["batch_size"], tf.distribute.get_strategy())

    def dataset(first_epoch):
        # Epoch e's order follows from (seed, e): the same on any number of devices and after
        # a resume. Full batches only, labeled or not, so each splits evenly over the replicas.
        return data.epoch_batches(
            images, labels if method.labeled else None, batch_size=row["batch_size"], seed=seed,
            epochs=row["epochs"], first_epoch=first_epoch,
            with_indices=model.takes_indices)

    history, seconds = pretraining.fit_model(
        model, dataset, steps_per_epoch=steps_per_epoch, epochs=row["epochs"],
        learning_rate=row["learning_rate"], verbose=2,
        backup_dir=distribute.worker_path(str(run_dir / "backup"), tf.distribute.get_strategy()))
    return encoder, history, seconds


def _precision_fact(row):
    # Only rows that train in mixed precision say so; float32 is the default.
    return {"mixed_precision": row["mixed_precision"]} if row.get("mixed_precision") else {}


def _source_facts(row):
    # A card says which encoder it started from or distilled from (a file by its name only:
    # no machine path goes into a card); its cost includes that encoder's.
    return {key: pathlib.Path(row[key]).name if row[key].endswith(".keras") else row[key]
            for key in _SOURCE_KEYS if row.get(key)}


def _load_encoder(name, settings):
    """An encoder named by a row (a teacher, a first stage): a `.keras` file, the row's encoder
    trained in this output folder, or the zoo entry of that name."""
    for path in _source_paths(name, settings):
        if path.suffix == ".keras" and path.is_file():
            return keras.models.load_model(path)
    return zoo.load(name, zoo_dir=settings.zoo_dir)


def _source_paths(name, settings):
    return pathlib.Path(name), pathlib.Path(settings.output_dir) / name / "encoder.keras"


def _copy_weights(source, target):
    if len(source.weights) != len(target.weights) or any(
            s.shape != t.shape for s, t in zip(source.weights, target.weights)):
        raise ValueError(f"init_encoder {source.name!r} does not fit the row's architecture "
                         f"{target.name!r} (different weights)")
    target.set_weights(source.get_weights())


def run_row(row, settings):
    """Trains, evaluates and (with `settings.publish`) publishes one row; returns the reports.

    Under `multi_worker` every worker trains; the chief alone saves, evaluates and
    publishes (the others return `{}`).
    """
    row = prepared(row, settings)
    if settings.publish and not settings.replace:
        check_unpublished(row["name"], settings.zoo_dir)  # Before hours of training, not after.
    run_dir = pathlib.Path(settings.output_dir) / row["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    images, labels = data.load_arrays(dataset_source(row["dataset"], settings.datasets_dir),
                                      "train", max_examples=row.get("train_examples"))
    print(f"\n== {row['name']}: {row['method']} on {len(images)} {row['dataset']} images")
    encoder, history, seconds = train(row, images, labels, run_dir, settings)
    if not distribute.is_chief(distribute.make_strategy(settings.strategy)):
        return {}  # The chief (worker 0) saves, evaluates and publishes.
    encoder.save(run_dir / "encoder.keras")
    if settings.strategy != "default":
        # Evaluated outside the strategy: its passes must not wait for replicas or workers.
        encoder = keras.models.load_model(run_dir / "encoder.keras")
    results, head = evaluate_row(
        row, encoder, run_dir, settings, pretraining_seconds=seconds,
        final_training_metrics={k: v[-1] for k, v in history.items()})
    if settings.publish:
        threat = row["threat_model"]
        publish(row, encoder, head, results, dict(
            dataset=row["dataset"], architecture=row["architecture"], method=row["method"],
            regularizer=row.get("regularizer", {}),
            threat_model={"norm": threat["norm"], "epsilon": threat["epsilon"]},
            training={"epochs": row["epochs"], "batch_size": row["batch_size"],
                      "wall_clock_seconds": round(seconds, 1),
                      "train_examples": row.get("train_examples") or 0,
                      "learning_rate": row["learning_rate"], "hardware": "2 CPU cores",
                      "command": f"python benchmarks/reproduce.py --row={row['name']}",
                      **_precision_fact(row), **_source_facts(row)},
            notes=row.get("notes")), settings.zoo_dir, replace=settings.replace)
    return results


def reevaluate_row(row, settings, source_zoo):
    """Evaluates the published encoder of `row` (in `source_zoo`) anew and replaces its entry."""
    row = prepared(row, settings)
    name = row["name"]
    card = zoo.info(name, zoo_dir=source_zoo)
    mismatched = [k for k in ("dataset", "architecture", "method") if card[k] != row[k]]
    if mismatched:
        raise ValueError(
            f"Zoo entry {name!r} in {source_zoo} differs from its row in {mismatched}: "
            f"card {[card[k] for k in mismatched]}, row {[row[k] for k in mismatched]}"
        )
    encoder = zoo.load(name, zoo_dir=source_zoo)
    run_dir = pathlib.Path(settings.output_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"\n== {name}: re-evaluating the zoo entry in {source_zoo}")
    results, head = evaluate_row(row, encoder, run_dir, settings, reevaluated_zoo_entry=name,
                                 pretraining_seconds=card["training"]["wall_clock_seconds"])
    if settings.publish:
        facts = {k: card[k] for k in KEPT_CARD_FACTS}
        facts["training"] = {**facts["training"], "evaluation_command":
                             f"python benchmarks/reproduce.py --row={name} --reevaluate"}
        publish(row, encoder, head, results, {**facts, "notes": card.get("notes")},
                settings.zoo_dir, replace=True)
    return results


def evaluate_row(row, encoder, run_dir, settings, **facts):
    """Runs the row's evaluation on each task, writes the reports; returns `(results, head)`.

    `facts` are added to every report. The head shipped is the `labels` task's.
    An evaluation's optional "suite" (`tarrl_tf.attacks.SUITES`) runs at the
    row's threat model ("suite_everywhere": at every threat model of its attacks),
    on the first "suite_examples" test examples (default: all); the card's
    `headline` is its worst case.
    """
    ev = row["evaluation"]
    dataset = dataset_source(row["dataset"], settings.datasets_dir)
    results, head = {}, None
    for task in ev["tasks"]:
        report, _, task_head = evaluation.evaluate_on_dataset(
            encoder, encoder_name=row["name"], dataset=dataset, task=task,
            attack_specs=attack_specs(ev, task), num_examples=ev["num_examples"],
            train_examples=ev.get("head_train_examples"), epochs=ev.get("head_epochs", 30),
            spsa_examples=ev.get("spsa_examples", 100), subset_examples=ev.get("subset_examples"),
            suite=ev.get("suite"), suite_examples=ev.get("suite_examples"),
            suite_threat_models=_suite_threat_models(row), sanity_checks=task == "labels",
            verbose=True)
        report.update(row=row, **facts)
        reports.write_report(report, pathlib.Path(run_dir) / task)
        results[task] = report
        head = task_head if task == "labels" else head
        print(reports.to_markdown(report))
    return results, head


def _suite_threat_models(row):
    # The suite is the costliest part of an evaluation: by default it runs at the card's
    # threat model only (the headline); "suite_everywhere" runs it at every radius.
    if row["evaluation"].get("suite_everywhere"):
        return None
    threat = row["threat_model"]
    return [(threat["norm"], threat["epsilon"])]


def attack_specs(ev, task):
    """The attacks of a row's "evaluation" for one task.

    "attacks" are run at every radius of their norm ("epsilons", "l2_epsilons"),
    except where "attack_epsilons" names an attack's own radii (SPSA at the
    headline radius only); "task_attacks" may give a task fewer attacks (the
    costly CW-L2 on the labels task only). An evaluation's "mixed_precision"
    ("bfloat16") runs the PGD and BIM searches in it (`AttackSpec.precision`).
    """
    specs = []
    for name in ev.get("task_attacks", {}).get(task, ev["attacks"]):
        own = ev.get("attack_epsilons", {}).get(name)
        specs += evaluation.attack_grid([name], own or ev["epsilons"],
                                        l2_epsilons=own or ev.get("l2_epsilons"),
                                        steps=ev.get("attack_steps"),
                                        precision=ev.get("mixed_precision"))
    return specs


def check_sources(rows, settings):
    """Raises a ValueError, before any training, for a row whose first stage or teacher is out of
    reach: not a `.keras` file, not trained in `settings.output_dir`, not in the zoo, and not
    an earlier row of `rows` (run in this order)."""
    published = None
    earlier = set()
    for row in rows:
        for key in _SOURCE_KEYS:
            name = row.get(key)
            if not name or name in earlier or any(
                    path.suffix == ".keras" and path.is_file() for path in _source_paths(name, settings)):
                continue
            if published is None:
                published = set(zoo.list(zoo_dir=settings.zoo_dir))
            if name not in published:
                raise ValueError(
                    f"row {row['name']!r}: its {key} {name!r} is not a .keras file, not trained in "
                    f"{settings.output_dir}, and not in the zoo {zoo.resolve_zoo_dir(settings.zoo_dir)}; "
                    f"run the row {name!r} first in the same command (--row={name} "
                    f"--row={row['name']})")
        earlier.add(row["name"])


def check_unpublished(name, zoo_dir):
    """Raises a ValueError if `name` is published in the zoo already."""
    target = zoo.resolve_zoo_dir(zoo_dir)
    if name in zoo.list(zoo_dir=target):
        raise ValueError(f"zoo entry {name!r} exists in {target}; pass --replace to train it anew "
                         "or --reevaluate to measure it anew")


def publish(row, encoder, head, results, facts, zoo_dir, *, replace=False):
    """Writes the zoo entry `row["name"]` with the card `facts` and the results' metrics."""
    target = zoo.resolve_zoo_dir(zoo_dir)
    if not replace:
        check_unpublished(row["name"], zoo_dir)
    metrics = [item for report in results.values() for item in card_metrics(report)]
    # The suite's worst case at the card's threat model, on the labels task (when it ran).
    headline = card_headline(results["labels"], facts["threat_model"]) if "labels" in results else None
    path = create_zoo_entry(encoder, name=row["name"], metrics=metrics, head=head, headline=headline,
                            head_name="linear", zoo_dir=target, replace=replace, **facts)
    print(f"{'Replaced' if replace else 'Published'} {path}")
    # The pages people browse follow the cards: the index and this entry's page change.
    for page in pages.write_pages(target):
        print(f"Wrote {page}")
    return path
