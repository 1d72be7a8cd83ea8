"""The model zoo: pretrained encoders stored as data (name -> files + sha256 + model card).

Entries are found by name wherever tarrl_tf is installed: in `zoo_dir=`, else
`$TARRL_ZOO_DIR`, else the `zoo/` of the clone tarrl_tf runs from; then in a
remote zoo at `zoo_url=` / `$TARRL_ZOO_URL` (`https://`, `http://`,
`file://`, `gs://`), mirrored into a local cache (`$TARRL_CACHE_DIR`, by
default `~/.cache/tarrl_tf`) and sha256-checked before use
(`tarrl_tf.zoo.sources`, `tarrl_tf.zoo.remote`).

Layout of a zoo directory (a remote zoo is the same folder behind a static
file server or bucket):

```
zoo/
  manifest.json                  # {"format_version": 1, "entries": {name: entry}}
  README.md                      # the index, rendered from the cards (`pages.py`)
  mnist_cnn_tarrl_linf03/
    encoder.keras                # keras.models.load_model(..., safe_mode=True)
    head.keras                   # only when a downstream head is shipped
    model_card.json              # facts + metrics + sha256 of every other file
    serving/1/saved_model.pb     # TF SavedModel; `serving/` is TF Serving's base_path
    serving/1/variables/...
    README.md, sweep.svg         # rendered from the card; not model files, not checksummed
```

A manifest entry lists every file of the entry (model card included) with its
sha256 and size; the model card lists the same files except itself. Nothing
here special-cases a name: everything is read from the manifest and the card.
Entries are written by `tarrl_tf.zoo.publish.create_zoo_entry` (also
`tarrl_tf.export.create_zoo_entry`).

Rooms: `manifest.py` (locations, the manifest, checksums, errors), `card.py`
(the model card's schema and writer), `serving.py` (the SavedModel contract,
export, TF Serving config), `entry.py` (the checks of one entry),
`publish.py` (writing an entry, all or nothing), `remote.py` (a zoo at a URL
and its cache), `sources.py` (which zoo serves a name), `pages.py` (the
rendered README pages).

Example:
```python
from tarrl_tf import zoo
zoo.list()                                   # ['mnist_cnn_tarrl_linf03', ...]
card = zoo.info("mnist_cnn_tarrl_linf03")    # the model card, a dict
encoder = zoo.load("mnist_cnn_tarrl_linf03")  # checksums first, then safe_mode load
zoo.fetch("mnist_cnn_tarrl_linf03", zoo_url="https://example.org/tarrl-zoo")  # into the cache
layer = keras.layers.TFSMLayer(zoo.serving_path("mnist_cnn_tarrl_linf03"),
                               call_endpoint="serving_default")
```
"""

import builtins

from tarrl_tf.zoo import card, entry, manifest, pages, publish, remote, serving, sources  # noqa: F401
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
    clone_zoo_dir,
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
from tarrl_tf.zoo.remote import CACHE_DIR_ENV, ZOO_URL_ENV, DownloadError  # noqa: F401
from tarrl_tf.zoo.serving import (  # noqa: F401
    CLASSIFY_OUTPUTS,
    CLASSIFY_SIGNATURE,
    EMBEDDING_OUTPUT,
    SERVING_INPUT,
    check_saved_model,
    probe_outputs,
)


def list(*, zoo_dir=None, zoo_url=None):  # noqa: A001 - the public name is `zoo.list()`.
    """Sorted names of the entries in reach (see `tarrl_tf.zoo.sources` for the order)."""
    return sources.names(zoo_dir=zoo_dir, zoo_url=zoo_url)


def info(name, *, zoo_dir=None, zoo_url=None):
    """The model card of `name` (a dict), after checking its sha256 and schema."""
    entry_dir, listed = _locate(name, zoo_dir, zoo_url, lambda files: [MODEL_CARD_FILENAME])
    check_files(entry_dir, listed["files"], [MODEL_CARD_FILENAME])
    return read_card(entry_dir, name, listed)


def load(name, *, zoo_dir=None, zoo_url=None):
    """Loads the encoder of `name` as a Keras model.

    The sha256 of `encoder.keras` (and of the model card) is checked before
    anything is deserialized; the file is then loaded with `safe_mode=True`.
    From a remote zoo, the files are downloaded into the cache first (once).

    Raises:
        UnknownModelError: no zoo in reach lists `name`.
        MissingFileError: the file is missing.
        ChecksumError: the file is truncated or corrupted.
    """
    return _load_keras(name, ENCODER_FILENAME, zoo_dir, zoo_url)


def load_head(name, *, zoo_dir=None, zoo_url=None):
    """Loads the shipped downstream head of `name` (embeddings -> logits), if there is one."""
    return _load_keras(name, HEAD_FILENAME, zoo_dir, zoo_url)


def _load_keras(name, filename, zoo_dir, zoo_url):
    import keras  # Deferred: listing the zoo and reading cards need no Keras.

    needed = [MODEL_CARD_FILENAME, filename]
    entry_dir, listed = _locate(name, zoo_dir, zoo_url,
                                lambda files: [rel for rel in needed if rel in files])
    if filename not in listed["files"]:
        raise ZooError(f"Zoo model {name!r} ships no downstream head ({filename})")
    check_files(entry_dir, listed["files"], needed)
    return keras.models.load_model(entry_dir / filename, compile=False, safe_mode=True)


def serving_versions(name, *, zoo_dir=None, zoo_url=None):
    """Sorted integer versions of the SavedModel shipped with `name`."""
    _, listed = _locate(name, zoo_dir, zoo_url, lambda files: [MODEL_CARD_FILENAME])
    return _versions_of(listed["files"])


def serving_path(name, *, version=None, zoo_dir=None, zoo_url=None):
    """Directory of one version of the SavedModel of `name` (the latest by default).

    Its files are checksummed first. Load it with `tf.saved_model.load(path)` or
    `keras.layers.TFSMLayer(path, call_endpoint="serving_default")`; its parent
    (`zoo/<name>/serving`) is the `base_path` to give TF Serving.
    """

    def wanted(files):
        versions = _versions_of(files)
        chosen = version if version is not None else (versions[-1] if versions else None)
        prefix = f"{SERVING_DIRNAME}/{chosen}/"
        return [MODEL_CARD_FILENAME] + [r for r in files if r.startswith(prefix)]

    entry_dir, listed = _locate(name, zoo_dir, zoo_url, wanted)
    files = listed["files"]
    versions = _versions_of(files)
    if not versions:
        raise MissingFileError(f"Zoo model {name!r} ships no SavedModel under {SERVING_DIRNAME}/")
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise ZooError(f"Zoo model {name!r} has no serving version {version!r}; it has {versions}")
    check_files(entry_dir, files, wanted(files))
    return entry_dir / SERVING_DIRNAME / str(version)


def fetch(name, *, zoo_url=None):
    """Downloads every file of `name` from the remote zoo into the cache; returns its folder.

    The remote manifest is read anew (a replaced entry is fetched again);
    files already cached with the listed sha256 are kept. `load(name)` and
    the others then work offline.
    """
    url = remote.resolve_url(zoo_url)
    if url is None:
        raise ZooError(f"No remote zoo: pass zoo_url= or set ${remote.ZOO_URL_ENV}")
    entry_dir, _ = remote.ensure_files(url, name, builtins.list, refresh=True)
    return entry_dir


def verify(name, *, zoo_dir=None, zoo_url=None):
    """Checks one entry completely; raises a `ZooError` on the first problem.

    Every listed file exists with the listed size and sha256 and no unlisted
    file is present (the rendered `README.md` and `sweep.svg` aside); the
    model card is valid and agrees with the manifest; `encoder.keras` (and
    `head.keras`) load with `safe_mode=True`; every SavedModel version loads,
    has the `serving_default` (and `classify`) signature with the fixed input
    and output names, and gives the same outputs as the Keras files on a
    probe batch. A remote entry is downloaded completely first.

    Returns:
        A small report: `{"name", "files", "serving_versions", "max_abs_diff"}`.
    """
    entry_dir, listed = _locate(name, zoo_dir, zoo_url, builtins.list)
    return check_entry_dir(entry_dir, name=name, entry=listed)


def _locate(name, zoo_dir, zoo_url, wanted):
    return sources.locate(name, zoo_dir=zoo_dir, zoo_url=zoo_url, wanted=wanted)
