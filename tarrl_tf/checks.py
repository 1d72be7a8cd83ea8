"""Input checks shared by training, attacks, data and export.

Every public entry point that takes images calls one of these, so bad input
fails the same way everywhere: a `ValueError` that names the problem, never a
silent cast, rescale or clip.
"""

import contextlib
import re

import numpy as np
import tensorflow as tf

# Starts the message of every in-graph input check, so `fit` and `evaluate`
# can turn the runtime error back into a ValueError.
ERROR_MARKER = "tarrl_tf: "
RANGE_ERROR_MARKER = ERROR_MARKER + "image values outside"
FINITE_ERROR_MARKER = ERROR_MARKER + "image values are not finite"


def check_image_spec(shape, dtype, *, name="images"):
    """Static checks (rank and dtype) that hold in eager and graph mode."""
    dtype = tf.as_dtype(dtype)
    if len(shape) != 4:
        raise ValueError(
            f"{name} must have rank 4 [batch, height, width, channels] (NHWC), "
            f"got shape {tuple(shape)}"
        )
    if not dtype.is_floating:
        raise ValueError(
            f"{name} must be floating point with values in [0, 1], got dtype {dtype.name}; "
            "convert integer images with `x.astype('float32') / 255`"
        )


def check_images(x, *, clip_min=0.0, clip_max=1.0, name="images"):
    """Checks a concrete batch of images (NumPy array or eager tensor).

    Raises:
        ValueError: wrong rank, non-float dtype, non-finite values, or values
            outside `[clip_min, clip_max]`.
    """
    if clip_min >= clip_max:
        raise ValueError(f"clip_min must be < clip_max, got {clip_min} and {clip_max}")
    x = np.asarray(x)
    check_image_spec(x.shape, x.dtype, name=name)
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} has {bad} values that are not finite (NaN or infinite); "
                         "images must be finite and in [0, 1]")
    low, high = float(x.min()), float(x.max())
    if low < clip_min or high > clip_max:
        raise ValueError(
            f"{name} values must lie in [{clip_min}, {clip_max}], got [{low:.4g}, {high:.4g}]; "
            "scale them first (nothing is clipped silently)"
        )


def assert_in_range(x, clip_min, clip_max):
    """In-graph range check; raises InvalidArgumentError carrying the marker.

    Finiteness first, with its own message: a NaN fails every comparison, and
    "outside [0, 1]" would send the user looking for a scaling bug.
    """
    finite = tf.debugging.assert_equal(
        tf.reduce_all(tf.math.is_finite(x)), True,
        message=f"{FINITE_ERROR_MARKER} (NaN or infinite); check the data")
    with tf.control_dependencies([finite]):
        return tf.debugging.assert_equal(
            tf.logical_and(tf.reduce_min(x) >= clip_min, tf.reduce_max(x) <= clip_max),
            True,
            message=f"{RANGE_ERROR_MARKER} [{clip_min}, {clip_max}]; scale them first "
            "(nothing is clipped silently)",
        )


def checked_images(x, *, clip_min=0.0, clip_max=1.0):
    """Checks an image batch: a ValueError when eager, an in-graph assert when traced."""
    x = tf.convert_to_tensor(x)
    check_image_spec(x.shape, x.dtype)
    if tf.executing_eagerly():
        check_images(x.numpy(), clip_min=clip_min, clip_max=clip_max)
        return x
    with tf.control_dependencies([assert_in_range(x, clip_min, clip_max)]):
        return tf.identity(x)


@contextlib.contextmanager
def graph_errors_as_value_errors():
    """Re-raises a failed in-graph input check (an InvalidArgumentError) as a ValueError.

    The training models' `fit` and `evaluate` run inside it (`training.base.TrainingModel`).
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        if ERROR_MARKER not in str(error):
            raise
        line = next(l for l in str(error.message).splitlines() if ERROR_MARKER in l)
        raise ValueError(f"Input {line[line.index(ERROR_MARKER) + len(ERROR_MARKER):]}") from None


def check_choice(value, choices, *, name):
    """Raises a ValueError naming `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {sorted(choices)}")
    return value


_NORMS = {"inf": "inf", "linf": "inf", "2": "2", "l2": "2"}


def canonical_norm(norm):
    """Maps the spellings users write (`"inf"`, `np.inf`, `2`, `"l2"`) to `"inf"` or `"2"`."""
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        key = "inf" if np.isinf(norm) else str(norm).rstrip("0").rstrip(".")
    else:
        key = str(norm).lower()
    if key not in _NORMS:
        raise ValueError(f"Unknown norm {norm!r}; expected 'inf' (L-infinity) or 2 (L2)")
    return _NORMS[key]


# An absolute path inside a string: `/a/b` after a start, a space or a `:` (`npz:/data/x.npz`),
# `~/`, a Windows drive (`C:\`), or a `file:` URL. URLs (`https://host/a`) and relative paths pass.
_LOCAL_PATH_RE = re.compile(r"""(?:^|[\s:='"(,])/[^/\s]+(?:/[^/\s]*)+|(?:^|[\s:='"(,])~/|"""
                            r"""\b[A-Za-z]:\\|\bfile:/""")


def local_paths(obj, where="card"):
    """`where=value` of every string in `obj` (dicts, lists) that holds an absolute local path.

    Published files (model cards) must not carry paths of the machine that wrote them.
    """
    if isinstance(obj, dict):
        return [p for key, value in obj.items() for p in local_paths(value, f"{where}.{key}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, value in enumerate(obj) for p in local_paths(value, f"{where}[{i}]")]
    if isinstance(obj, str) and _LOCAL_PATH_RE.search(obj):
        return [f"{where}={obj!r}"]
    return []
