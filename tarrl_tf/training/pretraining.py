"""One pretraining run from plain values: what `tools/pretrain.py` and the experiments call."""

import inspect
import json
import os
import time
import warnings

import keras
import tensorflow as tf

from tarrl_tf import data, encoders
from tarrl_tf.files import write_atomic
from tarrl_tf.robustness import regularizers
from tarrl_tf.robustness.regularizers import ESTIMATORS  # noqa: F401 (its old home)
from tarrl_tf.training import distribute
from tarrl_tf.training.checkpoints import AtomicBackupAndRestore, StopOnNonFinite
from tarrl_tf.training.tarrl_model import TARRLModel


def architecture_for(input_shape, architecture="auto"):
    """The architecture `make_encoder` builds: `architecture`, or for `"auto"` `small_cnn` for
    grayscale images and `cifar_resnet` for RGB."""
    if architecture == "auto":
        return "cifar_resnet" if input_shape[-1] == 3 else "small_cnn"
    return architecture


def make_encoder(input_shape, *, architecture="auto", width=None, norm=None, seed=0):
    """`small_cnn` for small grayscale images, `cifar_resnet` for RGB (or as asked).

    `norm` is the ResNet's normalization (`encoders.NORMS`, default `"batch"`);
    `small_cnn` has none, and refuses one.
    """
    architecture = architecture_for(input_shape, architecture)
    builder = encoders.ARCHITECTURES.get(architecture)
    options = {"width": width} if width else {}
    if norm is not None:
        if "norm" not in inspect.signature(builder).parameters:
            raise ValueError(f"{architecture} has no normalization layers; got norm={norm!r}")
        options["norm"] = norm
    keras.utils.set_random_seed(seed)
    return builder(input_shape=input_shape, **options)


def make_regularizer(estimator, *, epsilon, norm="inf", steps=5, divergence="squared_l2",
                     num_examples=None):
    """A regularizer by estimator name (see `regularizers.build`)."""
    return regularizers.build(estimator, epsilon=epsilon, norm=norm, steps=steps,
                              divergence=divergence, num_examples=num_examples)


def fit_model(model, dataset, *, steps_per_epoch, epochs, learning_rate, backup_dir=None, verbose=1):
    """Compiles `model` with Adam (cosine decay to 0) and fits it; returns `(history, seconds)`.

    Args:
        model: a training model (`TARRLModel` or a baseline).
        dataset: `make(first_epoch)`, returning the batches of the epochs
            `first_epoch, ..., epochs - 1` in an order set by the epoch
            (`data.pretraining_dataset(..., epochs=epochs, first_epoch=...)`),
            or a batched `tf.data.Dataset` of one epoch (tf.data's order: a
            resumed run then sees other batches than an unbroken one).
        steps_per_epoch: batches per epoch (for the schedule).
        epochs: training epochs.
        learning_rate: Adam's initial learning rate.
        backup_dir: a folder for the end-of-epoch backups
            (`checkpoints.AtomicBackupAndRestore`): an interrupted run (even
            killed while writing a backup) started again with the same folder
            resumes after its last complete epoch, with the model, optimizer
            and random generators of then, and (with `make`) ends with the
            weights of the run that never stopped; the seconds and the
            history (one value per epoch and log) returned count the runs
            before the restart too.
        verbose: Keras verbosity.

    Under `tf.distribute`, call it in the strategy's scope (the optimizer's
    variables are created here).

    Raises:
        checkpoints.NonFiniteError: a loss term, a gradient or the weights
            became NaN or infinite; training stops at that step and the last
            good backup is kept.
        checkpoints.BackupError: `backup_dir` holds no backup that loads.
    """
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, epochs * steps_per_epoch))
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    clock = TrainingClock(backup_dir)
    backup = AtomicBackupAndRestore(backup_dir) if backup_dir else None
    # The check first: a non-finite epoch is never backed up. The clock before the backup: once
    # an epoch's backup is complete, its time and logs are on disk too.
    callbacks = [StopOnNonFinite(backup_dir), clock] + ([backup] if backup else [])
    options = {}
    if callable(dataset):
        # Restored before the data are made: they start at the epoch the run resumes at.
        first_epoch = 0
        if backup:
            backup.set_model(model)
            first_epoch = backup.restore()
        # Killed after the last backup, before it was removed: no epoch is left, fit only cleans up.
        start = min(first_epoch, epochs - 1)
        dataset = dataset(start)
        options = {"initial_epoch": first_epoch,
                   "steps_per_epoch": int(dataset.cardinality()) // (epochs - start)}
    # The dataset is shuffled already (and Keras would warn that shuffle=True is ignored).
    model.fit(dataset, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False,
              **options)
    # The clock's history: with a backup folder, the epochs before a restart too.
    return clock.history, clock.seconds


class TrainingClock(keras.callbacks.Callback):
    """Training time and per-epoch logs, over the runs of one `BackupAndRestore` folder if given.

    A resumed run alone would report only the epochs after the restart: a
    model card would understate the cost of the method, and a report's
    training history would start at the restart. The time and the logs so
    far are kept in `<backup_dir>/clock.json` after each epoch, beside the
    backup they belong to (and removed with it when training ends).
    """

    def __init__(self, backup_dir=None):
        super().__init__()
        self.path = os.path.join(backup_dir, "clock.json") if backup_dir else None
        self.seconds = 0.0
        self.history = {}

    def on_train_begin(self, logs=None):
        self._earlier, self._timed_epochs, self.history = 0.0, 0, {}
        if self.path and os.path.exists(self.path):
            with open(self.path) as f:
                saved = json.load(f)
            self._earlier, self._timed_epochs = saved["seconds"], saved["epochs"]
            # Folders written before the logs were kept have none: the history starts later.
            self.history = saved.get("history", {})
        self._resume_checked = False
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        if not self._resume_checked:
            self._resume_checked = True
            # Killed after the clock, before its epoch's backup was complete: that epoch runs
            # again, so its logs go (its time stays: it was spent).
            self.history = {name: values[:epoch] for name, values in self.history.items()}
            if epoch > self._timed_epochs:
                warnings.warn(
                    f"Resuming at epoch {epoch + 1}, but {self.path} timed {self._timed_epochs} "
                    "epochs: the wall-clock time and history returned leave out the others"
                )

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = self._earlier + time.perf_counter() - self._start
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        if self.path:
            write_atomic(self.path, json.dumps({"epochs": epoch + 1, "seconds": self.seconds,
                                                "history": self.history}))

    def on_train_end(self, logs=None):
        self.seconds = self._earlier + time.perf_counter() - self._start


def pretrain(
    encoder,
    images,
    *,
    method="simclr",
    regularizer=None,
    weight=0.0,
    epochs=10,
    batch_size=256,
    learning_rate=1e-3,
    warmup_epochs=0,
    regularize_on="images",
    regularized_fraction=1.0,
    batch_statistics=None,
    keep_weight=0.0,
    reference=None,
    seed=0,
    backup_dir=None,
    mixed_precision=None,
    strategy=None,
    verbose=1,
):
    """Pretrains `encoder` on unlabeled `images` with `ssl_loss + weight * R`.

    Args:
        encoder: the encoder to train (in place).
        images: float images `[N, H, W, C]` in [0, 1].
        method: SSL method name or object.
        regularizer: a regularizer, or None for plain SSL.
        weight: the regularizer's weight; 0 gives plain SSL.
        epochs: training epochs.
        batch_size: images per step: the GLOBAL batch, split over the
            strategy's replicas (a multiple of their number).
        learning_rate: Adam's learning rate (cosine-decayed to 0).
        warmup_epochs: epochs over which epsilon and weight ramp up.
        regularize_on: `"images"` or `"views"` (see `TARRLModel`).
        regularized_fraction: the part of each batch `R` is estimated on
            (see `TARRLModel`).
        batch_statistics: see `TARRLModel`; None decides from the encoder.
        keep_weight, reference: see `TARRLModel` (a second stage kept near
            the frozen encoder it started from).
        seed: seed for views, random starts and shuffling.
        backup_dir: see `fit_model`.
        mixed_precision: None (float32) or `"bfloat16"`: the encoder and the
            projector compute in bfloat16 during training (see `TARRLModel`).
        strategy: the `tf.distribute.Strategy` to train under; None: the one
            the encoder was built under (else the current one). The encoder
            must be built in its scope (`with strategy.scope(): encoder =
            make_encoder(...)`); the training model and the optimizer are
            built there too, and Keras distributes the batches.
        verbose: Keras verbosity.

    Returns:
        `(model, history, seconds)`: the `TARRLModel`, the Keras history dict
        and the wall-clock training time.
    """
    strategy = strategy or distribute.strategy_of(encoder) or tf.distribute.get_strategy()
    distribute.check_built_in(strategy, encoder)
    distribute.check_global_batch(batch_size, strategy)
    steps_per_epoch = len(images) // batch_size
    warmup_steps = warmup_epochs * steps_per_epoch
    with strategy.scope():
        model = TARRLModel(
            encoder, method=method, regularizer=regularizer if weight > 0 else None,
            weight=weight, epsilon_warmup_steps=warmup_steps, weight_warmup_steps=warmup_steps,
            regularize_on=regularize_on, regularized_fraction=regularized_fraction,
            batch_statistics=batch_statistics, keep_weight=keep_weight, reference=reference,
            seed=seed, mixed_precision=mixed_precision,
        )

        def dataset(first_epoch):
            # Epoch e's order follows from (seed, e): the same on any number of devices and
            # after a resume.
            return data.epoch_batches(images, batch_size=batch_size, seed=seed, epochs=epochs,
                                      first_epoch=first_epoch, with_indices=model.takes_indices)

        history, seconds = fit_model(
            model, dataset, steps_per_epoch=steps_per_epoch, epochs=epochs,
            learning_rate=learning_rate, backup_dir=backup_dir, verbose=verbose)
    return model, history, seconds
