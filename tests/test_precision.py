"""Mixed precision: the networks compute in bfloat16, variables, losses and exports stay float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tarrl_tf
from tarrl_tf import regularizers, training
from tarrl_tf.precision import check_mixed_precision, mixed_precision


def _dataset(x, batch_size=8):
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size, drop_remainder=True)


def _tarrl(encoder, weight=1.0, regularizer="pgd", **kwargs):
    if regularizer == "pgd":
        regularizer = regularizers.PGD(epsilon=0.1, steps=2)
    model = tarrl_tf.TARRLModel(encoder, regularizer=regularizer, weight=weight, seed=0,
                                mixed_precision="bfloat16", **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def _no_bfloat16(variables):
    # Floating variables are float32; step counters and seed states keep their integer types.
    dtypes = {v.dtype for v in variables}
    assert "bfloat16" not in dtypes and "float32" in dtypes, dtypes


def _float32_throughout(model):
    _no_bfloat16(model.weights)
    assert all(layer.dtype_policy.name == "float32"
               for layer in model._flatten_layers(include_self=False))


def test_the_networks_compute_in_bfloat16_inside_the_block_only(images, make_cnn):
    model = _tarrl(make_cnn())
    conv = model.encoder.layers[1]
    with model.precision():
        assert conv.compute_dtype == "bfloat16"
        assert conv.variable_dtype == "float32"
        assert model.method.projector.layers[1].compute_dtype == "bfloat16"
        # The output layers stay float32: features and projections come out in float32.
        features = model.encoder(images)
        assert features.dtype == tf.float32
        assert model.method(features).dtype == tf.float32
        assert model.augmentation.compute_dtype == "float32"
    _float32_throughout(model.encoder)


def test_a_bfloat16_step_keeps_float32_variables_and_a_finite_float32_loss(images, make_cnn):
    model = _tarrl(make_cnn())
    model.build_optimizer()
    with model.precision():
        logs = model.train_step(tf.constant(images[:8]))
    for name in ("loss", "ssl_loss", "robustness"):
        assert logs[name].dtype == tf.float32, name
        assert np.isfinite(logs[name].numpy()), name
    _no_bfloat16(model.weights + model.optimizer.variables)
    history = model.fit(_dataset(images), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("kind", ["acl", "deacl", "supervised_at"])
def test_baselines_take_a_bfloat16_step(kind, images, make_cnn):
    extra = {"teacher": make_cnn()} if kind == "deacl" else {}
    extra.update(num_classes=3) if kind == "supervised_at" else None
    model = training.build(kind, make_cnn(), epsilon=0.1, norm="inf", steps=2, seed=0,
                           mixed_precision="bfloat16", **extra)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = (images, np.arange(len(images)) % 3) if kind == "supervised_at" else images
    history = model.fit(_dataset(data), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    _no_bfloat16(model.weights)
    for network in model.precision_networks():
        _float32_throughout(network)


def test_weight_zero_equals_plain_ssl_in_bfloat16(images, make_cnn):
    encoder = make_cnn()
    model = _tarrl(encoder, weight=0.0)
    plain = _tarrl(make_cnn(), weight=0.0, regularizer=None)
    plain.set_weights(model.get_weights())
    model.fit(_dataset(images, 16), epochs=1, verbose=0)
    plain.fit(_dataset(images, 16), epochs=1, verbose=0)
    for a, b in zip(model.encoder.get_weights(), plain.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_saved_encoder_is_float32(images, make_cnn, tmp_path):
    model = _tarrl(make_cnn())
    model.fit(_dataset(images), epochs=1, verbose=0)
    path = tmp_path / "encoder.keras"
    model.encoder.save(path)
    loaded = keras.models.load_model(path)
    _float32_throughout(loaded)
    assert loaded(images).dtype == tf.float32
    np.testing.assert_allclose(loaded(images), model.encoder(images), atol=1e-6)


def test_the_setting_round_trips_through_the_config(make_cnn):
    model = _tarrl(make_cnn())
    assert model.get_config()["mixed_precision"] == "bfloat16"
    assert tarrl_tf.TARRLModel.from_config(model.get_config()).mixed_precision == "bfloat16"


def test_unknown_precisions_and_subclassed_networks_raise():
    assert check_mixed_precision("float32") is None
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        check_mixed_precision("float16")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="subclassed"):
        with mixed_precision([Subclassed()], "bfloat16"):
            pass


def test_the_pipeline_and_pretrain_take_the_setting(tmp_path):
    from tarrl_tf import pipeline, pretraining
    from tarrl_tf.testing import prototype_data

    images, labels = prototype_data(64, seed=3)
    row = {"name": "tiny_bf16", "method": "tarrl", "architecture": "small_cnn", "width": 4,
           "epochs": 1, "batch_size": 32, "learning_rate": 1e-3, "mixed_precision": "bfloat16",
           "threat_model": {"norm": "inf", "epsilon": 0.1}, "regularizer": {"steps": 1}}
    settings = pipeline.Settings(datasets_dir=str(tmp_path), output_dir=str(tmp_path),
                                 publish=False)
    encoder, history, _ = pipeline.train(row, images, labels, tmp_path, settings)
    assert np.isfinite(history["loss"][-1])
    _float32_throughout(encoder)
    assert pipeline._precision_fact(row) == {"mixed_precision": "bfloat16"}
    assert pipeline._precision_fact({**row, "mixed_precision": None}) == {}

    model, history, _ = pretraining.pretrain(
        tarrl_tf.encoders.small_cnn(input_shape=images.shape[1:], width=4), images,
        regularizer=regularizers.FGSM(epsilon=0.1), weight=1.0, epochs=1, batch_size=32,
        mixed_precision="bfloat16", verbose=0)
    assert model.mixed_precision == "bfloat16" and np.isfinite(history["loss"][-1])
    _float32_throughout(model.encoder)


def test_the_pretrain_command_saves_a_float32_encoder(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    result = subprocess.run(
        [sys.executable, "-m", "tools.pretrain", "--dataset=digits", "--train_examples=64",
         "--epochs=1", "--batch_size=32", "--steps=1", "--width=4", "--nobaseline",
         "--noevaluate", "--mixed_precision=bfloat16", f"--output_dir={tmp_path}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    encoder = keras.models.load_model(tmp_path / "tarrl" / "encoder.keras")
    _float32_throughout(encoder)
