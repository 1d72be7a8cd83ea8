"""A shared check that a model class works with Keras end to end (as keras' `run_layer_test`).

Every model class of the package goes through `run_model_test`; users can run
it on their own encoders too.
"""

import copy
import os
import tempfile

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
