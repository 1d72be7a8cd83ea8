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
Entries are written by `tarrl_tf.zoo.publish.create_zoo_entry` (also
`tarrl_tf.export.create_zoo_entry`).

Rooms: `manifest.py` (locations, the manifest, checksums, errors), `card.py`
(the model card's schema and writer), `serving.py` (the SavedModel contract,
export, TF Serving config), `entry.py` (the checks of one entry),
`publish.py` (writing an entry, all or nothing).

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

from tarrl_tf.zoo import card, entry, manifest, publish, serving  # noqa: F401
from tarrl_tf.zoo.card import (  # noqa: F401
    METHODS,
    MODEL_CARD_SCHEMA_VERSION,
    NORMS,
    REQUIRED_CARD_FIELDS,
    REQUIRED_METRIC_FIELDS,
    REQUIRED_TRAINING_FIELDS,
    validate_model_card,
)
from tarrl_tf.zoo.entry import check_entry_dir, read_card
from tarrl_tf.zoo.entry import serving_versions as _versions_of
from tarrl_tf.zoo.manifest import (  # noqa: F401
    ENCODER_FILENAME,
    HEAD_FILENAME,
    MANIFEST_FILENAME,
    MANIFEST_FORMAT_VERSION,
    MODEL_CARD_FILENAME,
    SERVING_DIRNAME,
    ZOO_DIR_ENV,
    ChecksumError,
    InvalidModelCardError,
    MissingFileError,
    UnknownModelError,
    ZooError,
    check_files,
    default_zoo_dir,
    describe_files,
    empty_manifest,
    read_manifest,
    resolve_zoo_dir,
    sha256_file,
    validate_name,
)
from tarrl_tf.zoo.serving import (  # noqa: F401
    CLASSIFY_OUTPUTS,
    CLASSIFY_SIGNATURE,
    EMBEDDING_OUTPUT,
    SERVING_INPUT,
    check_saved_model,
    probe_outputs,
)


def list(*, zoo_dir=None):  # noqa: A001 - the public name is `zoo.list()`.
    """Sorted names of the zoo's entries."""
    return sorted(read_manifest(zoo_dir)["entries"])


def info(name, *, zoo_dir=None):
    """The model card of `name` (a dict), after checking its sha256 and schema."""
    listed = manifest.entry(name, zoo_dir)
    entry_dir = resolve_zoo_dir(zoo_dir) / name
    check_files(entry_dir, listed["files"], [MODEL_CARD_FILENAME])
    return read_card(entry_dir, name, listed)


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
    if HEAD_FILENAME not in manifest.entry(name, zoo_dir)["files"]:
        raise ZooError(f"Zoo model {name!r} ships no downstream head ({HEAD_FILENAME})")
    return _load_keras(name, HEAD_FILENAME, zoo_dir)


def _load_keras(name, filename, zoo_dir):
    import keras  # Deferred: listing the zoo and reading cards need no Keras.

    listed = manifest.entry(name, zoo_dir)
    entry_dir = resolve_zoo_dir(zoo_dir) / name
    check_files(entry_dir, listed["files"], [MODEL_CARD_FILENAME, filename])
    return keras.models.load_model(entry_dir / filename, compile=False, safe_mode=True)


def serving_versions(name, *, zoo_dir=None):
    """Sorted integer versions of the SavedModel shipped with `name`."""
    return _versions_of(manifest.entry(name, zoo_dir)["files"])


def serving_path(name, *, version=None, zoo_dir=None):
    """Directory of one version of the SavedModel of `name` (the latest by default).

    Its files are checksummed first. Load it with `tf.saved_model.load(path)` or
    `keras.layers.TFSMLayer(path, call_endpoint="serving_default")`; its parent
    (`zoo/<name>/serving`) is the `base_path` to give TF Serving.
    """
    files = manifest.entry(name, zoo_dir)["files"]
    versions = _versions_of(files)
    if not versions:
        raise MissingFileError(f"Zoo model {name!r} ships no SavedModel under {SERVING_DIRNAME}/")
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise ZooError(f"Zoo model {name!r} has no serving version {version!r}; it has {versions}")
    entry_dir = resolve_zoo_dir(zoo_dir) / name
    prefix = f"{SERVING_DIRNAME}/{version}/"
    check_files(entry_dir, files, [r for r in files if r.startswith(prefix)])
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
    listed = manifest.entry(name, zoo_dir)
    return check_entry_dir(resolve_zoo_dir(zoo_dir) / name, name=name, entry=listed)
