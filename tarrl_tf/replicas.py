"""Cross-replica sums and gathers for losses under `tf.distribute`, and where they are skipped.

Losses that depend on the whole batch (NT-Xent's negatives, Barlow Twins'
cross-correlation, the relative divergences' spread) take it from every
replica, so the objective does not change with the number of devices.
Inside a search for worst-case inputs they cannot: collectives do not run in
a `tf.while_loop`, and each replica searches its own shard (`local()`).
Random numbers drawn per example (views, random starts) come from `draw`:
the global batch's numbers, this replica's rows, so they do not change with
the number of devices either.
"""

import contextlib
import threading

import tensorflow as tf

_state = threading.local()


@contextlib.contextmanager
def local():
    """Inside, `gather` and `sum_over_replicas` see this replica's values only."""
    previous = getattr(_state, "local", False)
    _state.local = True
    try:
        yield
    finally:
        _state.local = previous


def _context():
    """The replica context when several replicas cooperate, else None."""
    if getattr(_state, "local", False):
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def gather(z):
    """`z` of every replica stacked in replica order, and the row where this replica's start.

    Outside a multi-replica context: `z` itself and 0. The gather is
    differentiable: gradients flow back to the replica that computed each row.
    """
    context = _context()
    if context is None:
        return z, 0
    return context.all_gather(z, axis=0), context.replica_id_in_sync_group * tf.shape(z)[0]


def sum_over_replicas(value):
    """`value` summed over the replicas (itself outside a multi-replica context)."""
    context = _context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def cooperating():
    """True when losses here sum or gather over several replicas."""
    return _context() is not None


def draw(sample, shape):
    """`sample(shape)` for this replica's rows of the global batch; `shape[0]` is its batch size.

    Every replica draws the numbers of the whole global batch from the same
    seed state and keeps its own rows: the views and random starts are those
    one device draws for the same global batch. (Each replica drawing only its
    own shape would give every replica the first replica's numbers.) Inside
    `local()` too: drawing needs no collective.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return sample(shape)
    shape = tf.convert_to_tensor(shape, tf.int32)
    rows = shape[0]
    values = sample(tf.concat([[rows * context.num_replicas_in_sync], shape[1:]], 0))
    start = context.replica_id_in_sync_group * rows
    return values[start:start + rows]
