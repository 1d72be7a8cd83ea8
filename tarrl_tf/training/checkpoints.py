"""Training backups that survive a kill at any moment, and a stop at the first non-finite value.

`AtomicBackupAndRestore` is `keras.callbacks.BackupAndRestore` with each
end-of-epoch backup written as a whole: the weights and the epoch go into a
hidden temporary folder in the backup folder, are synced to disk and the
folder is then renamed to `epoch_NNNN/`; `state.json` also keeps the states
of the model's random generators, so a resumed run draws the views and random
starts the interrupted one would have. The previous backup is deleted only
after that, so a kill (even in the middle of writing the weights) leaves the
last complete backup in place, and the rerun resumes from it. At the start, a
backup that does not load (damaged on disk) is skipped with a warning in
favour of the one before; if none loads, the run stops before any training
with an error naming the files and the command that clears them.

`StopOnNonFinite` stops `fit` at the first step whose loss (or any other
logged term) is NaN or infinite, and at the end of an epoch whose weights are
not finite, before the backup of that epoch is written: the last good backup
stays intact and is named in the error.
"""

import json
import math
import os
import re
import shutil
import warnings

import keras
import numpy as np

from tarrl_tf.files import temporary_dir, write_atomic

WEIGHTS_FILE = "backup.weights.h5"
STATE_FILE = "state.json"
_BACKUP = re.compile(r"^epoch_(\d+)$")
_TEMPORARY_PREFIX = ".partial-epoch_"


class BackupError(ValueError):
    """A backup folder from which training cannot resume."""


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite value; it stopped at that step."""


def backups(backup_dir):
    """The complete backups in `backup_dir`, newest first: `[(epoch, path), ...]`."""
    if not backup_dir or not os.path.isdir(backup_dir):
        return []
    found = [(int(m.group(1)), os.path.join(backup_dir, name))
             for name in os.listdir(backup_dir) if (m := _BACKUP.match(name))]
    return sorted(found, reverse=True)


def last_good_backup(backup_dir):
    """The newest complete backup folder, or None."""
    found = backups(backup_dir)
    return found[0][1] if found else None


def _fsync(path):
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backups are complete or absent (see the module doc).

    Args:
        backup_dir: the run's backup folder (created when needed, removed
            when training ends).
        keep: complete backups kept (at least 1; the newest are kept).
    """

    def __init__(self, backup_dir, *, keep=2):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=True)
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self.resumed_from = None

    def on_train_begin(self, logs=None):
        if self.resumed_from is None:
            self.restore()

    def restore(self):
        """Loads the newest backup that loads into the model; returns its epoch (0: none).

        `fit` calls it at the start; call it before to learn the epoch a run
        resumes at (e.g. to build the batches of the epochs left), and `fit`
        then does not load the backup again.
        """
        if not self.model.built:
            raise ValueError("To use AtomicBackupAndRestore, build the model before fit()")
        if not os.path.isdir(self.backup_dir):
            return 0
        for name in os.listdir(self.backup_dir):  # What a kill left half-written.
            if name.startswith(_TEMPORARY_PREFIX):
                shutil.rmtree(os.path.join(self.backup_dir, name), ignore_errors=True)
        found = backups(self.backup_dir)
        legacy = os.path.join(self.backup_dir, "latest.weights.h5")
        if not found and os.path.exists(legacy):
            found = [(None, self.backup_dir)]  # Written by keras's own BackupAndRestore.
        failures = []
        for epoch, path in found:
            try:
                epoch = self._restore(path, legacy if epoch is None else None)
            except Exception as e:  # A damaged file: h5py raises OSError, KeyError, ValueError...
                failures.append(f"{path}: {type(e).__name__}: {e}")
                continue
            for failure in failures:
                warnings.warn(f"Skipped a damaged backup, {failure}; resuming from {path}")
            self.model._initial_epoch = epoch
            self.resumed_from = path
            print(f"Resuming after epoch {epoch} from the backup {path}", flush=True)
            return epoch
        if failures:
            raise BackupError(
                "Cannot resume: no backup in " + self.backup_dir + " loads ("
                + "; ".join(failures) + "). Delete the folder to start this run from scratch: "
                f"rm -r {self.backup_dir!r}")
        return 0

    def _restore(self, path, legacy_weights=None):
        """Loads the backup in `path` into the model; returns its epoch."""
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        if legacy_weights:
            self.model.load_weights(legacy_weights)
            with open(os.path.join(path, "training_metadata.json")) as f:
                return int(json.load(f)["epoch"])
        with open(os.path.join(path, STATE_FILE)) as f:
            state = json.load(f)
        self.model.load_weights(os.path.join(path, WEIGHTS_FILE))
        generators = _seed_states(self.model)
        saved = state.get("seed_generators")
        if saved is not None:
            if len(saved) != len(generators):  # (their names are numbered per process)
                raise ValueError(f"it has {len(saved)} random generators, the model "
                                 f"{len(generators)}")
            for variable, value in zip(generators, saved):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        return int(state["epoch"])

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        epoch = self._current_epoch
        final = os.path.join(self.backup_dir, f"epoch_{epoch:04d}")
        tmp = temporary_dir(self.backup_dir, prefix=f"{_TEMPORARY_PREFIX}{epoch:04d}.")
        try:
            weights = os.path.join(tmp, WEIGHTS_FILE)
            self.model.save_weights(weights, overwrite=True)
            _fsync(weights)
            generators = [keras.ops.convert_to_numpy(v).tolist() for v in _seed_states(self.model)]
            write_atomic(os.path.join(tmp, STATE_FILE),
                         json.dumps({"epoch": epoch, "seed_generators": generators}))
            _fsync(tmp)
            if os.path.exists(final):  # From an earlier attempt at this epoch.
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync(self.backup_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, old in backups(self.backup_dir)[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)


def _seed_states(model):
    """The states of `model`'s random generators (views, random starts), in a fixed order.

    Keras' weights file leaves them out; a resumed run that started them again
    would draw other views than the interrupted run would have.
    """
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


class StopOnNonFinite(keras.callbacks.Callback):
    """Raises `NonFiniteError` at the first non-finite logged value or weight (see the module doc).

    Put it before the backup callback: an epoch whose weights are not finite
    is then never backed up.

    Args:
        backup_dir: the run's backup folder, named in the error (or None).
    """

    def __init__(self, backup_dir=None):
        super().__init__()
        self.backup_dir = backup_dir
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for term, value in (logs or {}).items():
            try:
                value = float(np.asarray(value))
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                self._stop(f"{term} is {value}", f"step {batch + 1} of epoch {self._epoch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        for variable in self.model.trainable_variables:
            if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
                self._stop(f"the weights are not finite (gradients: {variable.path})",
                           f"the end of epoch {epoch + 1}")

    def _stop(self, what, where):
        good = last_good_backup(self.backup_dir)
        kept = (f"the last good checkpoint {good} is kept" if good
                else "there is no earlier checkpoint of this run")
        raise NonFiniteError(
            f"Training stopped: {what} at {where}; {kept}. Lower the learning rate, the "
            "regularizer's weight or epsilon, or check the data for NaN")
