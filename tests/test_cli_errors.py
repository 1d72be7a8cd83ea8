"""User errors of `tools/pretrain` and `tools/evaluate`: one `error:` line, status 2, before any work."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from absl import app

from tarrl_tf_cli import startup

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ENCODER = REPO_ROOT / "tests" / "data" / "tarrl_model_0_1_0.keras"


def run_tool(module, *args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TARRL_TF_TRACEBACK", None)
    env.pop("TF_CONFIG", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    truncated = folder / "truncated.keras"
    truncated.write_bytes(ENCODER.read_bytes()[: ENCODER.stat().st_size // 2])
    shutil.copy(ENCODER, folder / "good.keras")
    return folder


# (tool, arguments, a phrase of the message). Every one must fail before training starts.
BAD_INPUTS = [
    ("pretrain", ["--epochs=0"], "--epochs"),
    ("pretrain", ["--epsilon=inf"], "must be in (0, 1] for L-inf"),
    ("pretrain", ["--epsilon=1.5"], "--epsilon=1.5 must be in (0, 1]"),
    ("pretrain", ["--epsilon=-0.1"], "--epsilon=-0.1 must be in (0, 1]"),
    ("pretrain", ["stray"], "unexpected arguments ['stray']"),
    ("pretrain", ["--epsilons=8/x"], "'8/x' is not a number"),
    # 8/255 is accepted: the run gets as far as the (misspelled) task, before any training.
    ("pretrain", ["--epsilons=8/255", "--task=parrity"], "Unknown task 'parrity'"),
    ("pretrain", ["--dataset=npz:missing.npz"], "missing.npz"),
    ("pretrain", ["--estimator=nope"], "--estimator='nope' is not registered"),
    ("pretrain", ["--strategy=tpu_pod"], "--strategy='tpu_pod' is not registered"),
    ("pretrain", ["--strategy=multi_worker"], "$TF_CONFIG, which is not set"),
    ("evaluate", ["--encoder=good.keras", "--output_dir=out", "--attacks=nope"], "nope"),
    ("evaluate", ["--encoder=good.keras", "--output_dir=out", "--task=parrity"],
     "Unknown task 'parrity'"),
    ("evaluate", ["--encoder=good.keras", "--output_dir=out", "--epsilons=2"],
     "--epsilons=2 must be in (0, 1]"),
    ("evaluate", ["--encoder=truncated.keras", "--output_dir=out"],
     "truncated.keras exists but is not a readable .keras file"),
    ("evaluate", ["--encoder=missing.keras", "--output_dir=out"], "missing.keras"),
    ("evaluate", ["--output_dir=out"], "--encoder is required (unless --merge)"),
    ("evaluate", ["--encoder=good.keras", "--output_dir=out", "--shard=1"],
     "--shard and --num_shards go together"),
    ("evaluate", ["--encoder=good.keras", "--output_dir=out", "--shard=2", "--num_shards=2"],
     "--shard=2 must be below --num_shards=2"),
    ("evaluate", ["--encoder=good.keras", "--output_dir=out", "--shard=0", "--num_shards=9",
                  "--num_examples=100"], "9 shards of 1 batches"),
    ("evaluate", ["--merge=no_shards", "--output_dir=out"], "no_shards"),
]


@pytest.mark.parametrize("tool, args, phrase", BAD_INPUTS,
                         ids=[f"{t}:{' '.join(a)}" for t, a, _ in BAD_INPUTS])
def test_a_bad_input_is_one_error_line_and_status_2(files, tool, args, phrase):
    result = run_tool(f"tools.{tool}", *args, "--output_dir=out", cwd=files) if tool == "pretrain" \
        else run_tool(f"tools.{tool}", *args, cwd=files)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert phrase in errors[0]
    assert not (files / "out").exists()  # Nothing trained, nothing written.


def test_a_real_bug_keeps_its_traceback():
    def buggy(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        startup._guarded(buggy, ["prog"])


def test_a_user_error_exits_2(capsys):
    def bad(argv):
        raise ValueError("bad\nlabels")

    with pytest.raises(SystemExit) as exit_info:
        startup._guarded(bad, ["prog"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: bad labels\n"


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.5", 0.5), (" 1/4", 0.25)])
def test_epsilons_take_fractions(text, value):
    assert startup.number(text, flag="epsilons") == pytest.approx(value)
    assert startup.NumberParser().parse(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["inf", "nan", "1/0", "a/b"])
def test_a_number_that_is_not_finite_is_refused(text):
    with pytest.raises(app.UsageError):
        startup.number(text, flag="epsilons")


def test_zoo_list_marks_a_damaged_card_and_lists_every_other_entry(tmp_path):
    source = REPO_ROOT / "zoo"
    names = sorted(p.parent.name for p in source.glob("*/model_card.json"))
    shutil.copy(source / "manifest.json", tmp_path / "manifest.json")
    for name in names:
        (tmp_path / name).mkdir()
        shutil.copy(source / name / "model_card.json", tmp_path / name / "model_card.json")
    card = tmp_path / "mnist_cnn_simclr" / "model_card.json"  # Mid-list: it must not stop the rest.
    card.write_text(card.read_text()[:-40])
    result = run_tool("tools.zoo", "list", f"--zoo_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("BAD  mnist_cnn_simclr: ") for line in lines), result.stdout
    for name in names:
        if name != "mnist_cnn_simclr":
            assert any(line.startswith(f"{name}  ") for line in lines), result.stdout
    assert f"{len(names)} entries, 1 bad" in result.stdout
