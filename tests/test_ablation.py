"""`benchmarks/ablation.py`: one configuration trained, probed and attacked, as one JSON line."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_a_line_with_a_suite_carries_its_worst_case_beside_the_pgd_row(tmp_path):
    output = tmp_path / "lines.jsonl"
    result = subprocess.run(
        [sys.executable, "benchmarks/ablation.py", "--name=tiny", "--dataset=digits",
         "--train_examples=128", "--batch_size=64", "--epochs=1", "--width=4", "--weight=1",
         "--steps=1", "--epsilon=0.1", "--suite=quick", "--eval_epsilons=0.1",
         f"--runs_dir={tmp_path / 'runs'}", f"--output={output}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(output.read_text())
    assert line["suite"] == "quick" and line["eval_attack"] == "pgd_linf"
    rows = {name.split()[0]: value for name, value in line["suite_attacks"].items()}
    assert set(rows) == {"apgd_ce", "apgd_t", "square"}
    # The worst case is per image: no higher than any attack on the same images (Square's
    # subset for the headline, every image for the gradient attacks' worst case).
    assert line["worst_case"]["0.1"] <= rows["square"][0]
    assert line["worst_case_examples"] == rows["square"][1] < rows["apgd_ce"][1]
    assert line["worst_case_on_all"]["0.1"] <= min(rows["apgd_ce"][0], rows["apgd_t"][0])
    assert (tmp_path / "runs" / "tiny" / "encoder.keras").is_file()
