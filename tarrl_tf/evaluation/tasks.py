"""Downstream tasks derived from a dataset's labels by a label mapping.

One robust representation is evaluated on several downstream tasks. Besides
the original labels (`"labels"`, every dataset), each known dataset has
coarser tasks that group its classes:

| dataset | tasks |
|---|---|
| `digits`, `mnist` | `parity` (even / odd), `magnitude` (0-4 / 5-9) |
| `fashion_mnist` | `clothing_group` (tops / bottoms / footwear / bags) |
| `cifar10` | `animals_vehicles` (animals / vehicles) |

A task is a table of class-name groups, not code: adding one is one
`register_task(dataset, name, groups)` call (at the end of this module).

Example:
```python
from tarrl_tf import data, tasks

meta = data.info("digits")
task = tasks.get_task(meta.name, "parity")
task.map_labels([3, 4])  # array([1, 0]): odd, even
test = task.map_dataset(data.load_dataset("digits", "test"))
```
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tarrl_tf import data

# dataset name -> {task name: ((task class name, original class names in it), ...)}.
# The task label of a group is its position.
_TASKS = {}

@dataclasses.dataclass(frozen=True)
class Task:
    """A downstream classification task: a mapping of original labels to task labels.

    Attributes:
        name: task name, e.g. `"parity"`.
        num_classes: number of task labels.
        class_names: one name per task label.
        mapping: `mapping[original_label] = task_label`; its length is the
            number of original classes.

    Example:
    ```python
    task = Task("parity", 2, ("even", "odd"), (0, 1, 0, 1, 0, 1, 0, 1, 0, 1))
    task.map_labels(np.array([7, 8]))  # array([1, 0])
    ```
    """

    name: str
    num_classes: int
    class_names: tuple
    mapping: tuple

    def __post_init__(self):
        # Frozen, so tuples (not caller-owned lists) keep it immutable and hashable.
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "mapping", tuple(int(label) for label in self.mapping))
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"Task {self.name!r}: {len(self.class_names)} class names for "
                f"{self.num_classes} classes"
            )
        if not self.mapping or min(self.mapping) < 0 or max(self.mapping) >= self.num_classes:
            raise ValueError(
                f"Task {self.name!r}: mapping {self.mapping} must be non-empty with values "
                f"in [0, {self.num_classes})"
            )

    def map_labels(self, labels):
        """Maps an integer array of original labels (any shape) to int64 task labels.

        Raises:
            ValueError: non-integer labels, or labels outside
                `[0, len(mapping))`; nothing is clipped or wrapped.
        """
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        outside = labels[(labels < 0) | (labels >= len(self.mapping))]
        if outside.size:
            raise ValueError(
                f"Task {self.name!r} maps labels 0..{len(self.mapping) - 1}; got "
                f"{np.unique(outside)[:10].tolist()}"
            )
        return np.asarray(self.mapping, dtype=np.int64)[labels]

    def map_dataset(self, dataset):
        """Maps the labels of a `tf.data.Dataset` of `(x, y)`, batched or not.

        A label out of range fails with `tf.errors.InvalidArgumentError` when
        the dataset is iterated (the check runs in the graph, and GPU
        `tf.gather` would otherwise return 0 silently).
        """
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2 or not spec[1].dtype.is_integer:
            raise ValueError(f"dataset must yield (x, integer y) pairs, got {spec}")
        table = tf.constant(self.mapping, dtype=tf.int64)
        # No quotes: TF escapes them in the error text.
        message = f"labels of task {self.name} must lie in [0, {len(self.mapping)})"

        def relabel(x, y):
            y = tf.cast(y, tf.int64)
            with tf.control_dependencies(
                [
                    tf.debugging.assert_non_negative(y, message=message),
                    tf.debugging.assert_less(y, tf.size(table, out_type=tf.int64), message=message),
                ]
            ):
                return x, tf.gather(table, y)

        return dataset.map(relabel, num_parallel_calls=tf.data.AUTOTUNE)


def available_tasks(dataset_name):
    """Task names for a dataset: `"labels"` first, then its derived tasks.

    A dataset outside the table has only `"labels"`, which `get_task` then
    builds from `num_classes`.
    """
    return ["labels", *sorted(_TASKS.get(dataset_name, {}))]


def get_task(dataset_name, task_name, *, num_classes=None):
    """Returns the `Task` named `task_name` of a dataset.

    Args:
        dataset_name: canonical dataset name, i.e. `tarrl_tf.data.info(...).name`.
        task_name: one of `available_tasks(dataset_name)`.
        num_classes: number of original classes. Required for the `"labels"`
            task of a dataset outside the table; for a known dataset it is
            optional and must match.

    Raises:
        ValueError: unknown task or dataset (the message lists what exists),
            or a `num_classes` that does not fit.
    """
    known = data.CLASS_NAMES.get(dataset_name)
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}")
    if known is not None and num_classes not in (None, len(known)):
        raise ValueError(
            f"{dataset_name!r} has {len(known)} classes, got num_classes={num_classes}"
        )
    if task_name == "labels":
        if known is None and num_classes is None:
            raise ValueError(
                f"Unknown dataset {dataset_name!r}; known: {sorted(data.CLASS_NAMES)}. "
                "Pass num_classes= to get the 'labels' task of another dataset"
            )
        names = known or tuple(str(label) for label in range(num_classes))
        return Task("labels", len(names), names, range(len(names)))
    if known is None:
        raise ValueError(
            f"Unknown dataset {dataset_name!r} for task {task_name!r}; datasets with "
            f"derived tasks: {sorted(_TASKS)} (any dataset has 'labels')"
        )
    tasks = _TASKS.get(dataset_name, {})
    if task_name not in tasks:
        raise ValueError(
            f"Unknown task {task_name!r} for {dataset_name!r}; expected one of "
            f"{available_tasks(dataset_name)}"
        )
    return _grouped_task(task_name, known, tasks[task_name])


def _grouped_task(name, source_names, groups):
    """Builds a Task whose label k is the k-th group of original class names."""
    mapping = {}
    for task_label, (_, members) in enumerate(groups):
        for member in members:
            mapping[source_names.index(member)] = task_label
    # Guards the table itself: each original class in exactly one group.
    if len(mapping) != len(source_names) or sum(len(m) for _, m in groups) != len(source_names):
        raise ValueError(f"Task {name!r} does not put each class in exactly one group")
    return Task(
        name,
        len(groups),
        tuple(group for group, _ in groups),
        tuple(mapping[label] for label in range(len(source_names))),
    )


def register_task(dataset_name, task_name, groups):
    """Registers a derived task of a known dataset: `groups` of its class names, one per task label.

    Every original class must be in exactly one group; checked here, so a bad
    table fails at import, not in the middle of an evaluation.
    """
    known = data.CLASS_NAMES.get(dataset_name)
    if known is None:
        raise ValueError(f"Unknown dataset {dataset_name!r}; known: {sorted(data.CLASS_NAMES)}")
    tasks = _TASKS.setdefault(dataset_name, {})
    if task_name == "labels" or task_name in tasks:
        raise ValueError(f"Task {task_name!r} of {dataset_name!r} exists already")
    groups = tuple((group, tuple(members)) for group, members in groups)
    _grouped_task(task_name, known, groups)
    tasks[task_name] = groups


_DIGITS = data.CLASS_NAMES["digits"]
for _dataset in ("digits", "mnist"):
    register_task(_dataset, "parity", (("even", _DIGITS[0::2]), ("odd", _DIGITS[1::2])))
    register_task(_dataset, "magnitude", (("0-4", _DIGITS[:5]), ("5-9", _DIGITS[5:])))
register_task("fashion_mnist", "clothing_group", (
    ("tops", ("T-shirt/top", "Pullover", "Dress", "Coat", "Shirt")),
    ("bottoms", ("Trouser",)),
    ("footwear", ("Sandal", "Sneaker", "Ankle boot")),
    ("bags", ("Bag",)),
))
register_task("cifar10", "animals_vehicles", (
    ("animals", ("bird", "cat", "deer", "dog", "frog", "horse")),
    ("vehicles", ("airplane", "automobile", "ship", "truck")),
))
