"""Tests of the console commands' front ends (`tarrl_tf_cli`): fast help, flags checked against
the registries, no TensorFlow before the flags are parsed."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

from tarrl_tf import encoders
from tarrl_tf.evaluation import downstream
from tarrl_tf.robustness import divergences, regularizers
from tarrl_tf.ssl import methods

REPO = pathlib.Path(__file__).resolve().parents[1]
PROGRAMS = ("pretrain", "evaluate", "export", "zoo")
# What --help must answer within: "about a second", with room for a loaded 2-core machine.
HELP_SECONDS = 3.0


def _run(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_exits_0_at_once_and_lists_the_flags(program):
    start = time.perf_counter()
    result = _run("-m", f"tools.{program}", "--help")
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert seconds < HELP_SECONDS, f"--help took {seconds:.1f} s"
    assert f"tarrl_tf_cli.{program}:" in result.stdout and "--" in result.stdout
    assert f"tarrl-{program}" in result.stdout  # the usage names the console command
    full = _run("-m", f"tools.{program}", "--helpfull")
    assert full.returncode == 0 and "absl.logging" in full.stdout


@pytest.mark.parametrize("program", PROGRAMS)
def test_programs_import_no_tensorflow_before_parsing(program):
    check = (f"import sys, tarrl_tf_cli.{program}; "
             "assert not {'tensorflow', 'keras', 'tarrl_tf'} & set(sys.modules), sorted(sys.modules)")
    result = _run("-c", check)
    assert result.returncode == 0, result.stderr[-2000:]


def test_registry_flags_are_checked_after_parsing():
    result = _run("-m", "tools.pretrain", "--estimator=bogus")
    assert result.returncode != 0
    assert (f"--estimator='bogus' is not registered; choose one of "
            f"{list(regularizers.ESTIMATORS.names())}") in result.stderr
    # Only the usage and the one error: no TensorFlow start-up lines.
    assert "cuInit" not in result.stderr and "oneDNN" not in result.stderr


def test_help_names_the_registries_the_flags_are_checked_against():
    text = _run("-m", "tools.pretrain", "--help").stdout + _run("-m", "tools.evaluate",
                                                                "--help").stdout
    for registry in ("encoders.ARCHITECTURES", "methods.METHODS", "regularizers.ESTIMATORS",
                     "divergences.DIVERGENCES", "downstream.HEADS", "attacks.ATTACKS"):
        assert registry in text
    # ... and those registries hold the defaults the flags start from.
    assert "pgd" in regularizers.ESTIMATORS and "simclr" in methods.METHODS
    assert "normalized_relative_l2" in divergences.NAMES and "linear" in downstream.HEADS
    assert "small_cnn" in encoders.ARCHITECTURES


def test_startup_noise_is_dropped_and_everything_else_kept():
    from tarrl_tf_cli import startup

    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1.2 123 port.cc:153] oneDNN custom operations are on. You may see ...",
        "I0000 00:00:1.2 123 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU",
        "I0000 00:00:1.2 123 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
        "with the appropriate compiler flags.",
        "E0000 00:00:1.2 123 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    ]
    kept = ["E0000 00:00:1.2 123 some_op.cc:1] a real error", "Traceback (most recent call last):"]
    assert [line for line in lines + kept if not startup._NOISE.search(line)] == kept


def test_only_kerass_own_step_functions_are_spared_the_retracing_warning():
    import logging

    from tarrl_tf_cli import startup

    def record(message):
        return logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, message, None, None)

    keras_step = ("5 out of the last 12 calls to <function TensorFlowTrainer.make_predict_function."
                  "<locals>.one_step_on_data_distributed at 0x1> triggered tf.function retracing.")
    ours = "5 out of the last 5 calls to <function batch_shift at 0x1> triggered tf.function retracing."
    assert not startup._keras_step_retracing(record(keras_step))
    assert startup._keras_step_retracing(record(ours))
    assert startup._keras_step_retracing(record("any other warning"))
