"""`benchmarks/budget.py`: runs ranked by robust accuracy at a cost counted in SimCLR steps."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(name, robust, clean=0.5, **settings):
    return {"name": name, "method": "tarrl", "weight": 10.0, "estimator": "pgd", "steps": 3,
            "epochs": 10, "train_examples": 1000, "batch_size": 100, "clean_accuracy": clean,
            "robust_accuracy": {"0.03": robust}, "eval_attack": "pgd_linf", "eval_steps": 20,
            "eval_examples": 500, **settings}


def test_costs_add_what_a_run_was_built_on_and_runs_rank_by_robust_accuracy(tmp_path):
    runs = [
        _run("simclr", 0.0, weight=0.0),
        _run("tarrl", 0.2),
        _run("second_stage", 0.3, epochs=5, init_encoder="runs/ablation/simclr/encoder.keras"),
        _run("acl", 0.1, method="acl"),
        _run("deacl", 0.15, method="deacl", teacher="runs/ablation/simclr/encoder.keras"),
        _run("acl", 0.6, method="acl", task="animals_vehicles"),  # another task: not ranked
    ]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    ratios = {"simclr": 1.0, "method=acl,steps=3": 3.0, "method=deacl,steps=3": 2.0,
              "method=tarrl,estimator=pgd,steps=3,regularized_fraction=1.0,detach_anchor=False": 2.5}
    (tmp_path / "costs.json").write_text(json.dumps({"ratios": ratios}))
    result = subprocess.run(
        [sys.executable, "benchmarks/budget.py", f"--results={tmp_path / 'runs.jsonl'}",
         f"--costs={tmp_path / 'costs.json'}", f"--output={tmp_path / 'ranked.jsonl'}",
         f"--figure={tmp_path / 'budget.png'}", "--epsilon=0.03"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    ranked = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    assert [r["name"] for r in ranked] == ["second_stage", "tarrl", "deacl", "acl", "simclr"]
    cost = {r["name"]: r["cost_simclr_steps"] for r in ranked}
    # 10 epochs of 10 steps each; a second stage and DeACL also pay for the SimCLR run.
    assert cost == {"simclr": 100, "tarrl": 250, "acl": 300, "second_stage": 100 + 125,
                    "deacl": 200 + 100}
    assert (tmp_path / "budget.png").read_bytes().startswith(PNG_MAGIC)


def test_a_run_without_a_measured_cost_is_named(tmp_path):
    (tmp_path / "runs.jsonl").write_text(json.dumps(_run("x", 0.2, estimator="fgsm")) + "\n")
    (tmp_path / "costs.json").write_text(json.dumps({"ratios": {"simclr": 1.0}}))
    result = subprocess.run(
        [sys.executable, "benchmarks/budget.py", f"--results={tmp_path / 'runs.jsonl'}",
         f"--costs={tmp_path / 'costs.json'}", f"--output={tmp_path / 'o.jsonl'}",
         f"--figure={tmp_path / 'f.png'}", "--epsilon=0.03"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "No measured step cost" in result.stderr
    assert "estimator=fgsm" in result.stderr
