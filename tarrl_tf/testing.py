"""Shared checks for tests: a model class end to end (as keras' `run_layer_test`), a fresh process.

Every model class of the package goes through `run_model_test`; users can run
it on their own encoders too. `prototype_data` and `dense_encoder` make a
small problem a linear probe solves, for tests of heads and evaluations.
"""

import copy
import os
import subprocess
import sys
import tempfile
import textwrap

import keras
import numpy as np
import tensorflow as tf


def run_model_test(model_fn, inputs, *, fit_data=None, atol=1e-6):
    """Config round trip, eager call, `.keras` round trip, `predict` on tf.data, one `fit` step.

    Args:
        model_fn: builds a fresh model (compiled if `fit_data` is given).
        inputs: a small batch of inputs.
        fit_data: a `tf.data.Dataset` for one `fit` step, or None to skip it.
        atol: tolerance for outputs that must be equal.

    Returns:
        The model after the fit step.
    """
    model = model_fn()
    config = model.get_config()
    # Some from_config implementations (Functional's) consume the dict they are given.
    rebuilt = type(model).from_config(copy.deepcopy(config))
    if rebuilt.get_config() != config:
        raise AssertionError("get_config() does not survive from_config()")

    outputs = keras.ops.convert_to_numpy(model(inputs, training=False))
    if not np.all(np.isfinite(outputs)):
        raise AssertionError("eager call gave non-finite outputs")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(inputs, training=False)), outputs, atol=atol
    )

    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(max(1, len(inputs) // 2))
    np.testing.assert_allclose(model.predict(dataset, verbose=0), outputs, atol=1e-5)

    if fit_data is not None:
        before = [w.numpy().copy() for w in model.trainable_weights]
        model.fit(fit_data.take(1), epochs=1, verbose=0)
        after = [w.numpy() for w in model.trainable_weights]
        if all(np.array_equal(a, b) for a, b in zip(before, after)):
            raise AssertionError("one fit step changed no trainable weight")
    return model


def run_in_fresh_process(script, *, timeout=300):
    """Runs Python `script` in a new interpreter; it must exit 0 and print `ok` last.

    A fresh process is the honest test of saving and loading: nothing the
    saving process registered or cached can help the loading one.

    Returns:
        The script's standard output.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                            text=True, env=env, timeout=timeout)
    if result.returncode != 0 or not result.stdout.strip().endswith("ok"):
        raise AssertionError(f"exit {result.returncode}; stderr:\n{result.stderr[-3000:]}")
    return result.stdout


def dense_encoder(*, seed=0, dim=16, input_shape=(8, 8, 1)):
    """A fixed random projection (Flatten -> Dense -> tanh): keeps the pixels' layout, so a
    linear probe on it separates classes that differ by a per-pixel prototype."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    features = keras.layers.Dense(dim, activation="tanh")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, features, name="dense_encoder")


def prototype_data(n, *, seed=0, num_classes=3, image_shape=(8, 8, 1)):
    """`num_classes` classes: a random prototype image per class plus small noise (separable)."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(123).uniform(0.2, 0.8, (num_classes, *image_shape))
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    x = np.clip(prototypes[y] + rng.uniform(-0.05, 0.05, (n, *image_shape)), 0, 1)
    return x.astype("float32"), y.astype("int64")
