"""`AttackSpec`: the exact, validated settings of one attack, as reports and cards store them."""

import dataclasses
import math
import numbers

import numpy as np

from tarrl_tf.attacks.registry import ATTACKS
from tarrl_tf.checks import canonical_norm
from tarrl_tf.precision import check_mixed_precision

_REPORT_KEYS = ("name", "norm", "epsilon", "steps", "step_size")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """The exact settings of one attack; validated on construction, immutable.

    Build one with `make_attack` (which fills in the defaults) or from a report
    with `AttackSpec.from_dict`. `to_dict()` gives the plain dict that reports
    and zoo cards store next to the numbers it produced.

    Args:
        name: a registered attack (`ATTACK_NAMES`).
        norm: `"inf"` or `"2"` (other spellings such as `np.inf`, `2`, `"l2"`
            are normalized); must be a norm the attack supports.
        epsilon: radius of the threat ball, `>= 0`. For `cw_l2` (a
            minimum-distortion attack) the result is projected onto the L2 ball.
        steps: gradient steps (`fgsm`: 1); Adam iterations per binary-search
            step for `cw_l2`; SPSA updates for `spsa`.
        step_size: input-space step per iteration, `0 < step_size <= epsilon`;
            equals `epsilon` for `fgsm`; None for `cw_l2` and `spsa`.
        random_start: `pgd_*` only: start uniformly in the ball.
        restarts: `pgd_*`, `apgd_*`, `square`: independent random starts; per
            example the strongest result is kept (misclassified first).
        decay_factor: `mim` only: momentum decay.
        confidence: `cw_l2` only: logit margin (kappa) of the CW loss.
        learning_rate: `cw_l2` and `spsa`: Adam learning rate.
        binary_search_steps: `cw_l2` only: searches over the CW constant.
        initial_const: `cw_l2` only: first CW trade-off constant.
        spsa_samples: `spsa` only: perturbations per gradient estimate (even).
        spsa_delta: `spsa` only: size of the finite-difference perturbations.
        target_classes: `apgd_t` only: the most likely other classes it
            targets, one run each (fewer when the task has fewer classes).
        p_init: `square` only: initial fraction of pixels a square covers.
        precision: None (float32) or `"bfloat16"`, for the attacks whose
            search may run in it (`pgd_linf`, `pgd_l2`, `bim`): their
            gradients and steps are computed with the classifier in bfloat16,
            while whether an image is misclassified (when it stops, which
            iterate it keeps, the accuracy) is decided in float32.

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
    target_classes: int | None = None
    p_init: float | None = None
    precision: str | None = None

    def __post_init__(self):
        attack = ATTACKS.get(self.name)
        name = attack.name
        norm = canonical_norm(self.norm)
        if norm not in attack.norms:
            raise ValueError(
                f"Attack {name!r} does not support norm {self.norm!r}; "
                f"supported: {list(attack.norms)}"
            )
        epsilon = check_real(self.epsilon, "epsilon", minimum=0.0)
        steps = check_integer(self.steps, "steps", minimum=1)
        if name == "fgsm" and steps != 1:
            raise ValueError(f"fgsm is a single-step attack; steps must be 1, got {steps}")
        self._set("norm", norm)
        self._set("epsilon", epsilon)
        self._set("steps", steps)
        self._set("step_size", self._checked_step_size(attack, epsilon))
        self._set("precision", self._checked_precision(attack))
        options = attack.options
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
        # APGD and Square always start at random (they have no random_start setting).
        if self.restarts is not None and self.restarts > 1 and self.random_start is False:
            raise ValueError(
                "restarts > 1 needs random_start=True (restarts would repeat the same run)"
            )

    def _set(self, field, value):
        object.__setattr__(self, field, value)  # canonical form inside a frozen dataclass

    def _checked_precision(self, attack):
        precision = check_mixed_precision(self.precision)
        if precision is not None and precision not in attack.precisions:
            raise ValueError(
                f"attack {attack.name!r} runs in float32 only; precision={precision!r} applies to "
                f"{[n for n, a in ATTACKS.items() if precision in a.precisions]}"
            )
        return precision

    def _checked_step_size(self, attack, epsilon):
        name = attack.name
        if attack.step_size is None:
            if self.step_size is not None:
                raise ValueError(
                    f"{name} has no step_size (it searches with Adam or at random); "
                    "see its own settings"
                )
            return None
        step_size = check_real(self.step_size, "step_size", minimum=0.0)
        if name == "fgsm" and step_size != epsilon:
            raise ValueError(f"fgsm takes one step of size epsilon; step_size must be {epsilon}")
        limit = attack.step_size_limit * epsilon
        if step_size > limit:
            raise ValueError(
                f"step_size ({step_size}) must not exceed "
                f"{'' if attack.step_size_limit == 1 else f'{attack.step_size_limit:g} x '}"
                f"epsilon ({limit}): every step is projected back onto the epsilon ball"
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
    return [f.name for f in dataclasses.fields(AttackSpec)
            if f.name not in _REPORT_KEYS and f.name != "precision"]


def make_attack(name, *, epsilon, norm=None, steps=None, step_size=None, precision=None,
                **overrides):
    """Builds an `AttackSpec` with the field's standard defaults.

    Defaults: `fgsm` one step of `epsilon`; `pgd_linf`/`pgd_l2` 40 steps of
    `2.5 * epsilon / steps` from a random start, one restart; `bim` 20 steps of
    `2.5 * epsilon / steps`; `mim` 10 steps of `epsilon / steps`, decay 1.0;
    `cw_l2` 5 binary-search steps of 100 Adam iterations, learning rate 0.01,
    initial constant 0.01, confidence 0; `spsa` 20 iterations of 128 samples,
    delta 0.01, learning rate `max(0.01, 2.5 * epsilon / steps)` (Adam moves
    a pixel by about the learning rate per step), sized for subsets of a test set;
    `apgd_ce`/`apgd_t` 100 iterations from a first step of `2 * epsilon`, one
    restart, `apgd_t` towards 9 target classes; `square` 5,000 queries,
    `p_init` 0.8, one restart (AutoAttack's "standard" settings).

    Args:
        name: a registered attack (`ATTACK_NAMES`).
        epsilon: radius of the threat ball (`>= 0`).
        norm: optional; defaults to the attack's norm (see the module table).
        steps: optional number of iterations.
        step_size: optional step size; defaults to the rule above.
        precision: optional `"bfloat16"` search (see `AttackSpec`); None: float32.
        **overrides: attack-specific settings (fields of `AttackSpec`), e.g.
            `restarts=5` for PGD or `binary_search_steps=9` for CW.

    Raises:
        ValueError: unknown attack, unsupported norm, negative epsilon, or a
            setting that does not apply to the attack.
    """
    attack = ATTACKS.get(name)
    unknown = sorted(set(overrides) - set(attack.options))
    if unknown:
        raise ValueError(
            f"Unknown setting(s) {unknown} for attack {name!r}; "
            f"expected some of {sorted(attack.options)}"
        )
    epsilon = check_real(epsilon, "epsilon", minimum=0.0)
    steps = attack.steps if steps is None else check_integer(steps, "steps", minimum=1)
    if step_size is None and attack.step_size is not None:
        step_size = attack.step_size(epsilon, steps)
    options = attack.defaults(epsilon, steps)
    return AttackSpec(
        name=name,
        norm=attack.norms[0] if norm is None else norm,
        epsilon=epsilon,
        steps=steps,
        step_size=step_size,
        precision=precision,
        **{**options, **overrides},
    )



def check_real(value, name, *, minimum=None, strictly_positive=False):
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


def check_integer(value, name, *, minimum):
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
    value = check_integer(value, name, minimum=2)
    if value % 2:
        raise ValueError(f"{name} must be even (SPSA mirrors each sample), got {value}")
    return value


def _open_fraction(value, name):
    value = check_real(value, name)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
    return value


_OPTION_CHECKS = {
    "random_start": _boolean,
    "restarts": lambda v, n: check_integer(v, n, minimum=1),
    "decay_factor": lambda v, n: check_real(v, n, minimum=0.0),
    "confidence": lambda v, n: check_real(v, n, minimum=0.0),
    "learning_rate": lambda v, n: check_real(v, n, strictly_positive=True),
    "binary_search_steps": lambda v, n: check_integer(v, n, minimum=1),
    "initial_const": lambda v, n: check_real(v, n, strictly_positive=True),
    "spsa_samples": _even_samples,
    "spsa_delta": lambda v, n: check_real(v, n, strictly_positive=True),
    "target_classes": lambda v, n: check_integer(v, n, minimum=1),
    "p_init": _open_fraction,
}
