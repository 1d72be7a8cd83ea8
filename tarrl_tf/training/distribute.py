"""`tf.distribute` strategies by name, for the commands and the zoo pipeline.

| name           | strategy                                                             |
|----------------|----------------------------------------------------------------------|
| `default`      | the current one (one device, or the caller's own)                    |
| `mirrored`     | `MirroredStrategy`: every GPU of this host (or its CPU)              |
| `multi_worker` | `MultiWorkerMirroredStrategy`: the hosts listed in `$TF_CONFIG`       |

Batch sizes stay GLOBAL: Keras splits each batch over the replicas, and the
losses and gradients are those of the global batch (`tarrl_tf.replicas`).
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
    return tf.distribute.MirroredStrategy()


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


def make_strategy(name):
    """The strategy named `name` (one of `STRATEGIES`), created now."""
    return STRATEGIES.get(name)()
