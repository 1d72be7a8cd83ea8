import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from tarrl_tf import data

# The offline copies live beside the repository (`../shared/datasets`); TARRL_DATASETS_DIR
# points elsewhere.
DATASETS = pathlib.Path(os.environ.get(
    "TARRL_DATASETS_DIR", pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets"))
MNIST_NPZ = str(DATASETS / "mnist" / "mnist.npz")


def _arrays(n_train=6, n_test=4, shape=(5, 5, 1), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)

    def make(n):
        if np.issubdtype(dtype, np.floating):
            return rng.random((n, *shape)).astype(dtype)
        return rng.integers(0, 256, (n, *shape)).astype(dtype)

    return {
        "x_train": make(n_train),
        "y_train": rng.integers(0, 3, n_train).astype(np.uint8),
        "x_test": make(n_test),
        "y_test": rng.integers(0, 3, n_test).astype(np.uint8),
    }


def _write(tmp_path, arrays, name="toy.npz"):
    path = tmp_path / name
    np.savez_compressed(path, **arrays)
    return f"npz:{path}"


# --- npz source -------------------------------------------------------------


def test_npz_uint8_is_scaled_by_255(tmp_path):
    arrays = _arrays()
    arrays["x_train"][0, 0, 0, 0] = 0
    arrays["x_train"][0, 0, 1, 0] = 255
    arrays["x_train"][0, 0, 2, 0] = 51
    source = _write(tmp_path, arrays)

    x, y = data.load_arrays(source, "train")
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[0, 0, :3, 0], [0.0, 1.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(x, arrays["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, arrays["y_train"])

    # The tf.data path converts in its map; it must agree with the array path.
    pairs = list(data.load_dataset(source, "train").as_numpy_iterator())
    assert len(pairs) == 6
    np.testing.assert_array_equal(np.stack([p[0] for p in pairs]), x)
    assert pairs[0][0].dtype == np.float32 and pairs[0][1].dtype == np.int64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npz_float_in_range_is_kept(tmp_path, dtype):
    arrays = _arrays(dtype=dtype)
    arrays["x_test"][0, 0, 0, 0] = 1.0
    source = _write(tmp_path, arrays)
    x, _ = data.load_arrays(source, "test")
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, arrays["x_test"].astype(np.float32))


@pytest.mark.parametrize("bad_value", [1.5, -0.1, np.nan])
def test_npz_float_out_of_range_raises(tmp_path, bad_value):
    arrays = _arrays(dtype=np.float32)
    arrays["x_train"][2, 1, 1, 0] = bad_value
    source = _write(tmp_path, arrays)
    with pytest.raises(ValueError, match="x_train"):
        data.load_arrays(source, "train")
    with pytest.raises(ValueError, match="x_train"):
        data.load_dataset(source, "train")


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.bool_])
def test_npz_other_image_dtypes_raise(tmp_path, dtype):
    arrays = _arrays()
    arrays["x_train"] = (arrays["x_train"] > 100).astype(dtype)
    source = _write(tmp_path, arrays)
    with pytest.raises(ValueError, match="dtype"):
        data.load_arrays(source, "train")


def test_npz_grayscale_without_channel_axis_gets_one(tmp_path):
    arrays = _arrays()
    for key in ("x_train", "x_test"):
        arrays[key] = arrays[key][..., 0]
    source = _write(tmp_path, arrays)
    x, _ = data.load_arrays(source, "train")
    assert x.shape == (6, 5, 5, 1)
    assert data.load_dataset(source, "test").element_spec[0].shape == (5, 5, 1)
    assert data.info(source).input_shape == (5, 5, 1)


def test_npz_missing_file_raises(tmp_path):
    missing = tmp_path / "nothing_here.npz"
    with pytest.raises(ValueError, match="nothing_here.npz"):
        data.load_arrays(f"npz:{missing}", "train")


def _truncated(raw):
    return raw[: len(raw) // 2]


def _garbage(raw):
    return np.random.default_rng(0).integers(0, 256, len(raw), dtype=np.uint8).tobytes()


def _damaged_member(raw):
    # Keeps the zip directory intact but breaks compressed data, so opening
    # works and reading the array fails.
    middle = len(raw) // 3
    return raw[:middle] + bytes(200) + raw[middle + 200 :]


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (_truncated, "broken.npz' is not a valid npz"),
        (_garbage, "broken.npz' is not a valid npz"),
        (_damaged_member, "broken.npz': cannot read array 'x_train'"),
    ],
)
def test_npz_corrupt_file_raises(tmp_path, corrupt, match):
    arrays = _arrays(n_train=40, shape=(16, 16, 1))
    path = tmp_path / "broken.npz"
    np.savez_compressed(path, **arrays)
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=match):
        data.load_arrays(f"npz:{path}", "train")


def test_npz_single_npy_file_raises(tmp_path):
    path = tmp_path / "plain.npy"
    np.save(path, np.zeros((2, 3, 3, 1), np.uint8))
    with pytest.raises(ValueError, match="not an npz"):
        data.load_arrays(f"npz:{path}", "train")


def test_npz_missing_keys_are_named(tmp_path):
    arrays = _arrays()
    del arrays["y_test"]
    source = _write(tmp_path, arrays)
    with pytest.raises(ValueError, match="y_test"):
        data.load_arrays(source, "train")
    with pytest.raises(ValueError, match="y_test"):
        data.info(source)


@pytest.mark.parametrize(
    "y_train",
    [
        np.zeros(5, np.uint8),  # count mismatch (6 images)
        np.zeros((6, 1), np.uint8),  # not 1-D
        np.zeros(6, np.float32),  # not integer
        np.full(6, -1, np.int64),  # negative
    ],
)
def test_npz_bad_labels_raise(tmp_path, y_train):
    arrays = _arrays()
    arrays["y_train"] = y_train
    source = _write(tmp_path, arrays)
    with pytest.raises(ValueError, match="y_train"):
        data.load_arrays(source, "train")


def test_npz_info_uses_file_stem_and_known_class_names(tmp_path):
    meta = data.info(_write(tmp_path, _arrays(shape=(5, 5, 3)), name="fashion_mnist.npz"))
    assert meta == data.DatasetInfo(
        "fashion_mnist", (5, 5, 3), 10, data.CLASS_NAMES["fashion_mnist"]
    )

    arrays = _arrays()
    arrays["y_train"][0] = 6
    meta = data.info(_write(tmp_path, arrays, name="my_data.npz"))
    assert meta.name == "my_data"
    assert meta.num_classes == 7
    assert meta.class_names == tuple("0123456")

    arrays["y_test"][0] = 12
    with pytest.raises(ValueError, match="y_test has label 12, but .* has 10 classes"):
        data.info(_write(tmp_path, arrays, name="mnist.npz"))


def test_a_test_label_the_training_labels_lack_is_an_error_not_a_new_class(tmp_path):
    arrays = _arrays()  # Labels 0..2.
    arrays["y_test"][3] = 42
    with pytest.raises(ValueError, match=r"y_test has label 42, but .* has 3 classes \(0\.\.2, "
                                         r"from its training labels\).*`num_classes` array"):
        data.info(_write(tmp_path, arrays))


def test_an_npz_may_declare_its_class_count(tmp_path):
    arrays = _arrays()
    arrays["y_test"][3] = 42
    arrays["num_classes"] = np.array(43)
    meta = data.info(_write(tmp_path, arrays))
    assert meta.num_classes == 43 and len(meta.class_names) == 43
    arrays["num_classes"] = np.array(10)
    with pytest.raises(ValueError, match=r"y_test has label 42, .* from its num_classes"):
        data.info(_write(tmp_path, arrays))
    arrays["num_classes"] = np.array([43, 1])
    with pytest.raises(ValueError, match="num_classes must be one positive integer"):
        data.info(_write(tmp_path, arrays))


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_npz_split_without_examples_is_named(tmp_path, split):
    arrays = _arrays()
    arrays[f"x_{split}"] = arrays[f"x_{split}"][:0]
    arrays[f"y_{split}"] = arrays[f"y_{split}"][:0]
    source = _write(tmp_path, arrays)
    with pytest.raises(ValueError, match=f"has no examples in its {split} split"):
        data.info(source)
    with pytest.raises(ValueError, match=f"has no examples in its {split} split"):
        data.load_arrays(source, split)


def test_nan_pixels_are_reported_as_not_finite(tmp_path):
    arrays = _arrays(dtype=np.float32)
    arrays["x_train"][1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 values that are not finite") as error:
        data.load_arrays(_write(tmp_path, arrays), "train")
    assert "outside" not in str(error.value)


def test_max_examples_keeps_the_first_examples(tmp_path):
    arrays = _arrays()
    source = _write(tmp_path, arrays)
    x, y = data.load_arrays(source, "train", max_examples=4)
    assert x.shape == (4, 5, 5, 1)
    np.testing.assert_array_equal(y, arrays["y_train"][:4])
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="max_examples"):
            data.load_arrays(source, "train", max_examples=bad)


@pytest.mark.parametrize("source", ["", "npz:", "tfds:", None])
def test_bad_source_strings_raise(source):
    with pytest.raises(ValueError):
        data.info(source)


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="validation"):
        data.load_dataset("digits", "validation")


# --- embedded digits ----------------------------------------------------------


def test_digits_shapes_range_and_classes():
    x_train, y_train = data.load_arrays("digits", "train")
    x_test, y_test = data.load_arrays("digits", "test")
    assert x_train.shape[1:] == x_test.shape[1:] == (8, 8, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert 0.78 < len(x_train) / 1797 < 0.82
    np.testing.assert_array_equal(np.unique(y_train), np.arange(10))
    np.testing.assert_array_equal(np.unique(y_test), np.arange(10))
    assert data.info("digits") == data.DatasetInfo("digits", (8, 8, 1), 10, tuple("0123456789"))


def test_digits_split_is_a_stratified_partition():
    digits = load_digits()
    x_train, y_train = data.load_arrays("digits", "train")
    x_test, y_test = data.load_arrays("digits", "test")
    assert len(x_train) + len(x_test) == len(digits.images)

    # Train + test rows are exactly the full dataset (a multiset), so nothing
    # is duplicated across splits or lost.
    def rows(x, y):
        flat = np.concatenate([np.rint(x.reshape(len(x), -1) * 16), y[:, None]], axis=1)
        return flat[np.lexsort(flat.T[::-1])]

    full = rows(digits.images.astype(np.float32) / 16, digits.target)
    np.testing.assert_array_equal(
        rows(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])), full
    )
    # Stratified: each class sends round(20%) of its images to test.
    counts = np.bincount(digits.target)
    np.testing.assert_array_equal(np.bincount(y_test), np.round(0.2 * counts))


def test_digits_split_is_deterministic():
    x1, y1 = data.load_arrays("digits", "test")
    x1, y1 = x1.copy(), y1.copy()
    data._digits_arrays.cache_clear()  # Forces a rebuild from scratch.
    x2, y2 = data.load_arrays("digits", "test")
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


def test_digits_arrays_are_private_copies():
    x, y = data.load_arrays("digits", "train")
    x[0] = 0.5
    y[0] = 9
    x_again, _ = data.load_arrays("digits", "train")
    assert not np.all(x_again[0] == 0.5)


def test_digits_dataset_matches_arrays():
    x, y = data.load_arrays("digits", "test")
    dataset = data.load_dataset("digits", "test")
    assert dataset.element_spec == (
        tf.TensorSpec((8, 8, 1), tf.float32),
        tf.TensorSpec((), tf.int64),
    )
    xs, ys = next(dataset.batch(len(x)).as_numpy_iterator())
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)


# --- TFDS source (real TFDS code path, mocked data) ---------------------------


@pytest.mark.parametrize(
    "source, shape", [("mnist", (28, 28, 1)), ("tfds:cifar10", (32, 32, 3))]
)
def test_tfds_source_yields_unit_float_images(tmp_path, source, shape):
    with tfds.testing.mock_data(num_examples=6):
        dataset = data.load_dataset(source, "train", data_dir=str(tmp_path))
        assert dataset.element_spec == (
            tf.TensorSpec(shape, tf.float32),
            tf.TensorSpec((), tf.int64),
        )
        x, y = data.load_arrays(source, "test", data_dir=str(tmp_path), max_examples=4)
        raw = tfds.load(
            source.removeprefix("tfds:"), split="test", as_supervised=True, data_dir=str(tmp_path)
        )
        raw_x = np.stack([image for image, _ in raw.take(4).as_numpy_iterator()])
    assert x.shape == (4, *shape) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert set(y) <= set(range(10))
    assert raw_x.dtype == np.uint8
    np.testing.assert_allclose(x, raw_x / 255.0, rtol=1e-6)


def test_tfds_data_dir_is_passed_through(tmp_path, monkeypatch):
    seen = []
    real_builder = tfds.builder

    def spy(name, **kwargs):
        seen.append(kwargs.get("data_dir"))
        return real_builder(name, **kwargs)

    monkeypatch.setattr(tfds, "builder", spy)
    with tfds.testing.mock_data(num_examples=2):
        data.load_dataset("fashion_mnist", "test", data_dir=str(tmp_path))
    assert seen == [str(tmp_path)]


def test_tfds_info_uses_builder_metadata():
    # No data needed: shapes come from the builder; cifar10's class names
    # come from the table, as TFDS only knows them after downloading.
    assert data.info("tfds:cifar10") == data.DatasetInfo(
        "cifar10", (32, 32, 3), 10, data.CLASS_NAMES["cifar10"]
    )
    assert data.info("fashion_mnist").class_names[8] == "Bag"


@pytest.mark.parametrize("source", ["no_such_dataset_xyz", "tfds:no_such_dataset_xyz"])
def test_unknown_tfds_name_raises(source):
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        data.load_dataset(source, "train")
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        data.info(source)


def test_tfds_download_failure_explains_offline_use(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(ValueError, match="npz:PATH"):
        data.load_dataset("mnist", "train", data_dir=str(tmp_path))


def test_tfds_without_its_data_and_network_fails_clearly_not_on_an_import(tmp_path, monkeypatch):
    # TFDS imports importlib_resources lazily, to find a builder's own files (its checksums):
    # missing, every TFDS source failed with a ModuleNotFoundError. It is a dependency now.
    import importlib_resources  # noqa: F401
    from tensorflow_datasets.core.download import downloader

    assert tfds.builder("mnist", data_dir=str(tmp_path)).code_path is not None
    # No network: connections refused at once and not retried, so the failure comes in seconds.
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"TFDS could not download or prepare 'mnist' into .*"
                                         r"Without a network, point `data_dir` at prepared") as error:
        data.load_arrays("mnist", "test", data_dir=str(tmp_path))
    assert "ModuleNotFoundError" not in str(error.value)


# --- pipelines ----------------------------------------------------------------


def _images(n=10, seed=0):
    return np.random.default_rng(seed).random((n, 4, 4, 1)).astype(np.float32)


def test_pretraining_dataset_batches_images_only():
    images = _images(10)
    batches = list(data.pretraining_dataset(images, batch_size=4, seed=0).as_numpy_iterator())
    assert [b.shape for b in batches] == [(4, 4, 4, 1)] * 2  # The partial batch is dropped.

    batches = list(
        data.pretraining_dataset(images, batch_size=4, drop_remainder=False, seed=0)
    )
    seen = np.concatenate(batches)
    assert seen.shape == (10, 4, 4, 1)
    # Shuffled, but a permutation of the input.
    np.testing.assert_array_equal(np.sort(seen.ravel()), np.sort(images.ravel()))


def test_pretraining_dataset_shuffle_and_seed():
    images = _images(32)

    def first_epoch(**kwargs):
        dataset = data.pretraining_dataset(images, batch_size=8, **kwargs)
        return np.concatenate(list(dataset.as_numpy_iterator()))

    np.testing.assert_array_equal(first_epoch(shuffle=False), images)
    np.testing.assert_array_equal(first_epoch(seed=3), first_epoch(seed=3))
    assert not np.array_equal(first_epoch(seed=3), images)


def test_pretraining_dataset_from_labeled_dataset():
    dataset = data.pretraining_dataset(
        data.load_dataset("digits", "test"), batch_size=16, seed=0
    )
    assert dataset.element_spec == tf.TensorSpec((16, 8, 8, 1), tf.float32)
    assert len(list(dataset)) == len(data.load_arrays("digits", "test")[0]) // 16


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (_images(3), {"batch_size": 4}, "no full batch"),
        (_images(8), {"batch_size": 0}, "batch_size"),
        ((_images(8) * 255).astype(np.uint8), {"batch_size": 4}, "floating"),
        (_images(8) + 1.0, {"batch_size": 4}, r"\[0.0, 1.0\]"),
    ],
)
def test_pretraining_dataset_rejects_bad_input(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.pretraining_dataset(images, **kwargs)


def test_supervised_dataset_keeps_order_and_pairs():
    x = _images(10)
    y = np.arange(10, dtype=np.uint8)
    batches = list(data.supervised_dataset(x, y, batch_size=4).as_numpy_iterator())
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    labels = np.concatenate([b[1] for b in batches])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.arange(10))

    shuffled = list(data.supervised_dataset(x, y, batch_size=10, shuffle=True, seed=1))
    xs, ys = shuffled[0][0].numpy(), shuffled[0][1].numpy()
    np.testing.assert_array_equal(xs, x[ys])  # Images keep their own labels.
    with pytest.raises(ValueError, match="9 labels for 10 images"):
        data.supervised_dataset(x, y[:9], batch_size=4)


# --- real data ----------------------------------------------------------------


@pytest.mark.large
def test_real_mnist_npz():
    if not os.path.exists(MNIST_NPZ):
        pytest.skip(f"offline MNIST copy not found at {MNIST_NPZ}")
    source = f"npz:{MNIST_NPZ}"
    assert data.info(source) == data.DatasetInfo("mnist", (28, 28, 1), 10, tuple("0123456789"))
    x_test, y_test = data.load_arrays(source, "test")
    assert x_test.shape == (10000, 28, 28, 1) and x_test.dtype == np.float32
    assert x_test.min() == 0.0 and x_test.max() == 1.0
    # Per-class counts from the datasets README.
    np.testing.assert_array_equal(
        np.bincount(y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    train = data.load_dataset(source, "train")
    assert int(train.cardinality()) == 60000
    assert train.element_spec[0] == tf.TensorSpec((28, 28, 1), tf.float32)


def test_describe_names_a_source_without_its_path(tmp_path):
    import hashlib

    source = _write(tmp_path, _arrays(), name="fashion_mnist.npz")
    described = data.describe(source)
    assert described == {
        "dataset": "fashion_mnist",
        "dataset_sha256": hashlib.sha256((tmp_path / "fashion_mnist.npz").read_bytes()).hexdigest(),
    }
    assert str(tmp_path) not in str(described)
    assert data.describe("digits") == {"dataset": "digits"}
    with pytest.raises(ValueError, match="npz file not found"):
        data.describe(f"npz:{tmp_path / 'absent.npz'}")


def test_an_epoch_has_its_order_whichever_epoch_the_data_start_at():
    images = _images(12)

    def batches(first_epoch, seed=3):
        dataset = data.pretraining_dataset(images, batch_size=4, seed=seed, epochs=3,
                                           first_epoch=first_epoch, with_indices=True)
        assert int(dataset.cardinality()) == (3 - first_epoch) * 3
        return list(dataset.as_numpy_iterator())

    full, resumed = batches(0), batches(2)
    for (x, i), (x_resumed, i_resumed) in zip(full[6:], resumed):  # Epoch 3, both times.
        np.testing.assert_array_equal(x, x_resumed)
        np.testing.assert_array_equal(i, i_resumed)
    orders = [np.concatenate([i for _, i in full[3 * e:3 * e + 3]]) for e in range(3)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(12))
    assert not np.array_equal(orders[0], orders[1])
    for x, i in full:
        np.testing.assert_array_equal(x, images[i])
    assert not np.array_equal(batches(0, seed=4)[0][1], full[0][1])


def test_supervised_epochs_keep_pairs_and_the_last_partial_batch():
    x, y = _images(10), np.arange(10)
    dataset = data.supervised_dataset(x, y, batch_size=4, shuffle=True, seed=0, epochs=2)
    batches = list(dataset.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [4, 4, 2, 4, 4, 2]
    for xs, ys in batches:
        np.testing.assert_array_equal(xs, x[ys])
    with pytest.raises(ValueError, match="first_epoch"):
        data.supervised_dataset(x, y, batch_size=4, epochs=2, first_epoch=2)
    with pytest.raises(ValueError, match="needs in-memory images"):
        data.pretraining_dataset(tf.data.Dataset.from_tensor_slices(x), batch_size=4, epochs=2)
