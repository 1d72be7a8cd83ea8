"""`tf.distribute` strategies by name, for the commands and the zoo pipeline.

| name           | strategy                                                             |
|----------------|----------------------------------------------------------------------|
| `default`      | the current one (one device, or the caller's own)                    |
| `mirrored`     | `MirroredStrategy`: every GPU of this host (or its CPU devices)      |
| `multi_worker` | `MultiWorkerMirroredStrategy`: the hosts listed in `$TF_CONFIG`       |

Batch sizes stay GLOBAL: Keras splits each batch over the replicas, and the
losses and gradients are those of the global batch (`tarrl_tf.replicas`).
Under `multi_worker` every worker runs the same program; the chief (worker 0)
writes what a run leaves behind, the others keep their own backups beside it
(`worker_path`).
"""

import json
import os

import tensorflow as tf

from tarrl_tf.registry import Registry

STRATEGIES = Registry("strategy")


@STRATEGIES.register("default")
def _default():
    return tf.distribute.get_strategy()


@STRATEGIES.register("mirrored")
def _mirrored():
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    # Without a GPU, MirroredStrategy() takes the first CPU device only; a CPU split into
    # logical devices (as the tests do) gives one replica per device instead.
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


@STRATEGIES.register("multi_worker")
def _multi_worker():
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise ValueError("strategy 'multi_worker' reads the cluster from $TF_CONFIG, which is not set "
                         '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}})')
    try:
        json.loads(config)
    except json.JSONDecodeError as error:
        raise ValueError(f"$TF_CONFIG is not valid JSON: {error}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


_MADE = {}


def make_strategy(name):
    """The strategy named `name` (one of `STRATEGIES`).

    `default` is the current strategy; the others are made once per process
    and then returned again (a process joins its cluster once).
    """
    make = STRATEGIES.get(name)
    if name == "default":
        return make()
    if name not in _MADE:
        _MADE[name] = make()
    return _MADE[name]


def strategy_of(model):
    """The strategy `model`'s weights were created under (None: no strategy's scope)."""
    for weight in model.weights:
        strategy = getattr(getattr(weight, "value", weight), "_distribute_strategy", None)
        if strategy is not None:
            return strategy
    return None


def check_built_in(strategy, model, what="encoder"):
    """A ValueError unless `model`'s weights were created in `strategy`'s scope."""
    if all(strategy.extended.variable_created_in_scope(getattr(w, "value", w))
           for w in model.weights):
        return
    built = strategy_of(model)
    where = "outside any strategy's scope" if built is None else f"under {type(built).__name__}"
    raise ValueError(f"The {what}'s weights were created {where}, but training runs under "
                     f"{type(strategy).__name__}: build it inside `with strategy.scope():`")


def check_global_batch(batch_size, strategy):
    """A ValueError unless the global `batch_size` splits evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"batch size {batch_size} does not split over {replicas} replicas: "
                         f"use a multiple of {replicas} (the batch size is global)")


def worker_index(strategy):
    """This worker's index under a multi-worker strategy, else 0 (one process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    if resolver.task_type == "chief":
        return 0
    # With a "chief" task in the cluster, worker 0 is not the chief.
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return int(resolver.task_id) + (1 if has_chief else 0)


def is_chief(strategy):
    """True in the process that writes a run's results (the only one, without workers)."""
    return worker_index(strategy) == 0


def worker_path(path, strategy):
    """`path` for the chief; `<path>.worker_<i>` for worker i, so workers sharing a disk
    do not write the same backup files."""
    index = worker_index(strategy)
    return path if index == 0 else f"{path}.worker_{index}"
