"""The one projected-gradient search of the package, and the pieces it is made of.

The regularizers' estimators, the robust-SSL baselines and supervised
adversarial training all maximize some objective over the threat model
`B(x) = {x' : ||x' - x||_p <= eps, clip_min <= x' <= clip_max}`; they differ
only in the objective they hand to `projected_gradient_ascent`.
"""

import keras
import tensorflow as tf

from tarrl_tf import replicas

_TINY = 1e-12


def madry_step_size(epsilon, steps):
    """Madry et al.'s step size `2.5 * epsilon / steps`: from any start in the ball, the steps
    can reach its far side.

    Training searches use it as it is; attacks cap it at `epsilon`, the most a
    projected step can use (`tarrl_tf.attacks`).
    """
    return 2.5 * epsilon / steps



def _per_example_norm(v):
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=tf.range(1, tf.rank(v)), keepdims=True))


def unit(v):
    return v / (_per_example_norm(v) + _TINY)


def project(x_adv, x, epsilon, norm, clip_min, clip_max):
    """Projects `x_adv` onto `B(x)`: the eps-ball first, then the valid range.

    Clipping to the range after the ball projection keeps the point inside
    the ball, because `x` itself lies in the range.
    """
    delta = x_adv - x
    if norm == "inf":
        delta = tf.clip_by_value(delta, -epsilon, epsilon)
    else:
        delta = delta * tf.minimum(1.0, epsilon / (_per_example_norm(delta) + _TINY))
    return tf.clip_by_value(x + delta, clip_min, clip_max)


def random_in_ball(x, epsilon, norm, seed):
    """A random perturbation inside the eps-ball (uniform for L-inf, radius-uniform for L2)."""
    # `replicas.draw`: under tf.distribute, the starts one device draws for the global batch.
    if norm == "inf":
        return replicas.draw(lambda shape: keras.random.uniform(
            shape, -1.0, 1.0, dtype=x.dtype, seed=seed), tf.shape(x)) * epsilon
    direction = unit(replicas.draw(lambda shape: keras.random.normal(
        shape, dtype=x.dtype, seed=seed), tf.shape(x)))
    radius = replicas.draw(lambda shape: keras.random.uniform(shape, dtype=x.dtype, seed=seed),
                           [tf.shape(x)[0], 1, 1, 1])
    return direction * radius * epsilon


def ascent_direction(gradient, norm):
    """The steepest-ascent step of unit size in the given norm."""
    return tf.sign(gradient) if norm == "inf" else unit(gradient)


def projected_gradient_ascent(objective, x, *, epsilon, norm, steps, step_size, random_start=True,
                              clip_min=0.0, clip_max=1.0, seed=None, start=None):
    """Maximizes `objective(x')` over `B(x)` by projected gradient ascent (Madry et al.).

    The one PGD loop of the package: the regularizers and the robust-SSL
    baselines differ only in the objective they hand it. The loop has a fixed
    length inside the graph (`tf.while_loop`), so it is traced once.

    Args:
        objective: maps a batch `x'` to a scalar to maximize; a sum over
            examples, so each example's input gradient is independent of the
            batch size.
        x: the clean batch.
        epsilon: radius of the ball (float or scalar tensor).
        norm: `"inf"` or `"2"` (canonical, see `tarrl_tf.checks.canonical_norm`).
        steps: number of ascent steps (Python int).
        step_size: size of each step.
        random_start: start from a random point of the ball.
        clip_min: lowest valid input value.
        clip_max: highest valid input value.
        seed: an int or a `keras.random.SeedGenerator`.
        start: where to start instead (a point of the ball, e.g. a perturbation
            remembered from an earlier search); overrides `random_start`.

    Returns:
        The perturbed batch, with no gradient flowing through it.
    """
    x_adv = x
    if start is not None:
        x_adv = project(start, x, epsilon, norm, clip_min, clip_max)
    elif random_start:
        x_adv = project(x + random_in_ball(x, epsilon, norm, seed), x, epsilon, norm,
                        clip_min, clip_max)

    def ascend(i, x_adv):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            value = objective(x_adv)
        x_adv = x_adv + step_size * ascent_direction(tape.gradient(value, x_adv), norm)
        return i + 1, project(x_adv, x, epsilon, norm, clip_min, clip_max)

    # Each replica searches its own shard: collectives cannot run inside the loop.
    with replicas.local():
        _, x_adv = tf.while_loop(lambda i, _: i < steps, ascend, [tf.constant(0), x_adv])
    return tf.stop_gradient(x_adv)
