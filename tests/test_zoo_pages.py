"""The zoo's pages (`tarrl_tf.zoo.pages`) and what published cards may hold (no local paths)."""

import json
import pathlib
import shutil

import keras
import pytest

import tarrl_tf
from tarrl_tf import checks, export, zoo
from tarrl_tf.zoo import pages  # noqa: F401

REPO = pathlib.Path(__file__).resolve().parents[1]
NAME = "tiny_cnn_tarrl_linf01"


def _metric(task, attack, epsilon, robust, *, norm="linf", n=50):
    return {"head": "linear", "clean_accuracy": 0.9, "robust_accuracy": robust, "num_examples": n,
            "attack": {"name": attack, "norm": norm, "epsilon": epsilon, "steps": 10},
            "task": task, "dataset": "digits"}


FACTS = dict(
    dataset="digits", architecture="small_cnn", method="tarrl", regularizer={"weight": 1.0},
    threat_model={"norm": "linf", "epsilon": 0.2},
    training={"epochs": 1, "batch_size": 8, "wall_clock_seconds": 4000.0, "hardware": "a laptop"},
    metrics=[_metric("labels", "pgd_linf", 0.1, 0.6), _metric("labels", "pgd_linf", 0.2, 0.4),
             _metric("labels", "fgsm", 0.1, 0.7), _metric("labels", "fgsm", 0.2, 0.5),
             _metric("labels", "spsa", 0.2, 0.45, n=10),
             _metric("parity", "pgd_linf", 0.1, 0.8), _metric("parity", "pgd_linf", 0.2, 0.65)],
    headline={"task": "labels", "suite": "standard", "norm": "linf", "epsilon": 0.2,
              "clean_accuracy": 0.9, "robust_accuracy": 0.35, "num_examples": 50,
              "attacks": ["apgd_ce", "apgd_t", "square"]},
)


@pytest.fixture
def built(tmp_path):
    keras.utils.set_random_seed(0)
    encoder = tarrl_tf.encoders.small_cnn(input_shape=(8, 8, 1), width=4, representation_dim=8)
    export.create_zoo_entry(encoder, name=NAME, zoo_dir=tmp_path, **FACTS)
    return tmp_path


def test_the_repository_pages_match_the_cards():
    stale = pages.stale_pages(zoo.default_zoo_dir())
    assert not stale, f"{stale} do not match their cards: run `python -m tools.zoo pages`"


@pytest.mark.parametrize("path", sorted((REPO / "zoo").glob("*/model_card.json")),
                         ids=lambda p: p.parent.name)
def test_no_published_card_holds_a_local_path(path):
    card = json.loads(path.read_text())
    assert not checks.local_paths(card), checks.local_paths(card)
    for metric in card["metrics"]:
        assert metric["dataset"] == card["dataset"] and len(metric["dataset_sha256"]) == 64


def test_no_published_file_names_the_machine_that_wrote_it():
    # Pages may show container paths (`/models/...` in a docker line), never this checkout's.
    texts = [REPO / "zoo" / "manifest.json", REPO / "zoo" / "README.md",
             *sorted((REPO / "zoo").glob("*/README.md")), *sorted((REPO / "zoo").glob("*/*.json"))]
    for path in texts:
        assert str(REPO.parent) not in path.read_text(), path


@pytest.mark.parametrize("value, found", [
    ("npz:/home/someone/datasets/mnist/mnist.npz", True), ("/tmp/run/encoder.keras", True),
    ("~/zoo", True), ("C:\\\\data\\\\mnist.npz", True), ("file:///srv/zoo", True),
    ("mnist", False), ("python benchmarks/reproduce.py --row=x", False),
    ("https://example.org/tarrl-zoo", False), ("L2/L-inf", False), ("8/255", False),
])
def test_local_paths_are_found(value, found):
    assert bool(checks.local_paths({"metrics": [{"dataset": value}]})) == found


def test_a_card_with_a_local_path_is_refused(built):
    metrics = [{**FACTS["metrics"][0], "dataset": "npz:/data/digits.npz"}]
    with pytest.raises(zoo.InvalidModelCardError, match=r"card.metrics\[0\].dataset=.*local paths"):
        export.create_zoo_entry(tarrl_tf.encoders.small_cnn(input_shape=(8, 8, 1), width=4),
                                name="other_cnn_tarrl_linf01", zoo_dir=built,
                                **{**FACTS, "metrics": metrics})


def test_card_metrics_keep_the_dataset_name_and_sha256():
    report = {"head": "linear", "clean_accuracy": 0.9, "clean_loss": 0.3, "dataset": "mnist",
              "dataset_sha256": "ab" * 32, "task": "labels", "fine_tune": False,
              "attacks": [{"name": "fgsm", "norm": "inf", "epsilon": 0.1, "steps": 1,
                           "robust_accuracy": 0.5, "adversarial_loss": 1.0, "num_examples": 9}]}
    (item,) = export.card_metrics(report)
    assert item["dataset"] == "mnist" and item["dataset_sha256"] == "ab" * 32


def test_pages_are_rendered_from_the_card(built):
    written = pages.write_pages(built)
    assert sorted(p.relative_to(built).as_posix() for p in written) == [
        "README.md", f"{NAME}/README.md", f"{NAME}/sweep.svg"]
    index = (built / "README.md").read_text()
    # The suite's worst case, then PGD at the threat model (0.2), not the weaker FGSM nor
    # SPSA on 10 images.
    assert (f"| [{NAME}]({NAME}/README.md) | digits | small_cnn | tarrl | L-inf 0.2 | 90.0% "
            f"| 35.0% (standard) | 40.0% (pgd_linf-10) | 1 epochs, 1.1 h on a laptop "
            f'| `tarrl_tf.zoo.load("{NAME}")` |') in index
    page = (built / NAME / "README.md").read_text()
    assert ("Headline: 35.0% robust accuracy at L-inf 0.2, per image over every attack of the "
            "`standard` suite (apgd_ce, apgd_t, square), 90.0% clean, 50 test images.") in page
    assert "PGD alone: 40.0% robust accuracy (pgd_linf-10)" in page
    assert f'encoder = tarrl_tf.zoo.load("{NAME}")' in page
    assert "| linear | spsa | L-inf | 0.2 | 10 | 90.0% | 45.0% | 10 |" in page
    assert "Task `parity`:" in page and "Costly attacks ran on fewer images: spsa on 10." in page
    assert "## Serve it" in page and '"$PWD/zoo/' + NAME + '/serving:/models/' + NAME in page
    svg = (built / NAME / "sweep.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 3  # pgd, fgsm, parity pgd
    assert pages.write_pages(built) == [] and pages.stale_pages(built) == []


def test_the_index_names_the_encoder_a_row_started_from_or_distilled_from(built):
    card = zoo.info(NAME, zoo_dir=built)
    card["training"] = {**card["training"], "init_encoder": "first_stage", "teacher": "teacher_x"}
    index = pages.render_index([card])
    assert "| 1 epochs from `first_stage`, teacher `teacher_x`, 1.1 h on a laptop |" in index
    assert "Trained on" in pages.render_page(card) and "from `first_stage`" in pages.render_page(card)


def test_pages_are_not_checksummed_but_other_files_are(built):
    pages.write_pages(built)
    assert zoo.verify(NAME, zoo_dir=built)["name"] == NAME
    assert pages.PAGE_FILENAME not in json.loads((built / "manifest.json").read_text())[
        "entries"][NAME]["files"]
    (built / NAME / "notes.txt").write_text("not a rendered page")
    with pytest.raises(zoo.ChecksumError, match="does not list: \\['notes.txt'\\]"):
        zoo.verify(NAME, zoo_dir=built)


def test_a_changed_card_makes_its_pages_stale(built, tmp_path):
    pages.write_pages(built)
    copy = pathlib.Path(shutil.copytree(built, tmp_path / "copy"))
    encoder = zoo.load(NAME, zoo_dir=copy)
    facts = {**FACTS, "metrics": [{**FACTS["metrics"][1], "robust_accuracy": 0.1}]}
    export.create_zoo_entry(encoder, name=NAME, zoo_dir=copy, replace=True, **facts)
    assert sorted(p.relative_to(copy).as_posix() for p in pages.stale_pages(copy)) == [
        "README.md", f"{NAME}/README.md", f"{NAME}/sweep.svg"]
