"""The serving contract: SavedModels with fixed signatures for TF Serving, and their checks.

`export_serving(encoder, base_path, head=...)` publishes `base_path/<version>/`,
a TF SavedModel with these signatures (the contract `tarrl_tf.zoo.verify` checks):

- `serving_default`: `images` float32 `[batch, H, W, C]` in `[0, 1]` ->
  `embedding` float32 `[batch, D]`.
- `classify` (only with a `head`, a Keras model mapping embeddings to logits):
  `images` -> `logits` and `probabilities` (softmax of the logits), `[batch, K]`.

Bad input is rejected, never clipped: the signature's TensorSpec fixes the
dtype (a tensor of another dtype fails with "expected a float tensor"; note
that NumPy arrays given to a loaded signature in Python are converted first),
and in-graph `tf.debugging.Assert`s check the rest: a shape other than
`[batch, H, W, C]` fails with "tarrl_tf: images must have shape [batch, H, W,
C]; got ...", values outside `[0, 1]` or not finite with a message starting
"tarrl_tf: image values outside" (so uint8 images in 0..255 are caught). TF
Serving answers such a request with HTTP 400 and that message in
`{"error": ...}`. The input's TensorSpec leaves the shape open for that: with
`[None, H, W, C]` in it, TF's Python binding refused a NumPy batch of another
shape with a bare TypeError (and let a tensor of any shape through). So the
signature's metadata shows the input's rank as unknown; `H, W, C` are in the
error and the model card, and the outputs' shapes stay fixed (`[batch, D]`).

Versions are integers that only increase; each is written to a hidden
temporary folder next to the version folders and renamed into place, so a
TF Serving server polling `base_path` never sees half a model.

TF Serving REST (`tensorflow_model_server --rest_api_port=8501
--model_config_file=models.config`), row format, one nested `[H][W][C]` list
per image; `rest_request(images)` builds the body:

```
POST /v1/models/<model_name>:predict
{"signature_name": "serving_default", "instances": [<image>, <image>]}
-> {"predictions": [[e_0, ..., e_D-1], [e_0, ..., e_D-1]]}
   (a single named output: each prediction is that output's row, no name)

{"signature_name": "classify", "instances": [<image>, <image>]}
-> {"predictions": [{"logits": [...K], "probabilities": [...K]}, {...}]}
   (several outputs: one object per image, keyed by output name)
```

`classify` is a Predict signature: call it through `:predict` with
`"signature_name": "classify"`, not through TF Serving's `:classify` verb
(which wants serialized `tf.Example`s).

Example:
```python
from tarrl_tf import export
version_dir = export.export_serving(encoder, "/srv/models/mnist_cnn", head=linear_head)
export.write_models_config("/srv/models")      # /srv/models/models.config
```
"""

import os
import pathlib
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from tarrl_tf import checks
from tarrl_tf.files import temporary_dir, write_atomic
from tarrl_tf.zoo.manifest import ZooError

SERVING_SIGNATURE = "serving_default"
SERVING_INPUT = "images"
EMBEDDING_OUTPUT = "embedding"
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_OUTPUTS = ("logits", "probabilities")
MODELS_CONFIG_FILENAME = "models.config"
INPUT_RANGE = (0.0, 1.0)


class SavedModelError(ZooError):
    """A SavedModel breaks the serving contract (a signature, an input or an output is off)."""


_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Probe batch used to compare a Keras model with its SavedModel.
_PROBE_BATCH = 2
_ATOL, _RTOL = 1e-5, 1e-4


def export_serving(encoder, base_path, *, head=None, version=None):
    """Publishes `encoder` (and `head`) as `base_path/<version>/`, a TF SavedModel.

    Args:
        encoder: a `keras.Model` with one float image input of fixed shape
            `(H, W, C)` and one `[batch, D]` output.
        base_path: the model's folder, as TF Serving's `base_path`; created if needed.
        head: optional `keras.Model` mapping `[batch, D]` embeddings to
            `[batch, K]` logits (K >= 2); adds the `classify` signature.
        version: integer > every existing version; default: the next one (1 first).

    Returns:
        The published version directory.

    Raises:
        ValueError: bad models, or `version` not above the existing ones.
    """
    input_shape, _, _ = check_models(encoder, head)
    base_path = pathlib.Path(base_path)
    base_path.mkdir(parents=True, exist_ok=True)
    existing = published_versions(base_path)
    if version is None:
        version = existing[-1] + 1 if existing else 1
    elif not isinstance(version, (int, np.integer)) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    elif existing and version <= existing[-1]:
        raise ValueError(
            f"version {version} must be greater than the latest published version "
            f"{existing[-1]} in {base_path}; versions only increase"
        )
    final = base_path / str(int(version))
    if final.exists():
        raise ValueError(f"{final} already exists")
    # Hidden and in the same directory, so the rename is atomic and TF Serving
    # (which only loads all-digit folder names) never picks up a partial model.
    tmp = pathlib.Path(temporary_dir(base_path, prefix=f".tmp-{int(version)}-"))
    try:
        _write_saved_model(encoder, head, input_shape, tmp)
        images, expected = probe_outputs(encoder, head)
        check_saved_model(tmp, images=images, expected=expected)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def published_versions(base_path):
    """Sorted integer versions (all-digit folder names) under `base_path`."""
    base_path = pathlib.Path(base_path)
    if not base_path.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in base_path.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit()
    )


def check_models(encoder, head):
    """Validates the models; returns `(input_shape, embedding_dim, num_classes or None)`."""
    if not isinstance(encoder, keras.Model):
        raise TypeError(f"encoder must be a keras.Model, got {type(encoder).__name__}")
    try:
        inputs = encoder.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1:
        raise ValueError(
            "encoder must have exactly one image input with a known shape; wrap it as "
            "keras.Model(x := keras.Input((H, W, C)), encoder(x))"
        )
    for model in (encoder, head):
        bad = [w.path for w in (getattr(model, "weights", None) or [])
               if not np.all(np.isfinite(keras.ops.convert_to_numpy(w)))]
        if bad:
            raise ValueError(f"{model.name} has non-finite weights ({', '.join(bad[:3])}); "
                             "refusing to export it (was training stopped by a NaN?)")
    shape = tuple(inputs[0].shape)
    checks.check_image_spec(shape, inputs[0].dtype, name="encoder input")
    if any(d is None for d in shape[1:]):
        raise ValueError(f"encoder input must have a fixed (H, W, C), got {shape}")
    embedding = encoder(np.zeros((1,) + shape[1:], np.float32), training=False)
    if not tf.is_tensor(embedding) and not isinstance(embedding, np.ndarray):
        raise ValueError(f"encoder must return one tensor, got {type(embedding).__name__}")
    if len(embedding.shape) != 2:
        raise ValueError(f"encoder must return [batch, D] embeddings, got shape {embedding.shape}")
    num_classes = None
    if head is not None:
        if not isinstance(head, keras.Model):
            raise TypeError(f"head must be a keras.Model, got {type(head).__name__}")
        try:
            logits = head(embedding, training=False)
        except Exception as e:
            raise ValueError(
                f"head cannot take the encoder's embeddings of shape {tuple(embedding.shape)}: {e}"
            ) from e
        if not tf.is_tensor(logits) or len(logits.shape) != 2 or logits.shape[-1] < 2:
            raise ValueError(
                "head must map embeddings to [batch, K] logits with K >= 2, got "
                f"{getattr(logits, 'shape', type(logits).__name__)}"
            )
        num_classes = int(logits.shape[-1])
    return tuple(int(d) for d in shape[1:]), int(embedding.shape[-1]), num_classes


def _checked_images(images, input_shape):
    """Passes `images` on only if the shape is `[batch, *input_shape]` and values are in [0, 1].

    Needed in the graph: the signature's TensorSpec leaves the shape open
    (see the module doc), and TF Serving feeds whatever the request holds.
    """
    low, high = INPUT_RANGE
    shape = tf.shape(images)
    # Padding keeps the comparison well-defined whatever the rank.
    padded = tf.concat([shape, tf.fill([4], -1)], axis=0)[1:4]
    shape_ok = tf.logical_and(
        tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(padded, list(input_shape)))
    )
    dims = ", ".join(map(str, input_shape))
    shape_check = tf.debugging.Assert(
        shape_ok,
        [f"tarrl_tf: images must have shape [batch, {dims}]; got", shape],
    )
    with tf.control_dependencies([shape_check]):
        values_ok = tf.logical_and(
            tf.reduce_all(tf.math.is_finite(images)),
            tf.logical_and(tf.reduce_all(images >= low), tf.reduce_all(images <= high)),
        )
        range_check = tf.debugging.Assert(
            values_ok,
            [
                f"{checks.RANGE_ERROR_MARKER} [{low}, {high}] or not finite; send float32 images "
                "scaled to [0, 1] (nothing is clipped silently). Got min/max:",
                tf.reduce_min(images),
                tf.reduce_max(images),
            ],
        )
    with tf.control_dependencies([range_check]):
        # The shape is known from here on: the encoder and the outputs' metadata get it.
        return tf.ensure_shape(tf.identity(images), (None, *input_shape))


def _write_saved_model(encoder, head, input_shape, path):
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    if head is not None:
        archive.track(head)
    # Any shape: `_checked_images` refuses a wrong one with a message that names the right one.
    spec = tf.TensorSpec(None, tf.float32, name=SERVING_INPUT)

    def serve(images):
        embedding = encoder(_checked_images(images, input_shape), training=False)
        return {EMBEDDING_OUTPUT: tf.cast(embedding, tf.float32)}

    archive.add_endpoint(SERVING_SIGNATURE, serve, input_signature=[spec])
    if head is not None:

        def classify(images):
            embedding = encoder(_checked_images(images, input_shape), training=False)
            logits = tf.cast(head(embedding, training=False), tf.float32)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

        archive.add_endpoint(CLASSIFY_SIGNATURE, classify, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def write_models_config(serving_dir, *, config_path=None, base_path_prefix=None):
    """Writes a TF Serving `models.config` listing every model folder in `serving_dir`.

    A model folder is a child of `serving_dir` holding at least one integer
    version with a `saved_model.pb`. The file is text-proto:

    ```
    model_config_list {
      config {
        name: "mnist_cnn"
        base_path: "/srv/models/mnist_cnn"
        model_platform: "tensorflow"
      }
    }
    ```

    Args:
        serving_dir: folder of model folders.
        config_path: where to write; default `serving_dir/models.config`.
        base_path_prefix: the path of `serving_dir` as the server sees it (e.g.
            `/models` inside a container); default its absolute local path.

    Returns:
        The path written.
    """
    serving_dir = pathlib.Path(serving_dir)
    names = sorted(
        p.name
        for p in serving_dir.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and any((p / str(v) / "saved_model.pb").is_file() for v in published_versions(p))
    ) if serving_dir.is_dir() else []
    if not names:
        raise ValueError(f"No exported models (<name>/<version>/saved_model.pb) in {serving_dir}")
    prefix = base_path_prefix.rstrip("/") if base_path_prefix else str(serving_dir.resolve())
    lines = ["model_config_list {"]
    for name in names:
        lines += [
            "  config {",
            f"    name: {_proto_string(name)}",
            f"    base_path: {_proto_string(prefix + '/' + name)}",
            '    model_platform: "tensorflow"',
            "  }",
        ]
    lines.append("}")
    path = pathlib.Path(config_path) if config_path else serving_dir / MODELS_CONFIG_FILENAME
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def _proto_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def validate_model_name(model_name):
    """Raises ValueError unless `model_name` is a safe TF Serving model / folder name."""
    if not isinstance(model_name, str) or not _MODEL_NAME_RE.match(model_name):
        raise ValueError(
            f"Invalid model name {model_name!r}: use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return model_name


def rest_request(images, *, signature_name=SERVING_SIGNATURE):
    """The JSON body (a dict) of a TF Serving REST `:predict` request for `images`.

    Row format: `{"signature_name": ..., "instances": [<[H][W][C] nested list>, ...]}`.
    See the module docstring for the response shapes.

    Raises:
        ValueError: `images` is not a float batch in [0, 1] (checked here, and
            again in the graph by the server).
    """
    checks.check_images(images)
    return {
        "signature_name": signature_name,
        "instances": np.asarray(images, dtype=np.float32).tolist(),
    }


def probe_outputs(encoder, head=None):
    """A fixed probe batch for `encoder` and the outputs each signature must give on it."""
    shape = tuple(encoder.inputs[0].shape[1:])
    checks.check_image_spec((None,) + shape, "float32", name="encoder input")
    images = np.random.default_rng(0).random((_PROBE_BATCH,) + shape, dtype=np.float32)
    embedding = np.asarray(encoder(images, training=False), dtype=np.float32)
    expected = {"serving_default": {EMBEDDING_OUTPUT: embedding}}
    if head is not None:
        logits = np.asarray(head(embedding, training=False), dtype=np.float32)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
        expected[CLASSIFY_SIGNATURE] = {"logits": logits, "probabilities": probabilities}
    return images, expected


def check_saved_model(path, *, images, expected):
    """Loads the SavedModel at `path` and checks its signatures against `expected`.

    Args:
        path: a version directory (`.../serving/1`).
        images: float32 probe batch.
        expected: `{signature name: {output name: array}}`; every signature of
            the contract that should exist, with the outputs it must give.

    Returns:
        The largest absolute difference seen.
    """
    loaded = tf.saved_model.load(str(path))
    max_diff = 0.0
    for sig_name, outputs in expected.items():
        if sig_name not in loaded.signatures:
            raise SavedModelError(f"SavedModel {path} has no {sig_name!r} signature")
        fn = loaded.signatures[sig_name]
        _, inputs = fn.structured_input_signature
        if set(inputs) != {SERVING_INPUT} or inputs[SERVING_INPUT].dtype != tf.float32:
            raise SavedModelError(
                f"{path}:{sig_name} must take one float32 input {SERVING_INPUT!r}, got {inputs}"
            )
        if set(fn.structured_outputs) != set(outputs):
            raise SavedModelError(
                f"{path}:{sig_name} must return {sorted(outputs)}, "
                f"got {sorted(fn.structured_outputs)}"
            )
        result = fn(**{SERVING_INPUT: tf.constant(images)})
        for key, value in outputs.items():
            got = result[key].numpy()
            if got.shape != value.shape:
                raise SavedModelError(
                    f"{path}:{sig_name} output {key!r} has shape {got.shape}, "
                    f"expected {value.shape}"
                )
            diff = float(np.max(np.abs(got - value))) if value.size else 0.0
            if not np.allclose(got, value, atol=_ATOL, rtol=_RTOL):
                raise SavedModelError(
                    f"{path}:{sig_name} output {key!r} differs from the Keras model "
                    f"(max abs diff {diff:.3g})"
                )
            max_diff = max(max_diff, diff)
    return max_diff
