"""One adapter from Keras classifiers to the attacks of `cleverhans.tf2.attacks`.

The evaluation of this project attacks downstream classifiers (a frozen encoder
plus a plainly trained head). Every attack goes through this module, so the
settings, the label handling, the clip range and the input checks are the same
for the tools, the zoo checks and the tests.

Attacks (the names are a public contract, used by `tools/evaluate.py --attacks=`):

| name       | norm        | CleverHans function                           | run as          |
|------------|-------------|-----------------------------------------------|-----------------|
| `fgsm`     | inf (or 2)  | `fast_gradient_method`                        | `tf.function`   |
| `pgd_linf` | inf         | `projected_gradient_descent`, random start    | `tf.function`   |
| `pgd_l2`   | 2           | `projected_gradient_descent`, random start    | `tf.function`   |
| `bim`      | inf (or 2)  | `basic_iterative_method`                      | `tf.function`   |
| `mim`      | inf (or 2)  | `momentum_iterative_method`                   | `tf.function`   |
| `cw_l2`    | 2           | `CarliniWagnerL2`, projected onto the ball    | eager           |
| `spsa`     | inf         | `projected_optimization` with `SPSAAdam`      | `tf.function`   |

Example:
```python
from tarrl_tf import attacks

spec = attacks.make_attack("pgd_linf", epsilon=0.3)      # 40 steps of 0.01875, random start
x_adv = attacks.run_attack(classifier, x, y, spec, seed=0)
rows = attacks.evaluate_attacks(
    classifier, x, y,
    [attacks.make_attack("fgsm", epsilon=0.3), spec,
     attacks.make_attack("spsa", epsilon=0.3, steps=10)],
    seed=0,
)
# rows[1] == {"name": "pgd_linf", "norm": "inf", "epsilon": 0.3, "steps": 40,
#             "step_size": 0.01875, "random_start": True, "restarts": 1,
#             "robust_accuracy": ..., "num_examples": ...}
```
"""

import dataclasses
import math
import numbers

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.basic_iterative_method import basic_iterative_method
from cleverhans.tf2.attacks.carlini_wagner_l2 import CarliniWagnerL2
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent
from cleverhans.tf2.attacks.spsa import SPSAAdam, margin_logit_loss, projected_optimization
from cleverhans.tf2.utils import clip_eta

from tarrl_tf.checks import canonical_norm, check_choice, check_images

ATTACK_NAMES = ("fgsm", "pgd_linf", "pgd_l2", "bim", "mim", "cw_l2", "spsa")

# Norms each attack supports; the first one is its default.
_NORMS = {
    "fgsm": ("inf", "2"),
    "pgd_linf": ("inf",),
    "pgd_l2": ("2",),
    "bim": ("inf", "2"),
    "mim": ("inf", "2"),
    "cw_l2": ("2",),
    "spsa": ("inf",),
}

_DEFAULT_STEPS = {
    "fgsm": 1,
    "pgd_linf": 40,
    "pgd_l2": 40,
    "bim": 20,
    "mim": 10,
    "cw_l2": 100,
    "spsa": 20,
}

# Attack-specific settings (fields of `AttackSpec`) and their defaults. A field
# not listed for an attack must stay None: nothing is accepted and then ignored.
_OPTIONS = {
    "fgsm": {},
    "pgd_linf": {"random_start": True, "restarts": 1},
    "pgd_l2": {"random_start": True, "restarts": 1},
    "bim": {},
    "mim": {"decay_factor": 1.0},
    "cw_l2": {
        "confidence": 0.0,
        "learning_rate": 0.01,
        "binary_search_steps": 5,
        "initial_const": 0.01,
    },
    "spsa": {"learning_rate": 0.01, "spsa_samples": 128, "spsa_delta": 0.01},
}
# Uesato et al.'s SPSA learning rate 0.01 cannot cross a wide ball (MNIST's 0.3)
# in a few Adam steps of about `learning_rate` each, so it grows like PGD's step.
_SPSA_MIN_LEARNING_RATE = 0.01

# CW and SPSA optimize with Adam; they have no input-space step size.
_NO_STEP_SIZE = ("cw_l2", "spsa")
_REPORT_KEYS = ("name", "norm", "epsilon", "steps", "step_size")
_ORDER = {"inf": np.inf, "2": 2}


def _default_step_size(name, epsilon, steps):
    if name == "fgsm":
        return epsilon
    if name == "mim":
        return epsilon / steps  # Dong et al. 2018: alpha = eps / T
    # Madry et al. 2018: 2.5 * eps / steps, so a start anywhere in the ball can
    # reach its far side. Capped at eps, the most a projected step can use.
    return min(epsilon, 2.5 * epsilon / steps)


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """The exact settings of one attack; validated on construction, immutable.

    Build one with `make_attack` (which fills in the defaults) or from a report
    with `AttackSpec.from_dict`. `to_dict()` gives the plain dict that reports
    and zoo cards store next to the numbers it produced.

    Args:
        name: one of `ATTACK_NAMES`.
        norm: `"inf"` or `"2"` (other spellings such as `np.inf`, `2`, `"l2"`
            are normalized); must be a norm the attack supports.
        epsilon: radius of the threat ball, `>= 0`. For `cw_l2` (a
            minimum-distortion attack) the result is projected onto the L2 ball.
        steps: gradient steps (`fgsm`: 1); Adam iterations per binary-search
            step for `cw_l2`; SPSA updates for `spsa`.
        step_size: input-space step per iteration, `0 < step_size <= epsilon`;
            equals `epsilon` for `fgsm`; None for `cw_l2` and `spsa`.
        random_start: `pgd_*` only: start uniformly in the ball.
        restarts: `pgd_*` only: independent random starts; per example the
            strongest result is kept (misclassified first, then highest loss).
        decay_factor: `mim` only: momentum decay.
        confidence: `cw_l2` only: logit margin (kappa) of the CW loss.
        learning_rate: `cw_l2` and `spsa`: Adam learning rate.
        binary_search_steps: `cw_l2` only: searches over the CW constant.
        initial_const: `cw_l2` only: first CW trade-off constant.
        spsa_samples: `spsa` only: perturbations per gradient estimate (even).
        spsa_delta: `spsa` only: size of the finite-difference perturbations.

    `cw_l2` always aborts early when its loss stalls (CleverHans' default);
    `spsa` always starts at random in the ball and stops as soon as the margin
    loss shows a misclassification (early-stop threshold 0).

    Example:
    ```python
    spec = AttackSpec(name="fgsm", norm="inf", epsilon=0.1, steps=1, step_size=0.1)
    spec.to_dict()  # {"name": "fgsm", "norm": "inf", "epsilon": 0.1, "steps": 1, "step_size": 0.1}
    ```
    """

    name: str
    norm: str
    epsilon: float
    steps: int
    step_size: float | None = None
    random_start: bool | None = None
    restarts: int | None = None
    decay_factor: float | None = None
    confidence: float | None = None
    learning_rate: float | None = None
    binary_search_steps: int | None = None
    initial_const: float | None = None
    spsa_samples: int | None = None
    spsa_delta: float | None = None

    def __post_init__(self):
        name = check_choice(self.name, ATTACK_NAMES, name="attack")
        norm = canonical_norm(self.norm)
        if norm not in _NORMS[name]:
            raise ValueError(
                f"Attack {name!r} does not support norm {self.norm!r}; "
                f"supported: {list(_NORMS[name])}"
            )
        epsilon = _real(self.epsilon, "epsilon", minimum=0.0)
        steps = _integer(self.steps, "steps", minimum=1)
        if name == "fgsm" and steps != 1:
            raise ValueError(f"fgsm is a single-step attack; steps must be 1, got {steps}")
        self._set("norm", norm)
        self._set("epsilon", epsilon)
        self._set("steps", steps)
        self._set("step_size", self._checked_step_size(name, epsilon))
        options = _OPTIONS[name]
        for field in _option_fields():
            value = getattr(self, field)
            if field not in options:
                if value is not None:
                    raise ValueError(
                        f"{field!r} does not apply to attack {name!r}; its settings are "
                        f"{sorted(options) or 'none beyond norm, epsilon, steps, step_size'}"
                    )
                continue
            if value is None:
                raise ValueError(f"Attack {name!r} needs {field!r} (make_attack fills it in)")
            self._set(field, _OPTION_CHECKS[field](value, field))
        if self.restarts is not None and self.restarts > 1 and not self.random_start:
            raise ValueError(
                "restarts > 1 needs random_start=True (restarts would repeat the same run)"
            )

    def _set(self, field, value):
        object.__setattr__(self, field, value)  # canonical form inside a frozen dataclass

    def _checked_step_size(self, name, epsilon):
        if name in _NO_STEP_SIZE:
            if self.step_size is not None:
                raise ValueError(
                    f"{name} has no step_size (it optimizes with Adam); set learning_rate instead"
                )
            return None
        step_size = _real(self.step_size, "step_size", minimum=0.0)
        if name == "fgsm" and step_size != epsilon:
            raise ValueError(f"fgsm takes one step of size epsilon; step_size must be {epsilon}")
        if step_size > epsilon:
            raise ValueError(
                f"step_size ({step_size}) must not exceed epsilon ({epsilon}): "
                "every step is projected back onto the epsilon ball"
            )
        if epsilon > 0 and step_size == 0:
            raise ValueError("step_size must be > 0 when epsilon > 0")
        return step_size

    def to_dict(self):
        """Plain dict for reports: the core keys always, other settings when they apply."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name in _REPORT_KEYS or getattr(self, field.name) is not None
        }

    @classmethod
    def from_dict(cls, settings):
        """Inverse of `to_dict`; extra keys of a report row (e.g. `robust_accuracy`) are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in settings.items() if key in names})


def _option_fields():
    return [f.name for f in dataclasses.fields(AttackSpec) if f.name not in _REPORT_KEYS]


def make_attack(name, *, epsilon, norm=None, steps=None, step_size=None, **overrides):
    """Builds an `AttackSpec` with the field's standard defaults.

    Defaults: `fgsm` one step of `epsilon`; `pgd_linf`/`pgd_l2` 40 steps of
    `2.5 * epsilon / steps` from a random start, one restart; `bim` 20 steps of
    `2.5 * epsilon / steps`; `mim` 10 steps of `epsilon / steps`, decay 1.0;
    `cw_l2` 5 binary-search steps of 100 Adam iterations, learning rate 0.01,
    initial constant 0.01, confidence 0; `spsa` 20 iterations of 128 samples,
    delta 0.01, learning rate `max(0.01, 2.5 * epsilon / steps)` (Adam moves
    a pixel by about the learning rate per step), sized for subsets of a test set.

    Args:
        name: one of `ATTACK_NAMES`.
        epsilon: radius of the threat ball (`>= 0`).
        norm: optional; defaults to the attack's norm (see the module table).
        steps: optional number of iterations.
        step_size: optional step size; defaults to the rule above.
        **overrides: attack-specific settings (fields of `AttackSpec`), e.g.
            `restarts=5` for PGD or `binary_search_steps=9` for CW.

    Raises:
        ValueError: unknown attack, unsupported norm, negative epsilon, or a
            setting that does not apply to the attack.
    """
    name = check_choice(name, ATTACK_NAMES, name="attack")
    unknown = sorted(set(overrides) - set(_OPTIONS[name]))
    if unknown:
        raise ValueError(
            f"Unknown setting(s) {unknown} for attack {name!r}; "
            f"expected some of {sorted(_OPTIONS[name])}"
        )
    epsilon = _real(epsilon, "epsilon", minimum=0.0)
    steps = _DEFAULT_STEPS[name] if steps is None else _integer(steps, "steps", minimum=1)
    if step_size is None and name not in _NO_STEP_SIZE:
        step_size = _default_step_size(name, epsilon, steps)
    options = dict(_OPTIONS[name])
    if name == "spsa":
        options["learning_rate"] = max(_SPSA_MIN_LEARNING_RATE, 2.5 * epsilon / steps)
    return AttackSpec(
        name=name,
        norm=_NORMS[name][0] if norm is None else norm,
        epsilon=epsilon,
        steps=steps,
        step_size=step_size,
        **{**options, **overrides},
    )


def run_attack(
    model,
    x,
    y,
    spec,
    *,
    batch_size=128,
    clip_min=0.0,
    clip_max=1.0,
    seed=None,
    verbose=False,
):
    """Crafts adversarial examples for a Keras classifier.

    Args:
        model: a Keras model mapping `[batch, H, W, C]` images to logits; it is
            called with `training=False`.
        x: float images, rank 4, values in `[clip_min, clip_max]`.
        y: true labels, 1-D integers, one per image. Always required: the
            attacks never fall back to the model's own predictions.
        spec: an `AttackSpec`.
        batch_size: examples per attack call.
        clip_min: smallest valid pixel value.
        clip_max: largest valid pixel value.
        seed: optional integer; the same seed gives the same random starts.
        verbose: show a `keras.utils.Progbar`.

    Returns:
        `x_adv`, float32 NumPy array of `x`'s shape, with
        `||x_adv - x|| <= spec.epsilon` in `spec.norm` and values in
        `[clip_min, clip_max]`. `spec.epsilon == 0` returns `x` unchanged.
    """
    x, y = _check_inputs(x, y, clip_min=clip_min, clip_max=clip_max)
    spec = _check_spec(spec)
    batch_size = _integer(batch_size, "batch_size", minimum=1)
    if seed is not None:
        seed = _integer(seed, "seed", minimum=0)
    if spec.epsilon == 0:
        # Nothing to search; also spares CleverHans divisions by a zero radius.
        return x.copy()
    model_fn = _logits_fn(model)
    num_classes = _num_classes(model_fn, x, y)
    attack_batch = _attack_fn(
        spec,
        model_fn,
        image_shape=x.shape[1:],
        num_classes=num_classes,
        clip_min=float(clip_min),
        clip_max=float(clip_max),
        seed=seed,
    )
    x_adv = np.empty_like(x)
    progbar = keras.utils.Progbar(len(x), unit_name="example") if verbose else None
    for start in range(0, len(x), batch_size):
        stop = min(start + batch_size, len(x))
        x_adv[start:stop] = attack_batch(x[start:stop], y[start:stop])
        if progbar is not None:
            progbar.update(stop)
    return x_adv


def clean_accuracy(model, x, y, *, batch_size=256, clip_min=0.0, clip_max=1.0):
    """Fraction of `x` that `model` classifies as `y` (inference mode, batched)."""
    x, y = _check_inputs(x, y, clip_min=clip_min, clip_max=clip_max)
    batch_size = _integer(batch_size, "batch_size", minimum=1)
    return float(np.mean(_predict(model, x, batch_size=batch_size) == y))


def robust_accuracy(
    model, x, y, spec, *, batch_size=128, clip_min=0.0, clip_max=1.0, seed=None, verbose=False
):
    """Fraction of examples classified correctly both clean and under the attack.

    `x` itself lies in the threat ball, so an example counts as robust only if
    `x` and `x_adv` are both classified correctly (robust <= clean accuracy).
    The keyword arguments are those of `run_attack`.
    """
    (row,) = evaluate_attacks(
        model,
        x,
        y,
        [spec],
        batch_size=batch_size,
        clip_min=clip_min,
        clip_max=clip_max,
        seed=seed,
        verbose=verbose,
    )
    return row["robust_accuracy"]


def evaluate_attacks(
    model, x, y, specs, *, batch_size=128, clip_min=0.0, clip_max=1.0, seed=None, verbose=False
):
    """Runs several attacks; returns one report row per spec.

    Each row is `spec.to_dict()` plus `robust_accuracy` (see `robust_accuracy`)
    and `num_examples`. The keyword arguments are those of `run_attack`; every
    attack gets the same `seed`.
    """
    specs = [_check_spec(spec) for spec in specs]
    x, y = _check_inputs(x, y, clip_min=clip_min, clip_max=clip_max)
    batch_size = _integer(batch_size, "batch_size", minimum=1)
    clean_ok = _predict(model, x, batch_size=batch_size) == y
    rows = []
    for spec in specs:
        x_adv = run_attack(
            model,
            x,
            y,
            spec,
            batch_size=batch_size,
            clip_min=clip_min,
            clip_max=clip_max,
            seed=seed,
            verbose=verbose,
        )
        adv_ok = _predict(model, x_adv, batch_size=batch_size) == y
        rows.append(
            {
                **spec.to_dict(),
                "robust_accuracy": float(np.mean(clean_ok & adv_ok)),
                "num_examples": len(x),
            }
        )
    return rows


# --- The adapter: spec -> batch attack function ---------------------------------


def _attack_fn(spec, model_fn, *, image_shape, num_classes, clip_min, clip_max, seed):
    """Returns `attack_batch(x, y) -> x_adv` on NumPy batches."""
    clip = {"clip_min": clip_min, "clip_max": clip_max}
    if spec.name == "cw_l2":
        return _cw_l2(spec, model_fn, image_shape=image_shape, num_classes=num_classes, **clip)
    craft = _GRAPH_ATTACKS[spec.name](spec, model_fn, **clip)
    return _TracedAttack(craft, image_shape=image_shape, seed=seed).run


class _TracedAttack:
    """Runs `craft(x, y)` under one `tf.function` traced once per `run_attack` call.

    The batch dimension of the signature is `None`, so one trace serves every
    batch, the last partial one included.
    """

    def __init__(self, craft, *, image_shape, seed):
        self._craft = craft
        self._seed = seed
        signature = (
            tf.TensorSpec((None, *image_shape), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        )
        # Traces `self`, not a closure: TF's retracing warning groups closures
        # by their code, so one new function per run_attack call (one trace
        # each) would be reported as retracing. autograph=False: CleverHans'
        # loops run over Python ints and unroll at trace time.
        self._function = tf.function(self, input_signature=signature, autograph=False)

    def __call__(self, x, y):
        if self._seed is not None:
            # While tracing, this seeds only this function's graph (the global
            # seed is untouched): the same seed replays the same random starts
            # in a new run_attack call, while successive batches still differ.
            tf.random.set_seed(self._seed)
        return self._craft(x, y)

    def run(self, x, y):
        return self._function(x, y).numpy()


def _fgsm(spec, model_fn, *, clip_min, clip_max):
    def craft(x, y):
        return fast_gradient_method(
            model_fn,
            x,
            eps=spec.epsilon,
            norm=_ORDER[spec.norm],
            clip_min=clip_min,
            clip_max=clip_max,
            y=y,
            targeted=False,
        )

    return craft


def _pgd(spec, model_fn, *, clip_min, clip_max):
    def attack_once(x, y):
        return projected_gradient_descent(
            model_fn,
            x,
            eps=spec.epsilon,
            eps_iter=spec.step_size,
            nb_iter=spec.steps,
            norm=_ORDER[spec.norm],
            clip_min=clip_min,
            clip_max=clip_max,
            y=y,
            targeted=False,
            rand_init=spec.random_start,
            sanity_checks=False,
        )

    def craft(x, y):
        return _best_of_restarts(model_fn, attack_once, x, y, restarts=spec.restarts)

    return craft


def _bim(spec, model_fn, *, clip_min, clip_max):
    def craft(x, y):
        # sanity_checks=False: its checks are NumPy asserts on tensors, which
        # fail in a graph; `check_images` has already checked the range.
        return basic_iterative_method(
            model_fn,
            x,
            eps=spec.epsilon,
            eps_iter=spec.step_size,
            nb_iter=spec.steps,
            norm=_ORDER[spec.norm],
            clip_min=clip_min,
            clip_max=clip_max,
            y=y,
            targeted=False,
            sanity_checks=False,
        )

    return craft


def _mim(spec, model_fn, *, clip_min, clip_max):
    def craft(x, y):
        return momentum_iterative_method(
            model_fn,
            x,
            eps=spec.epsilon,
            eps_iter=spec.step_size,
            nb_iter=spec.steps,
            norm=_ORDER[spec.norm],
            clip_min=clip_min,
            clip_max=clip_max,
            y=y,
            targeted=False,
            decay_factor=spec.decay_factor,
            sanity_checks=False,
        )

    return craft


class _KerasAdamWithLr(keras.optimizers.Adam):
    # cleverhans 4.0.0's SPSAAdam calls `Adam.__init__(lr=...)` and reads
    # `self.lr`; Keras 3 renamed both to `learning_rate`.
    def __init__(self, lr, **kwargs):
        super().__init__(learning_rate=lr, **kwargs)

    @property
    def lr(self):
        return self.learning_rate


class _SPSAAdam(SPSAAdam, _KerasAdamWithLr):
    """CleverHans' SPSAAdam, constructible under Keras 3 (see `_KerasAdamWithLr`)."""


def _spsa(spec, model_fn, *, clip_min, clip_max):
    # Composed from CleverHans' own parts because its `spsa()` builds the
    # optimizer that Keras 3 rejects. Built outside the trace: Keras optimizers
    # create variables on construction.
    optimizer = _SPSAAdam(
        lr=spec.learning_rate, delta=spec.spsa_delta, num_samples=spec.spsa_samples, num_iters=1
    )

    def loss_fn(x, label):
        # Untargeted margin loss, as in `spsa()`: negative once misclassified.
        logits = model_fn(x)
        return -margin_logit_loss(logits, label, nb_classes=logits.shape[-1])

    def attack_one(example):
        image, label = example
        x_adv = projected_optimization(
            loss_fn,
            image[tf.newaxis],
            label[tf.newaxis],
            epsilon=spec.epsilon,
            num_steps=spec.steps,
            optimizer=optimizer,
            clip_min=clip_min,
            clip_max=clip_max,
            early_stop_loss_threshold=0.0,
        )
        return x_adv[0]

    def craft(x, y):
        # SPSA attacks one image at a time (its own batch is the SPSA samples).
        return tf.map_fn(attack_one, (x, y), fn_output_signature=tf.float32)

    return craft


_GRAPH_ATTACKS = {
    "fgsm": _fgsm,
    "pgd_linf": _pgd,
    "pgd_l2": _pgd,
    "bim": _bim,
    "mim": _mim,
    "spsa": _spsa,
}


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


class _ResettableAdam:
    """The optimizer handed to CleverHans' CarliniWagnerL2 under Keras 3.

    CW resets Adam before each binary-search step with
    `for v in optimizer.variables(): v.assign(zeros)`. In Keras 3 `variables`
    is a list (calling it raises TypeError) and holds the learning rate, which
    that loop would set to zero. Here `variables()` starts a fresh Adam and
    leaves nothing to zero.
    """

    def __init__(self, learning_rate):
        self._learning_rate = learning_rate
        self._adam = keras.optimizers.Adam(learning_rate=learning_rate)

    def variables(self):
        self._adam = keras.optimizers.Adam(learning_rate=self._learning_rate)
        return []

    def apply_gradients(self, grads_and_vars):
        self._adam.apply_gradients(grads_and_vars)


def _cw_l2(spec, model_fn, *, image_shape, num_classes, clip_min, clip_max):
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
        model_fn,
        y=None,
        batch_size=1,
        clip_min=clip_min,
        clip_max=clip_max,
        binary_search_steps=spec.binary_search_steps,
        max_iterations=spec.steps,
        abort_early=True,
        confidence=spec.confidence,
        initial_const=spec.initial_const / num_pixels,
        learning_rate=spec.learning_rate,
    )
    cw.optimizer = _ResettableAdam(spec.learning_rate)

    def attack_batch(x, y):
        one_hot = tf.one_hot(y, num_classes)
        x_cw = np.empty_like(x)
        for i in range(len(x)):
            cw.y = one_hot[i : i + 1]
            x_cw[i : i + 1] = cw.attack(x[i : i + 1])
        # CW minimizes distortion without a budget: project onto the eps ball
        # (as foolbox does), then clip, which cannot leave the ball.
        delta = clip_eta(tf.constant(x_cw - x), norm=2, eps=spec.epsilon).numpy()
        return np.clip(x + delta, clip_min, clip_max)

    return attack_batch


# --- Checks and small helpers ------------------------------------------------------


def _logits_fn(model):
    def model_fn(x):
        return model(x, training=False)

    return model_fn


def _num_classes(model_fn, x, y):
    logits = model_fn(tf.constant(x[:1]))
    if len(logits.shape) != 2:
        raise ValueError(
            "The model must return logits of shape [batch, classes], "
            f"got shape {tuple(logits.shape)}"
        )
    num_classes = int(logits.shape[-1])
    if y.max() >= num_classes:
        raise ValueError(f"Labels must be < {num_classes} (the model's classes), got {y.max()}")
    return num_classes


def _predict(model, x, *, batch_size):
    return np.concatenate(
        [
            np.argmax(model(x[start : start + batch_size], training=False), axis=-1)
            for start in range(0, len(x), batch_size)
        ]
    )


def _check_inputs(x, y, *, clip_min, clip_max):
    check_images(x, clip_min=clip_min, clip_max=clip_max, name="x")
    x = np.asarray(x, dtype=np.float32)
    if y is None:
        raise ValueError(
            "Labels y are required; attacks never use the model's predictions as labels"
        )
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"y must be 1-D integer class labels, got shape {y.shape} and dtype {y.dtype}"
            + ("; convert one-hot labels with np.argmax(y, axis=-1)" if y.ndim == 2 else "")
        )
    if len(y) != len(x):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if y.min() < 0:
        raise ValueError(f"Labels must be >= 0, got {y.min()}")
    return x, y.astype(np.int64)


def _check_spec(spec):
    if not isinstance(spec, AttackSpec):
        raise TypeError(
            f"Expected an AttackSpec (see make_attack), got {type(spec).__name__}"
        )
    return spec


def _real(value, name, *, minimum=None, strictly_positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if strictly_positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _integer(value, name, *, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _boolean(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _even_samples(value, name):
    value = _integer(value, name, minimum=2)
    if value % 2:
        raise ValueError(f"{name} must be even (SPSA mirrors each sample), got {value}")
    return value


_OPTION_CHECKS = {
    "random_start": _boolean,
    "restarts": lambda v, n: _integer(v, n, minimum=1),
    "decay_factor": lambda v, n: _real(v, n, minimum=0.0),
    "confidence": lambda v, n: _real(v, n, minimum=0.0),
    "learning_rate": lambda v, n: _real(v, n, strictly_positive=True),
    "binary_search_steps": lambda v, n: _integer(v, n, minimum=1),
    "initial_const": lambda v, n: _real(v, n, strictly_positive=True),
    "spsa_samples": _even_samples,
    "spsa_delta": lambda v, n: _real(v, n, strictly_positive=True),
}
