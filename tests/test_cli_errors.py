"""User errors of every tool: one `error:` line, status 2, no traceback, before any work."""

import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
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
                          capture_output=True, text=True, timeout=600)


def _bad_files(folder):
    """The bad inputs of the table, beside a good encoder: files as users damage them."""
    raw = ENCODER.read_bytes()
    shutil.copy(ENCODER, folder / "good.keras")
    (folder / "truncated.keras").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF  # One byte inside the (stored) weights: the zip still opens.
    (folder / "bitflip.keras").write_bytes(bytes(flipped))
    encoder = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(4)])
    encoder.layers[-1].bias.assign([0.0, np.nan, 0.0, 0.0])
    encoder.save(folder / "nan_weights.keras")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 1)).astype(np.uint8)
    labels = np.arange(40) % 3
    good = dict(x_train=images[:30], y_train=labels[:30], x_test=images[30:], y_test=labels[30:])
    np.savez(folder / "label42.npz", **{**good, "y_test": np.where(labels[30:] == 1, 42, 0)})
    nan = (images / 255).astype(np.float32)
    nan[3, 2, 2, 0] = np.nan
    np.savez(folder / "nan_pixels.npz", **{**good, "x_train": nan[:30], "x_test": nan[30:]})
    np.savez(folder / "empty.npz", x_train=images[:0], y_train=labels[:0], x_test=images[:0],
             y_test=labels[:0])
    (folder / "garbage.npz").write_bytes(b"not a zip file at all")


def _case(tool, args, phrase, large=False):
    name = f"{tool}:{' '.join(args)}"
    if tool == "pretrain":  # Not the default runs/ folder.
        args = [*args, "--output_dir=out"]
    return pytest.param(tool, args, phrase, id=name, marks=[pytest.mark.large] if large else [])


EVALUATE = ["--encoder=good.keras", "--output_dir=out"]
EXPORT = ["--serving_dir=out", "--model_name=tiny"]
# (tool, arguments, a phrase of the message): the audit's bad inputs (issue 18) through every
# tool that takes them. Every one must fail before any work: nothing trained, nothing written.
# The default run keeps one or two a tool (each case is a fresh TensorFlow); `-m large`, the rest.
BAD_INPUTS = [
    _case("pretrain", ["--epochs=0"], "--epochs"),
    _case("pretrain", ["--epsilon=inf"], "must be in (0, 1] for L-inf", large=True),
    _case("pretrain", ["--epsilon=1.5"], "--epsilon=1.5 must be in (0, 1]", large=True),
    _case("pretrain", ["--epsilon=-0.1"], "--epsilon=-0.1 must be in (0, 1]", large=True),
    _case("pretrain", ["stray"], "unexpected arguments ['stray']", large=True),
    _case("pretrain", ["--epsilons=8/x"], "'8/x' is not a number", large=True),
    # 8/255 is accepted: the run gets as far as the (misspelled) task, before any training.
    _case("pretrain", ["--epsilons=8/255", "--task=parrity"], "Unknown task 'parrity'", large=True),
    _case("pretrain", ["--dataset=npz:missing.npz"], "missing.npz", large=True),
    _case("pretrain", ["--estimator=nope"], "--estimator='nope' is not registered", large=True),
    _case("pretrain", ["--dataset=npz:label42.npz"], "y_test has label 42, but", large=True),
    _case("pretrain", ["--dataset=npz:nan_pixels.npz"], "values that are not finite"),
    _case("pretrain", ["--dataset=npz:empty.npz"], "has no examples in its train split", large=True),
    _case("pretrain", ["--strategy=tpu_pod"], "--strategy='tpu_pod' is not registered", large=True),
    _case("pretrain", ["--strategy=multi_worker"], "$TF_CONFIG, which is not set", large=True),
    _case("pretrain", ["--dataset=npz:garbage.npz"], "is not a valid npz file", large=True),
    _case("pretrain", ["--attacks=nope"], "Unknown attack 'nope'", large=True),
    _case("evaluate", [*EVALUATE, "--attacks=nope"], "nope", large=True),
    _case("evaluate", [*EVALUATE, "--task=parrity"], "Unknown task 'parrity'", large=True),
    _case("evaluate", [*EVALUATE, "--epsilons=2"], "--epsilons=2 must be in (0, 1]"),
    _case("evaluate", ["--encoder=truncated.keras", "--output_dir=out"],
          "truncated.keras exists but is not a readable .keras file", large=True),
    _case("evaluate", ["--encoder=missing.keras", "--output_dir=out"], "missing.keras", large=True),
    _case("evaluate", ["--encoder=bitflip.keras", "--output_dir=out"],
          "not a readable .keras file (damaged or truncated?): Bad CRC-32"),
    _case("evaluate", ["--output_dir=out"], "--encoder is required (unless --merge)", large=True),
    _case("evaluate", [*EVALUATE, "--shard=1"], "--shard and --num_shards go together", large=True),
    _case("evaluate", [*EVALUATE, "--shard=2", "--num_shards=2"],
          "--shard=2 must be below --num_shards=2", large=True),
    _case("evaluate", [*EVALUATE, "--shard=0", "--num_shards=9", "--num_examples=100"],
          "9 shards of 1 batches", large=True),
    _case("evaluate", ["--merge=no_shards", "--output_dir=out"], "no_shards", large=True),
    _case("evaluate", [*EVALUATE, "--dataset=npz:label42.npz"], "y_test has label 42", large=True),
    _case("evaluate", [*EVALUATE, "--dataset=npz:empty.npz"], "has no examples", large=True),
    _case("evaluate", [*EVALUATE, "--epsilons=8/x"], "'8/x' is not a number", large=True),
    _case("evaluate", [*EVALUATE, "stray"], "unexpected arguments ['stray']", large=True),
    _case("export", ["--encoder=missing.keras", *EXPORT], "no .keras file at missing.keras", large=True),
    _case("export", ["--encoder=truncated.keras", *EXPORT],
          "truncated.keras exists but is not a readable .keras file", large=True),
    _case("export", ["--encoder=bitflip.keras", *EXPORT], "Bad CRC-32", large=True),
    _case("export", ["--encoder=nan_weights.keras", *EXPORT], "non-finite weights"),
    _case("export", ["--encoder=good.keras", "--serving_dir=out", "--model_name=a/b"],
          "Invalid model name 'a/b'", large=True),
    _case("export", ["--encoder=good.keras", *EXPORT, "--version=0"], "--version", large=True),
    _case("export", ["--encoder=good.keras", *EXPORT, "stray"], "unexpected arguments ['stray']",
          large=True),
    _case("zoo", ["show", "nope"], "Unknown zoo model 'nope'"),
    _case("zoo", ["list", "--zoo_dir=missing_zoo"], "No zoo manifest at missing_zoo", large=True),
    _case("zoo", ["bogus"], "Expected a command", large=True),
    _case("zoo", ["show"], "show takes exactly one NAME", large=True),
    _case("zoo", ["list", "stray"], "list takes no NAME", large=True),
]


def _arguments(item):
    params = getattr(item, "callspec", None) and item.callspec.params
    return (params["tool"], tuple(params["args"])) if params and "phrase" in params else None


@pytest.fixture(scope="module")
def results(request, tmp_path_factory):
    """Every selected case of the table, run in its own folder, three at a time (each case is a
    fresh Python that imports TensorFlow: seconds, mostly waiting on the import)."""
    shared = tmp_path_factory.mktemp("bad_inputs")
    _bad_files(shared)
    cases = {a for item in request.session.items if (a := _arguments(item))}

    def run(number, tool, args):
        folder = tmp_path_factory.mktemp(f"case{number}")
        for path in shared.iterdir():
            (folder / path.name).symlink_to(path)
        return folder, run_tool(f"tools.{tool}", *args, cwd=folder)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = {case: pool.submit(run, i, *case) for i, case in enumerate(sorted(cases))}
        yield futures


@pytest.mark.parametrize("tool, args, phrase", BAD_INPUTS)
def test_a_bad_input_is_one_error_line_and_status_2(results, tool, args, phrase):
    folder, result = results[(tool, tuple(args))].result()
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert phrase in errors[0]
    assert not (folder / "out").exists()  # Nothing trained, nothing written.


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
