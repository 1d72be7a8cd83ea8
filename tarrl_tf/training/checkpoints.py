"""Training backups that survive a kill at any moment, and a stop at the first non-finite value.

`AtomicBackupAndRestore` is `keras.callbacks.BackupAndRestore` with each
end-of-epoch backup written as a whole: the weights (with the optimizer's
state), the epoch and the state that `save_weights` leaves out (the random
generators of views and random starts, an estimator's memory) go into a
hidden temporary folder in the backup folder, are synced to disk and the
folder is then renamed to `epoch_NNNN/`. The previous backup is deleted only
after that, so a kill (even in the middle of writing the weights) leaves the
last complete backup in place, and the rerun resumes from it. At the start, a
backup that does not load (damaged on disk) is skipped with a warning in
favour of the one before; if none loads, the run stops before any training
with an error naming the files and the command that clears them.

A resumed run ends with the weights of the run that never stopped (bit for
bit on CPU) when its data are ordered by epoch too (`data.epochs`, as
`pretraining.fit_model` does): it restarts at the epoch after the last
backup, with the model, the optimizer and every random generator as they
were then, and sees that epoch's batches in the same order.

`StopOnNonFinite` stops `fit` at the first step whose loss (or any other
logged term) is NaN or infinite, and at the end of an epoch whose weights are
not finite, before the backup of that epoch is written: the last good backup
stays intact and is named in the error. The training models check their loss
terms and gradients in the graph too, before the optimizer applies them
(`finite_gradients`), so the step that produced the first NaN is the one
named, with its term.
"""

import contextlib
import json
import math
import os
import re
import shutil
import warnings

import keras
import numpy as np
import tensorflow as tf

from tarrl_tf.files import temporary_dir, write_atomic

WEIGHTS_FILE = "backup.weights.h5"
STATE_FILE = "state.json"
# What `save_weights` leaves out (`unsaved_variables`), one array per variable.
VARIABLES_FILE = "variables.npz"
_BACKUP = re.compile(r"^epoch_(\d+)$")
_TEMPORARY_PREFIX = ".partial-epoch_"


class BackupError(ValueError):
    """A backup folder from which training cannot resume."""


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite value; it stopped at that step."""


# Starts the message of the in-graph checks of `finite_gradients` (not `checks.ERROR_MARKER`:
# this is no input error).
NON_FINITE_MARKER = "tarrl_tf non-finite: "


def finite_gradients(gradients, variables, loss, *, step, **terms):
    """`gradients`, passed on only once the loss terms and gradients are checked finite (in graph).

    A failed check stops the step before the optimizer applies the
    gradients, with an error naming the term (or the variable of the
    gradient) and `step` (the optimizer step being taken, read before the
    optimizer counts it), which `stopped_at_non_finite` turns into a
    `NonFiniteError`. The named terms go first, then the `loss` they make up,
    then the gradients: a NaN term makes all of those NaN, and the term is
    the cause. No Python runs per step, so it holds inside `tf.function`.
    """
    term_checks = [_assert_finite(value, f"{name} is not finite", step)
                   for name, value in terms.items()]
    with tf.control_dependencies(term_checks):
        loss_check = _assert_finite(loss, "loss is not finite", step)
    with tf.control_dependencies([loss_check]):
        gradient_checks = [
            _assert_finite(g.values if isinstance(g, tf.IndexedSlices) else g,
                           f"the gradient of {v.path} is not finite", step)
            for g, v in zip(gradients, variables) if g is not None]
    with tf.control_dependencies([loss_check] + gradient_checks):
        return [g if g is None or isinstance(g, tf.IndexedSlices) else tf.identity(g)
                for g in gradients]


def _assert_finite(value, message, step):
    return tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(value)),
                               [NON_FINITE_MARKER + message, _STEP_LABEL, step])


_STEP_LABEL = "at optimizer step"
_NON_FINITE_RE = re.compile(re.escape(NON_FINITE_MARKER) + r"([^\]]*)\] \[" + _STEP_LABEL
                            + r"\] \[(\d+)\]")


@contextlib.contextmanager
def stopped_at_non_finite(callbacks):
    """Re-raises a failed `finite_gradients` check as a `NonFiniteError` naming where it stopped.

    The step and epoch come from the `StopOnNonFinite` among `callbacks`
    (with the last good backup), or else from the check: the optimizer step.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        found = _NON_FINITE_RE.search(str(error.message))
        if found is None:
            raise
        what, step = found.groups()
        watcher = next((c for c in callbacks or () if isinstance(c, StopOnNonFinite)), None)
        where = watcher.where if watcher else f"optimizer step {step}"
        raise (watcher or StopOnNonFinite()).error(what, where) from None


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


def unsaved_variables(model):
    """The variables a resumed run needs that `model.save_weights` leaves out.

    The states of the random generators (`keras.random.SeedGenerator`: views,
    random starts, dropout), and what a training model lists in its own
    `unsaved_variables` (an estimator's memory). In a fixed order: the same
    model built by the same code lists them alike.
    """
    saved = {id(v) for v in model.weights}
    found = [v for v in model.variables if id(v) not in saved]
    found += [v for v in getattr(model, "unsaved_variables", ()) if id(v) not in saved]
    return list({id(v): v for v in found}.values())


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
        self._restored_epoch = None

    def restore(self):
        """Loads the newest backup that loads into the model; returns its epoch (0: none).

        `fit` calls it at the start (`on_train_begin`); call it before `fit`
        to learn the epoch the run resumes at (e.g. to start the data there).
        Once per callback: later calls return the same epoch.
        """
        if self._restored_epoch is None:
            self._restored_epoch = self._restore_newest()
        return self._restored_epoch

    def on_train_begin(self, logs=None):
        epoch = self.restore()
        if epoch:
            self.model._initial_epoch = epoch

    def _restore_newest(self):
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
            epoch = int(json.load(f)["epoch"])
        variables = unsaved_variables(self.model)
        arrays = os.path.join(path, VARIABLES_FILE)
        if os.path.exists(arrays):
            with np.load(arrays) as saved:
                values = [saved[f"v{i}"] for i in range(len(saved.files))]
            if [v.shape for v in values] != [tuple(v.shape) for v in variables]:
                raise ValueError(f"{arrays} holds {len(values)} variables that do not fit "
                                 f"this model's {len(variables)} (another model's backup?)")
        else:
            values = None
            warnings.warn(f"{path} has no {VARIABLES_FILE} (an older backup): the random "
                          "generators restart, so the resumed run differs from an unbroken one")
        self.model.load_weights(os.path.join(path, WEIGHTS_FILE))
        for variable, value in zip(variables, values or ()):
            variable.assign(value)
        return epoch

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        epoch = self._current_epoch
        final = os.path.join(self.backup_dir, f"epoch_{epoch:04d}")
        tmp = temporary_dir(self.backup_dir, prefix=f"{_TEMPORARY_PREFIX}{epoch:04d}.")
        try:
            weights = os.path.join(tmp, WEIGHTS_FILE)
            self.model.save_weights(weights, overwrite=True)
            _fsync(weights)
            arrays = os.path.join(tmp, VARIABLES_FILE)
            np.savez(arrays, **{f"v{i}": keras.ops.convert_to_numpy(v)
                                for i, v in enumerate(unsaved_variables(self.model))})
            _fsync(arrays)
            write_atomic(os.path.join(tmp, STATE_FILE), json.dumps({"epoch": epoch}))
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
        self._epoch = self._batch = 0

    @property
    def where(self):
        """The step being trained, as the errors name it."""
        return f"step {self._batch + 1} of epoch {self._epoch + 1}"

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._batch = batch

    def on_train_batch_end(self, batch, logs=None):
        for term, value in (logs or {}).items():
            try:
                value = float(np.asarray(value))
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                raise self.error(f"{term} is {value}", self.where)

    def on_epoch_end(self, epoch, logs=None):
        for variable in self.model.trainable_variables:
            if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
                raise self.error(f"the weights are not finite (gradients: {variable.path})",
                                 f"the end of epoch {epoch + 1}")

    def error(self, what, where):
        """The `NonFiniteError` for `what` happening at `where`, naming the last good backup."""
        good = last_good_backup(self.backup_dir)
        kept = (f"the last good checkpoint {good} is kept" if good
                else "there is no earlier checkpoint of this run")
        return NonFiniteError(
            f"Training stopped: {what} at {where}; {kept}. Lower the learning rate, the "
            "regularizer's weight or epsilon, or check the data for NaN")
