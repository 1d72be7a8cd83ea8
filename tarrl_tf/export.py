"""Exports encoders for TF Serving and writes zoo entries.

`export_serving(encoder, base_path, head=...)` publishes `base_path/<version>/`,
a TF SavedModel with these signatures (the contract `tarrl_tf.zoo` checks):

- `serving_default`: `images` float32 `[batch, H, W, C]` in `[0, 1]` ->
  `embedding` float32 `[batch, D]`.
- `classify` (only with a `head`, a Keras model mapping embeddings to logits):
  `images` -> `logits` and `probabilities` (softmax of the logits), `[batch, K]`.

Bad input is rejected, never clipped: the signature's TensorSpec fixes dtype
and shape (a tensor of another dtype fails with "expected a float tensor";
note that NumPy arrays given to a loaded signature in Python are converted
first), and an in-graph `tf.debugging.Assert` fails on values outside `[0, 1]`
or not finite with a message starting "tarrl_tf: image values outside"
(so uint8 images in 0..255 are caught). TF Serving answers such a request with
HTTP 400 and that message in `{"error": ...}`.

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
export.create_zoo_entry(
    encoder, name="mnist_cnn_tarrl_linf03", dataset="mnist", architecture="small_cnn",
    method="tarrl", regularizer={"weight": 1.0, "estimator": "pgd", "steps": 5},
    threat_model={"norm": "linf", "epsilon": 0.3},
    training={"epochs": 50, "batch_size": 256, "wall_clock_seconds": 5400.0},
    metrics=[{"head": "linear_probe", "clean_accuracy": 0.97, "robust_accuracy": 0.81,
              "num_examples": 10000,
              "attack": {"name": "pgd", "norm": "linf", "epsilon": 0.3, "step_size": 0.01,
                         "steps": 40, "random_start": True}}],
    head=linear_head, head_name="linear_probe")
```
"""

import copy
import os
import pathlib
import platform
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

import tarrl_tf
from tarrl_tf import checks, zoo
from tarrl_tf.files import dumps_json, locked, temporary_dir, write_atomic

SERVING_SIGNATURE = "serving_default"
MODELS_CONFIG_FILENAME = "models.config"
_INPUT_RANGE = (0.0, 1.0)
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------- SavedModel


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
    input_shape, _, _ = _check_models(encoder, head)
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
        images, expected = zoo.probe_outputs(encoder, head)
        zoo.check_saved_model(tmp, images=images, expected=expected)
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


def _check_models(encoder, head):
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

    Needed in the graph: a loaded signature does not check the TensorSpec's
    shape (TF 2.21 runs a `[1, 9, 8, 1]` batch through a `[None, 8, 8, 1]`
    signature), and TF Serving feeds whatever the request holds.
    """
    low, high = _INPUT_RANGE
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
        return tf.identity(images)


def _write_saved_model(encoder, head, input_shape, path):
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    if head is not None:
        archive.track(head)
    spec = tf.TensorSpec((None,) + tuple(input_shape), tf.float32, name=zoo.SERVING_INPUT)

    def serve(images):
        embedding = encoder(_checked_images(images, input_shape), training=False)
        return {zoo.EMBEDDING_OUTPUT: tf.cast(embedding, tf.float32)}

    archive.add_endpoint(SERVING_SIGNATURE, serve, input_signature=[spec])
    if head is not None:

        def classify(images):
            embedding = encoder(_checked_images(images, input_shape), training=False)
            logits = tf.cast(head(embedding, training=False), tf.float32)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

        archive.add_endpoint(zoo.CLASSIFY_SIGNATURE, classify, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


# --------------------------------------------------------------------------- TF Serving config


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


# --------------------------------------------------------------------------- model card and zoo


def write_model_card(
    entry_dir,
    *,
    name,
    dataset,
    architecture,
    method,
    regularizer,
    threat_model,
    training,
    metrics,
    serving=None,
    notes=None,
):
    """Writes `entry_dir/model_card.json` and returns the card.

    Only the facts passed in are recorded (nothing is measured or invented
    here); the writer adds the sha256 and size of every file already in
    `entry_dir` and the TensorFlow / Keras / Python versions, canonicalizes
    norms (`np.inf`, `"inf"` -> `"linf"`; `2` -> `"l2"`) and validates the card.

    Args:
        entry_dir: the entry's folder, with its other files already written.
        name: zoo name, e.g. `"mnist_cnn_tarrl_linf03"`.
        dataset: e.g. `"mnist"`.
        architecture: e.g. `"small_cnn"`.
        method: one of `tarrl_tf.zoo.METHODS`.
        regularizer: dict of the regularizer's settings (`{}` for none).
        threat_model: `{"norm": ..., "epsilon": <number>}` plus optional settings.
        training: `{"epochs": int, "batch_size": int, "wall_clock_seconds": number}`
            plus optional facts (hardware, optimizer, ...).
        metrics: list of `{"head", "clean_accuracy", "robust_accuracy",
            "num_examples", "attack": {"name", "norm", "epsilon", ...}}`,
            accuracies as fractions in [0, 1].
        serving: optional description of the exported signatures.
        notes: optional free text.

    Raises:
        ValueError: the card is invalid (`tarrl_tf.zoo.InvalidModelCardError`).
    """
    entry_dir = pathlib.Path(entry_dir)
    card = _make_card(
        name=name,
        dataset=dataset,
        architecture=architecture,
        method=method,
        regularizer=regularizer,
        threat_model=threat_model,
        training=training,
        metrics=metrics,
        serving=serving,
        notes=notes,
        files=zoo.describe_files(entry_dir, exclude=(zoo.MODEL_CARD_FILENAME,)),
    )
    zoo.validate_model_card(card)
    write_atomic(entry_dir / zoo.MODEL_CARD_FILENAME, dumps_json(card))
    return card


def card_metrics(report):
    """Model card `metrics` items from a `tarrl_tf.evaluation.evaluate` report.

    One item per attack row: the head, that row's clean and robust accuracy
    and number of examples, and the attack's exact settings. A row attacked on
    a subset (see `evaluate(subset_examples=...)`) carries the clean accuracy
    and loss of its own examples; rows without them take the report's. Values
    are copied, never recomputed.
    """
    measured = ("robust_accuracy", "adversarial_loss", "num_examples", "clean_accuracy",
                "clean_loss")
    items = []
    for row in report["attacks"]:
        item = {
            "head": report["head"],
            "clean_accuracy": row.get("clean_accuracy", report["clean_accuracy"]),
            "robust_accuracy": row["robust_accuracy"],
            "num_examples": row["num_examples"],
            "attack": {k: v for k, v in row.items() if k not in measured},
        }
        for key in ("fine_tune", "dataset", "task"):
            if key in report:
                item[key] = report[key]
        for key in ("clean_loss", "adversarial_loss"):
            if key in row or key in report:
                item[key] = row.get(key, report.get(key))
        items.append(_plain(item))
    return items


def _make_card(*, files, serving, notes, threat_model, metrics, **facts):
    threat_model = _canonical_norm_in(_plain(threat_model))
    metrics = _plain(metrics)
    if isinstance(metrics, list):
        metrics = [
            {**m, "attack": _canonical_norm_in(m["attack"])}
            if isinstance(m, dict) and isinstance(m.get("attack"), dict)
            else m
            for m in metrics
        ]
    card = {"schema_version": zoo.MODEL_CARD_SCHEMA_VERSION}
    card.update({k: _plain(facts[k]) for k in ("name", "dataset", "architecture", "method")})
    card["regularizer"] = _plain(facts["regularizer"])
    card["threat_model"] = threat_model
    card["training"] = _plain(facts["training"])
    card["metrics"] = metrics
    if serving is not None:
        card["serving"] = _plain(serving)
    if notes is not None:
        card["notes"] = str(notes)
    card["files"] = files
    card["software"] = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tarrl_tf": tarrl_tf.__version__,
        "python": platform.python_version(),
    }
    return card


def _canonical_norm_in(d):
    """Rewrites `d["norm"]` as `"linf"` / `"l2"`; leaves anything unparsable to the validator."""
    if not isinstance(d, dict) or "norm" not in d:
        return d
    try:
        norm = checks.canonical_norm(d["norm"])
    except ValueError:
        return d
    return {**d, "norm": "linf" if norm == "inf" else "l2"}


def _plain(obj):
    """A deep copy with NumPy scalars and tuples turned into JSON types (values unchanged)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return copy.deepcopy(obj)


def create_zoo_entry(
    encoder,
    *,
    name,
    dataset,
    architecture,
    method,
    regularizer,
    threat_model,
    training,
    metrics,
    head=None,
    head_name=None,
    notes=None,
    zoo_dir=None,
    replace=False,
):
    """Adds `zoo_dir/<name>/` and its manifest entry, all or nothing.

    Writes `encoder.keras` (and `head.keras`), `serving/1/` (the SavedModel),
    and `model_card.json` (see `write_model_card` for the facts arguments) into
    a hidden temporary folder, runs the checks of `tarrl_tf.zoo.verify` on it,
    renames it into place and then updates `manifest.json` (temporary file +
    `os.replace`). On any failure the folder is removed and the manifest is
    left as it was.

    With `replace=True` an existing entry of that name is swapped out the same
    way: only once the new entry is written and verified, the old folder is
    renamed aside into a hidden folder, the new one renamed in, the manifest
    replaced, and the old folder deleted. On any failure the old entry and the
    manifest are left exactly as they were. A name that does not exist yet is
    simply created (as `os.replace` creates a missing file).

    Args:
        encoder: the encoder (see `export_serving`).
        name: systematic zoo name, e.g. `"mnist_cnn_tarrl_linf03"`.
        head: optional downstream head (embeddings -> logits) to ship.
        head_name: the name the metrics use for `head`; required with `head`.
        zoo_dir: default: `tarrl_tf.zoo.resolve_zoo_dir()`.
        replace: swap out an existing entry of that name instead of refusing.
        dataset, architecture, method, regularizer, threat_model, training,
        metrics, notes: the model card facts, see `write_model_card`.

    Returns:
        The entry's directory.
    """
    zoo.validate_name(name)
    input_shape, embedding_dim, num_classes = _check_models(encoder, head)
    facts = dict(
        name=name,
        dataset=dataset,
        architecture=architecture,
        method=method,
        regularizer=regularizer,
        threat_model=threat_model,
        training=training,
        metrics=metrics,
        notes=notes,
    )
    serving = {
        "input": {
            "name": zoo.SERVING_INPUT,
            "dtype": "float32",
            "shape": [None, *input_shape],
            "range": list(_INPUT_RANGE),
        },
        "embedding_dim": embedding_dim,
        "signatures": {SERVING_SIGNATURE: [zoo.EMBEDDING_OUTPUT]},
    }
    # Fail on bad facts before spending time on the export.
    placeholder = {zoo.ENCODER_FILENAME: {"sha256": "0" * 64, "bytes": 0}}
    zoo.validate_model_card(_make_card(files=placeholder, serving=serving, **facts))
    if head is not None:
        if head_name is None:
            raise ValueError("head_name is required with head: the name the metrics use for it")
        heads = {m.get("head") for m in metrics if isinstance(m, dict)}
        if head_name not in heads:
            raise ValueError(
                f"The shipped head {head_name!r} has no metrics; the metrics name {sorted(heads)}"
            )
        serving["signatures"][zoo.CLASSIFY_SIGNATURE] = list(zoo.CLASSIFY_OUTPUTS)
        serving["head"] = head_name
        serving["num_classes"] = num_classes

    zoo_root = zoo.resolve_zoo_dir(zoo_dir)
    zoo_root.mkdir(parents=True, exist_ok=True)
    final = zoo_root / name
    if not replace:
        _check_free(zoo_root, name)  # Fail before the export; checked again under the lock.

    tmp = pathlib.Path(temporary_dir(zoo_root, prefix=f".tmp-{name}-"))
    aside = None  # A hidden folder holding the old entry while the new one moves in.
    try:
        encoder.save(tmp / zoo.ENCODER_FILENAME)
        if head is not None:
            head.save(tmp / zoo.HEAD_FILENAME)
        export_serving(encoder, tmp / zoo.SERVING_DIRNAME, head=head, version=1)
        write_model_card(tmp, serving=serving, **facts)
        entry = {"model_card": zoo.MODEL_CARD_FILENAME, "files": zoo.describe_files(tmp)}
        zoo.check_entry_dir(tmp, name=name, entry=entry)
        # Another process may have published since: the manifest is read, changed
        # and written under one lock.
        with locked(zoo_root):
            manifest = _read_manifest_or_empty(zoo_root)
            if not replace:
                _check_free(zoo_root, name)
            if final.exists():
                aside = pathlib.Path(temporary_dir(zoo_root, prefix=f".old-{name}-"))
                os.rename(final, aside / name)
            os.rename(tmp, final)
            manifest["entries"][name] = entry
            manifest["entries"] = dict(sorted(manifest["entries"].items()))
            write_atomic(zoo_root / zoo.MANIFEST_FILENAME, dumps_json(manifest))
    except BaseException:
        # Undo in reverse order: the new entry out, the old one back in.
        if not tmp.exists() and final.exists():
            os.rename(final, tmp)
        if aside is not None and (aside / name).exists():
            os.rename(aside / name, final)
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return final


def _read_manifest_or_empty(zoo_root):
    if (zoo_root / zoo.MANIFEST_FILENAME).exists():
        return zoo.read_manifest(zoo_root)
    return zoo.empty_manifest()


def _check_free(zoo_root, name):
    if name in _read_manifest_or_empty(zoo_root)["entries"] or (zoo_root / name).exists():
        raise ValueError(
            f"Zoo entry {name!r} already exists in {zoo_root}; pick a new name "
            "(or pass replace=True to swap it out)"
        )
