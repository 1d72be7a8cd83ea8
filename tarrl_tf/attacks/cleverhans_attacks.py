"""The attacks of `cleverhans.tf2.attacks`, one runner and one record each.

| name       | norm        | CleverHans function                           | run as          |
|------------|-------------|-----------------------------------------------|-----------------|
| `fgsm`     | inf (or 2)  | `fast_gradient_method`                        | `tf.function`   |
| `pgd_linf` | inf         | its PGD step, random start (`pgd.py`)         | `tf.function`   |
| `pgd_l2`   | 2           | its PGD step, random start (`pgd.py`)         | `tf.function`   |
| `bim`      | inf (or 2)  | its PGD step, no random start (`pgd.py`)      | `tf.function`   |
| `mim`      | inf (or 2)  | `momentum_iterative_method`                   | `tf.function`   |
| `cw_l2`    | 2           | `CarliniWagnerL2`, projected onto the ball    | eager           |
| `spsa`     | inf         | `projected_optimization` with `SPSAAdam`      | `tf.function`   |

PGD and BIM keep each image's first misclassified iterate and skip the
images already misclassified (see `pgd.py`); the others return their last one.

Each runner is `build(spec, model_fn, *, image_shape, num_classes, clip_min,
clip_max, rng) -> craft(x, y)`; labels are always the true ones. `rng` is the
compiled attack's `tf.random.Generator` (`compiled.py`), reset from each batch's seed.
"""

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.carlini_wagner_l2 import CarliniWagnerL2
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
from cleverhans.tf2.attacks.spsa import margin_logit_loss, projected_optimization
from cleverhans.tf2.utils import clip_eta
from tensorflow.python.util import deprecation

from tarrl_tf.attacks import pgd
from tarrl_tf.attacks.compat import ResettableAdam, SPSAAdam
from tarrl_tf.attacks.registry import Attack, register
from tarrl_tf.robustness.search import madry_step_size

_ORDER = {"inf": np.inf, "2": 2}
# Uesato et al.'s SPSA learning rate 0.01 cannot cross a wide ball (MNIST's 0.3)
# in a few Adam steps of about `learning_rate` each, so it grows like PGD's step.
_SPSA_MIN_LEARNING_RATE = 0.01


def capped_madry_step_size(epsilon, steps):
    """Madry et al.'s `2.5 * eps / steps`, capped at eps, the most a projected step can use."""
    return min(epsilon, madry_step_size(epsilon, steps))


def _fgsm(spec, model_fn, *, clip_min, clip_max, **_):
    def craft(x, y):
        return fast_gradient_method(model_fn, x, eps=spec.epsilon, norm=_ORDER[spec.norm],
                                    clip_min=clip_min, clip_max=clip_max, y=y, targeted=False)

    return craft


def _pgd(spec, model_fn, *, clip_min, clip_max, rng, check_fn=None, **_):
    def attack_once(x, y):
        return pgd.projected_gradient_descent(model_fn, x, y, spec=spec, clip_min=clip_min,
                                              clip_max=clip_max,
                                              rng=rng if spec.random_start else None,
                                              check_fn=check_fn)

    def craft(x, y):
        # Restarts are compared as the accuracy counts: in float32.
        return _best_of_restarts(check_fn or model_fn, attack_once, x, y, restarts=spec.restarts)

    return craft


def _bim(spec, model_fn, *, clip_min, clip_max, check_fn=None, **_):
    def craft(x, y):
        # CleverHans' `basic_iterative_method` is its PGD without a random start.
        return pgd.projected_gradient_descent(model_fn, x, y, spec=spec, clip_min=clip_min,
                                              clip_max=clip_max, check_fn=check_fn)

    return craft


def _mim(spec, model_fn, *, clip_min, clip_max, **_):
    def craft(x, y):
        return momentum_iterative_method(
            model_fn, x, eps=spec.epsilon, eps_iter=spec.step_size, nb_iter=spec.steps,
            norm=_ORDER[spec.norm], clip_min=clip_min, clip_max=clip_max, y=y, targeted=False,
            decay_factor=spec.decay_factor, sanity_checks=False)

    return craft


def _spsa(spec, model_fn, *, clip_min, clip_max, **_):
    # Composed from CleverHans' own parts because its `spsa()` builds the
    # optimizer that Keras 3 rejects. Built outside the trace: Keras optimizers
    # create variables on construction.
    optimizer = SPSAAdam(lr=spec.learning_rate, delta=spec.spsa_delta,
                         num_samples=spec.spsa_samples, num_iters=1)

    def loss_fn(x, label):
        # Untargeted margin loss, as in `spsa()`: negative once misclassified.
        logits = model_fn(x)
        return -margin_logit_loss(logits, label, nb_classes=logits.shape[-1])

    def attack_one(example):
        image, label = example
        # CleverHans calls `tf.while_loop(back_prop=False)`, deprecated: TF would print
        # its upgrade notice (twice under absl) on every trace.
        with deprecation.silence():
            x_adv = projected_optimization(
                loss_fn, image[tf.newaxis], label[tf.newaxis], epsilon=spec.epsilon,
                num_steps=spec.steps, optimizer=optimizer, clip_min=clip_min, clip_max=clip_max,
                early_stop_loss_threshold=0.0)
        return x_adv[0]

    def craft(x, y):
        # SPSA attacks one image at a time (its own batch is the SPSA samples).
        return tf.map_fn(attack_one, (x, y), fn_output_signature=tf.float32)

    return craft


def _cw_l2(spec, model_fn, *, image_shape, num_classes, clip_min, clip_max, **_):
    # Eager: CW's binary search and early abort are Python control flow on
    # tensor values (`if loss > prev * 0.9999: break`, NumPy range checks), and
    # each call creates a tf.Variable. Its gradient step is a tf.function already.
    #
    # Workarounds for cleverhans 4.0.0:
    # - `targeted = y is not None` at construction, so labels given there would
    #   make it a targeted attack *towards the true class*. It is built untargeted
    #   and given the true labels through its `y` attribute.
    # - The constant has the image's shape instead of [batch] and multiplies the
    #   per-example loss by broadcasting: batches fail unless channels == batch
    #   or 1, and with one image the constant is effectively scaled by the number
    #   of pixels. So images go one at a time, with `initial_const / pixels`.
    num_pixels = int(np.prod(image_shape))
    cw = CarliniWagnerL2(
        model_fn, y=None, batch_size=1, clip_min=clip_min, clip_max=clip_max,
        binary_search_steps=spec.binary_search_steps, max_iterations=spec.steps,
        abort_early=True, confidence=spec.confidence,
        initial_const=spec.initial_const / num_pixels, learning_rate=spec.learning_rate)
    cw.optimizer = ResettableAdam(spec.learning_rate)

    def craft(x, y):
        one_hot = tf.one_hot(y, num_classes)
        x_cw = np.empty_like(x)
        for i in range(len(x)):
            cw.y = one_hot[i : i + 1]
            x_cw[i : i + 1] = cw.attack(x[i : i + 1])
        # CW minimizes distortion without a budget: project onto the eps ball
        # (as foolbox does), then clip, which cannot leave the ball.
        delta = clip_eta(tf.constant(x_cw - x), norm=2, eps=spec.epsilon).numpy()
        return np.clip(x + delta, clip_min, clip_max)

    return craft


def _best_of_restarts(model_fn, attack_once, x, y, *, restarts):
    best = attack_once(x, y)
    if restarts == 1:
        return best
    best_fooled, best_loss = _fooled_and_loss(model_fn, best, y)
    for _ in range(restarts - 1):  # a small Python int: unrolled at trace time
        candidate = attack_once(x, y)
        fooled, loss = _fooled_and_loss(model_fn, candidate, y)
        better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
        best = tf.where(better[:, tf.newaxis, tf.newaxis, tf.newaxis], candidate, best)
        best_fooled = tf.where(better, fooled, best_fooled)
        best_loss = tf.where(better, loss, best_loss)
    return best


def _fooled_and_loss(model_fn, x, y):
    logits = model_fn(x)
    fooled = tf.not_equal(tf.argmax(logits, axis=-1), y)
    return fooled, tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)


_PGD_OPTIONS = {"random_start": True, "restarts": 1}

register(Attack("fgsm", norms=("inf", "2"), steps=1, build=_fgsm,
                step_size=lambda epsilon, steps: epsilon))
register(Attack("pgd_linf", norms=("inf",), steps=40, build=_pgd,
                step_size=capped_madry_step_size, options=_PGD_OPTIONS, precisions=("bfloat16",)))
register(Attack("pgd_l2", norms=("2",), steps=40, build=_pgd,
                step_size=capped_madry_step_size, options=_PGD_OPTIONS, precisions=("bfloat16",)))
register(Attack("bim", norms=("inf", "2"), steps=20, build=_bim,
                step_size=capped_madry_step_size, precisions=("bfloat16",)))
register(Attack("mim", norms=("inf", "2"), steps=10, build=_mim,
                # Dong et al. 2018: alpha = eps / T
                step_size=lambda epsilon, steps: epsilon / steps, options={"decay_factor": 1.0}))
register(Attack("cw_l2", norms=("2",), steps=100, build=_cw_l2, traced=False, costly=True,
                options={"confidence": 0.0, "learning_rate": 0.01, "binary_search_steps": 5,
                         "initial_const": 0.01}))
# SPSA draws from TF's global random ops inside CleverHans: traced to draw from `rng`.
register(Attack("spsa", norms=("inf",), steps=20, build=_spsa, costly=True, seeded_in_trace=True,
                options={"learning_rate": 0.01, "spsa_samples": 128, "spsa_delta": 0.01},
                # Adam moves a pixel by about the learning rate per step.
                scaled_options=lambda epsilon, steps: {
                    "learning_rate": max(_SPSA_MIN_LEARNING_RATE, 2.5 * epsilon / steps)}))
