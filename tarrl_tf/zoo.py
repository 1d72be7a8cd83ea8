"""The model zoo: pretrained encoders stored as data (name -> files + sha256 + model card).

Layout of a zoo directory (the repo's top-level `zoo/` unless `zoo_dir=` or the
`TARRL_ZOO_DIR` environment variable says otherwise):

```
zoo/
  manifest.json                  # {"format_version": 1, "entries": {name: entry}}
  mnist_cnn_tarrl_linf03/
    encoder.keras                # keras.models.load_model(..., safe_mode=True)
    head.keras                   # only when a downstream head is shipped
    model_card.json              # facts + metrics + sha256 of every other file
    serving/1/saved_model.pb     # TF SavedModel; `serving/` is TF Serving's base_path
    serving/1/variables/...
```

A manifest entry lists every file of the entry (model card included) with its
sha256 and size; the model card lists the same files except itself. Nothing
here special-cases a name: everything is read from the manifest and the card.
Entries are written by `tarrl_tf.export.create_zoo_entry`.

Example:
```python
from tarrl_tf import zoo
zoo.list()                                   # ['mnist_cnn_tarrl_linf03', ...]
card = zoo.info("mnist_cnn_tarrl_linf03")    # the model card, a dict
encoder = zoo.load("mnist_cnn_tarrl_linf03")  # checksums first, then safe_mode load
layer = keras.layers.TFSMLayer(zoo.serving_path("mnist_cnn_tarrl_linf03"),
                               call_endpoint="serving_default")
```
"""

import builtins
import copy
import hashlib
import json
import math
import os
import pathlib
import re

import numpy as np

from tarrl_tf import checks

ZOO_DIR_ENV = "TARRL_ZOO_DIR"
MANIFEST_FILENAME = "manifest.json"
MANIFEST_FORMAT_VERSION = 1
MODEL_CARD_FILENAME = "model_card.json"
MODEL_CARD_SCHEMA_VERSION = 1
ENCODER_FILENAME = "encoder.keras"
HEAD_FILENAME = "head.keras"
SERVING_DIRNAME = "serving"

# Signature contract of every exported SavedModel (see `tarrl_tf.export`).
SERVING_INPUT = "images"
EMBEDDING_OUTPUT = "embedding"
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_OUTPUTS = ("logits", "probabilities")

# `simclr` and `tarrl` plus the baselines of METHOD.md; extend when a new one is trained.
METHODS = (
    "simclr",
    "tarrl",
    "supervised",
    "supervised_at",
    "rocl",
    "acl",
    "advcl",
    "deacl",
    "dynacl",
)
NORMS = ("linf", "l2")
REQUIRED_CARD_FIELDS = (
    "schema_version",
    "name",
    "dataset",
    "architecture",
    "method",
    "regularizer",
    "threat_model",
    "training",
    "metrics",
    "files",
    "software",
)
REQUIRED_TRAINING_FIELDS = ("epochs", "batch_size", "wall_clock_seconds")
REQUIRED_METRIC_FIELDS = ("head", "clean_accuracy", "robust_accuracy", "attack", "num_examples")

# Lowercase words joined by underscores: `mnist_cnn_tarrl_linf03`.
_NAME_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
# Strings that hold a number ("0.3", "8/255", "1e-3"): numbers must be stored as numbers.
_NUMERIC_STRING_RE = re.compile(
    r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(\s*/\s*(\d+\.?\d*|\.\d+))?\s*%?\s*$"
)
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
# Probe batch used by `verify` to compare the Keras file with the SavedModel.
_PROBE_BATCH = 2
_ATOL, _RTOL = 1e-5, 1e-4


class ZooError(Exception):
    """Base class of every zoo error."""


class UnknownModelError(ZooError, KeyError):
    """The name is not in the manifest."""

    def __str__(self):  # KeyError would print the message in quotes.
        return str(self.args[0]) if self.args else ""


class MissingFileError(ZooError, FileNotFoundError):
    """A file listed in the manifest (or the manifest itself) does not exist."""


class ChecksumError(ZooError, ValueError):
    """A file's size or sha256 differs from the manifest: truncated or corrupted."""


class InvalidModelCardError(ZooError, ValueError):
    """A model card or manifest breaks the schema (missing field, number stored as a string...)."""


# --------------------------------------------------------------------------- locations


def default_zoo_dir():
    """The repo's top-level `zoo/` directory (next to the `tarrl_tf` package)."""
    return pathlib.Path(__file__).resolve().parent.parent / "zoo"


def resolve_zoo_dir(zoo_dir=None):
    """`zoo_dir` if given, else `$TARRL_ZOO_DIR` if set, else `default_zoo_dir()`."""
    if zoo_dir is not None:
        return pathlib.Path(zoo_dir)
    env = os.environ.get(ZOO_DIR_ENV)
    if env:
        return pathlib.Path(env)
    return default_zoo_dir()


def validate_name(name):
    """Raises ValueError unless `name` is lowercase words joined by `_`."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > 100:
        raise ValueError(
            f"Invalid zoo name {name!r}: use lowercase letters and digits joined by '_', "
            "e.g. 'mnist_cnn_tarrl_linf03' (dataset_architecture_method_threat)"
        )
    return name


# --------------------------------------------------------------------------- files


def sha256_file(path):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(root, *, exclude=()):
    """`{relative posix path: {"sha256": hex, "bytes": size}}` for every file under `root`."""
    root = pathlib.Path(root)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude:
            continue
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def _check_files(entry_dir, files, rels):
    """Checks size and sha256 of `rels` (paths relative to `entry_dir`) against `files`."""
    for rel in rels:
        path = pathlib.Path(entry_dir) / rel
        expected = files[rel]
        if not path.is_file():
            raise MissingFileError(f"Missing zoo file {path} (listed in the manifest)")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise ChecksumError(
                f"Zoo file {path} is {size} bytes, the manifest says {expected['bytes']}: "
                "the file is truncated or corrupted; re-download or re-export it"
            )
        actual = sha256_file(path)
        if actual != expected["sha256"]:
            raise ChecksumError(
                f"sha256 mismatch for zoo file {path}: expected {expected['sha256']}, "
                f"got {actual}; the file is corrupted or was modified"
            )


# --------------------------------------------------------------------------- manifest


def empty_manifest():
    return {"format_version": MANIFEST_FORMAT_VERSION, "entries": {}}


def read_manifest(zoo_dir=None):
    """Reads and checks `manifest.json` of the zoo; returns the dict."""
    path = resolve_zoo_dir(zoo_dir) / MANIFEST_FILENAME
    if not path.is_file():
        raise MissingFileError(
            f"No zoo manifest at {path}; pass zoo_dir= or set ${ZOO_DIR_ENV} to a zoo directory"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidModelCardError(f"Zoo manifest {path} is not valid JSON: {e}") from e
    problems = _manifest_problems(manifest)
    if problems:
        raise InvalidModelCardError(f"Invalid zoo manifest {path}: " + "; ".join(problems))
    return manifest


def _manifest_problems(manifest):
    if not isinstance(manifest, dict):
        return ["the manifest must be a JSON object"]
    problems = []
    if manifest.get("format_version") != MANIFEST_FORMAT_VERSION:
        problems.append(
            f"format_version must be {MANIFEST_FORMAT_VERSION}, "
            f"got {manifest.get('format_version')!r}"
        )
    entries = manifest.get("entries")
    if not isinstance(entries, dict):
        return problems + ["'entries' must be an object mapping names to entries"]
    for name, entry in entries.items():
        if not _NAME_RE.match(name):
            problems.append(f"invalid entry name {name!r}")
        problems += [f"{name}: {p}" for p in _entry_problems(entry)]
    return problems


def _entry_problems(entry):
    if not isinstance(entry, dict):
        return ["an entry must be an object"]
    problems = []
    if entry.get("model_card") != MODEL_CARD_FILENAME:
        problems.append(f"'model_card' must be {MODEL_CARD_FILENAME!r}")
    problems += _files_problems(entry.get("files"), "files")
    files = entry.get("files") if isinstance(entry.get("files"), dict) else {}
    for required in (MODEL_CARD_FILENAME, ENCODER_FILENAME):
        if required not in files:
            problems.append(f"'files' must list {required}")
    return problems


def _files_problems(files, where):
    if not isinstance(files, dict) or not files:
        return [f"'{where}' must be a non-empty object"]
    problems = []
    for rel, desc in files.items():
        parts = pathlib.PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts:
            problems.append(f"{where}: unsafe path {rel!r}")
        if not isinstance(desc, dict) or not _HEX64_RE.match(str(desc.get("sha256", ""))):
            problems.append(f"{where}[{rel!r}] needs a 64-hex-digit 'sha256'")
        elif not _is_int(desc.get("bytes")) or desc["bytes"] < 0:
            problems.append(f"{where}[{rel!r}] needs an integer 'bytes'")
    return problems


def _entry(name, zoo_dir):
    entries = read_manifest(zoo_dir)["entries"]
    if name not in entries:
        available = ", ".join(sorted(entries)) or "none"
        raise UnknownModelError(
            f"Unknown zoo model {name!r} in {resolve_zoo_dir(zoo_dir)}; available: {available}"
        )
    return entries[name]


# --------------------------------------------------------------------------- model card


def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x):
    return (
        isinstance(x, (int, float, np.integer, np.floating))
        and not isinstance(x, bool)
        and math.isfinite(x)
    )


def _numeric_strings(obj, where):
    """Paths of string values that hold numbers (e.g. `"8/255"`), anywhere in `obj`."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _numeric_strings(value, f"{where}.{key}")
    elif isinstance(obj, (builtins.list, tuple)):
        for i, value in enumerate(obj):
            found += _numeric_strings(value, f"{where}[{i}]")
    elif isinstance(obj, str) and _NUMERIC_STRING_RE.match(obj):
        found.append(f"{where}={obj!r}")
    elif isinstance(obj, float) and not math.isfinite(obj):
        found.append(f"{where}={obj!r} (not finite)")
    return found


def _norm_problems(norm, where):
    if norm not in NORMS:
        return [f"{where} must be one of {NORMS}, got {norm!r}"]
    return []


def _epsilon_problems(eps, where):
    if not _is_number(eps) or eps < 0:
        return [f"{where} must be a non-negative number (e.g. 0.03137 for 8/255), got {eps!r}"]
    return []


def _accuracy_problems(acc, where):
    if not _is_number(acc) or not 0.0 <= acc <= 1.0:
        return [f"{where} must be a number in [0, 1] (a fraction, not a percentage), got {acc!r}"]
    return []


def validate_model_card(card):
    """Checks a model card; raises `InvalidModelCardError` (a ValueError) listing every problem.

    Required: the fields in `REQUIRED_CARD_FIELDS`; `method` in `METHODS`;
    `threat_model` with `norm` in `NORMS` and a numeric `epsilon`; `training`
    with integer `epochs` and `batch_size` and numeric `wall_clock_seconds`; a
    non-empty `metrics` list whose items name a `head`, give `clean_accuracy`
    and `robust_accuracy` as fractions, `num_examples`, and the `attack`
    (`name`, `norm`, `epsilon`, plus its other settings); `files` with the
    sha256 and size of every file; `software` with the TensorFlow and Keras
    versions. No value anywhere may be a number written as a string.

    Returns:
        The card, unchanged.
    """
    if not isinstance(card, dict):
        raise InvalidModelCardError(f"A model card must be a dict, got {type(card).__name__}")
    problems = [f"missing field {f!r}" for f in REQUIRED_CARD_FIELDS if f not in card]
    get = card.get
    if "schema_version" in card and get("schema_version") != MODEL_CARD_SCHEMA_VERSION:
        problems.append(f"schema_version must be {MODEL_CARD_SCHEMA_VERSION}")
    if "name" in card and (not isinstance(get("name"), str) or not _NAME_RE.match(get("name"))):
        problems.append(f"name must be a systematic zoo name, got {get('name')!r}")
    for field in ("dataset", "architecture"):
        if field in card and (not isinstance(get(field), str) or not get(field)):
            problems.append(f"{field} must be a non-empty string, got {get(field)!r}")
    if "method" in card and get("method") not in METHODS:
        problems.append(f"method must be one of {METHODS}, got {get('method')!r}")
    if "regularizer" in card and not isinstance(get("regularizer"), dict):
        problems.append("regularizer must be an object of settings ({} when there is none)")

    threat = get("threat_model")
    if "threat_model" in card:
        if not isinstance(threat, dict):
            problems.append("threat_model must be an object with 'norm' and 'epsilon'")
        else:
            problems += _norm_problems(threat.get("norm"), "threat_model.norm")
            problems += _epsilon_problems(threat.get("epsilon"), "threat_model.epsilon")

    training = get("training")
    if "training" in card:
        if not isinstance(training, dict):
            problems.append("training must be an object")
        else:
            problems += [
                f"training.{f} is missing" for f in REQUIRED_TRAINING_FIELDS if f not in training
            ]
            for f in ("epochs", "batch_size"):
                if f in training and (not _is_int(training[f]) or training[f] < 1):
                    problems.append(f"training.{f} must be a positive integer, got {training[f]!r}")
            wall = training.get("wall_clock_seconds")
            if "wall_clock_seconds" in training and (not _is_number(wall) or wall < 0):
                problems.append(f"training.wall_clock_seconds must be a number >= 0, got {wall!r}")

    metrics = get("metrics")
    if "metrics" in card:
        if not isinstance(metrics, builtins.list) or not metrics:
            problems.append("metrics must be a non-empty list (one item per head and attack)")
        else:
            for i, m in enumerate(metrics):
                problems += _metric_problems(m, f"metrics[{i}]")

    if "files" in card:
        problems += _files_problems(get("files"), "files")
        if isinstance(get("files"), dict) and MODEL_CARD_FILENAME in get("files"):
            problems.append("files must not list the model card itself")

    software = get("software")
    if "software" in card:
        if not isinstance(software, dict) or not all(
            isinstance(software.get(k), str) for k in ("tensorflow", "keras")
        ):
            problems.append("software must give the 'tensorflow' and 'keras' versions as strings")

    problems += [
        f"{p}: store numbers as numbers, not strings"
        for p in _numeric_strings(
            {k: v for k, v in card.items() if k not in ("files", "software")}, "card"
        )
    ]
    if problems:
        raise InvalidModelCardError(
            f"Invalid model card {get('name')!r}: " + "; ".join(problems)
        )
    return card


def _metric_problems(m, where):
    if not isinstance(m, dict):
        return [f"{where} must be an object"]
    problems = [f"{where}.{f} is missing" for f in REQUIRED_METRIC_FIELDS if f not in m]
    if "head" in m and (not isinstance(m["head"], str) or not _NAME_RE.match(m["head"])):
        problems.append(f"{where}.head must name the downstream head, e.g. 'linear_probe'")
    for f in ("clean_accuracy", "robust_accuracy"):
        if f in m:
            problems += _accuracy_problems(m[f], f"{where}.{f}")
    if "num_examples" in m and (not _is_int(m["num_examples"]) or m["num_examples"] < 1):
        problems.append(f"{where}.num_examples must be a positive integer")
    attack = m.get("attack")
    if "attack" in m:
        if not isinstance(attack, dict) or not isinstance(attack.get("name"), str):
            problems.append(f"{where}.attack must be an object with a 'name' and its settings")
        else:
            problems += _norm_problems(attack.get("norm"), f"{where}.attack.norm")
            problems += _epsilon_problems(attack.get("epsilon"), f"{where}.attack.epsilon")
    return problems


# --------------------------------------------------------------------------- public API


def list(*, zoo_dir=None):  # noqa: A001 - the issue fixes the name `zoo.list()`.
    """Sorted names of the zoo's entries."""
    return sorted(read_manifest(zoo_dir)["entries"])


def info(name, *, zoo_dir=None):
    """The model card of `name` (a dict), after checking its sha256 and schema."""
    entry = _entry(name, zoo_dir)
    entry_dir = resolve_zoo_dir(zoo_dir) / name
    _check_files(entry_dir, entry["files"], [MODEL_CARD_FILENAME])
    return _read_card(entry_dir, name, entry)


def _read_card(entry_dir, name, entry):
    card = json.loads((pathlib.Path(entry_dir) / MODEL_CARD_FILENAME).read_text())
    validate_model_card(card)
    if card["name"] != name:
        raise InvalidModelCardError(
            f"Model card in {entry_dir} is for {card['name']!r}, not {name!r}"
        )
    listed = {k: v for k, v in entry["files"].items() if k != MODEL_CARD_FILENAME}
    if card["files"] != listed:
        raise InvalidModelCardError(
            f"Model card of {name!r} and the manifest list different files or checksums"
        )
    return copy.deepcopy(card)


def load(name, *, zoo_dir=None):
    """Loads the encoder of `name` as a Keras model.

    The sha256 of `encoder.keras` (and of the model card) is checked before
    anything is deserialized; the file is then loaded with `safe_mode=True`.

    Raises:
        UnknownModelError: `name` is not in the manifest.
        MissingFileError: the file is missing.
        ChecksumError: the file is truncated or corrupted.
    """
    return _load_keras(name, ENCODER_FILENAME, zoo_dir)


def load_head(name, *, zoo_dir=None):
    """Loads the shipped downstream head of `name` (embeddings -> logits), if there is one."""
    entry = _entry(name, zoo_dir)
    if HEAD_FILENAME not in entry["files"]:
        raise ZooError(f"Zoo model {name!r} ships no downstream head ({HEAD_FILENAME})")
    return _load_keras(name, HEAD_FILENAME, zoo_dir)


def _load_keras(name, filename, zoo_dir):
    import keras  # Deferred: listing the zoo and reading cards need no Keras.

    entry = _entry(name, zoo_dir)
    entry_dir = resolve_zoo_dir(zoo_dir) / name
    _check_files(entry_dir, entry["files"], [MODEL_CARD_FILENAME, filename])
    return keras.models.load_model(entry_dir / filename, compile=False, safe_mode=True)


def serving_versions(name, *, zoo_dir=None):
    """Sorted integer versions of the SavedModel shipped with `name`."""
    return _serving_versions(_entry(name, zoo_dir)["files"])


def _serving_versions(files):
    versions = set()
    for rel in files:
        parts = pathlib.PurePosixPath(rel).parts
        if len(parts) > 2 and parts[0] == SERVING_DIRNAME and parts[1].isdigit():
            versions.add(int(parts[1]))
    return sorted(versions)


def serving_path(name, *, version=None, zoo_dir=None):
    """Directory of one version of the SavedModel of `name` (the latest by default).

    Its files are checksummed first. Load it with `tf.saved_model.load(path)` or
    `keras.layers.TFSMLayer(path, call_endpoint="serving_default")`; its parent
    (`zoo/<name>/serving`) is the `base_path` to give TF Serving.
    """
    entry = _entry(name, zoo_dir)
    versions = _serving_versions(entry["files"])
    if not versions:
        raise MissingFileError(f"Zoo model {name!r} ships no SavedModel under {SERVING_DIRNAME}/")
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise ZooError(f"Zoo model {name!r} has no serving version {version!r}; it has {versions}")
    entry_dir = resolve_zoo_dir(zoo_dir) / name
    prefix = f"{SERVING_DIRNAME}/{version}/"
    _check_files(entry_dir, entry["files"], [r for r in entry["files"] if r.startswith(prefix)])
    return entry_dir / SERVING_DIRNAME / str(version)


def verify(name, *, zoo_dir=None):
    """Checks one entry completely; raises a `ZooError` on the first problem.

    Every listed file exists with the listed size and sha256 and no unlisted
    file is present; the model card is valid and agrees with the manifest;
    `encoder.keras` (and `head.keras`) load with `safe_mode=True`; every
    SavedModel version loads, has the `serving_default` (and `classify`)
    signature with the fixed input and output names, and gives the same
    outputs as the Keras files on a probe batch.

    Returns:
        A small report: `{"name", "files", "serving_versions", "max_abs_diff"}`.
    """
    entry = _entry(name, zoo_dir)
    return check_entry_dir(resolve_zoo_dir(zoo_dir) / name, name=name, entry=entry)


def check_entry_dir(entry_dir, *, name, entry):
    """The checks of `verify` on a directory and its manifest entry (used before publishing)."""
    problems = _entry_problems(entry)
    if problems:
        raise InvalidModelCardError(f"Invalid manifest entry for {name!r}: " + "; ".join(problems))
    entry_dir = pathlib.Path(entry_dir)
    if not entry_dir.is_dir():
        raise MissingFileError(f"Zoo entry directory {entry_dir} is missing")
    files = entry["files"]
    _check_files(entry_dir, files, builtins.list(files))
    present = {p.relative_to(entry_dir).as_posix() for p in entry_dir.rglob("*") if p.is_file()}
    extra = sorted(present - set(files))
    if extra:
        raise ChecksumError(
            f"Zoo entry {entry_dir} holds files the manifest does not list: {extra}"
        )
    _read_card(entry_dir, name, entry)
    max_diff = _check_models(entry_dir, files)
    return {
        "name": name,
        "files": len(files),
        "serving_versions": _serving_versions(files),
        "max_abs_diff": max_diff,
    }


def _check_models(entry_dir, files):
    import keras

    encoder = keras.models.load_model(entry_dir / ENCODER_FILENAME, compile=False, safe_mode=True)
    head = None
    if HEAD_FILENAME in files:
        head = keras.models.load_model(entry_dir / HEAD_FILENAME, compile=False, safe_mode=True)
    images, expected = probe_outputs(encoder, head)
    versions = _serving_versions(files)
    if not versions:
        raise MissingFileError(
            f"Zoo entry {entry_dir} ships no SavedModel under {SERVING_DIRNAME}/"
        )
    return max(
        check_saved_model(entry_dir / SERVING_DIRNAME / str(v), images=images, expected=expected)
        for v in versions
    )


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
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    max_diff = 0.0
    for sig_name, outputs in expected.items():
        if sig_name not in loaded.signatures:
            raise ZooError(f"SavedModel {path} has no {sig_name!r} signature")
        fn = loaded.signatures[sig_name]
        _, inputs = fn.structured_input_signature
        if set(inputs) != {SERVING_INPUT} or inputs[SERVING_INPUT].dtype != tf.float32:
            raise ZooError(
                f"{path}:{sig_name} must take one float32 input {SERVING_INPUT!r}, got {inputs}"
            )
        if set(fn.structured_outputs) != set(outputs):
            raise ZooError(
                f"{path}:{sig_name} must return {sorted(outputs)}, "
                f"got {sorted(fn.structured_outputs)}"
            )
        result = fn(**{SERVING_INPUT: tf.constant(images)})
        for key, value in outputs.items():
            got = result[key].numpy()
            if got.shape != value.shape:
                raise ZooError(
                    f"{path}:{sig_name} output {key!r} has shape {got.shape}, "
                    f"expected {value.shape}"
                )
            diff = float(np.max(np.abs(got - value))) if value.size else 0.0
            if not np.allclose(got, value, atol=_ATOL, rtol=_RTOL):
                raise ZooError(
                    f"{path}:{sig_name} output {key!r} differs from the Keras model "
                    f"(max abs diff {diff:.3g})"
                )
            max_diff = max(max_diff, diff)
    return max_diff
