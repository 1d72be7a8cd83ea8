"""Backups that skip a damaged file, and training that stops at a NaN (kills: test_resume.py)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tarrl_tf import data
from tarrl_tf.robustness import regularizers
from tarrl_tf.training import checkpoints, pretraining
from tarrl_tf.training.tarrl_model import TARRLModel
from tarrl_tf.zoo import serving

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
    with pytest.raises(checkpoints.NonFiniteError,
                       match=r"(loss|gradient of \S+) is not finite at step \d+ of epoch 1"):
        pretraining.pretrain(encoder, images, epochs=3, batch_size=32, learning_rate=1e6, verbose=0)


def _fit_tarrl(model, tmp_path, epochs=2):
    images = np.random.RandomState(0).rand(32, 4, 4, 1).astype("float32")
    dataset = lambda first: data.pretraining_dataset(images, batch_size=8, seed=0, epochs=epochs,
                                                     first_epoch=first)
    return pretraining.fit_model(model, dataset, steps_per_epoch=4, epochs=epochs,
                                 learning_rate=1e-3, backup_dir=str(tmp_path / "backup"), verbose=0)


def _flat_encoder(activation=None):
    inputs = keras.Input((4, 4, 1))
    features = keras.layers.Dense(3)(keras.layers.Flatten()(inputs))
    if activation is not None:
        features = keras.layers.Lambda(activation)(features)
    return keras.Model(inputs, features)


def test_a_non_finite_gradient_stops_at_its_step_before_the_weights_change(tmp_path):
    # sqrt(0 * relu(h)) is 0 going forward, and NaN going back: a finite loss, NaN gradients.
    encoder = _flat_encoder(lambda h: h + keras.ops.sqrt(0.0 * keras.ops.relu(h)))
    model = TARRLModel(encoder, weight=0.0, augmentation=keras.layers.Identity(), seed=0)
    before = encoder.get_weights()
    with pytest.raises(checkpoints.NonFiniteError,
                       match=r"the gradient of dense\S*/kernel is not finite at step 1 of epoch 1; "
                             r"there is no earlier checkpoint"):
        _fit_tarrl(model, tmp_path)
    for a, b in zip(before, encoder.get_weights()):  # The step was never applied.
        np.testing.assert_array_equal(a, b)


def test_fit_without_the_callback_names_the_optimizer_step():
    encoder = _flat_encoder(lambda h: h + keras.ops.sqrt(0.0 * keras.ops.relu(h)))
    model = TARRLModel(encoder, weight=0.0, augmentation=keras.layers.Identity(), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = np.random.RandomState(0).rand(16, 4, 4, 1).astype("float32")
    with pytest.raises(checkpoints.NonFiniteError, match="is not finite at optimizer step 1;"):
        model.fit(images, batch_size=8, epochs=1, verbose=0)


@pytest.mark.large
def test_a_non_finite_r_stops_naming_r_and_the_last_good_backup(tmp_path):
    class NaNAfterOneEpoch(regularizers.PGD):
        def perturb(self, encoder, x, **kwargs):  # NaN from the second epoch (step 5) on.
            x_adv = super().perturb(encoder, x, **kwargs)
            return x_adv + tf.where(model.optimizer.iterations >= 4, np.nan, 0.0)

    model = TARRLModel(_flat_encoder(), regularizer=NaNAfterOneEpoch(epsilon=0.1, steps=1),
                       weight=1.0, augmentation=keras.layers.Identity(), seed=0)
    with pytest.raises(checkpoints.NonFiniteError,
                       match=r"robustness is not finite at step 1 of epoch 2; the last good "
                             r"checkpoint .*epoch_0001 is kept"):
        _fit_tarrl(model, tmp_path)
    assert [epoch for epoch, _ in checkpoints.backups(str(tmp_path / "backup"))] == [1]


def test_the_graph_check_names_the_gradient_inside_a_tf_function():
    variable = keras.Variable(np.zeros(2, np.float32), name="w")

    @tf.function
    def step(gradient):
        return checkpoints.finite_gradients([gradient], [variable], tf.constant(1.0),
                                            step=tf.constant(7, "int64"))

    assert step(tf.constant([1.0, 2.0]))[0].shape == (2,)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=checkpoints.NON_FINITE_MARKER + r"the gradient of w is not finite\] "
                                           r"\[at optimizer step\] \[7\]"):
        step(tf.constant([1.0, np.inf]))


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
