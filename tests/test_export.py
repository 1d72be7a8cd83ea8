"""Tests of `tarrl_tf.export` and `tools/export.py` with real clients.

`saved_model_cli` (the session-based loader, as TF Serving's C++ server uses),
a fresh Python process with `tf.saved_model.load` and `keras.layers.TFSMLayer`,
and TF Serving's REST row format decoded the way the server does it.
"""

import concurrent.futures
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tarrl_tf
from tarrl_tf import checks, export

REPO = pathlib.Path(__file__).resolve().parent.parent
H, W, C, D, K = 8, 8, 1, 8, 3
ATOL = 1e-5


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(args, **kwargs):
    return subprocess.run(
        args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120, **kwargs
    )


def _saved_model_cli():
    local = pathlib.Path(sys.executable).parent / "saved_model_cli"
    if local.exists():
        return [str(local)]
    found = shutil.which("saved_model_cli")
    if found:
        return [found]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def _tiny_models():
    encoder = tarrl_tf.encoders.small_cnn(input_shape=(H, W, C), width=4, representation_dim=D)
    head = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)], name="linear_probe")
    return encoder, head


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    encoder, head = _tiny_models()
    encoder.save(root / "encoder.keras")
    head.save(root / "head.keras")
    serving_dir = root / "serving"
    version_dir = export.export_serving(encoder, serving_dir / "tiny", head=head)
    images = np.random.default_rng(1).random((3, H, W, C), dtype=np.float32)
    np.save(root / "images.npy", images)
    # The reference is the `.keras` file as a user would load it.
    keras_encoder = keras.models.load_model(root / "encoder.keras", safe_mode=True)
    keras_head = keras.models.load_model(root / "head.keras", safe_mode=True)
    embedding = np.asarray(keras_encoder(images))
    logits = np.asarray(keras_head(embedding))
    return {
        "root": root,
        "serving_dir": serving_dir,
        "version_dir": version_dir,
        "images": images,
        "embedding": embedding,
        "logits": logits,
    }


def test_layout_is_integer_version_folder(exported, clients):
    del clients  # Started first, so the subprocesses overlap with the in-process tests.
    assert exported["version_dir"] == exported["serving_dir"] / "tiny" / "1"
    assert (exported["version_dir"] / "saved_model.pb").is_file()
    assert sorted(p.name for p in (exported["serving_dir"] / "tiny").iterdir()) == ["1"]


def _show(version_dir, signature):
    return _run(
        _saved_model_cli()
        + ["show", "--dir", str(version_dir), "--tag_set", "serve", "--signature_def", signature]
    )


def _run_signature(version_dir, signature, inputs_flag, outdir=None):
    args = ["run", "--dir", str(version_dir), "--tag_set", "serve", "--signature_def", signature]
    args += list(inputs_flag) + (["--outdir", str(outdir)] if outdir else [])
    return _run(_saved_model_cli() + args)


_FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    import tensorflow as tf

    version_dir, images_path, out_path = sys.argv[1:]
    images = np.load(images_path)
    loaded = tf.saved_model.load(version_dir)
    default = loaded.signatures["serving_default"](images=tf.constant(images))
    classify = loaded.signatures["classify"](images=tf.constant(images))
    layer = keras.layers.TFSMLayer(version_dir, call_endpoint="serving_default")
    layer_classify = keras.layers.TFSMLayer(version_dir, call_endpoint="classify")
    np.savez(
        out_path,
        sm_embedding=default["embedding"].numpy(),
        sm_logits=classify["logits"].numpy(),
        sm_probabilities=classify["probabilities"].numpy(),
        layer_embedding=np.asarray(layer(images)["embedding"]),
        layer_logits=np.asarray(layer_classify(images)["logits"]),
        layer_probabilities=np.asarray(layer_classify(images)["probabilities"]),
    )
    """
)


def _export_cli_twice(exported, serving_dir):
    args = [
        sys.executable,
        "-m",
        "tools.export",
        f"--encoder={exported['root'] / 'encoder.keras'}",
        f"--head={exported['root'] / 'head.keras'}",
        f"--serving_dir={serving_dir}",
        "--model_name=tiny",
    ]
    first = _run(args)
    return first, _run(args + ["--version=1"])


@pytest.fixture(scope="module")
def clients(exported, tmp_path_factory):
    """Starts every subprocess client at once; each test waits for its own.

    Importing TensorFlow dominates each run, so overlapping them keeps the file
    fast on two cores.
    """
    out = tmp_path_factory.mktemp("clients")
    version_dir = exported["version_dir"]
    literal = repr(exported["images"].tolist())
    jobs = {
        "show_default": (_show, version_dir, "serving_default"),
        "show_classify": (_show, version_dir, "classify"),
        "run_default": (
            _run_signature,
            version_dir,
            "serving_default",
            ["--inputs", f"images={exported['root'] / 'images.npy'}"],
            out / "default",
        ),
        # --input_exprs only takes Python literals in TF 2.21 (ast.literal_eval), no `np.` calls.
        "run_classify": (
            _run_signature,
            version_dir,
            "classify",
            ["--input_exprs", f"images={literal}"],
            out / "classify",
        ),
        "run_out_of_range": (
            _run_signature,
            version_dir,
            "serving_default",
            ["--input_exprs", f"images={np.full((1, H, W, C), 2.0).tolist()!r}"],
        ),
        "fresh_process": (
            _run,
            [
                sys.executable,
                "-c",
                _FRESH_PROCESS_SCRIPT,
                str(version_dir),
                str(exported["root"] / "images.npy"),
                str(out / "fresh.npz"),
            ],
        ),
        "export_cli": (_export_cli_twice, exported, out / "srv"),
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(fn, *args) for name, (fn, *args) in jobs.items()}
        yield {"out": out, "results": futures}


def _tf_serving_rest_predict(loaded, body_json):
    """Answers a REST `:predict` body the way TF Serving does, in row format.

    The server parses the JSON, builds one tensor per input with the dtype of
    the signature's TensorSpec, stacking the instances on the first dimension
    (for a single-input signature an instance is the bare value; otherwise an
    object keyed by input name), runs the signature, and answers
    `{"predictions": [...]}`: the rows of the output when the signature has
    one named output, else one object per instance keyed by output name.
    """
    body = json.loads(body_json)
    fn = loaded.signatures[body.get("signature_name", "serving_default")]
    _, specs = fn.structured_input_signature
    instances = body["instances"]
    if len(specs) == 1 and not isinstance(instances[0], dict):
        columns = {next(iter(specs)): instances}
    else:
        columns = {key: [instance[key] for instance in instances] for key in specs}
    feeds = {}
    for key, values in columns.items():
        value = np.asarray(values, dtype=specs[key].dtype.as_numpy_dtype)
        if not specs[key].shape.is_compatible_with(value.shape):
            raise ValueError(f"input {key!r} has shape {value.shape}, wants {specs[key].shape}")
        feeds[key] = tf.constant(value)
    outputs = {key: value.numpy() for key, value in fn(**feeds).items()}
    if len(outputs) == 1:
        predictions = next(iter(outputs.values())).tolist()
    else:
        predictions = [
            {key: value[i].tolist() for key, value in outputs.items()}
            for i in range(len(instances))
        ]
    return json.dumps({"predictions": predictions})


def test_rest_instances_body_gives_library_outputs(exported):
    loaded = tf.saved_model.load(str(exported["version_dir"]))
    images = exported["images"]

    body = json.dumps(export.rest_request(images))
    assert json.loads(body)["signature_name"] == "serving_default"
    assert np.asarray(json.loads(body)["instances"]).shape == images.shape
    response = json.loads(_tf_serving_rest_predict(loaded, body))
    assert set(response) == {"predictions"}
    predictions = np.asarray(response["predictions"], dtype=np.float32)  # raw rows, no names
    assert predictions.shape == (len(images), D)
    np.testing.assert_allclose(predictions, exported["embedding"], atol=ATOL)

    body = json.dumps(export.rest_request(images, signature_name="classify"))
    response = json.loads(_tf_serving_rest_predict(loaded, body))
    rows = response["predictions"]
    assert len(rows) == len(images) and all(set(r) == {"logits", "probabilities"} for r in rows)
    logits = np.asarray([r["logits"] for r in rows], dtype=np.float32)
    probabilities = np.asarray([r["probabilities"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(logits, exported["logits"], atol=ATOL)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probabilities.argmax(-1), logits.argmax(-1))


def test_rest_request_rejects_unscaled_images():
    with pytest.raises(ValueError, match="floating point"):
        export.rest_request(np.zeros((1, H, W, C), np.uint8))
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        export.rest_request(np.full((1, H, W, C), 3.0, np.float32))


@pytest.mark.parametrize(
    "images",
    [
        pytest.param(np.full((2, H, W, C), 1.5, np.float32), id="above_one"),
        pytest.param(np.full((2, H, W, C), -0.1, np.float32), id="negative"),
        pytest.param(np.full((2, H, W, C), np.nan, np.float32), id="nan"),
        # NumPy input is converted to the TensorSpec's float32; 0..255 is then out of range.
        pytest.param(np.full((2, H, W, C), 200, np.uint8), id="uint8_numpy"),
    ],
)
def test_signature_rejects_bad_values(exported, images):
    loaded = tf.saved_model.load(str(exported["version_dir"]))
    for signature in ("serving_default", "classify"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=checks.RANGE_ERROR_MARKER):
            loaded.signatures[signature](images=images)


def test_signature_rejects_wrong_dtype_and_shape(exported):
    loaded = tf.saved_model.load(str(exported["version_dir"]))
    fn = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="float"):
        fn(images=tf.zeros((1, H, W, C), tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="float"):
        fn(images=tf.zeros((1, H, W, C), tf.uint8))
    expected = re.escape(f"images must have shape [batch, {H}, {W}, {C}]; got")
    for shape in ((1, H + 1, W, C), (1, H, W, C + 1), (H, W, C), (1, 1, H, W, C)):
        # Tensors and NumPy arrays alike (TF's own check of NumPy input was a bare TypeError).
        for images in (tf.zeros(shape, tf.float32), np.zeros(shape, np.float32)):
            with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
                fn(images=images)
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        loaded.signatures["classify"](images=np.zeros((2, H + 1, W, C), np.float32))
    # The bounds themselves are accepted. (No empty-batch check: TF 2.21's strided
    # Conv2D mis-shapes a batch of 0, in Keras as much as in the SavedModel.)
    assert fn(images=tf.ones((2, H, W, C)))["embedding"].shape == (2, D)
    assert fn(images=tf.zeros((1, H, W, C)))["embedding"].shape == (1, D)


def test_versions_only_increase(tmp_path):
    encoder, _ = _tiny_models()
    base = tmp_path / "tiny"
    assert export.export_serving(encoder, base).name == "1"
    for bad in (1, 0, -3, True, 1.5):
        with pytest.raises(ValueError, match="version"):
            export.export_serving(encoder, base, version=bad)
    assert export.export_serving(encoder, base).name == "2"
    assert export.export_serving(encoder, base, version=7).name == "7"
    with pytest.raises(ValueError, match="only increase"):
        export.export_serving(encoder, base, version=5)
    assert export.published_versions(base) == [1, 2, 7]
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "7"]  # no temporary folders


def test_interrupted_export_leaves_no_version_folder(tmp_path, monkeypatch):
    encoder, head = _tiny_models()
    base = tmp_path / "tiny"

    real_save = tf.saved_model.save

    def crash_mid_write(obj, export_dir, *args, **kwargs):
        real_save(obj, export_dir, *args, **kwargs)
        with open(os.path.join(export_dir, "saved_model.pb"), "r+b") as f:
            f.truncate(100)
        raise OSError("simulated crash while writing the SavedModel")

    # Keras' ExportArchive() returns a backend subclass instance; patch what it calls.
    monkeypatch.setattr(tf.saved_model, "save", crash_mid_write)
    with pytest.raises(OSError, match="simulated crash"):
        export.export_serving(encoder, base, head=head)
    assert list(base.iterdir()) == []  # neither a version nor a hidden temporary folder
    monkeypatch.undo()
    assert export.export_serving(encoder, base, head=head).name == "1"


def test_export_rejects_incompatible_models(tmp_path):
    encoder, _ = _tiny_models()
    unused = tmp_path / "unused"
    with pytest.raises(ValueError, match="K >= 2"):
        export.export_serving(
            encoder, unused, head=keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])
        )
    with pytest.raises(ValueError, match="embeddings of shape"):
        export.export_serving(
            encoder, unused, head=keras.Sequential([keras.Input((D + 1,)), keras.layers.Dense(K)])
        )
    inputs = keras.Input((H, W, C))
    feature_map = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match=r"\[batch, D\]"):
        export.export_serving(feature_map, unused)
    with pytest.raises(TypeError):
        export.export_serving(lambda x: x, unused)
    assert not unused.exists()


def test_models_config_lists_every_model(exported, tmp_path):
    encoder, _ = _tiny_models()
    serving_dir = tmp_path / "models"
    export.export_serving(encoder, serving_dir / "b_model")
    export.export_serving(encoder, serving_dir / "a_model")
    (serving_dir / "not_a_model").mkdir()
    path = export.write_models_config(serving_dir, base_path_prefix="/models/")
    assert path == serving_dir / "models.config"
    text = path.read_text()
    configs = re.findall(
        r'config \{\s*name: "([^"]+)"\s*base_path: "([^"]+)"\s*model_platform: "tensorflow"\s*\}',
        text,
    )
    assert configs == [("a_model", "/models/a_model"), ("b_model", "/models/b_model")]
    assert text.startswith("model_config_list {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    default = export.write_models_config(serving_dir, config_path=tmp_path / "local.config")
    assert f'base_path: "{serving_dir.resolve()}/a_model"' in default.read_text()
    with pytest.raises(ValueError, match="No exported models"):
        export.write_models_config(tmp_path / "empty")


# Subprocess clients: last, so they overlap with the in-process tests above.


def test_saved_model_cli_show_reports_the_signatures(clients):
    shown = {}
    for signature in ("default", "classify"):
        result = clients["results"][f"show_{signature}"].result()
        assert result.returncode == 0, result.stderr
        shown[signature] = result.stdout

    def tensor(text, kind, key):
        match = re.search(
            rf"{kind}\['{key}'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([-\d, ]+)\)", text
        )
        assert match, text
        return match.group(1), tuple(int(d) for d in match.group(2).split(","))

    def any_shape(text, key):  # The shape is checked in the graph, with a message naming it.
        return re.search(rf"inputs\['{key}'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: unknown_rank",
                         text)

    text = shown["default"]
    assert any_shape(text, "images"), text
    assert tensor(text, "outputs", "embedding") == ("DT_FLOAT", (-1, D))
    assert len(re.findall(r"inputs\['", text)) == 1 and len(re.findall(r"outputs\['", text)) == 1
    assert "tensorflow/serving/predict" in text
    text = shown["classify"]
    assert any_shape(text, "images"), text
    assert tensor(text, "outputs", "logits") == ("DT_FLOAT", (-1, K))
    assert tensor(text, "outputs", "probabilities") == ("DT_FLOAT", (-1, K))


def test_saved_model_cli_run_matches_keras(exported, clients):
    result = clients["results"]["run_default"].result()
    assert result.returncode == 0, result.stderr
    embedding = np.load(clients["out"] / "default" / "embedding.npy")
    np.testing.assert_allclose(embedding, exported["embedding"], atol=ATOL)

    result = clients["results"]["run_classify"].result()
    assert result.returncode == 0, result.stderr
    logits = np.load(clients["out"] / "classify" / "logits.npy")
    probabilities = np.load(clients["out"] / "classify" / "probabilities.npy")
    np.testing.assert_allclose(logits, exported["logits"], atol=ATOL)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probabilities.argmax(-1), logits.argmax(-1))


def test_saved_model_cli_run_rejects_out_of_range_images(clients):
    result = clients["results"]["run_out_of_range"].result()
    assert result.returncode != 0
    assert checks.RANGE_ERROR_MARKER in result.stderr


def test_fresh_process_loads_saved_model_and_tfsmlayer(exported, clients):
    result = clients["results"]["fresh_process"].result()
    assert result.returncode == 0, result.stderr
    got = np.load(clients["out"] / "fresh.npz")
    for prefix in ("sm", "layer"):
        np.testing.assert_allclose(got[f"{prefix}_embedding"], exported["embedding"], atol=ATOL)
        np.testing.assert_allclose(got[f"{prefix}_logits"], exported["logits"], atol=ATOL)
        probabilities = got[f"{prefix}_probabilities"]
        np.testing.assert_allclose(probabilities, _softmax(exported["logits"]), atol=ATOL)
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(
            probabilities.argmax(-1), got[f"{prefix}_logits"].argmax(-1)
        )


def test_tools_export_cli(exported, clients):
    first, again = clients["results"]["export_cli"].result()
    serving_dir = clients["out"] / "srv"
    assert first.returncode == 0, first.stderr
    assert (serving_dir / "tiny" / "1" / "saved_model.pb").is_file()
    config = (serving_dir / "models.config").read_text()
    assert 'name: "tiny"' in config and f'base_path: "{serving_dir.resolve()}/tiny"' in config
    loaded = tf.saved_model.load(str(serving_dir / "tiny" / "1"))
    embedding = loaded.signatures["serving_default"](images=exported["images"])["embedding"]
    np.testing.assert_allclose(embedding.numpy(), exported["embedding"], atol=ATOL)

    assert again.returncode != 0
    assert "only increase" in again.stderr
    assert sorted(p.name for p in (serving_dir / "tiny").iterdir()) == ["1"]
