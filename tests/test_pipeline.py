"""`tarrl_tf.pipeline` in-process: a row trained by its registered method, evaluated and published."""

import dataclasses
import json

import keras
import numpy as np
import pytest

import tarrl_tf
from tarrl_tf import pipeline, zoo
from tarrl_tf.testing import prototype_data

IMAGE_SHAPE = (8, 8, 1)
TINY_SUITE = "tiny_pipeline"


@pytest.fixture(scope="module", autouse=True)
def _tiny_suite():
    """A suite of seconds: every published card needs a headline, a suite's worst case."""
    suite = tarrl_tf.attacks.register_suite(tarrl_tf.attacks.Suite(TINY_SUITE, (
        tarrl_tf.attacks.SuiteAttack("apgd_ce", {"steps": 4}),
        tarrl_tf.attacks.SuiteAttack("square", {"steps": 50}),
    )))
    yield suite.name
    tarrl_tf.attacks.SUITES.unregister(suite.name)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny offline dataset `tiny` and an empty zoo."""
    root = tmp_path_factory.mktemp("pipeline")
    (x_train, y_train), (x_test, y_test) = prototype_data(96, seed=1), prototype_data(30, seed=2)
    (root / "datasets" / "tiny").mkdir(parents=True)
    np.savez(root / "datasets" / "tiny" / "tiny.npz", x_train=np.round(x_train * 255).astype("uint8"),
             y_train=y_train, x_test=np.round(x_test * 255).astype("uint8"), y_test=y_test)
    (root / "zoo").mkdir()
    (root / "zoo" / zoo.MANIFEST_FILENAME).write_text(json.dumps(zoo.empty_manifest()))
    return root


def _row(name, method, **extra):
    return {"name": name, "method": method, "dataset": "tiny", "architecture": "small_cnn",
            "width": 4, "epochs": 1, "batch_size": 32, "learning_rate": 1e-3,
            "threat_model": {"norm": "inf", "epsilon": 0.1},
            "evaluation": {"tasks": ["labels"], "attacks": ["pgd_linf"], "epsilons": [0.1],
                           "attack_steps": 2, "num_examples": 20, "head_epochs": 2,
                           "suite": TINY_SUITE},
            **extra}


def _settings(root, **kwargs):
    return pipeline.Settings(datasets_dir=str(root / "datasets"), output_dir=str(root / "runs"),
                             zoo_dir=str(root / "zoo"), **kwargs)


def test_a_row_is_trained_evaluated_and_published(setup):
    row = _row("tiny_cnn_tarrl_linf01", "tarrl", regularizer={
        "estimator": "fgsm", "divergence": "normalized_relative_l2", "weight": 5.0,
        "warmup_epochs": 1})
    results = pipeline.run_row(row, _settings(setup))
    assert set(results) == {"labels"}
    report = json.loads((setup / "runs" / row["name"] / "labels" / "report.json").read_text())
    assert report["row"]["regularizer"]["estimator"] == "fgsm"
    assert "robustness" in report["final_training_metrics"]  # R was trained

    zoo.verify(row["name"], zoo_dir=setup / "zoo")
    card = zoo.info(row["name"], zoo_dir=setup / "zoo")
    assert card["method"] == "tarrl" and card["training"]["epochs"] == 1
    assert card["training"]["command"] == f"python benchmarks/reproduce.py --row={row['name']}"
    assert card["metrics"][0]["attack"]["steps"] == 2
    # The dataset by name and sha256, never by the path it was read from.
    npz = setup / "datasets" / "tiny" / "tiny.npz"
    assert card["metrics"][0]["dataset"] == "tiny" and str(setup) not in json.dumps(card)
    assert card["metrics"][0]["dataset_sha256"] == zoo.sha256_file(npz)
    # The pages follow: the index lists the entry, its page and figure exist and are current.
    assert f"[{row['name']}]({row['name']}/README.md)" in (setup / "zoo" / "README.md").read_text()
    assert (setup / "zoo" / row["name"] / "sweep.svg").is_file()
    assert zoo.pages.stale_pages(setup / "zoo") == []
    with pytest.raises(ValueError, match="exists in"):
        pipeline.run_row(row, _settings(setup))  # published already: refused before training


def test_a_row_to_publish_without_a_suite_is_refused_before_training(setup):
    row = _row("tiny_cnn_simclr_linf01", "simclr")
    del row["evaluation"]["suite"]
    with pytest.raises(ValueError, match="needs a headline, the worst case of an attack suite"):
        pipeline.run_row(row, _settings(setup, replace=True))
    assert not (setup / "runs" / row["name"]).exists()  # nothing trained or written


def test_a_baseline_row_takes_its_teacher_and_first_stage_from_files(setup, tmp_path):
    keras.utils.set_random_seed(5)
    first = tarrl_tf.encoders.small_cnn(input_shape=IMAGE_SHAPE, width=4)
    first.save(tmp_path / "first.keras")
    row = _row("tiny_cnn_deacl_linf01", "deacl", regularizer={"steps": 1},
               teacher=str(tmp_path / "first.keras"), init_encoder=str(tmp_path / "first.keras"))
    images, labels = prototype_data(64, seed=3)
    settings = _settings(setup, publish=False)
    encoder, history, seconds = pipeline.train(row, images, labels, tmp_path, settings)
    assert set(history) == {"loss", "distillation_loss", "robustness"} and seconds > 0
    # One step from the first stage's weights, not from a fresh initialization.
    moved = [np.abs(a - b).max() for a, b in zip(encoder.get_weights(), first.get_weights())]
    assert 0 < max(moved) < 0.05

    wider = _row("tiny_cnn_acl_linf01", "acl", width=8, init_encoder=str(tmp_path / "first.keras"))
    with pytest.raises(ValueError, match="does not fit the row's architecture"):
        pipeline.train(wider, images, labels, tmp_path, settings)


def test_a_second_stage_keeps_near_its_first_stage_with_keep_weight(setup, tmp_path):
    keras.utils.set_random_seed(5)
    first = tarrl_tf.encoders.small_cnn(input_shape=IMAGE_SHAPE, width=4)
    first.save(tmp_path / "first.keras")
    regularizer = {"estimator": "fgsm", "weight": 1.0, "keep_weight": 2.0}
    row = _row("tiny_cnn_tarrl_keep_linf01", "tarrl", regularizer=regularizer,
               init_encoder=str(tmp_path / "first.keras"))
    images, labels = prototype_data(64, seed=3)
    settings = _settings(setup, publish=False)
    encoder, history, _ = pipeline.train(row, images, labels, tmp_path, settings)
    assert {"keep_loss", "robustness", "ssl_loss"} <= set(history)
    # The reference is the first stage (the encoder starts on it): one epoch of two steps moves
    # the features by little, where an unrelated encoder would be about 1 away.
    assert 0 < history["keep_loss"][0] < 0.05

    from_scratch = _row("tiny_cnn_tarrl_keep_linf01", "tarrl", regularizer=regularizer)
    with pytest.raises(ValueError, match="needs an init_encoder"):
        pipeline.train(from_scratch, images, labels, tmp_path, settings)


def test_a_first_stage_or_teacher_out_of_reach_is_named_before_any_row_trains(setup, tmp_path):
    first = tarrl_tf.encoders.small_cnn(input_shape=IMAGE_SHAPE, width=4)
    first.save(tmp_path / "first.keras")
    simclr = _row("tiny_cnn_simclr_first", "simclr")
    second = _row("tiny_cnn_tarrl_second", "tarrl", init_encoder="tiny_cnn_simclr_first")
    student = _row("tiny_cnn_deacl_student", "deacl", teacher="tiny_cnn_simclr_first")
    settings = dataclasses.replace(_settings(setup), output_dir=str(tmp_path / "runs"))
    # In reach: an earlier row of the same run, a .keras file.
    pipeline.check_sources([simclr, second, student], settings)
    pipeline.check_sources([_row("a", "acl", init_encoder=str(tmp_path / "first.keras"))], settings)
    # Out of reach: the row that would train it comes later, or not at all.
    with pytest.raises(ValueError, match=r"row 'tiny_cnn_tarrl_second': its init_encoder "
                                         r"'tiny_cnn_simclr_first' is not .*--row=tiny_cnn_simclr_first"):
        pipeline.check_sources([second, simclr], settings)
    with pytest.raises(ValueError, match=r"its teacher 'tiny_cnn_simclr_first'"):
        pipeline.check_sources([student], settings)
    # Trained earlier into the output folder: in reach.
    (tmp_path / "runs" / "tiny_cnn_simclr_first").mkdir(parents=True)
    first.save(tmp_path / "runs" / "tiny_cnn_simclr_first" / "encoder.keras")
    pipeline.check_sources([second, student], settings)


def test_a_published_second_stage_names_its_first_stage_in_its_card(setup, tmp_path):
    keras.utils.set_random_seed(5)
    tarrl_tf.encoders.small_cnn(input_shape=IMAGE_SHAPE, width=4).save(tmp_path / "first.keras")
    row = _row("tiny_cnn_tarrl_second_linf01", "tarrl", init_encoder=str(tmp_path / "first.keras"),
               regularizer={"estimator": "fgsm", "weight": 1.0, "keep_weight": 1.0})
    pipeline.run_row(row, dataclasses.replace(_settings(setup), output_dir=str(tmp_path / "runs")))
    card = zoo.info(row["name"], zoo_dir=setup / "zoo")
    # By its file name: no machine path goes into a card.
    assert card["training"]["init_encoder"] == "first.keras" and "teacher" not in card["training"]
    assert str(tmp_path) not in json.dumps(card)


def test_a_labeled_method_trains_on_labels(setup, tmp_path):
    row = _row("tiny_cnn_supervised_at_linf01", "supervised_at", regularizer={"steps": 1})
    images, labels = prototype_data(64, seed=3)
    _, history, _ = pipeline.train(row, images, labels, tmp_path, _settings(setup, publish=False))
    assert set(history) == {"loss", "accuracy"}


def test_an_absent_dataset_is_named(setup):
    with pytest.raises(FileNotFoundError, match="offline copy of 'cifar10'"):
        pipeline.dataset_source("cifar10", setup / "datasets")


@pytest.fixture
def tiny_suite():
    return TINY_SUITE


def test_a_row_with_a_suite_publishes_its_worst_case_as_the_headline(setup, tiny_suite):
    row = _row("tiny_cnn_simclr_linf01", "simclr")
    # PGD at two radii; the suite at the card's threat model only, on the first 15 images.
    row["evaluation"] = {**row["evaluation"], "suite": tiny_suite, "epsilons": [0.05, 0.1],
                         "suite_examples": 15}
    results = pipeline.run_row(row, _settings(setup, replace=True))
    (worst,) = results["labels"]["worst_case"]
    card = zoo.info(row["name"], zoo_dir=setup / "zoo")
    assert card["headline"] == {
        "task": "labels", "suite": tiny_suite, "norm": "linf", "epsilon": 0.1,
        "clean_accuracy": worst["clean_accuracy"], "robust_accuracy": worst["robust_accuracy"],
        "num_examples": 15, "attacks": ["apgd_ce", "square"]}
    assert [(m["attack"]["name"], m["attack"]["epsilon"]) for m in card["metrics"]
            if not m["attack"].get("suite")] == [("pgd_linf", 0.05), ("pgd_linf", 0.1)]
    # Each attack of the suite keeps its own metrics item, marked with the suite.
    assert [m["attack"]["name"] for m in card["metrics"] if m["attack"].get("suite")] == [
        "apgd_ce", "square"]
