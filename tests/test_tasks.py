import numpy as np
import pytest
import tensorflow as tf

from tarrl_tf import data, tasks

KNOWN = ["digits", "mnist", "fashion_mnist", "cifar10"]


def _task_class(dataset_name, task_name, original_class):
    task = tasks.get_task(dataset_name, task_name)
    original = data.CLASS_NAMES[dataset_name].index(original_class)
    return task.class_names[task.map_labels([original])[0]]


@pytest.mark.parametrize("dataset_name", ["digits", "mnist"])
def test_digit_tasks(dataset_name):
    parity = tasks.get_task(dataset_name, "parity")
    np.testing.assert_array_equal(parity.map_labels(np.arange(10)), [0, 1] * 5)
    assert _task_class(dataset_name, "parity", "3") == "odd"
    assert _task_class(dataset_name, "parity", "0") == "even"

    magnitude = tasks.get_task(dataset_name, "magnitude")
    np.testing.assert_array_equal(magnitude.map_labels(np.arange(10)), [0] * 5 + [1] * 5)
    assert _task_class(dataset_name, "magnitude", "4") == "0-4"
    assert _task_class(dataset_name, "magnitude", "5") == "5-9"
    assert parity.num_classes == magnitude.num_classes == 2


def test_fashion_clothing_group():
    task = tasks.get_task("fashion_mnist", "clothing_group")
    assert task.num_classes == 4
    assert task.class_names == ("tops", "bottoms", "footwear", "bags")
    expected = {
        "T-shirt/top": "tops", "Trouser": "bottoms", "Pullover": "tops", "Dress": "tops",
        "Coat": "tops", "Sandal": "footwear", "Shirt": "tops", "Sneaker": "footwear",
        "Bag": "bags", "Ankle boot": "footwear",
    }  # fmt: skip
    for original, group in expected.items():
        assert _task_class("fashion_mnist", "clothing_group", original) == group


def test_cifar_animals_vehicles():
    task = tasks.get_task("cifar10", "animals_vehicles")
    assert task.class_names == ("animals", "vehicles")
    vehicles = {"airplane", "automobile", "ship", "truck"}
    for original in data.CLASS_NAMES["cifar10"]:
        group = _task_class("cifar10", "animals_vehicles", original)
        assert group == ("vehicles" if original in vehicles else "animals"), original
    assert np.bincount(task.map_labels(np.arange(10))).tolist() == [6, 4]


@pytest.mark.parametrize("dataset_name", KNOWN)
def test_every_task_in_the_table_is_consistent(dataset_name):
    names = tasks.available_tasks(dataset_name)
    assert names[0] == "labels" and len(names) > 1
    for task_name in names:
        task = tasks.get_task(dataset_name, task_name)
        assert task.name == task_name
        assert len(task.mapping) == len(data.CLASS_NAMES[dataset_name])
        # Every task class is used by at least one original class.
        assert sorted(set(task.mapping)) == list(range(task.num_classes))


@pytest.mark.parametrize("dataset_name", KNOWN)
def test_labels_is_the_identity(dataset_name):
    task = tasks.get_task(dataset_name, "labels")
    assert task.num_classes == 10
    assert task.class_names == data.CLASS_NAMES[dataset_name]
    np.testing.assert_array_equal(task.map_labels(np.arange(10)), np.arange(10))


def test_labels_of_an_unknown_dataset_needs_num_classes():
    assert tasks.available_tasks("my_data") == ["labels"]
    task = tasks.get_task("my_data", "labels", num_classes=3)
    assert task.class_names == ("0", "1", "2") and task.mapping == (0, 1, 2)
    with pytest.raises(ValueError, match="num_classes"):
        tasks.get_task("my_data", "labels")
    with pytest.raises(ValueError, match="10 classes"):
        tasks.get_task("mnist", "labels", num_classes=5)
    with pytest.raises(ValueError, match="num_classes"):
        tasks.get_task("my_data", "labels", num_classes=0)


def test_unknown_names_list_what_exists():
    with pytest.raises(ValueError, match=r"'labels', 'magnitude', 'parity'"):
        tasks.get_task("mnist", "clothing_group")
    with pytest.raises(ValueError, match="cifar10.*fashion_mnist"):
        tasks.get_task("svhn", "parity")


@pytest.mark.parametrize("labels", [[10], [-1], [3, 11, 2]])
def test_out_of_range_labels_raise(labels):
    with pytest.raises(ValueError, match="0..9"):
        tasks.get_task("mnist", "parity").map_labels(np.array(labels))


def test_non_integer_labels_raise():
    with pytest.raises(ValueError, match="integers"):
        tasks.get_task("mnist", "parity").map_labels(np.array([1.0, 2.0]))


def test_map_labels_keeps_shape():
    task = tasks.get_task("cifar10", "animals_vehicles")
    mapped = task.map_labels(np.array([[0, 3], [8, 5]], np.uint8))
    assert mapped.dtype == np.int64
    np.testing.assert_array_equal(mapped, [[1, 0], [1, 0]])


def test_map_dataset_batched_and_unbatched():
    task = tasks.get_task("digits", "parity")
    x, y = data.load_arrays("digits", "test", max_examples=20)
    unbatched = task.map_dataset(data.load_dataset("digits", "test").take(20))
    got = np.array([label for _, label in unbatched.as_numpy_iterator()])
    np.testing.assert_array_equal(got, y % 2)

    batched = task.map_dataset(data.supervised_dataset(x, y, batch_size=8))
    xs, ys = zip(*batched.as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate(xs), x)
    np.testing.assert_array_equal(np.concatenate(ys), y % 2)


@pytest.mark.parametrize("labels", [[1, 10], [-1, 1]])
def test_map_dataset_rejects_out_of_range_and_unlabeled(labels):
    task = tasks.get_task("mnist", "parity")
    bad = tf.data.Dataset.from_tensor_slices((np.zeros((2, 1), np.float32), labels))
    # Matches our message, not CPU tf.gather's own index error.
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels of task parity must lie"):
        list(task.map_dataset(bad))
    with pytest.raises(ValueError, match="pairs"):
        task.map_dataset(tf.data.Dataset.from_tensor_slices(np.zeros((2, 1), np.float32)))


def test_task_validates_its_fields():
    with pytest.raises(ValueError, match="class names"):
        tasks.Task("t", 2, ("a",), (0, 1))
    with pytest.raises(ValueError, match="mapping"):
        tasks.Task("t", 2, ("a", "b"), (0, 2))
