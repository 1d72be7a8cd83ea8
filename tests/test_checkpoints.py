"""Backups that survive a SIGKILL while they are written, and training that stops at a NaN."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from tarrl_tf.robustness import regularizers
from tarrl_tf.training import checkpoints, pretraining
from tarrl_tf.zoo import serving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny pretraining run; with $HOLD_AT_SAVE=n its n-th backup write stops half-way
# (the weights file truncated, as a kill in the middle of h5py's write leaves it) and waits.
_RUN = textwrap.dedent("""
    import os, sys, time
    import keras
    import numpy as np
    from tarrl_tf.training import pretraining

    hold = int(os.environ.get("HOLD_AT_SAVE", "0"))
    calls = []
    original = keras.Model.save_weights

    def save_weights(self, filepath, *args, **kwargs):
        original(self, filepath, *args, **kwargs)
        calls.append(filepath)
        if len(calls) == hold:
            with open(filepath, "r+b") as f:
                f.truncate(os.path.getsize(filepath) // 2)
            open(os.environ["HOLD_MARKER"], "w").close()
            time.sleep(600)

    keras.Model.save_weights = save_weights
    images = np.random.RandomState(0).rand(64, 12, 12, 1).astype("float32")
    encoder = pretraining.make_encoder(images.shape[1:], width=4, seed=0)
    _, history, _ = pretraining.pretrain(encoder, images, epochs=3, batch_size=32,
                                         backup_dir=sys.argv[1], verbose=0)
    encoder.save(sys.argv[2])
    print("FINISHED", len(history["loss"]))
""")


def _start(tmp_path, **env):
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", **env)
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "backup"), str(tmp_path / "encoder.keras")],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_kill_during_the_backup_write_resumes_from_the_last_complete_backup(tmp_path):
    marker = tmp_path / "holding"
    process = _start(tmp_path, HOLD_AT_SAVE="2", HOLD_MARKER=str(marker))
    deadline = time.time() + 240
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the run never reached its second backup"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    backup = tmp_path / "backup"
    # The half-written backup of epoch 2 is in a hidden folder; epoch 1's is whole.
    assert [epoch for epoch, _ in checkpoints.backups(str(backup))] == [1]
    assert any(name.startswith(".partial-epoch_0002") for name in os.listdir(backup))

    rerun = _start(tmp_path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    assert "Resuming after epoch 1" in out
    assert "FINISHED 2" in out  # Epochs 2 and 3 only.
    assert not backup.exists()  # A finished run cleans up.
    encoder = keras.models.load_model(tmp_path / "encoder.keras", compile=False)
    assert all(np.all(np.isfinite(w)) for w in encoder.get_weights())


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _backup_epochs(model, backup_dir, epochs):
    callback = checkpoints.AtomicBackupAndRestore(str(backup_dir))
    callback.set_model(model)
    model.optimizer.build(model.trainable_variables)
    for epoch in epochs:
        callback._current_epoch = epoch
        callback._save_model()


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)


def test_a_damaged_newest_backup_is_skipped_for_the_one_before(tmp_path):
    saved = _tiny_model()
    _backup_epochs(saved, tmp_path, [1, 2])
    _truncate(tmp_path / "epoch_0002" / checkpoints.WEIGHTS_FILE)
    model = _tiny_model(seed=1)
    callback = checkpoints.AtomicBackupAndRestore(str(tmp_path))
    callback.set_model(model)
    with pytest.warns(UserWarning, match="Skipped a damaged backup.*epoch_0002"):
        callback.on_train_begin()
    assert callback.resumed_from == str(tmp_path / "epoch_0001")
    assert model._initial_epoch == 1
    for a, b in zip(model.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_no_loadable_backup_is_refused_naming_the_file_and_the_fix(tmp_path):
    _backup_epochs(_tiny_model(), tmp_path, [1])
    _truncate(tmp_path / "epoch_0001" / checkpoints.WEIGHTS_FILE)
    callback = checkpoints.AtomicBackupAndRestore(str(tmp_path))
    callback.set_model(_tiny_model())
    with pytest.raises(checkpoints.BackupError, match=r"epoch_0001.*rm -r"):
        callback.on_train_begin()


def test_only_the_newest_backups_are_kept(tmp_path):
    _backup_epochs(_tiny_model(), tmp_path, [1, 2, 3])
    assert [epoch for epoch, _ in checkpoints.backups(str(tmp_path))] == [3, 2]


class _Poison(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.layers[0].kernel.assign(np.full((3, 2), np.nan, np.float32))


def test_a_nan_stops_fit_at_once_and_keeps_the_last_good_backup(tmp_path):
    model = _tiny_model()
    x, y = np.ones((16, 3), np.float32), np.zeros((16, 2), np.float32)
    callbacks = [checkpoints.StopOnNonFinite(str(tmp_path)),
                 checkpoints.AtomicBackupAndRestore(str(tmp_path)), _Poison()]
    with pytest.raises(checkpoints.NonFiniteError,
                       match=r"loss is nan at step 1 of epoch 2; the last good checkpoint "
                             r".*epoch_0001 is kept"):
        model.fit(x, y, batch_size=4, epochs=3, callbacks=callbacks, verbose=0)
    assert [epoch for epoch, _ in checkpoints.backups(str(tmp_path))] == [1]
    restored = _tiny_model(seed=1)
    restored.load_weights(tmp_path / "epoch_0001" / checkpoints.WEIGHTS_FILE)
    assert all(np.all(np.isfinite(w)) for w in restored.get_weights())


def test_an_absurd_learning_rate_stops_pretraining_naming_the_step():
    images = np.random.RandomState(0).rand(64, 12, 12, 1).astype("float32")
    encoder = pretraining.make_encoder(images.shape[1:], width=4, seed=0)
    with pytest.raises(checkpoints.NonFiniteError, match=r"loss is (nan|inf) at step \d+ of epoch 1"):
        pretraining.pretrain(encoder, images, epochs=3, batch_size=32, learning_rate=1e6, verbose=0)


def test_non_finite_weights_are_not_exported(tmp_path):
    encoder = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(3)])
    encoder.layers[-1].bias.assign([0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="non-finite weights.*refusing to export"):
        serving.export_serving(encoder, tmp_path / "model")
    assert not (tmp_path / "model" / "1").exists()


@pytest.mark.parametrize("epsilon", [float("inf"), float("nan"), -0.1])
def test_pgd_refuses_a_radius_that_is_not_finite_and_non_negative(epsilon):
    with pytest.raises(ValueError, match="epsilon must be finite and >= 0"):
        regularizers.PGD(epsilon=epsilon)
