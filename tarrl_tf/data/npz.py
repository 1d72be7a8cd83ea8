"""Reading `npz:PATH` sources: `x_train, y_train, x_test, y_test` arrays, checked as they are read."""

import hashlib
import lzma
import os
import zipfile
import zlib

import numpy as np

from tarrl_tf import checks

SPLITS = ("train", "test")
# What a damaged zip or `.npy` member can raise while numpy reads it.
_NPZ_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError)


def read_split(path, split):
    """`(x, y)` of one split: uint8 or float images `[N, H, W, C]`, int64 labels."""
    return _read_npz_split(path, split)


def read_info(path):
    """`(name, input_shape, number of label values)` from the labels and the `x_train` header."""
    name = os.path.splitext(os.path.basename(path))[0]
    with _open_npz(path) as npz:
        shape, dtype = _npz_header(npz, path, "x_train")
        labels = np.concatenate(
            [
                check_labels(_read_member(npz, path, f"y_{split}"), name=f"{path}:y_{split}")
                for split in SPLITS
            ]
        )
    _check_npz_image_layout(shape, dtype, f"{path}:x_train")
    input_shape = tuple(shape[1:]) if len(shape) == 4 else (*shape[1:], 1)
    return name, input_shape, int(labels.max()) + 1 if len(labels) else 0


def sha256(path):
    """Hex sha256 of the file at `path` (read in chunks)."""
    if not os.path.isfile(path):
        raise ValueError(f"npz file not found: {path!r}")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _npz_keys(split):
    return f"x_{split}", f"y_{split}"


def _open_npz(path):
    """Opens an npz file; every failure becomes a ValueError naming the path."""
    if not os.path.isfile(path):
        raise ValueError(f"npz file not found: {path!r}")
    try:
        npz = np.load(path, allow_pickle=False)
    except _NPZ_READ_ERRORS as err:
        raise ValueError(f"{path!r} is not a valid npz file: {err}") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is a single .npy array, not an npz file of named arrays")
    required = [key for split in SPLITS for key in _npz_keys(split)]
    missing = [key for key in required if key not in npz.files]
    if missing:
        npz.close()
        raise ValueError(
            f"{path!r} is missing the arrays {missing}; it holds {sorted(npz.files)}, "
            f"expected {required}"
        )
    return npz


def _read_member(npz, path, key):
    try:
        return npz[key]
    except _NPZ_READ_ERRORS as err:
        raise _unreadable_member(path, key, err) from err


def _read_npz_split(path, split):
    x_key, y_key = _npz_keys(split)
    with _open_npz(path) as npz:
        x = _read_member(npz, path, x_key)
        y = _read_member(npz, path, y_key)
    where = f"{path}:{x_key}"
    _check_npz_image_layout(x.shape, x.dtype, where)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if np.issubdtype(x.dtype, np.floating):
        checks.check_images(x, name=where)
    return x, check_labels(y, len(x), name=f"{path}:{y_key}")


def _check_npz_image_layout(shape, dtype, where):
    """uint8 or float, [N, H, W] or [N, H, W, C]; values are checked elsewhere."""
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"{where} has dtype {dtype}; expected uint8 (0..255) or float in [0, 1] "
            "(other integer ranges are ambiguous, so they are not rescaled)"
        )
    if len(shape) not in (3, 4):
        raise ValueError(f"{where} must be [N, H, W, C] or [N, H, W], got shape {tuple(shape)}")


def check_labels(y, count=None, *, name):
    """Returns `y` as int64 after checking it is 1-D, integer, non-negative and `count` long."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{name} must be 1-D integer labels, got shape {y.shape} and dtype {y.dtype}"
        )
    if count is not None and len(y) != count:
        raise ValueError(f"{name} has {len(y)} labels for {count} images")
    if len(y) and y.min() < 0:
        raise ValueError(f"{name} has negative labels (min {y.min()})")
    return y.astype(np.int64)


def _npz_header(npz, path, key):
    """Shape and dtype of one member from its .npy header, without decompressing the data."""
    try:
        with npz.zip.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except _NPZ_READ_ERRORS as err:
        raise _unreadable_member(path, key, err) from err
    return shape, dtype


def _unreadable_member(path, key, err):
    return ValueError(f"{path!r}: cannot read array {key!r} (corrupt or truncated?): {err}")
