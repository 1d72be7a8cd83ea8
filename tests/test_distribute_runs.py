"""Whole runs under `tf.distribute`: `tarrl-pretrain --strategy`, and a backup resumed under a strategy.

Each run is a fresh process with two logical CPU devices (configured before
TensorFlow starts). Views and random starts do not change with the number of
replicas (`tarrl_tf.replicas.draw`), so a mirrored run ends where the one-device
run ends, up to float sums taken in another order.
"""

import keras
import numpy as np
import pytest

from tarrl_tf.testing import run_in_fresh_process
from tarrl_tf.training import pretraining

TWO_DEVICES = """
import sys
import numpy as np, tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
"""
# A short run of the command: R by PGD on views of 128 digits, global batches of 32.
PRETRAIN_FLAGS = ["--train_examples=128", "--batch_size=32", "--epochs=2", "--width=4",
                  "--steps=2", "--weight=1", "--learning_rate=0.01", "--warmup_epochs=1", "--nobaseline", "--noevaluate"]
# Two replicas add the halves of each sum in another order: measured 2.1e-6 after 8 steps.
WEIGHTS_ATOL = 2e-5


def _pretrain_command(strategy, output_dir):
    argv = ["tarrl-pretrain", f"--strategy={strategy}", f"--output_dir={output_dir}",
            *PRETRAIN_FLAGS]
    return run_in_fresh_process(TWO_DEVICES + f"""
from tarrl_tf_cli import pretrain
sys.argv = {argv!r}
try:
    pretrain.run()
except SystemExit as exit:
    assert exit.code in (None, 0), exit.code
print("ok")
""")


def _weights(path):
    return keras.models.load_model(path, compile=False).get_weights()


@pytest.mark.large
def test_pretrain_command_under_mirrored_trains_the_one_device_encoder(tmp_path):
    mirrored = _pretrain_command("mirrored", tmp_path / "mirrored")
    assert "2 replicas (mirrored)" in mirrored
    _pretrain_command("default", tmp_path / "default")
    one, two = (_weights(tmp_path / run / "tarrl" / "encoder.keras")
                for run in ("default", "mirrored"))
    start = pretraining.make_encoder((8, 8, 1), width=4, seed=0).get_weights()
    moved = max(np.abs(a - s).max() for a, s in zip(one, start))
    difference = max(np.abs(a - b).max() for a, b in zip(one, two))
    print(f"training moved the weights by up to {moved:.3g}; mirrored vs default: {difference:.2e}")
    # Training moved the weights far more than the two runs differ.
    assert moved > 1000 * WEIGHTS_ATOL
    assert difference <= WEIGHTS_ATOL


@pytest.mark.large
def test_a_mirrored_run_interrupted_after_epoch_1_resumes_to_the_uninterrupted_weights(tmp_path):
    output = run_in_fresh_process(TWO_DEVICES + f"""
import keras
from tarrl_tf.training import distribute, pretraining

strategy = distribute.make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2
images = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")


class Interrupted(Exception):
    pass


class StopAt(keras.callbacks.Callback):
    # Runs after fit_model's callbacks: epoch `stop - 1` is backed up when it raises.
    def __init__(self, stop):
        super().__init__()
        self.stop = stop

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop:
            raise Interrupted()


fit = keras.Model.fit


def run(backup_dir, interrupt_at=None):
    with strategy.scope():
        encoder = pretraining.make_encoder(images.shape[1:], width=4, seed=0)
    regularizer = pretraining.make_regularizer("pgd", epsilon=0.1, steps=2,
                                               divergence="normalized_relative_l2")
    extra = [] if interrupt_at is None else [StopAt(interrupt_at)]
    keras.Model.fit = lambda self, *a, callbacks=(), **k: fit(
        self, *a, callbacks=[*callbacks, *extra], **k)
    try:
        _, history, _ = pretraining.pretrain(
            encoder, images, regularizer=regularizer, weight=1.0, epochs=3, batch_size=16,
            learning_rate=0.01, seed=0, backup_dir=backup_dir, strategy=strategy, verbose=0)
    finally:
        keras.Model.fit = fit
    return encoder.get_weights(), history

uninterrupted, whole_history = run(r"{tmp_path / 'whole'}")
try:
    run(r"{tmp_path / 'interrupted'}", interrupt_at=1)
    raise AssertionError("not interrupted")
except Interrupted:
    pass
resumed, history = run(r"{tmp_path / 'interrupted'}")
# The whole run's history: the interrupted run's epoch 1, then epochs 2 and 3.
assert sorted(history) == sorted(whole_history)
for name, values in history.items():
    assert len(values) == 3 and np.allclose(values, whole_history[name], rtol=1e-6), name
difference = max(np.abs(a - b).max() for a, b in zip(uninterrupted, resumed))
print(f"resumed vs uninterrupted: max |weight difference| {{difference:.2e}}")
assert difference == 0, difference  # the same steps in the same order
print("ok")
""")
    print(output.splitlines()[-2])
