"""CleverHans' PGD and BIM steps in one in-graph loop that stops where an image is misclassified.

`cleverhans.tf2`'s `projected_gradient_descent` unrolls its steps in Python
(40 copies of the model in the graph, seconds to trace) and keeps stepping
images it has already misclassified. Here the same step (`optimize_linear`,
`clip_eta` and the clipping of `fast_gradient_method`) runs in a
`tf.while_loop`, each iteration on the images still classified correctly: an
image keeps its first misclassified iterate (as AutoAttack and the APGD
runner here do), so the result is never weaker than the last iterate, and
the loop ends early once every image is misclassified. The random start
draws from a `tf.random.Generator`, so one compiled attack replays a seed.

With a `check_fn` (a bfloat16 search, `AttackSpec.precision`), `model_fn`'s
gradients drive the steps but an image stops only when `check_fn`, the
float32 classifier, misclassifies it too: a bfloat16 verdict alone would
stop at iterates the float32 classifier still gets right, and robust
accuracy would read too high. The
check costs one float32 forward pass on the images the search believes
fooled, not on the batch.
"""

import numpy as np
import tensorflow as tf
from cleverhans.tf2.utils import clip_eta, optimize_linear

_ORDER = {"inf": np.inf, "2": 2}


def random_start(rng, x, norm, epsilon):
    """CleverHans' `random_lp_vector` (uniform in the ball), drawn from `rng`."""
    shape = tf.shape(x)
    if norm == "inf":
        return rng.uniform(shape, -epsilon, epsilon)
    dim = tf.reduce_prod(shape[1:])
    direction = rng.normal((shape[0], dim))
    length = tf.sqrt(tf.reduce_sum(tf.square(direction), axis=-1, keepdims=True))
    # Radius w^(1/d) for w ~ U[0, 1] (Calafiore et al. 1998), as CleverHans does.
    radius = tf.pow(rng.uniform((shape[0], 1)), 1.0 / tf.cast(dim, tf.float32))
    return epsilon * tf.reshape(radius * direction / length, shape)


def projected_gradient_descent(model_fn, x, y, *, spec, clip_min, clip_max, rng=None,
                               check_fn=None):
    """`spec.steps` CleverHans PGD steps from `x` (or a random start in the ball with `rng`).

    Returns the adversarial batch: per image, its first misclassified iterate
    (by `check_fn` too, when given), else the last one.
    """
    norm = _ORDER[spec.norm]
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int64)
    start = x
    if rng is not None:
        eta = clip_eta(random_start(rng, x, spec.norm, spec.epsilon), norm, spec.epsilon)
        start = tf.clip_by_value(x + eta, clip_min, clip_max)

    def step(x_adv, x, y):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = model_fn(x_adv)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        gradient = tape.gradient(loss, x_adv)
        stepped = tf.clip_by_value(x_adv + optimize_linear(gradient, spec.step_size, norm),
                                   clip_min, clip_max)
        stepped = tf.clip_by_value(x + clip_eta(stepped - x, norm, spec.epsilon),
                                   clip_min, clip_max)
        fooled = tf.not_equal(tf.argmax(logits, axis=-1), y)
        if check_fn is not None:
            fooled = _confirmed(check_fn, x_adv, y, fooled)
        # The logits are the current iterate's: a fooled image stays where it is.
        return tf.where(fooled[:, tf.newaxis, tf.newaxis, tf.newaxis], x_adv, stepped), fooled

    def body(i, x_adv, fooled):
        # Only the images still classified correctly take a step (and cost a pass).
        todo = tf.where(tf.logical_not(fooled))
        moved, now_fooled = step(tf.gather_nd(x_adv, todo), tf.gather_nd(x, todo),
                                 tf.gather_nd(y, todo))
        return (i + 1, tf.tensor_scatter_nd_update(x_adv, todo, moved),
                tf.tensor_scatter_nd_update(fooled, todo, now_fooled))

    def more(i, x_adv, fooled):
        del x_adv
        return tf.logical_and(i < spec.steps, tf.reduce_any(tf.logical_not(fooled)))

    _, x_adv, _ = tf.while_loop(
        more, body, (tf.constant(0), start, tf.zeros_like(y, tf.bool)),
        maximum_iterations=spec.steps)
    return x_adv


def _confirmed(check_fn, x, y, fooled):
    """`fooled`, kept only where `check_fn` misclassifies the image too (run on those only)."""
    where = tf.where(fooled)

    def check():
        logits = check_fn(tf.gather_nd(x, where))
        agrees = tf.not_equal(tf.argmax(logits, axis=-1), tf.gather_nd(y, where))
        return tf.tensor_scatter_nd_update(fooled, where, agrees)

    # Most steps fool no image; oneDNN's fused convolutions also fail on an empty batch.
    return tf.cond(tf.size(where) > 0, check, lambda: fooled)
