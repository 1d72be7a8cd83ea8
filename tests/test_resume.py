"""A run killed with SIGKILL at any point and started again ends with the weights of an unbroken run.

Each case runs a tiny training in a real subprocess, holds it at one point
(`$HOLD_AT`), kills it there with SIGKILL, runs the same command again and
compares the final encoder with the one of a run that was never interrupted:
bit for bit (same CPU, same threads; the runs differ only in the restart).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tarrl_tf.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `python run.py METHOD RUN_DIR`: trains METHOD for 3 epochs of 4 steps with its backups in
# RUN_DIR/backup and saves RUN_DIR/encoder.npz. $HOLD_AT stops it (for the test to kill it) at
# "batch E B" (before batch B of epoch E, from 0), "save N" (the N-th backup's weights half
# written, as a kill in the middle of h5py's write leaves them) or "saved N" (the N-th backup
# complete, after the training clock is written and, after the last epoch, before the backups
# are removed). It prints the epochs it trained and saves the history it returned.
_RUN = textwrap.dedent("""
    import json, os, pathlib, sys, time
    import keras
    import numpy as np
    from tarrl_tf import pipeline
    from tarrl_tf.testing import prototype_data
    from tarrl_tf.training import checkpoints, pretraining

    method, run_dir = sys.argv[1], pathlib.Path(sys.argv[2])
    hold = os.environ.get("HOLD_AT", "")

    def wait_for_the_kill():
        open(os.environ["HOLD_MARKER"], "w").close()
        time.sleep(600)

    trained = []

    class Hold(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            trained.append(epoch)

        def on_train_batch_begin(self, batch, logs=None):
            if hold == f"batch {self.epoch} {batch}":
                wait_for_the_kill()

    fit = keras.Model.fit
    keras.Model.fit = lambda self, *a, callbacks=(), **k: fit(self, *a, callbacks=[*callbacks, Hold()], **k)
    saves = []
    save_weights = keras.Model.save_weights

    def half_written(self, path, *args, **kwargs):
        save_weights(self, path, *args, **kwargs)
        saves.append(path)
        if hold == f"save {len(saves)}":
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            wait_for_the_kill()

    keras.Model.save_weights = half_written
    save_model = checkpoints.AtomicBackupAndRestore._save_model

    def saved(self):
        save_model(self)
        if hold == f"saved {len(saves)}":
            wait_for_the_kill()

    checkpoints.AtomicBackupAndRestore._save_model = saved

    x, y = prototype_data(64, seed=1)
    if method == "tarrl":  # The command's path: pretraining.pretrain, with a warm-up.
        encoder = pretraining.make_encoder(x.shape[1:], width=4, seed=0)
        regularizer = pretraining.make_regularizer("pgd", epsilon=0.1, steps=2,
                                                   divergence="normalized_relative_l2")
        _, history, _ = pretraining.pretrain(
            encoder, x, regularizer=regularizer, weight=1.0, epochs=3, batch_size=16,
            warmup_epochs=2, seed=0, backup_dir=str(run_dir / "backup"), verbose=0)
    else:  # The pipeline's path, by the method's registered name.
        row = {"name": "tiny", "method": method, "architecture": "small_cnn", "width": 4,
               "epochs": 3, "batch_size": 16, "learning_rate": 1e-3,
               "threat_model": {"norm": "inf", "epsilon": 0.1},
               "regularizer": {"steps": 2, "warmup_epochs": 1}}
        settings = pipeline.Settings(datasets_dir=".", output_dir=str(run_dir))
        encoder, history, _ = pipeline.train(row, x, y, run_dir, settings)
    np.savez(run_dir / "encoder.npz", *encoder.get_weights())
    (run_dir / "history.json").write_text(json.dumps(history))
    print("EPOCHS RUN", len(trained))
""")


def _run(tmp_path, method, run_dir, hold=None):
    """Runs the script; with `hold`, kills it with SIGKILL once it holds there."""
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    marker = tmp_path / "holding"
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
               HOLD_AT=hold or "", HOLD_MARKER=str(marker))
    process = subprocess.Popen([sys.executable, str(script), method, str(run_dir)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if hold is None:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        return out
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.time() < deadline, f"the run never reached {hold!r}"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:  # A failed wait leaves nothing sleeping behind.
            process.kill()
            process.communicate()
    marker.unlink()
    return None


def _weights(run_dir):
    with np.load(run_dir / "encoder.npz") as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _assert_same_run(run_dir, reference):
    """The same final weights, and the same history of all 3 epochs (not only the rerun's)."""
    got, expected = _weights(run_dir), _weights(reference)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    history, unbroken = (json.loads((d / "history.json").read_text()) for d in (run_dir, reference))
    assert sorted(history) == sorted(unbroken)
    for name, values in history.items():
        assert len(values) == 3 and np.allclose(values, unbroken[name], rtol=1e-6), name


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    """The reference runs, never interrupted: one folder per method."""
    folders = {}

    def run(method):
        if method not in folders:
            tmp = tmp_path_factory.mktemp(f"unbroken_{method}")
            _run(tmp, method, tmp / "run")
            folders[method] = tmp / "run"
        return folders[method]

    return run


# (where the kill falls, $HOLD_AT, the complete backups it leaves, epochs the rerun trains).
# About 25 s a run on 2 busy cores: the first two run by default, the others with `large`.
KILLS = [
    pytest.param("mid-epoch", "batch 1 2", [1], 2, id="mid-epoch"),
    pytest.param("during the backup write", "save 2", [1], 2, id="during the backup write"),
    pytest.param("before the first backup", "batch 0 2", [], 3, id="before the first backup",
                 marks=pytest.mark.large),
    pytest.param("just after a backup", "saved 2", [2, 1], 1, id="just after a backup",
                 marks=pytest.mark.large),
    pytest.param("after the last backup", "saved 3", [3, 2], 0, id="after the last backup",
                 marks=pytest.mark.large),
]


@pytest.mark.large
@pytest.mark.parametrize("where, hold, left, rerun_epochs", KILLS)
def test_a_killed_tarrl_run_resumes_to_the_weights_of_an_unbroken_run(
        tmp_path, unbroken, where, hold, left, rerun_epochs):
    run_dir = tmp_path / "run"
    _run(tmp_path, "tarrl", run_dir, hold=hold)
    backup = run_dir / "backup"
    assert [epoch for epoch, _ in checkpoints.backups(str(backup))] == left
    if hold.startswith("save "):  # The half-written backup is a hidden folder, never epoch_0002.
        assert any(name.startswith(".partial-epoch_0002") for name in os.listdir(backup))
    out = _run(tmp_path, "tarrl", run_dir)
    assert f"EPOCHS RUN {rerun_epochs}" in out
    assert (f"Resuming after epoch {left[0]}" in out) if left else ("Resuming" not in out)
    assert not backup.exists()  # A finished run cleans up.
    _assert_same_run(run_dir, unbroken("tarrl"))


@pytest.mark.large
@pytest.mark.parametrize("method", ["supervised_at", "acl"])
def test_a_baseline_killed_mid_epoch_resumes_to_the_weights_of_an_unbroken_run(
        tmp_path, unbroken, method):
    run_dir = tmp_path / "run"
    _run(tmp_path, method, run_dir, hold="batch 1 2")
    out = _run(tmp_path, method, run_dir)
    assert "Resuming after epoch 1" in out and "EPOCHS RUN 2" in out
    _assert_same_run(run_dir, unbroken(method))
