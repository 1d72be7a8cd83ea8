"""Atomic file writes: a reader (or TF Serving, or a crash) never sees half a file."""

import contextlib
import json
import os
import tempfile
import zipfile

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent writers are then the caller's concern.
    fcntl = None


def write_atomic(path, content):
    """Writes `content` (str or bytes) to `path` via a temporary file in the same folder.

    The temporary file is flushed, synced and renamed over `path`; on any
    failure it is removed and an existing `path` is left as it was. The file
    gets the permissions a plain `open` would give (mkstemp's are 0600).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def dumps_json(data):
    """JSON text for reports and cards; NaN and infinity are refused, not written as `NaN`."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def temporary_dir(parent, prefix):
    """A hidden temporary folder in `parent` (for write-then-rename), with plain-mkdir permissions."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    return path


@contextlib.contextmanager
def locked(directory):
    """Holds an exclusive advisory lock on `directory` while inside.

    For read-modify-write of a shared file in it (the zoo manifest) by
    several processes: each waits for the one before to finish. The lock is
    on the folder itself, so no lock file is left behind.
    """
    if fcntl is None:
        yield
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # Closing releases the lock.


def check_keras_file(path):
    """Raises unless `path` is an existing `.keras` file that is a whole zip archive.

    Keras says "File not found" for a `.keras` file that exists but is
    truncated; this names the real problem.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no .keras file at {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} exists but is not a readable .keras file (truncated or "
                         "damaged?); save or copy it again")
    return path
