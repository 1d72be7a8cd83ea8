"""AutoAttack's attacks from IBM's Adversarial Robustness Toolbox (ART 1.20), one record each.

| name      | norm     | ART class                                             | loss                      |
|-----------|----------|-------------------------------------------------------|---------------------------|
| `apgd_ce` | inf or 2 | `AutoProjectedGradientDescent`                        | cross-entropy             |
| `apgd_t`  | inf or 2 | `AutoProjectedGradientDescent`, once per target class | targeted DLR (see below)  |
| `square`  | inf      | `SquareAttack` (gradient-free random search)          | logit margin (ART's)      |

AutoAttack's defaults (Croce & Hein 2020, "standard" version): APGD 100
iterations from a first step of 2 epsilon, one restart; APGD-T towards the 9
most likely other classes; Square 5,000 queries, `p_init` 0.8. FAB-T, the
fourth attack of that version, is not in ART and is left out (Croce & Hein
found it adds little to the worst case after APGD-CE and APGD-T).

ART 1.20's L-inf Square draws one square (its position and signs) per
iteration and tries it on every image of the batch, where the reference
Square draws one per image: the same number of queries searches less, so its
row is a weaker estimate than AutoAttack's Square (not yet measured against
the reference here).

Square is registered for L-inf only. ART 1.20.1's L2 Square rescales each new
square by `1 / (a * b)` where the reference multiplies by `b / a` (`x /= a * b`
in `square_attack.py`): its search is not Square's, and where `b` is 0 it
divides by zero and returns NaN images, which a Keras model still classifies
(wrongly), so they would count as adversarial examples. Every ART result is
checked here (finite, in the ball, in the clip range) and a violation raises.

APGD-T's loss follows the number of classes `C` of the task:
- `C >= 4`: AutoAttack's targeted DLR, `-(z_y - z_t) / (z_1 - (z_3 + z_4) / 2)`
  (`z_i` the sorted logits), once per target `t` among the
  `min(target_classes, C - 1)` most likely classes other than `y`, each run
  on the images still classified correctly;
- `C == 3`: the untargeted DLR, `-(z_y - max_{i != y} z_i) / (z_1 - z_3)`,
  in one run (the targeted one needs a fourth logit);
- `C == 2`: the logit margin `z_other - z_y` (the DLR's scale needs a third
  logit). APGD steps along the sign (L-inf) or direction (L2) of the
  gradient and compares losses only by their order, so this is APGD-CE
  again, with another random start.

Labels are always the true ones. ART's targeted mode wants target labels in
place of them, so the targets travel in the label rows instead: `+1` at the
true class, `-1` at the target; ART's untargeted APGD reads the true class as
the row's argmax and counts any misclassification as success, as AutoAttack
does. Every runner is eager (ART loops in NumPy); `run_attack` seeds NumPy's
and Python's generators for them, from each batch's seed (`compat.seeded_global_generators`).
"""

import warnings

import numpy as np
import tensorflow as tf

from tarrl_tf.attacks.compat import ARTClassifier
from tarrl_tf.attacks.registry import Attack, register

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # ART's "PyTorch not found"
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

_ART_NORM = {"inf": np.inf, "2": 2}
# float32 rounding of x + delta may exceed the radius by an ulp or so.
_BALL_SLACK = 1e-5


def cross_entropy(logits, labels):
    return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def dlr(logits, labels):
    """Untargeted difference of logits ratio (needs 3 classes); `labels` one-hot."""
    top = tf.sort(logits, axis=-1, direction="DESCENDING")
    true = tf.reduce_sum(logits * labels, axis=-1)
    other = tf.reduce_max(tf.where(labels > 0, -np.inf, logits), axis=-1)
    return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(logits, labels):
    """AutoAttack's targeted DLR (needs 4 classes); `labels` +1 at the true class, -1 at the target."""
    top = tf.sort(logits, axis=-1, direction="DESCENDING")
    true = tf.reduce_sum(logits * tf.cast(labels > 0, logits.dtype), axis=-1)
    target = tf.reduce_sum(logits * tf.cast(labels < 0, logits.dtype), axis=-1)
    return -(true - target) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def margin(logits, labels):
    """The other logit minus the true one (two classes); `labels` one-hot."""
    return tf.reduce_sum(logits * (1.0 - 2.0 * labels), axis=-1)


def _apgd(spec, estimator):
    attack = AutoProjectedGradientDescent(
        estimator, norm=_ART_NORM[spec.norm], eps=spec.epsilon, eps_step=spec.step_size,
        max_iter=spec.steps, targeted=False, nb_random_init=spec.restarts,
        batch_size=1 << 30,  # run_attack batches already; one ART batch keeps tracking simple
        loss_type=None, verbose=False)

    def generate(x, rows, y):
        """ART's result, or the first misclassified iterate where its last one is not."""
        with estimator.tracking(y) as found:
            x_adv = attack.generate(x, rows)
        missed = np.argmax(estimator.predict(x_adv), axis=1) == y
        for i in np.flatnonzero(missed):
            if i in found:
                x_adv[i] = found[i]
        return x_adv

    return generate


def _apgd_ce(spec, model_fn, *, image_shape, num_classes, clip_min, clip_max, **_):
    generate = _apgd(spec, ARTClassifier(model_fn, loss=cross_entropy, num_classes=num_classes,
                                         image_shape=image_shape, clip_min=clip_min,
                                         clip_max=clip_max))

    def craft(x, y):
        return generate(x, _one_hot(y, num_classes), y)

    return craft


def _apgd_t(spec, model_fn, *, image_shape, num_classes, clip_min, clip_max, **_):
    loss = targeted_dlr if num_classes >= 4 else dlr if num_classes == 3 else margin
    estimator = ARTClassifier(model_fn, loss=loss, num_classes=num_classes,
                              image_shape=image_shape, clip_min=clip_min, clip_max=clip_max)
    generate = _apgd(spec, estimator)
    if num_classes < 4:
        return lambda x, y: generate(x, _one_hot(y, num_classes), y)
    num_targets = min(spec.target_classes, num_classes - 1)

    def craft(x, y):
        logits = estimator.predict(x)
        x_adv = x.copy()
        fooled = np.argmax(logits, axis=1) != y  # already misclassified: nothing to attack
        logits[np.arange(len(y)), y] = -np.inf  # rank the other classes only
        ranked = np.argsort(-logits, axis=1)
        for k in range(num_targets):
            todo = np.flatnonzero(~fooled)
            if len(todo) == 0:
                break
            rows = _one_hot(y[todo], num_classes) - _one_hot(ranked[todo, k], num_classes)
            candidate = generate(x[todo], rows, y[todo])
            hit = np.argmax(estimator.predict(candidate), axis=1) != y[todo]
            x_adv[todo[hit]] = candidate[hit]
            fooled[todo[hit]] = True
        return x_adv

    return craft


def _square(spec, model_fn, *, image_shape, num_classes, clip_min, clip_max, **_):
    # Square queries logits only (ART's margin loss); the estimator's loss is unused.
    estimator = ARTClassifier(model_fn, loss=cross_entropy, num_classes=num_classes,
                              image_shape=image_shape, clip_min=clip_min, clip_max=clip_max)
    attack = SquareAttack(estimator, norm=_ART_NORM[spec.norm], eps=spec.epsilon,
                          max_iter=spec.steps, p_init=spec.p_init, nb_restarts=spec.restarts,
                          batch_size=256, verbose=False)

    def craft(x, y):
        return attack.generate(x, _one_hot(y, num_classes)).astype(np.float32)

    return craft


def _checked(build):
    """`build`, with every batch ART returns checked (finite, in the ball, in range)."""

    def checked_build(spec, model_fn, *, clip_min, clip_max, **kwargs):
        craft = build(spec, model_fn, clip_min=clip_min, clip_max=clip_max, **kwargs)

        def checked_craft(x, y):
            x_adv = np.asarray(craft(x, y), np.float32)
            delta = (x_adv - x).reshape(len(x), -1)
            size = np.abs(delta).max(axis=1) if spec.norm == "inf" else np.linalg.norm(
                delta.astype(np.float64), axis=1)
            problem = ("non-finite values" if not np.isfinite(x_adv).all() else
                       f"values outside [{clip_min}, {clip_max}]"
                       if x_adv.min() < clip_min or x_adv.max() > clip_max else
                       f"a perturbation of size {size.max():.6g} > epsilon {spec.epsilon}"
                       if size.max() > spec.epsilon * (1 + _BALL_SLACK) + _BALL_SLACK else None)
            if problem:
                raise RuntimeError(f"ART's {spec.name} returned {problem}; "
                                   "nothing is clipped or replaced here")
            return x_adv

        return checked_craft

    return checked_build


def _one_hot(y, num_classes):
    return np.eye(num_classes, dtype=np.float32)[np.asarray(y)]


def _twice_epsilon(epsilon, steps):
    del steps
    return 2.0 * epsilon


_APGD = dict(norms=("inf", "2"), steps=100, traced=False, step_size=_twice_epsilon,
             step_size_limit=2.0)
register(Attack("apgd_ce", build=_checked(_apgd_ce), options={"restarts": 1}, **_APGD))
register(Attack("apgd_t", build=_checked(_apgd_t), options={"restarts": 1, "target_classes": 9},
                **_APGD))
register(Attack("square", norms=("inf",), steps=5000, build=_checked(_square), traced=False,
                options={"restarts": 1, "p_init": 0.8}))
