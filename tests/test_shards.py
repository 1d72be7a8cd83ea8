"""A sharded evaluation: shards attack their images, the merge is the report of one run."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tarrl_tf import attacks, evaluation
from tarrl_tf.evaluation import shards
from tarrl_tf.testing import dense_encoder, prototype_data

REPO = pathlib.Path(__file__).resolve().parents[1]
BATCH = 16


@pytest.fixture(scope="module")
def suite():
    """A suite with small budgets, Square on the first 20 images only (a subset across shards)."""
    name = attacks.register_suite(attacks.Suite("tiny_shards_test", (
        attacks.SuiteAttack("apgd_ce", {"steps": 4}),
        attacks.SuiteAttack("apgd_t", {"steps": 4}),
        attacks.SuiteAttack("square", {"steps": 50}, subset=20),
    ))).name
    yield name
    attacks.SUITES.unregister(name)


def _evaluate(suite, shard=None):
    # 50 test images in batches of 16: 4 batches, shards [0, 32) and [32, 50). PGD and SPSA
    # start at random; SPSA and Square see the first 20 images only, all in shard 0.
    specs = evaluation.attack_grid(["pgd_linf", "fgsm", "spsa"], [0.1, 0.2], steps=3)
    report, _, _ = evaluation.evaluate(
        dense_encoder(), train=prototype_data(120, seed=1), test=prototype_data(50, seed=2),
        num_classes=3, attack_specs=specs, epochs=5, batch_size=BATCH, regularizer_steps=2,
        spsa_examples=10, subset_examples=20, suite=suite, suite_threat_models=[("inf", 0.1)],
        seed=0, shard=shard)
    return report


@pytest.fixture(scope="module")
def runs(suite, tmp_path_factory):
    single = _evaluate(suite)
    folder = tmp_path_factory.mktemp("shards")
    for index in range(2):
        shards.write_record(_evaluate(suite, shard=(index, 2)), folder)
    return single, shards.read_records(folder)


@pytest.mark.large
def test_two_shards_merged_are_the_single_process_report(runs):
    single, records = runs
    assert [r["span"] for r in records] == [[0, 32], [32, 50]]
    merged = shards.merge(records)
    # Everything: accuracies, losses, worst cases, R, bounds, sanity checks (exactly: each
    # image goes through the same batch computations in both).
    assert merged == single
    assert single["worst_case"][0]["on_all_examples"]["num_examples"] == 50
    assert len(single["sanity_checks"]) >= 4


def test_the_shards_hold_disjoint_per_image_results(runs):
    _, records = runs
    first, second = records
    assert first["runs"].keys() == second["runs"].keys()
    for key in first["runs"]:
        n = json.loads(key)[1]
        lengths = [len(r["runs"][key][0]) for r in records]
        assert lengths == [min(32, n), max(0, n - 32)], key  # masks; losses alike
        assert [len(r["runs"][key][1]) for r in records] == lengths


def test_merge_refuses_what_is_not_one_evaluation(runs):
    _, records = runs
    with pytest.raises(ValueError, match="every shard 0..1 of 2 is needed once"):
        shards.merge(records[:1])
    with pytest.raises(ValueError, match="every shard 0..1 of 2 is needed once"):
        shards.merge([records[0], records[0]])
    other_head = json.loads(json.dumps(records[1]))
    other_head["head"]["digest"] = "0" * 64
    with pytest.raises(ValueError, match="trained another head"):
        shards.merge([records[0], other_head])
    other_plan = json.loads(json.dumps(records[1]))
    other_plan["plan"]["seed"] = 1
    with pytest.raises(ValueError, match="another plan"):
        shards.merge([records[0], other_plan])


def test_shards_are_whole_batches_dealt_in_order():
    assert shards.span(50, 16, None) == (0, 50)
    assert [shards.span(50, 16, (i, 2)) for i in range(2)] == [(0, 32), (32, 50)]
    assert [shards.span(100, 10, (i, 3)) for i in range(3)] == [(0, 30), (30, 60), (60, 100)]
    with pytest.raises(ValueError, match="some would have none"):
        shards.span(50, 16, (0, 5))
    with pytest.raises(ValueError, match="0 <= index < count"):
        shards.span(50, 16, (2, 2))


def _evaluate_command(*flags):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "tools.evaluate", *flags], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.large
def test_evaluate_command_in_shard_processes_merges_to_the_single_process_report(tmp_path):
    # Each shard in its own process (as on other workers): they train the same head.
    encoder = tmp_path / "encoder.keras"
    dense_encoder(input_shape=(8, 8, 1)).save(encoder)  # the digits' shape
    flags = [f"--encoder={encoder}",
             "--attacks=pgd_linf", "--epsilons=0.1,0.2", "--steps=2", "--num_examples=40",
             "--train_examples=200", "--epochs=3", f"--batch_size={BATCH}",
             "--regularizer_steps=2", "--nosanity_checks"]
    for index in range(2):
        shard = _evaluate_command(*flags, f"--shard={index}", "--num_shards=2",
                                  f"--output_dir={tmp_path / 'shards'}")
        assert f"Shard {index} of 2: test images " in shard.stdout
    merged = _evaluate_command(f"--merge={tmp_path / 'shards'}", f"--output_dir={tmp_path / 'merged'}")
    assert "Wrote 3 files:" in merged.stdout
    _evaluate_command(*flags, f"--output_dir={tmp_path / 'single'}")
    reports = [json.loads((tmp_path / run / "report.json").read_text())
               for run in ("single", "merged")]
    assert reports[0] == reports[1]
    assert (tmp_path / "single" / "report.md").read_text() == (
        tmp_path / "merged" / "report.md").read_text()
    assert sorted(os.listdir(tmp_path / "shards")) == ["shard_0_of_2.json", "shard_1_of_2.json"]


def test_masks_and_losses_of_the_shards_are_those_of_the_whole_run(suite, runs):
    # The per-image arrays themselves (not only their means): one shard of one vs two of two.
    whole = _evaluate(suite, shard=(0, 1))
    parts = runs[1]
    assert whole["clean"][0] == parts[0]["clean"][0] + parts[1]["clean"][0]
    for key, (robust, loss) in whole["runs"].items():
        np.testing.assert_array_equal(robust, parts[0]["runs"][key][0] + parts[1]["runs"][key][0])
        np.testing.assert_allclose(loss, parts[0]["runs"][key][1] + parts[1]["runs"][key][1],
                                   rtol=0, atol=1e-6)
