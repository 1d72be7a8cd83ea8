"""`benchmarks.speed`: the JSON's schema (not the speed) and the README's table generated from it."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import speed_readme

REPO = pathlib.Path(__file__).resolve().parents[1]


def _committed():
    return json.loads(speed_readme.BENCH.read_text())


@pytest.mark.large
def test_a_tiny_run_writes_the_schema(tmp_path):
    output = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", "--tiny", "--encoders=small_cnn",
         "--configurations=fgsm", "--precisions=float32", f"--output={output}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads(output.read_text())
    assert speed_readme.schema_problems(bench) == []
    assert bench["settings"]["preset"] == "tiny" and "--tiny" in bench["command"]
    assert set(bench["step_ratio"]["small_cnn"]["float32"]) == {"fgsm"}
    speed_readme.render(bench)  # renders any valid JSON


def test_the_committed_json_covers_every_estimator_baseline_encoder_and_precision():
    from benchmarks import speed_steps

    bench = _committed()
    assert speed_readme.schema_problems(bench) == []
    names = set(speed_steps.configuration_names(baseline_steps=3)) - {"simclr"}
    for encoder in ("small_cnn", "cifar_resnet"):
        for precision in ("float32", "bfloat16"):
            assert set(bench["step_ratio"][encoder][precision]) == names, (encoder, precision)
        assert set(bench["mixed_precision_speedup"][encoder]) == names | {"simclr"}


def test_the_readme_cost_table_is_the_committed_json_rendered():
    readme = speed_readme.README.read_text()
    assert speed_readme.current_block(readme) == speed_readme.render(_committed()), (
        "README.md's cost table is stale: run python -m benchmarks.speed --readme")


def test_schema_problems_name_what_is_wrong():
    bench = _committed()
    del bench["attack_speedup"]["robust_accuracy"]["cleverhans_eager"]
    bench["jit_compile_speedup"] = {"value": None}
    problems = speed_readme.schema_problems(bench)
    assert any("robust_accuracy" in p for p in problems)
    assert any("jit_compile_speedup" in p for p in problems)
    assert speed_readme.schema_problems({}) != []
