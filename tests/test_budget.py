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


def _rank(tmp_path, runs, ratios, *flags):
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    (tmp_path / "costs.json").write_text(json.dumps({"ratios": ratios}))
    return subprocess.run(
        [sys.executable, "benchmarks/budget.py", f"--results={tmp_path / 'runs.jsonl'}",
         f"--costs={tmp_path / 'costs.json'}", f"--output={tmp_path / 'ranked.jsonl'}",
         f"--figure={tmp_path / 'budget.png'}", "--epsilon=0.03", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=120)


TARRL_PGD3 = "method=tarrl,estimator=pgd,steps=3,regularized_fraction=1.0,detach_anchor=False"


def test_runs_rank_by_the_suites_worst_case_on_every_image_and_without_it_are_named(tmp_path):
    runs = [
        # PGD ranks a first, the suite b: a's PGD row overstates it.
        _run("a", 0.4, suite="quick", worst_case={"0.03": 0.35},
             worst_case_on_all={"0.03": 0.1}),
        _run("b", 0.3, suite="quick", worst_case={"0.03": 0.25}),
    ]
    ratios = {"simclr": 1.0, TARRL_PGD3: 2.0}
    result = _rank(tmp_path, runs, ratios, "--rank_by=suite")
    assert result.returncode == 0, result.stderr[-2000:]
    ranked = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    assert [(r["name"], r["robust_accuracy"]) for r in ranked] == [("b", 0.25), ("a", 0.1)]
    assert ranked[0]["eval_attack"] == "quick suite worst case"
    # The PGD row of the same lines rides along, in the lines and in the printed table.
    assert [r["pgd_robust_accuracy"] for r in ranked] == [0.3, 0.4]
    assert "| run | method | cost (SimCLR steps) | clean | pgd_linf-20 | suite worst case |" in (
        result.stdout)
    assert "| b | tarrl | 200 | 0.500 | 0.300 | 0.250 |" in result.stdout
    result = _rank(tmp_path, runs + [_run("c", 0.5)], ratios, "--rank_by=suite")
    assert result.returncode != 0 and "c has no suite evaluation" in result.stderr
    # --names ranks a chosen few: c is left out, a name without a run is refused.
    result = _rank(tmp_path, runs + [_run("c", 0.5)], ratios, "--rank_by=suite", "--names=a,b")
    assert result.returncode == 0, result.stderr[-2000:]
    ranked = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    assert [r["name"] for r in ranked] == ["b", "a"]
    result = _rank(tmp_path, runs, ratios, "--names=a,d")
    assert result.returncode != 0 and "--names: no run ['d'] in --results" in result.stderr
    result = _rank(tmp_path, runs, ratios, "--task=parity")
    assert result.returncode != 0 and "No run of task 'parity' in --results" in result.stderr


def test_a_second_stage_built_on_a_zoo_entry_pays_for_its_training(tmp_path):
    card = json.loads((REPO / "zoo" / "cifar10_resnet_simclr" / "model_card.json").read_text())
    first = card["training"]["epochs"] * (card["training"]["train_examples"]
                                          // card["training"]["batch_size"])
    runs = [_run("second", 0.2, epochs=5, init_encoder="cifar10_resnet_simclr")]
    result = _rank(tmp_path, runs, {"simclr": 1.0, TARRL_PGD3: 2.0})
    assert result.returncode == 0, result.stderr[-2000:]
    ranked = json.loads((tmp_path / "ranked.jsonl").read_text())
    assert ranked["cost_simclr_steps"] == 5 * 10 * 2 + first
    runs = [_run("second", 0.2, epochs=5, init_encoder="no_such_entry")]
    result = _rank(tmp_path, runs, {"simclr": 1.0, TARRL_PGD3: 2.0})
    assert result.returncode != 0 and "neither a run of --results nor a zoo entry" in result.stderr


def test_a_suite_line_adds_to_its_runs_training_line_and_a_zoo_encoder_costs_its_training(
        tmp_path):
    card = json.loads((REPO / "zoo" / "cifar10_resnet_simclr" / "model_card.json").read_text())
    simclr = card["training"]["epochs"] * (card["training"]["train_examples"]
                                           // card["training"]["batch_size"])
    runs = [
        _run("second", 0.3, epochs=5, init_encoder="cifar10_resnet_simclr"),
        # The same encoder evaluated again with a suite (an --evaluate_encoder line).
        {"name": "second", "task": "labels", "clean_accuracy": 0.5, "eval_examples": 500,
         "robust_accuracy": {"0.03": 0.3}, "suite": "quick", "worst_case": {"0.03": 0.2},
         "eval_attack": "pgd_linf", "eval_steps": 20},
        {"name": "zoo_simclr", "encoder": "cifar10_resnet_simclr", "task": "labels",
         "clean_accuracy": 0.6, "eval_examples": 500, "robust_accuracy": {"0.03": 0.0},
         "suite": "quick", "worst_case": {"0.03": 0.0}, "eval_attack": "pgd_linf",
         "eval_steps": 20},
    ]
    result = _rank(tmp_path, runs, {"simclr": 1.0, TARRL_PGD3: 2.0}, "--rank_by=suite")
    assert result.returncode == 0, result.stderr[-2000:]
    ranked = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    assert [(r["name"], r["method"], r["robust_accuracy"], r["cost_simclr_steps"])
            for r in ranked] == [("second", "tarrl", 0.2, 5 * 10 * 2 + simclr),
                                 ("zoo_simclr", "simclr", 0.0, simclr)]


def test_a_zoo_deacl_encoder_pays_for_its_teacher_named_in_its_experiments_row(tmp_path):
    def steps(name):
        training = json.loads((REPO / "zoo" / name / "model_card.json").read_text())["training"]
        return training["epochs"] * (training["train_examples"] // training["batch_size"])

    runs = [{"name": "zoo_deacl", "encoder": "cifar10_resnet_deacl_linf8", "task": "labels",
             "clean_accuracy": 0.5, "eval_examples": 500, "robust_accuracy": {"0.03": 0.1},
             "eval_attack": "pgd_linf", "eval_steps": 20}]
    result = _rank(tmp_path, runs, {"simclr": 1.0, "method=deacl,steps=3": 2.5})
    assert result.returncode == 0, result.stderr[-2000:]
    ranked = json.loads((tmp_path / "ranked.jsonl").read_text())
    # Its teacher, cifar10_resnet_simclr, is in the row, not in the card.
    assert ranked["cost_simclr_steps"] == round(
        2.5 * steps("cifar10_resnet_deacl_linf8") + steps("cifar10_resnet_simclr"))
