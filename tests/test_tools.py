"""Tests of the command-line tools `tools.evaluate` and `tools.pretrain` (run as subprocesses,
as a user runs them) and of `tarrl_tf.pretraining`, the library side of `tools.pretrain`.

The tools define absl flags at import, so they are never imported here: two tools in one
process would define the same flag names twice.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import tarrl_tf
from tarrl_tf import divergences, pretraining, regularizers, zoo

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUM_CLASSES = 3
IMAGE_SHAPE = (8, 8, 1)


def run_tool(module, *args, zoo_dir, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", zoo.ZOO_DIR_ENV: str(zoo_dir)}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


def prototype_data(n, rng):
    """Three classes: a fixed random prototype image per class plus noise, as uint8."""
    prototypes = np.random.default_rng(123).uniform(0.2, 0.8, (NUM_CLASSES, *IMAGE_SHAPE))
    y = rng.permutation(np.arange(n) % NUM_CLASSES)
    x = np.clip(prototypes[y] + rng.uniform(-0.08, 0.08, (n, *IMAGE_SHAPE)), 0, 1)
    return np.round(x * 255).astype("uint8"), y.astype("int64")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny npz dataset, an empty zoo, and tiny encoders for 8x8 and 12x12 images."""
    root = tmp_path_factory.mktemp("tools")
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = prototype_data(240, rng), prototype_data(60, rng)
    np.savez(root / "tiny.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (root / "zoo").mkdir()
    (root / "zoo" / zoo.MANIFEST_FILENAME).write_text(json.dumps(zoo.empty_manifest()))
    keras.utils.set_random_seed(0)
    for name, shape in (("encoder.keras", IMAGE_SHAPE), ("encoder12.keras", (12, 12, 1))):
        tarrl_tf.encoders.small_cnn(input_shape=shape, width=4, representation_dim=16).save(
            root / name)
    return {
        "root": root,
        "dataset": f"npz:{root / 'tiny.npz'}",
        "sha256": hashlib.sha256((root / "tiny.npz").read_bytes()).hexdigest(),
        "zoo": root / "zoo",
        "encoder": str(root / "encoder.keras"),
        "encoder12": str(root / "encoder12.keras"),
    }


# --- tools.evaluate -----------------------------------------------------------------------


def test_evaluate_writes_the_report(files, tmp_path):
    out = tmp_path / "out"
    result = run_tool(
        "tools.evaluate", f"--encoder={files['encoder']}", f"--dataset={files['dataset']}",
        "--task=labels", "--head=linear", "--attacks=pgd_linf,fgsm", "--epsilons=0.1,0.2,0.3",
        "--steps=3", "--num_examples=40", "--train_examples=120", "--epochs=5",
        "--batch_size=64", "--nosanity_checks", "--subset_examples=5", f"--output_dir={out}",
        zoo_dir=files["zoo"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["report.json", "report.md", "robust_accuracy.png"]

    report = json.loads((out / "report.json").read_text())
    assert report["encoder"] == files["encoder"]
    assert report["dataset"] == "tiny" and str(files["root"]) not in report["dataset"]
    assert report["dataset_sha256"] == files["sha256"]
    assert report["task"] == "labels" and report["head"] == "linear"
    assert isinstance(report["clean_accuracy"], float) and 0 <= report["clean_accuracy"] <= 1
    assert report["num_examples"] == 40 and report["num_train_examples"] == 120
    rows = report["attacks"]
    assert [(r["name"], r["epsilon"]) for r in rows] == [
        (name, eps) for name in ("pgd_linf", "fgsm") for eps in (0.1, 0.2, 0.3)]
    for row in rows:
        assert row["norm"] == "inf"
        assert row["steps"] == (1 if row["name"] == "fgsm" else 3)
        assert isinstance(row["epsilon"], float) and isinstance(row["steps"], int)
        assert isinstance(row["robust_accuracy"], float)
        assert 0 <= row["robust_accuracy"] <= report["clean_accuracy"]
        assert row["num_examples"] == 40  # --subset_examples only limits cw_l2 and spsa
    assert [(r["norm"], r["epsilon"]) for r in report["robustness"]] == [
        ("inf", 0.1), ("inf", 0.2), ("inf", 0.3)]
    assert all(isinstance(r["R"], float) for r in report["robustness"])
    assert len(report["bound"]) == len(rows) and "estimate" in report["bound_note"]
    assert all(b["bound"] >= b["clean_loss"] for b in report["bound"])
    assert "sanity_checks" not in report  # --nosanity_checks is honoured

    markdown = (out / "report.md").read_text()
    for row in rows:
        assert f"| {row['name']} | inf | {row['epsilon']:.4g} | {row['steps']} |" in markdown
    assert (out / "robust_accuracy.png").read_bytes().startswith(PNG_MAGIC)
    assert "report.json" in result.stdout and "| pgd_linf |" in result.stdout
    # A progress line per attack and per measurement of R, with its rate; a summary at the end.
    assert "pgd_linf eps=0.1: 40 images in " in result.stderr and "fgsm eps=0.3: 40 images" in result.stderr
    assert "R inf eps=0.2: 40 images in " in result.stderr and "images/s)" in result.stderr
    assert result.stdout.rstrip().endswith(f"  {out / 'robust_accuracy.png'}")
    assert "Wrote 3 files:" in result.stdout
    assert "cuInit" not in result.stderr and "retracing" not in result.stderr


def test_evaluate_with_a_suite_reports_its_worst_case(files, tmp_path):
    out = tmp_path / "out"
    result = run_tool(
        "tools.evaluate", f"--encoder={files['encoder']}", f"--dataset={files['dataset']}",
        "--attacks=pgd_linf", "--epsilons=0.3", "--suite=quick", "--num_examples=20",
        "--train_examples=120", "--epochs=5", "--nosanity_checks", f"--output_dir={out}",
        zoo_dir=files["zoo"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["suite"] == "quick"
    assert [r["name"] for r in report["attacks"]] == ["pgd_linf", "apgd_ce", "apgd_t", "square"]
    (worst,) = report["worst_case"]
    assert worst["num_examples"] == 20 and worst["attacks"] == ["apgd_ce", "apgd_t", "square"]
    assert all(worst["robust_accuracy"] <= r["robust_accuracy"] for r in report["attacks"][1:])
    assert "per-image worst case over the `quick` suite" in result.stdout


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_encoder", "No encoder file and no zoo entry named '{root}/nope.keras'"),
        ("missing_npz", "npz file not found: '/nonexistent.npz'"),
        ("unknown_attack", "Unknown attack 'bogus'"),
        ("shape_mismatch", "The encoder takes images of shape (12, 12, 1), but "),
    ],
)
def test_evaluate_fails_clearly(files, tmp_path, case, message):
    args = {
        "encoder": files["encoder"], "dataset": files["dataset"], "attacks": "pgd_linf",
    }
    if case == "missing_encoder":
        args["encoder"] = f"{files['root']}/nope.keras"
    elif case == "missing_npz":
        args["dataset"] = "npz:/nonexistent.npz"
    elif case == "unknown_attack":
        args["attacks"] = "pgd_linf,bogus"
    else:
        args["encoder"] = files["encoder12"]
    out = tmp_path / "out"
    result = run_tool(
        "tools.evaluate", *[f"--{k}={v}" for k, v in args.items()], "--epochs=1", "--steps=1",
        "--num_examples=10", "--nosanity_checks", f"--output_dir={out}", zoo_dir=files["zoo"],
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert message.format(root=files["root"]) in last_line, result.stderr[-2000:]
    if case == "shape_mismatch":
        assert "(8, 8, 1)" in last_line
    assert not out.exists()  # nothing is written for a run that cannot start


# --- tools.pretrain -----------------------------------------------------------------------


def test_pretrain_trains_tarrl_and_simclr_and_prints_them_side_by_side(files, tmp_path):
    out = tmp_path / "runs"
    result = run_tool(
        "tools.pretrain", f"--dataset={files['dataset']}", "--train_examples=64", "--epochs=1",
        "--batch_size=32", "--steps=1", "--width=4", "--num_examples=20", "--attacks=pgd_linf",
        "--epsilons=0.1", "--attack_steps=3", "--head_epochs=3", "--nosanity_checks",
        f"--output_dir={out}", zoo_dir=files["zoo"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for run in ("tarrl", "simclr"):
        run_dir = out / run
        assert {"encoder.keras", "report.json", "report.md", "robust_accuracy.png"} <= set(
            os.listdir(run_dir))
        encoder = keras.models.load_model(run_dir / "encoder.keras")  # no custom_objects
        assert encoder.input_shape == (None, *IMAGE_SHAPE)
        report = json.loads((run_dir / "report.json").read_text())
        assert report["encoder"] == str(run_dir / "encoder.keras")
        assert report["dataset"] == "tiny" and report["dataset_sha256"] == files["sha256"]
        assert report["num_examples"] == 20
        assert [(r["name"], r["epsilon"]) for r in report["attacks"]] == [("pgd_linf", 0.1)]
        assert isinstance(report["pretraining_seconds"], float) and report["pretraining_seconds"] > 0
        assert report["attacks"][0]["steps"] == 3 and "sanity_checks" not in report
    # The two runs train different encoders (the regularizer changes the TARRL run).
    weights = [keras.models.load_model(out / run / "encoder.keras").get_weights()
               for run in ("tarrl", "simclr")]
    assert any(not np.allclose(a, b) for a, b in zip(*weights))

    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| |"))
    assert "tarrl" in header and "simclr" in header
    assert header.index("tarrl") < header.index("simclr")
    for label in ("clean accuracy", "pgd_linf eps=0.1", "R (inf, eps=0.1)", "pretraining seconds"):
        row = next((line for line in lines if line.startswith(f"| {label}")), None)
        assert row is not None, label
        assert row.count("|") == 4, row  # label + one column per run


def test_pretrain_two_stage_starts_tarrl_from_the_simclr_run(files, tmp_path):
    out = tmp_path / "runs"
    result = run_tool(
        "tools.pretrain", f"--dataset={files['dataset']}", "--train_examples=64", "--epochs=6",
        "--batch_size=32", "--steps=1", "--width=4", "--recipe=two_stage",
        "--second_stage_epochs=1", "--noevaluate", f"--output_dir={out}", zoo_dir=files["zoo"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tarrl: weight 10.0, 64 images, 1 epochs from the simclr encoder" in result.stdout
    # The recipe's keep term is on by default in the second stage, and only there.
    simclr_log, tarrl_log = result.stdout.split("== tarrl:")[0], result.stdout.split("== tarrl:")[1]
    assert "keep_loss" in tarrl_log and "keep_loss" not in simclr_log
    # SimCLR trained 6 epochs from the seed's weights; TARRL 1 epoch from SimCLR's: it sits
    # much nearer SimCLR's weights than the common starting point does.
    start = tarrl_tf.training.pretraining.make_encoder(IMAGE_SHAPE, width=4, seed=0)
    simclr, tarrl = (keras.models.load_model(out / run / "encoder.keras") for run in
                     ("simclr", "tarrl"))

    def distance(a, b):
        return max(float(np.max(np.abs(u - v))) for u, v in
                   zip(a.trainable_weights, b.trainable_weights))

    assert distance(tarrl, simclr) < 0.5 * distance(start, simclr), (
        distance(tarrl, simclr), distance(start, simclr))
    assert distance(tarrl, simclr) > 0  # and the second stage trained


def test_pretrain_keep_weight_without_a_first_stage_is_refused_before_training(files, tmp_path):
    out = tmp_path / "runs"
    result = run_tool(
        "tools.pretrain", f"--dataset={files['dataset']}", "--train_examples=64", "--epochs=1",
        "--batch_size=32", "--width=4", "--recipe=scratch", "--keep_weight=5", "--noevaluate",
        f"--output_dir={out}", zoo_dir=files["zoo"],
    )
    assert result.returncode != 0
    assert "--keep_weight=5 needs a first stage to keep near: use --recipe=two_stage" in (
        result.stderr)
    assert "== tarrl" not in result.stdout and not out.exists()


def test_pretrain_recipe_auto_is_two_stage_for_the_cifar_resnet_only():
    from tarrl_tf.training import recipes

    assert recipes.default_recipe("cifar_resnet") == "two_stage"
    assert recipes.default_recipe("small_cnn") == "scratch"
    assert set(recipes.RECIPES.names()) == {"scratch", "two_stage"}
    assert recipes.RECIPES.get("two_stage").keep_weight > 0
    assert recipes.RECIPES.get("scratch").keep_weight == 0
    assert recipes.second_stage_epochs(15) == 5 and recipes.second_stage_epochs(1) == 1
    assert recipes.second_stage_epochs(15, 7) == 7
    with pytest.raises(ValueError, match="second_stage_epochs must be a positive integer"):
        recipes.second_stage_epochs(15, 0)


# --- benchmarks/reproduce.py --reevaluate --------------------------------------------------


@pytest.mark.large
def test_reproduce_reevaluate_replaces_the_zoo_entry(files, tmp_path):
    """Re-evaluates a published entry without training: new metrics and head, old facts."""
    from tarrl_tf import export  # Only this test writes zoo entries.

    name = "tiny_cnn_tarrl_linf01"
    datasets = tmp_path / "datasets"
    (datasets / "tiny").mkdir(parents=True)
    (datasets / "tiny" / "tiny.npz").write_bytes((files["root"] / "tiny.npz").read_bytes())
    zoo_dir = tmp_path / "zoo"
    facts = dict(
        dataset="tiny", architecture="small_cnn", method="tarrl",
        regularizer={"estimator": "pgd", "steps": 1, "weight": 1.0},
        threat_model={"norm": "linf", "epsilon": 0.1},
        training={"epochs": 3, "batch_size": 32, "wall_clock_seconds": 12.0,
                  "command": f"python benchmarks/reproduce.py --row={name}"},
        notes="trained before the re-evaluation",
        headline={"task": "labels", "suite": "quick", "norm": "linf", "epsilon": 0.1,
                  "clean_accuracy": 0.5, "robust_accuracy": 0.2, "num_examples": 60,
                  "attacks": ["apgd_ce", "apgd_t", "square"]})
    old_metrics = [{"head": "linear", "clean_accuracy": 0.5, "robust_accuracy": 0.25,
                    "num_examples": 60, "attack": {"name": "fgsm", "norm": "linf", "epsilon": 0.1}}]
    encoder = keras.models.load_model(files["encoder"])
    export.create_zoo_entry(encoder, name=name, metrics=old_metrics, zoo_dir=zoo_dir, **facts)
    row = {"name": name, "method": "tarrl", "dataset": "tiny", "architecture": "small_cnn",
           "epochs": 3, "batch_size": 32, "learning_rate": 0.001,
           "threat_model": {"norm": "inf", "epsilon": 0.1},
           "evaluation": {"tasks": ["labels"], "attacks": ["fgsm", "spsa"], "epsilons": [0.1],
                          "attack_steps": 2, "num_examples": 20, "head_epochs": 3,
                          "spsa_examples": 4, "subset_examples": 5, "suite": "quick"}}
    unpublished = {**row, "name": "tiny_cnn_simclr", "method": "simclr"}
    experiments = tmp_path / "experiments.json"
    experiments.write_text(json.dumps({"rows": [row, unpublished]}))
    out = tmp_path / "runs"

    def reproduce(row_name):
        return subprocess.run(
            [sys.executable, "benchmarks/reproduce.py", f"--row={row_name}", "--reevaluate",
             f"--experiments={experiments}", f"--datasets_dir={datasets}",
             f"--zoo_dir={zoo_dir}", f"--output_dir={out}"],
            cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True,
            text=True, timeout=300,
        )

    manifest = (zoo_dir / zoo.MANIFEST_FILENAME).read_bytes()
    result = reproduce("tiny_cnn_simclr")
    assert result.returncode != 0
    assert "Unknown zoo model 'tiny_cnn_simclr'" in result.stderr.strip().splitlines()[-1]
    assert (zoo_dir / zoo.MANIFEST_FILENAME).read_bytes() == manifest

    result = reproduce(name)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Replaced {zoo_dir / name}" in result.stdout
    assert not (out / name / "encoder.keras").exists()  # nothing was trained
    report = json.loads((out / name / "labels" / "report.json").read_text())
    assert report["reevaluated_zoo_entry"] == name and report["pretraining_seconds"] == 12.0
    rows = {r["name"]: r for r in report["attacks"]}
    assert rows["fgsm"]["num_examples"] == 20 and rows["spsa"]["num_examples"] == 5

    zoo.verify(name, zoo_dir=zoo_dir)
    card = zoo.info(name, zoo_dir=zoo_dir)
    for key in ("dataset", "architecture", "method", "regularizer", "threat_model", "notes"):
        assert card[key] == facts[key], key
    assert card["training"] == {**facts["training"], "evaluation_command":
                                f"python benchmarks/reproduce.py --row={name} --reevaluate"}
    assert [(m["attack"]["name"], m["num_examples"]) for m in card["metrics"]][:2] == [
        ("fgsm", 20), ("spsa", 5)]
    assert card["headline"]["suite"] == "quick" and card["headline"] != facts["headline"]
    for metric, row in zip(card["metrics"], report["attacks"]):
        assert metric["clean_accuracy"] == row["clean_accuracy"]
        assert metric["robust_accuracy"] == row["robust_accuracy"]
    assert card["serving"]["head"] == "linear"  # the new head is shipped
    assert zoo.load_head(name, zoo_dir=zoo_dir).output_shape == (None, NUM_CLASSES)
    images = np.random.default_rng(1).random((2, *IMAGE_SHAPE), dtype=np.float32)
    np.testing.assert_allclose(zoo.load(name, zoo_dir=zoo_dir)(images), encoder(images),
                               atol=1e-6)
    # No temporary folder left behind; the pages were rendered anew.
    assert sorted(p.name for p in zoo_dir.iterdir()) == sorted(
        [name, zoo.MANIFEST_FILENAME, zoo.pages.INDEX_FILENAME])
    assert zoo.pages.stale_pages(zoo_dir) == []


# --- tarrl_tf.pretraining -----------------------------------------------------------------


def test_make_encoder_picks_the_architecture_from_the_channels():
    assert pretraining.make_encoder((8, 8, 1), width=4).name == "small_cnn"
    assert pretraining.make_encoder((8, 8, 3), width=4).name == "cifar_resnet"
    assert pretraining.make_encoder((8, 8, 3), architecture="small_cnn", width=4).name == "small_cnn"
    group = pretraining.make_encoder((8, 8, 3), width=4, norm="group")
    assert any(isinstance(l, keras.layers.GroupNormalization) for l in group.layers)
    with pytest.raises(ValueError, match="small_cnn has no normalization"):
        pretraining.make_encoder((8, 8, 1), width=4, norm="group")
    with pytest.raises(ValueError, match="architecture"):
        pretraining.make_encoder((8, 8, 1), architecture="vit")


def test_make_encoder_is_reproducible_with_a_seed():
    a, b = (pretraining.make_encoder((8, 8, 1), width=4, seed=1) for _ in range(2))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize(
    "estimator, cls, steps_attribute",
    [("pgd", regularizers.PGD, "steps"), ("fgsm", regularizers.FGSM, None),
     ("power_iteration", regularizers.PowerIteration, "iterations")],
)
def test_make_regularizer_passes_the_settings_on(estimator, cls, steps_attribute):
    regularizer = pretraining.make_regularizer(estimator, epsilon=0.2, norm="2", steps=3,
                                               divergence="kl")
    assert type(regularizer) is cls
    assert regularizer.epsilon == 0.2 and regularizer.norm == "2"
    assert type(regularizer.divergence) is type(divergences.get("kl"))
    if steps_attribute:
        assert getattr(regularizer, steps_attribute) == 3


def test_make_regularizer_rejects_an_unknown_estimator():
    with pytest.raises(ValueError, match="estimator"):
        pretraining.make_regularizer("trades", epsilon=0.1)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_pretrain_trains_the_encoder_in_place(images, make_cnn, weight):
    encoder = make_cnn()
    before = [w.copy() for w in encoder.get_weights()]
    regularizer = pretraining.make_regularizer("pgd", epsilon=0.05, steps=1)
    model, history, seconds = pretraining.pretrain(
        encoder, images, regularizer=regularizer, weight=weight, epochs=2, batch_size=8,
        verbose=0,
    )
    assert model.encoder is encoder
    assert any(not np.array_equal(b, a) for b, a in zip(before, encoder.get_weights()))
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert seconds > 0
    # Weight 0 is plain SSL: the regularizer is not even computed.
    assert (model.regularizer is None) == (weight == 0)
    assert ("robustness" in history) == (weight > 0)


def test_pretrain_leaves_no_backup_after_a_finished_run(images, make_cnn, tmp_path):
    """A finished run leaves no backup behind (BackupAndRestore cleans up after itself)."""
    backup = tmp_path / "backup"
    pretraining.pretrain(make_cnn(), images, epochs=1, batch_size=8, backup_dir=str(backup),
                         verbose=0)
    assert not backup.exists() or not any(backup.iterdir())


class _SlowThenInterrupted(keras.callbacks.Callback):
    """Sleeps through the first epoch, then stops the run as a crash would."""

    def on_epoch_begin(self, epoch, logs=None):
        time.sleep(2.0)

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_a_resumed_pretraining_counts_the_time_before_the_restart(images, make_cnn, tmp_path,
                                                                  monkeypatch):
    backup = tmp_path / "backup"
    fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, callbacks=(), **k: fit(
        self, *a, callbacks=[*callbacks, _SlowThenInterrupted()], **k))
    encoder = make_cnn()
    with pytest.raises(KeyboardInterrupt):
        pretraining.pretrain(encoder, images, epochs=3, batch_size=8, backup_dir=str(backup),
                             verbose=0)
    monkeypatch.undo()

    first_loss = json.loads((backup / "clock.json").read_text())["history"]["loss"]
    assert len(first_loss) == 1

    epochs_run = _EpochsRun()
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, callbacks=(), **k: fit(
        self, *a, callbacks=[*callbacks, epochs_run], **k))
    start = time.perf_counter()
    _, history, seconds = pretraining.pretrain(encoder, images, epochs=3, batch_size=8,
                                               backup_dir=str(backup), verbose=0)
    resumed_run = time.perf_counter() - start
    assert epochs_run.epochs == [1, 2]  # It resumed after the first epoch ...
    assert seconds > resumed_run  # ... its time includes the first run's ...
    # ... and so does its history: the interrupted run's epoch, then the two run now.
    assert len(history["loss"]) == 3 and history["loss"][:1] == first_loss
    assert all(len(values) == 3 for values in history.values())
    assert not backup.exists() or not any(backup.iterdir())


class _EpochsRun(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_pretrain_rejects_fewer_images_than_a_batch(images, make_cnn):
    with pytest.raises(ValueError, match="batch"):
        pretraining.pretrain(make_cnn(), images, epochs=1, batch_size=64, verbose=0)
