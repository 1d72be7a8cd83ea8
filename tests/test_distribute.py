"""Training under `tf.distribute.MirroredStrategy` optimizes the one-device objective.

Each test runs in a fresh process with two logical CPU devices (they must be
configured before TensorFlow starts). These tests isolate the losses and
gradients with steps without randomness: identity views, a fixed perturbation
for R, and baselines at epsilon 0 (whose searches cannot move). Random views
and starts under replicas are those of one device too: see
`tests/test_distribute_runs.py`.
"""

import pytest

from tarrl_tf.testing import run_in_fresh_process

PREAMBLE = """
import numpy as np, tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import keras, tarrl_tf
from tarrl_tf.ssl import losses
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
rng = np.random.default_rng(0)
"""


def test_losses_see_the_global_batch_and_per_replica_negatives_would_not():
    run_in_fresh_process(PREAMBLE + """
z1 = tf.constant(rng.normal(size=(8, 5)), tf.float32)
z2 = tf.constant(rng.normal(size=(8, 5)), tf.float32)
for loss in (losses.nt_xent, losses.barlow_twins):
    expected = float(loss(z1, z2))

    def per_replica():
        context = tf.distribute.get_replica_context()
        rows = slice(4 * context.replica_id_in_sync_group, None)
        i = context.replica_id_in_sync_group
        return loss(z1[4 * i: 4 * i + 4], z2[4 * i: 4 * i + 4])

    values = strategy.experimental_local_results(strategy.run(tf.function(per_replica)))
    # The one-device loss is the mean over replicas of their losses.
    np.testing.assert_allclose(np.mean([float(v) for v in values]), expected, rtol=1e-5)
# Per-replica negatives (each half alone) give another objective:
alone = np.mean([float(losses.nt_xent(z1[:4], z2[:4])), float(losses.nt_xent(z1[4:], z2[4:]))])
assert abs(alone - float(losses.nt_xent(z1, z2))) > 1e-2, alone
print("ok")
""")


STEPS = """
class Fixed(tarrl_tf.regularizers.Regularizer):
    # A perturbation without randomness, so both runs perturb the same way.
    def perturb(self, encoder, x, *, anchor, epsilon=None, seed=None):
        return tf.clip_by_value(x + 0.05 * tf.sign(tf.sin(37.0 * x)), 0.0, 1.0)

x = rng.random((16, 12, 12, 1)).astype("float32")
labels = (np.arange(16) % 3).astype("int64")

def trained(make, distributed, labeled=False, steps=3, learning_rate=0.1):
    keras.utils.set_random_seed(0)
    with (strategy.scope() if distributed else tf.distribute.get_strategy().scope()):
        model = make(tarrl_tf.encoders.small_cnn(input_shape=(12, 12, 1), width=4,
                                                 representation_dim=8))
        model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    start = model.encoder.get_weights()
    data = tf.data.Dataset.from_tensor_slices((x, labels) if labeled else x).batch(8)
    history = model.fit(data.repeat(2).take(steps), epochs=1, verbose=0).history
    weights = model.encoder.get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(start, weights)) > 1e-3  # it trained
    return start, weights, history

def same(make, **kwargs):
    # One SGD step of size 1 moves the weights by the gradient: the same on one device and two.
    (start, one, _), (_, two, _) = [trained(make, d, steps=1, learning_rate=1.0, **kwargs)
                                    for d in (False, True)]
    for s, a, b in zip(start, one, two):
        np.testing.assert_allclose(a - s, b - s, atol=1e-4)
    # Three steps: the same logs (loss, R, ...) and weights; float sums in another order
    # drift by about 1e-4 over three steps.
    (_, one, h1), (_, two, h2) = [trained(make, d, **kwargs) for d in (False, True)]
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, atol=5e-4)
    for key in h1:
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-4, atol=1e-5, err_msg=key)
    return h1
"""


@pytest.mark.large
def test_tarrl_trains_the_same_on_one_device_and_on_two():
    run_in_fresh_process(PREAMBLE + STEPS + """
identity = lambda: keras.layers.Identity()
history = same(lambda e: tarrl_tf.TARRLModel(
    e, regularizer=Fixed(0.05, divergence="normalized_relative_l2"), weight=2.0,
    augmentation=identity(), seed=0))
assert history["robustness"][0] > 0  # R is not trivially zero
barlow = lambda sync: (lambda e: tarrl_tf.TARRLModel(
    e, method=tarrl_tf.methods.BarlowTwins(sync_batch_norm=sync), weight=0.0,
    augmentation=identity(), seed=0))
same(barlow(True))
# By default the projector's BatchNorm normalizes each replica's shard alone: another step.
(start, one, _), (_, two, _) = [trained(barlow(False), d, steps=1, learning_rate=1.0)
                                for d in (False, True)]
assert max(np.abs(a - b).max() for a, b in zip(one, two)) > 1e-2
print("ok")
""")


@pytest.mark.large
def test_a_baseline_trains_the_same_on_one_device_and_on_two():
    run_in_fresh_process(PREAMBLE + STEPS + """
resnet = lambda: tarrl_tf.encoders.cifar_resnet(input_shape=(12, 12, 1), width=4,
                                               blocks_per_stage=(1, 1, 1, 1), sync_batch_norm=True)
# With synchronized BatchNorm a ResNet's TARRL (R through batch statistics) is the same too.
same(lambda e: tarrl_tf.TARRLModel(resnet(), regularizer=Fixed(0.05), weight=2.0,
                                   augmentation=keras.layers.Identity(), seed=0))
same(lambda e: tarrl_tf.ACLModel(e, epsilon=0.0, steps=1, augmentation=keras.layers.Identity(),
                                 seed=0))
same(lambda e: tarrl_tf.SupervisedATModel(e, 3, epsilon=0.0, steps=1, seed=0), labeled=True)
print("ok")
""")


@pytest.mark.large
def test_the_pipeline_trains_a_row_under_a_strategy_by_name(tmp_path):
    run_in_fresh_process(PREAMBLE + f"""
from tarrl_tf import pipeline
from tarrl_tf.testing import prototype_data
x, y = prototype_data(64, seed=1)
row = {{"name": "tiny", "method": "tarrl", "architecture": "small_cnn", "width": 4, "epochs": 2,
       "batch_size": 16, "learning_rate": 1e-3, "threat_model": {{"norm": "inf", "epsilon": 0.1}},
       "regularizer": {{"estimator": "pgd", "steps": 1, "weight": 1.0,
                       "divergence": "normalized_relative_l2"}}}}
settings = pipeline.Settings(datasets_dir=".", output_dir=r"{tmp_path}", strategy="mirrored")
import pathlib
encoder, history, seconds = pipeline.train(row, x, y, pathlib.Path(r"{tmp_path}"), settings)
assert len(history["loss"]) == 2 and np.isfinite(history["robustness"]).all()
# Built in the strategy's scope: its variables are mirrored on both devices.
assert isinstance(encoder.weights[0].value, tf.distribute.DistributedValues)
print("ok")
""")


def test_strategies_by_name_refuse_what_they_cannot_build(monkeypatch):
    from tarrl_tf.training import distribute

    with pytest.raises(ValueError, match="Unknown strategy 'tpu_pod'"):
        distribute.make_strategy("tpu_pod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"\$TF_CONFIG, which is not set"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.make_strategy("multi_worker")
    assert distribute.STRATEGIES.names() == ("default", "mirrored", "multi_worker")


WORKER = """
import os, sys
import numpy as np, tensorflow as tf
import keras, tarrl_tf
strategy = (tf.distribute.MultiWorkerMirroredStrategy() if os.environ.get("TF_CONFIG")
            else tf.distribute.get_strategy())
x = np.random.default_rng(0).random((32, 12, 12, 1)).astype("float32")
keras.utils.set_random_seed(0)
with strategy.scope():
    model = tarrl_tf.TARRLModel(
        tarrl_tf.encoders.small_cnn(input_shape=(12, 12, 1), width=4, representation_dim=8),
        weight=0.0, augmentation=keras.layers.Identity(), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
# Global batches of 8; each worker takes its half of every batch (tf.data's auto-sharding).
history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(8).take(3), epochs=1, verbose=0)
np.savez(sys.argv[1], loss=history.history["loss"], *model.encoder.get_weights())
"""


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.large
def test_two_worker_processes_on_loopback_train_like_one_process(tmp_path):
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = [subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / f"worker{i}.npz")],
        env={**env, "TF_CONFIG": json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": i}})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        for worker in workers:
            _, stderr = worker.communicate(timeout=240)
            assert worker.returncode == 0, stderr[-3000:]
    finally:
        for worker in workers:  # nothing left running, whatever happened
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    alone = subprocess.run([sys.executable, str(script), str(tmp_path / "alone.npz")], env=env,
                           capture_output=True, text=True, timeout=240)
    assert alone.returncode == 0, alone.stderr[-3000:]
    first, second, one = (np.load(tmp_path / f"{n}.npz") for n in ("worker0", "worker1", "alone"))
    for key in one.files:
        np.testing.assert_array_equal(first[key], second[key])
        np.testing.assert_allclose(first[key], one[key], atol=1e-5)
