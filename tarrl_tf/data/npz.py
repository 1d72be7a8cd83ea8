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


def read_info(path, *, known_classes=None):
    """`(name, input_shape, num_classes)` from the labels, the `x_train` header and `num_classes`.

    The class count is the file's own `num_classes` (one integer) if it has
    one, else `known_classes` (a dataset known by name), else the training
    labels' (`max + 1`): a test label outside it is an error, not one more
    class (a typo in the test labels would make a task of another size). A
    split without examples is an error too.
    """
    name = stem(path)
    with _open_npz(path) as npz:
        shape, dtype = _npz_header(npz, path, "x_train")
        labels = {split: check_labels(_read_member(npz, path, f"y_{split}"),
                                      name=f"{path}:y_{split}") for split in SPLITS}
        declared = _read_member(npz, path, "num_classes") if "num_classes" in npz.files else None
    _check_npz_image_layout(shape, dtype, f"{path}:x_train")
    for split in SPLITS:
        if not len(labels[split]):
            raise ValueError(f"{path!r} has no examples in its {split} split (y_{split} is empty); "
                             "an npz source needs x_train, y_train, x_test, y_test with examples")
    if len(labels["train"]) != shape[0]:
        raise ValueError(f"{path}:y_train has {len(labels['train'])} labels for {shape[0]} images")
    if declared is not None:
        num_classes, source = _declared_classes(declared, path), "its num_classes"
        if known_classes not in (None, num_classes):
            raise ValueError(f"{path}:num_classes is {num_classes}, but {name!r} has "
                             f"{known_classes} classes")
    elif known_classes is not None:
        num_classes, source = known_classes, f"the classes of {name!r}"
    else:
        num_classes, source = int(labels["train"].max()) + 1, "its training labels"
    for split in SPLITS:
        if labels[split].max() >= num_classes:
            raise ValueError(
                f"{path}:y_{split} has label {labels[split].max()}, but {path!r} has {num_classes} "
                f"classes (0..{num_classes - 1}, from {source}); fix the label, or declare the "
                "class count with a `num_classes` array in the file")
    input_shape = tuple(shape[1:]) if len(shape) == 4 else (*shape[1:], 1)
    return name, input_shape, num_classes


def _declared_classes(value, path):
    if value.shape != () or not np.issubdtype(value.dtype, np.integer) or int(value) < 1:
        raise ValueError(f"{path}:num_classes must be one positive integer, got {value!r}")
    return int(value)


def stem(path):
    """The dataset name of an npz file: `.../mnist.npz` -> `"mnist"`."""
    return os.path.splitext(os.path.basename(path))[0]


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
    if not len(x):
        raise ValueError(f"{path!r} has no examples in its {split} split ({x_key} has shape "
                         f"{x.shape})")
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
