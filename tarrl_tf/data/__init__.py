"""Image datasets as float32 `[0, 1]` NHWC images with int64 labels.

A dataset is named by one `source` string:

* `"digits"`: scikit-learn's bundled 8x8 handwritten digits (1,797 real
  images). The embedded default: it works on any machine with no download.
* `"npz:PATH"`: an offline `.npz` file holding `x_train, y_train, x_test,
  y_test` (uint8 NHWC, or float in [0, 1]).
* Any other name, such as `"mnist"` or `"tfds:cifar10"`: a TensorFlow
  Datasets dataset, read from (or downloaded into) `data_dir`.

Every source has the splits `"train"` and `"test"`.

Example:
```python
from tarrl_tf import data

meta = data.info("npz:mnist.npz")  # name "mnist"
unlabeled = data.pretraining_dataset(
    data.load_dataset("digits", "train"), batch_size=128, seed=0
)
x_test, y_test = data.load_arrays("digits", "test", max_examples=500)
```
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from tarrl_tf import checks
from tarrl_tf.data import epochs as _epochs
from tarrl_tf.data import npz, tfds_source

SPLITS = npz.SPLITS

_DIGIT_NAMES = tuple(str(d) for d in range(10))

# Label index = position, as in the datasets' own documentation.
CLASS_NAMES = {
    "digits": _DIGIT_NAMES,
    "mnist": _DIGIT_NAMES,
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
}  # fmt: skip

_NPZ_PREFIX = "npz:"
_TFDS_PREFIX = "tfds:"
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0
_DEFAULT_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a downstream task need to know about a dataset.

    Attributes:
        name: canonical dataset name, used to look up tasks
            (`tarrl_tf.evaluation.tasks.get_task`): `"digits"`, the TFDS name, or the
            file stem of an npz source (`.../mnist.npz` -> `"mnist"`).
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of label values.
        class_names: one name per label index.
    """

    name: str
    input_shape: tuple
    num_classes: int
    class_names: tuple


def load_dataset(source, split, *, data_dir=None):
    """Loads one split as an unbatched `tf.data.Dataset` of `(image, label)`.

    Images are float32 `[H, W, C]` in `[0, 1]`, labels int64. npz images stay
    uint8 in memory (4x smaller) and are converted in a parallel `map`.

    Args:
        source: `"digits"`, `"npz:PATH"` or a TFDS name (see the module doc).
        split: `"train"` or `"test"`.
        data_dir: TFDS data directory; ignored by the other sources.

    Raises:
        ValueError: unknown source, split or TFDS name; an unreadable or
            malformed npz file.
    """
    checks.check_choice(split, SPLITS, name="split")
    kind, arg = _parse_source(source)
    if kind == "tfds":
        builder = tfds_source.prepare(tfds_source.builder(arg, data_dir))
        dataset = builder.as_dataset(split=split, as_supervised=True)
    else:
        x, y = _memory_arrays(kind, arg, split)
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
    return dataset.map(_to_unit_float, num_parallel_calls=tf.data.AUTOTUNE)


def load_arrays(source, split, *, data_dir=None, max_examples=None):
    """Loads one split (or its first `max_examples`) as NumPy arrays.

    Meant for small datasets and evaluation subsets that fit in memory.

    Args:
        source: `"digits"`, `"npz:PATH"` or a TFDS name (see the module doc).
        split: `"train"` or `"test"`.
        data_dir: TFDS data directory; ignored by the other sources.
        max_examples: keep only the first this many examples (in the
            split's own order); `None` keeps all.

    Returns:
        `(x, y)`: float32 `[N, H, W, C]` images in `[0, 1]` and int64 `[N]` labels.
    """
    checks.check_choice(split, SPLITS, name="split")
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise ValueError(f"`max_examples` must be a positive int or None, got {max_examples!r}")
    kind, arg = _parse_source(source)
    if kind == "tfds":
        dataset = load_dataset(source, split, data_dir=data_dir)
        if max_examples is not None:
            dataset = dataset.take(max_examples)
        xs, ys = [], []
        for x, y in dataset.batch(1024).as_numpy_iterator():
            xs.append(x)
            ys.append(y)
        if not xs:
            raise ValueError(f"{source!r} split {split!r} is empty")
        return np.concatenate(xs), np.concatenate(ys)
    x, y = _memory_arrays(kind, arg, split)
    x, y = x[:max_examples], y[:max_examples]
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255), y.copy()
    # Copies, so callers may edit the result without touching the cached digits.
    return np.array(x, dtype=np.float32), y.copy()


def info(source, *, data_dir=None):
    """Returns the `DatasetInfo` of a source without loading its images.

    For npz sources only the labels and the `x_train` array header are read.
    Known names (`digits`, `mnist`, `fashion_mnist`, `cifar10`) get their
    class names; other npz files get `"0"`, `"1"`, ... and the class count
    the file declares (a `num_classes` array) or else its training labels'
    (`max + 1`).

    Raises:
        ValueError: an npz file that is unreadable, has a split without
            examples, or a label outside its class count (a test label the
            training labels do not have).
    """
    kind, arg = _parse_source(source)
    if kind == "digits":
        return DatasetInfo("digits", (8, 8, 1), 10, CLASS_NAMES["digits"])
    if kind == "npz":
        return _npz_info(arg)
    return _tfds_info(tfds_source.builder(arg, data_dir))


def describe(source, *, data_dir=None):
    """How reports and model cards name a source: by name, never by a path of this machine.

    Returns:
        `{"dataset": name}` (`"mnist"` for `"npz:/any/folder/mnist.npz"`, the
        TFDS name, `"digits"`), plus `"dataset_sha256"`, the sha256 of the
        file, for an npz source: the name alone does not say which copy.
    """
    kind, arg = _parse_source(source)
    described = {"dataset": info(source, data_dir=data_dir).name}
    if kind == "npz":
        described["dataset_sha256"] = npz.sha256(arg)
    return described


def pretraining_dataset(images, *, batch_size, shuffle=True, seed=None, drop_remainder=True,
                        with_indices=False, epochs=None, first_epoch=0):
    """Batches images alone, for `model.fit` on unlabeled data.

    Args:
        images: float `[N, H, W, C]` ndarray in `[0, 1]`, or a `tf.data.Dataset`
            of single images or of `(image, label)` pairs (labels are dropped).
        batch_size: images per batch.
        shuffle: reshuffle every epoch.
        seed: shuffle seed, for reproducible order.
        drop_remainder: drop the last partial batch, so every step sees
            `batch_size` images (contrastive losses depend on batch size).
        with_indices: yield `(images, indices)`, each image's position in
            `images` (int64), for estimators that remember each image
            (`regularizers.PersistentPGD`).
        epochs, first_epoch: with `epochs` (in-memory images only), the
            batches of the epochs `first_epoch, ..., epochs - 1` in one
            dataset, each epoch in an order that depends on `(seed, epoch)`
            alone, so a run resumed at an epoch sees the batches of the run
            that never stopped (`data.epochs`; fit with `steps_per_epoch`).
            Without, one epoch, reshuffled by tf.data at each iteration.

    Returns:
        A shuffled, batched and prefetched dataset of `[B, H, W, C]` images
        (a `tf.data` input is also cached, after its labels are dropped).

    Raises:
        ValueError: bad images, a bad `batch_size`, or (with `drop_remainder`)
            fewer images than one batch, which would make `fit` run no step.
    """
    _check_batch_size(batch_size)
    if isinstance(images, tf.data.Dataset):
        if epochs is not None:
            raise ValueError("`epochs` (an order by epoch) needs in-memory images, not a "
                             "tf.data input")
        dataset = images
        if isinstance(dataset.element_spec, tuple):
            dataset = dataset.map(lambda x, *_: x, num_parallel_calls=tf.data.AUTOTUNE)
        spec = dataset.element_spec
        if not isinstance(spec, tf.TensorSpec):
            raise ValueError(
                f"`images` must yield image tensors or (image, label) pairs, got {spec}"
            )
        checks.check_image_spec((None, *spec.shape), spec.dtype)
        # Cache after dropping labels, so decoding and scaling run once.
        dataset = dataset.cache()
    else:
        checks.check_images(images)
        if epochs is not None:
            _check_full_batch(len(images), batch_size, drop_remainder)
            return _epochs.epoch_batches(
                [images], batch_size=batch_size, epochs=epochs, first_epoch=first_epoch,
                shuffle=shuffle, seed=seed, drop_remainder=drop_remainder,
                with_indices=with_indices)
        dataset = tf.data.Dataset.from_tensor_slices(images)
    if with_indices:
        dataset = dataset.enumerate().map(lambda index, image: (image, index),
                                          num_parallel_calls=tf.data.AUTOTUNE)
    size = int(dataset.cardinality())
    _check_full_batch(size, batch_size, drop_remainder)
    if shuffle:
        # A buffer as large as the dataset gives a uniform shuffle.
        buffer = size if size > 0 else _DEFAULT_SHUFFLE_BUFFER
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def supervised_dataset(x, y, *, batch_size, shuffle=False, seed=None, epochs=None, first_epoch=0):
    """Batches in-memory `(x, y)` pairs, e.g. for a linear probe.

    Args:
        x: float `[N, H, W, C]` images in `[0, 1]`.
        y: integer `[N]` labels.
        batch_size: examples per batch; the last batch may be smaller.
        shuffle: reshuffle every epoch.
        seed: shuffle seed.
        epochs, first_epoch: see `pretraining_dataset`.

    Returns:
        A batched, prefetched dataset of `(x, y)` with int64 labels.
    """
    _check_batch_size(batch_size)
    checks.check_images(x, name="x")
    y = npz.check_labels(y, len(x), name="y")
    if epochs is not None:
        return _epochs.epoch_batches([x, y], batch_size=batch_size, epochs=epochs,
                                     first_epoch=first_epoch, shuffle=shuffle, seed=seed,
                                     drop_remainder=False)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def epoch_batches(images, labels=None, *, batch_size, seed, epochs, first_epoch=0,
                  with_indices=False):
    """Full training batches of the epochs `first_epoch, ..., epochs - 1`, one dataset for `fit`.

    Epoch `e` is the permutation drawn from `(seed, e)` alone (`data.epochs`):
    the same on any number of devices and after a resume. The batches are
    `images`, `(images, labels)` with `labels`, or `(images, indices)` with
    `with_indices` (see `pretraining_dataset`). Under `tf.distribute` they are
    global: Keras splits each over the replicas. Fit with
    `steps_per_epoch=len(images) // batch_size`.
    """
    if labels is None:
        return pretraining_dataset(images, batch_size=batch_size, seed=int(seed), epochs=epochs,
                                   first_epoch=first_epoch, with_indices=with_indices)
    if with_indices:
        raise ValueError("batches carry labels or indices, not both")
    _check_batch_size(batch_size)
    checks.check_images(images)
    labels = npz.check_labels(labels, len(images), name="labels")
    _check_full_batch(len(images), batch_size, True)
    return _epochs.epoch_batches([images, labels], batch_size=batch_size, epochs=epochs,
                                 first_epoch=first_epoch, seed=int(seed))


def _parse_source(source):
    """Splits a source string into `(kind, argument)`."""
    if not isinstance(source, str) or not source:
        raise ValueError(f"`source` must be a non-empty string, got {source!r}")
    if source == "digits":
        return "digits", None
    for prefix, kind in ((_NPZ_PREFIX, "npz"), (_TFDS_PREFIX, "tfds")):
        if source.startswith(prefix):
            arg = source[len(prefix):]
            if not arg:
                raise ValueError(f"`source` {source!r} names no {kind} dataset after {prefix!r}")
            return kind, arg
    return "tfds", source


def _memory_arrays(kind, arg, split):
    """Raw in-memory arrays of the digits or npz source: (uint8 or float images, int64 labels)."""
    if kind == "digits":
        return _digits_arrays()[split]
    return npz.read_split(arg, split)


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    # Imported here: scikit-learn is slow to import and only this source needs it.
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16))[..., np.newaxis]
    y = digits.target.astype(np.int64)
    # Stratified so both splits keep the class balance; sorted so each split
    # keeps the original order, like the other sources.
    rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
    test = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test.append(members[: round(_DIGITS_TEST_FRACTION * len(members))])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test)] = True
    arrays = {"train": (x[~is_test], y[~is_test]), "test": (x[is_test], y[is_test])}
    for pair in arrays.values():
        for array in pair:
            # Cached and shared between callers, so nobody may edit them in place.
            array.flags.writeable = False
    return arrays


def _npz_info(path):
    """The DatasetInfo of an npz file: known names get their class names."""
    class_names = CLASS_NAMES.get(npz.stem(path))
    name, input_shape, num_classes = npz.read_info(
        path, known_classes=None if class_names is None else len(class_names))
    class_names = class_names or tuple(str(label) for label in range(num_classes))
    return DatasetInfo(name, input_shape, num_classes, class_names)


def _tfds_info(builder):
    image_key, label_key = builder.info.supervised_keys
    image = builder.info.features[image_key]
    label = builder.info.features[label_key]
    names = getattr(label, "names", None)
    if not names:
        raise ValueError(f"TFDS dataset {builder.name!r}: label {label_key!r} is not a ClassLabel")
    # Some builders (cifar10) only learn their class names from the downloaded
    # files and report "0", "1", ... until then; the table is always right.
    known = CLASS_NAMES.get(builder.name)
    if known is not None and len(known) == len(names):
        names = known
    return DatasetInfo(builder.name, tuple(image.shape), len(names), tuple(names))




def _to_unit_float(image, label):
    """Graph-side conversion of one example to float32 `[0, 1]` and an int64 label."""
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    elif image.dtype.is_floating:
        with tf.control_dependencies([checks.assert_in_range(image, 0.0, 1.0)]):
            image = tf.cast(image, tf.float32)
    else:
        raise ValueError(f"images have dtype {image.dtype.name}; expected uint8 or float")
    return image, tf.cast(label, tf.int64)


def _check_full_batch(size, batch_size, drop_remainder):
    if drop_remainder and 0 <= size < batch_size:
        raise ValueError(
            f"{size} images make no full batch of {batch_size}; lower `batch_size` "
            "or pass drop_remainder=False"
        )


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
