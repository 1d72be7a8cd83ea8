"""Where a zoo lives, its manifest, and the sha256 of every file it lists.

A manifest entry lists every file of the entry (model card included) with its
sha256 and size; the model card lists the same files except itself.
"""

import hashlib
import json
import os
import pathlib
import re

ZOO_DIR_ENV = "TARRL_ZOO_DIR"
MANIFEST_FILENAME = "manifest.json"
MANIFEST_FORMAT_VERSION = 1
MODEL_CARD_FILENAME = "model_card.json"
ENCODER_FILENAME = "encoder.keras"
# Rendered from the model card for people browsing the zoo (`tarrl_tf.zoo.pages`): not
# model files, so not checksummed; a test checks they match the cards.
PAGE_FILENAME = "README.md"
FIGURE_FILENAME = "sweep.svg"
RENDERED_FILENAMES = (PAGE_FILENAME, FIGURE_FILENAME)
HEAD_FILENAME = "head.keras"
SERVING_DIRNAME = "serving"

# Lowercase words joined by underscores: `mnist_cnn_tarrl_linf03`.
NAME_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


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


def default_zoo_dir():
    """The repo's top-level `zoo/` directory (next to the `tarrl_tf` package)."""
    return pathlib.Path(__file__).resolve().parents[2] / "zoo"


def clone_zoo_dir():
    """The repo's `zoo/` when tarrl_tf runs from a clone that has one (with its manifest), else None."""
    path = default_zoo_dir()
    return path if (path / MANIFEST_FILENAME).is_file() else None


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
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 100:
        raise ValueError(
            f"Invalid zoo name {name!r}: use lowercase letters and digits joined by '_', "
            "e.g. 'mnist_cnn_tarrl_linf03' (dataset_architecture_method_threat)"
        )
    return name


def sha256_file(path):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(root, *, exclude=()):
    """`{relative posix path: {"sha256": hex, "bytes": size}}` for every file under `root`.

    The rendered pages (`RENDERED_FILENAMES`) are never listed: they follow the card.
    """
    root = pathlib.Path(root)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude or rel in RENDERED_FILENAMES:
            continue
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def check_files(entry_dir, files, rels):
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
    problems = manifest_problems(manifest)
    if problems:
        raise InvalidModelCardError(f"Invalid zoo manifest {path}: " + "; ".join(problems))
    return manifest


def manifest_problems(manifest):
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
        if not NAME_RE.match(name):
            problems.append(f"invalid entry name {name!r}")
        problems += [f"{name}: {p}" for p in entry_problems(entry)]
    return problems


def entry_problems(entry):
    if not isinstance(entry, dict):
        return ["an entry must be an object"]
    problems = []
    if entry.get("model_card") != MODEL_CARD_FILENAME:
        problems.append(f"'model_card' must be {MODEL_CARD_FILENAME!r}")
    problems += files_problems(entry.get("files"), "files")
    files = entry.get("files") if isinstance(entry.get("files"), dict) else {}
    for required in (MODEL_CARD_FILENAME, ENCODER_FILENAME):
        if required not in files:
            problems.append(f"'files' must list {required}")
    return problems


def files_problems(files, where):
    if not isinstance(files, dict) or not files:
        return [f"'{where}' must be a non-empty object"]
    problems = []
    for rel, desc in files.items():
        parts = pathlib.PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts:
            problems.append(f"{where}: unsafe path {rel!r}")
        if not isinstance(desc, dict) or not _HEX64_RE.match(str(desc.get("sha256", ""))):
            problems.append(f"{where}[{rel!r}] needs a 64-hex-digit 'sha256'")
        elif not is_int(desc.get("bytes")) or desc["bytes"] < 0:
            problems.append(f"{where}[{rel!r}] needs an integer 'bytes'")
    return problems


def entry(name, zoo_dir):
    """The manifest entry of `name`; `UnknownModelError` listing the names otherwise."""
    entries = read_manifest(zoo_dir)["entries"]
    if name not in entries:
        available = ", ".join(sorted(entries)) or "none"
        raise UnknownModelError(
            f"Unknown zoo model {name!r} in {resolve_zoo_dir(zoo_dir)}; available: {available}"
        )
    return entries[name]




def is_int(x):
    import numpy as np

    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
