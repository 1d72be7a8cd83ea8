"""A zoo served at a base URL, mirrored file by file into a local cache.

A remote zoo is a zoo folder (`manifest.json`, `<name>/...`) behind any
static file server or bucket: `https://`, `http://`, `file://`, or `gs://`
(read through `tf.io.gfile`). The base URL comes from `zoo_url=` or
`$TARRL_ZOO_URL`; the cache is `$TARRL_CACHE_DIR`, by default
`~/.cache/tarrl_tf` (`$XDG_CACHE_HOME/tarrl_tf` where that is set).

Each base URL gets its own mirror folder in the cache, laid out like a zoo:

```
~/.cache/tarrl_tf/zoo/<host>-<hash of the URL>/
  manifest.json                  # the last manifest read from the URL
  mnist_cnn_tarrl_linf03/...     # only the files asked for so far
  .partial/                      # downloads in progress
```

A file is downloaded into `.partial/`, its size and sha256 are checked
against the manifest, and only then is it renamed into place: a truncated
or corrupted download is never used (a broken connection is restarted, a
wrong sha256 is refused) and never left where a loader looks. Files
already in the mirror with the listed sha256 are not downloaded again, so
an entry fetched once loads offline.
"""

import hashlib
import http.client
import json
import os
import pathlib
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

from tarrl_tf.files import dumps_json, write_atomic
from tarrl_tf.progress import Progress
from tarrl_tf.zoo import manifest
from tarrl_tf.zoo.manifest import MANIFEST_FILENAME, ChecksumError, ZooError

ZOO_URL_ENV = "TARRL_ZOO_URL"
CACHE_DIR_ENV = "TARRL_CACHE_DIR"
SCHEMES = ("https", "http", "file", "gs")
PARTIAL_DIRNAME = ".partial"
# A broken connection is retried from the start this many times in all.
ATTEMPTS = 3
TIMEOUT_SECONDS = 60
_CHUNK = 1 << 20
_RETRY_PAUSE_SECONDS = 1.0


class DownloadError(ZooError, OSError):
    """A remote file could not be read (server down, connection cut, not found)."""


def default_cache_dir():
    """`$XDG_CACHE_HOME/tarrl_tf`, else `~/.cache/tarrl_tf` (`%LOCALAPPDATA%` on Windows)."""
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.environ.get("LOCALAPPDATA") if os.name == "nt" else None)
    return pathlib.Path(base or pathlib.Path.home() / ".cache") / "tarrl_tf"


def resolve_cache_dir(cache_dir=None):
    """`cache_dir` if given, else `$TARRL_CACHE_DIR` if set, else `default_cache_dir()`."""
    if cache_dir is not None:
        return pathlib.Path(cache_dir)
    return pathlib.Path(os.environ.get(CACHE_DIR_ENV) or default_cache_dir())


def resolve_url(zoo_url=None):
    """`zoo_url` if given, else `$TARRL_ZOO_URL` if set, else None; checked and without a final `/`."""
    url = zoo_url if zoo_url is not None else os.environ.get(ZOO_URL_ENV) or None
    if url is None:
        return None
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(
            f"Zoo URL {url!r} must start with one of {[s + '://' for s in SCHEMES]}; "
            "a local folder is given as zoo_dir= or $TARRL_ZOO_DIR instead")
    return url.rstrip("/")


def mirror_dir(url, cache_dir=None):
    """The cache folder that mirrors the zoo at `url` (one per URL)."""
    host = urllib.parse.urlsplit(url).netloc or urllib.parse.urlsplit(url).scheme
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", host).strip("_") or "zoo"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return resolve_cache_dir(cache_dir) / "zoo" / f"{slug}-{digest}"


def read_manifest(url, *, cache_dir=None, refresh=True):
    """The manifest of the zoo at `url`: read anew (and cached) with `refresh`, else the cached one.

    When the URL cannot be read, the cached manifest is used if there is one
    (offline use); otherwise a `DownloadError` says what failed.
    """
    mirror = mirror_dir(url, cache_dir)
    cached = mirror / MANIFEST_FILENAME
    if refresh or not cached.is_file():
        try:
            content = _read(f"{url}/{MANIFEST_FILENAME}")
        except DownloadError as error:
            if not cached.is_file():
                raise DownloadError(f"Cannot read the zoo at {url}: {error}") from error
            warnings.warn(f"Cannot read the zoo at {url} ({error}); using the manifest cached "
                          f"in {mirror}", stacklevel=2)
        else:
            _check_manifest(content, url)
            write_atomic(cached, content)
    return manifest.read_manifest(mirror)


def ensure_files(url, name, wanted, *, cache_dir=None, refresh=False, verbose=True):
    """Mirrors the files `wanted(files)` of entry `name`; returns `(entry_dir, manifest entry)`.

    The cached manifest is used when it lists `name` and the wanted files are
    in the mirror with its sha256 (no network at all); otherwise, or with
    `refresh`, the manifest is read anew and the missing files downloaded.
    """
    mirror = mirror_dir(url, cache_dir)
    if not refresh and (mirror / MANIFEST_FILENAME).is_file():
        entries = manifest.read_manifest(mirror)["entries"]
        if name in entries:
            files = entries[name]["files"]
            if not missing(mirror / name, files, wanted(files)):
                return mirror / name, entries[name]
    entries = read_manifest(url, cache_dir=cache_dir)["entries"]
    if name not in entries:
        raise manifest.UnknownModelError(
            f"Unknown zoo model {name!r} at {url}; available: {', '.join(sorted(entries)) or 'none'}")
    files = entries[name]["files"]
    absent = missing(mirror / name, files, wanted(files))
    if absent:
        total = sum(files[rel]["bytes"] for rel in absent)
        progress = Progress(f"Downloading {name} from {url}", total, unit="MB",
                            scale=1 / 2**20) if verbose else None
        for rel in absent:
            done = progress.done if progress else 0
            _download(f"{url}/{name}/{_quote(url, rel)}", mirror / name / rel, files[rel], mirror,
                      lambda n: progress.update(done + n) if progress else None)
        if progress is not None:
            progress.close()
    if set(wanted(files)) == set(files):
        prune(mirror / name, files)  # A complete entry holds exactly its listed files.
    return mirror / name, entries[name]


def prune(entry_dir, files):
    """Removes files of a mirrored entry that its manifest entry no longer lists."""
    entry_dir = pathlib.Path(entry_dir)
    for path in sorted(entry_dir.rglob("*"), reverse=True):
        rel = path.relative_to(entry_dir).as_posix()
        if path.is_file() and rel not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def missing(entry_dir, files, rels):
    """The `rels` not in `entry_dir` with the listed size and sha256."""
    absent = []
    for rel in rels:
        path = entry_dir / rel
        ok = (path.is_file() and path.stat().st_size == files[rel]["bytes"]
              and manifest.sha256_file(path) == files[rel]["sha256"])
        if not ok:
            absent.append(rel)
    return absent


def _check_manifest(content, url):
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise manifest.InvalidModelCardError(f"The manifest at {url} is not JSON: {error}") from None
    problems = manifest.manifest_problems(data)
    if problems:
        raise manifest.InvalidModelCardError(f"Invalid manifest at {url}: " + "; ".join(problems))
    return dumps_json(data)


def _quote(url, rel):
    return rel if url.startswith("gs://") else urllib.parse.quote(rel)


def _open(url):
    """A readable binary stream of `url`; every failure becomes a `DownloadError`."""
    try:
        if url.startswith("gs://"):
            import tensorflow as tf  # Only buckets need TensorFlow's file system.

            return tf.io.gfile.GFile(url, "rb")
        return urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS)  # noqa: S310 - schemes checked
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except Exception as error:  # URLError, socket errors, tf.errors.NotFoundError...
        raise DownloadError(f"{url}: {error}") from None


def _read(url):
    try:
        with _open(url) as stream:
            return stream.read()
    except DownloadError:
        raise
    except Exception as error:
        raise DownloadError(f"{url}: {error}") from None


def _download(url, path, expected, mirror, report):
    """Downloads `url` to `path` via `.partial/`, checking size and sha256 before the rename."""
    partial = mirror / PARTIAL_DIRNAME
    partial.mkdir(parents=True, exist_ok=True)
    error = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(_RETRY_PAUSE_SECONDS * attempt)
        handle, tmp = tempfile.mkstemp(dir=partial, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                digest, size = _copy(url, out, expected["bytes"], report)
                out.flush()
                os.fsync(out.fileno())
            if size != expected["bytes"]:
                error = DownloadError(f"{url}: got {size} of {expected['bytes']} bytes")
                continue  # A cut connection: start again.
            if digest != expected["sha256"]:
                raise ChecksumError(
                    f"sha256 mismatch for {url}: the manifest says {expected['sha256']}, the "
                    f"server sent {digest}; the file was refused and nothing was cached")
            path.parent.mkdir(parents=True, exist_ok=True)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
            return
        except (DownloadError, OSError, http.client.HTTPException) as caught:
            error = caught  # A cut connection or a timeout: start again.
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DownloadError(f"Could not download {url} in {ATTEMPTS} attempts ({error}); "
                        "nothing was cached")


def _copy(url, out, limit, report):
    """Streams `url` into `out`; returns `(sha256 hex, bytes)`. Stops past `limit` bytes."""
    digest = hashlib.sha256()
    size = 0
    with _open(url) as stream:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise ChecksumError(
                    f"{url} is larger than the {limit} bytes the manifest lists; refused")
            digest.update(chunk)
            out.write(chunk)
            report(size)
    return digest.hexdigest(), size
