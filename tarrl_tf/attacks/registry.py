"""One record per attack: its name, norms, defaults, settings and the runner that crafts with it.

Adding an attack is one `register(Attack(...))` next to its runner (see
`cleverhans_attacks.py`); `AttackSpec`, `make_attack`, `run_attack`, the
tools' `--attacks` flag and the evaluation read everything from here.
"""

import dataclasses
from typing import Callable

from tarrl_tf.registry import Registry

ATTACKS = Registry("attack")


@dataclasses.dataclass(frozen=True)
class Attack:
    """What the package knows about one attack.

    Attributes:
        name: the public name (`tools/evaluate.py --attacks=`, report rows, cards).
        norms: the norms it supports (`"inf"`, `"2"`); the first is its default.
        steps: default number of iterations.
        build: `build(spec, model_fn, *, image_shape, num_classes, clip_min,
            clip_max, rng)` returns `craft(x, y) -> x_adv` for one batch; `rng`
            is a `tf.random.Generator` for its random draws.
        step_size: `step_size(epsilon, steps)`, the default input-space step;
            None for attacks without one (Adam, random search).
        step_size_limit: the largest step, as a multiple of epsilon (APGD
            starts at 2 epsilon and halves its step as it goes).
        options: the attack's own settings (fields of `AttackSpec`) with their
            defaults; every other optional field must stay None.
        scaled_options: optional `scaled_options(epsilon, steps)`, defaults
            that depend on the radius (they override `options`).
        traced: run `craft` under one `tf.function` (False: eagerly, batch by batch).
        seeded_in_trace: `craft` draws from TF's global random ops
            (`tf.random.uniform`, `tf.random.normal`, as CleverHans' SPSA
            does), not from `rng`: it is traced with those ops drawing from
            `rng` instead (`compat.random_ops_from`), so its draws are reset
            from each batch's seed like the others' (see `compiled.py`).
        costly: too slow for a whole test set on a CPU; the evaluation's
            `subset_examples` runs it on the first examples only.
        precisions: lower precisions its search may run in (`AttackSpec.precision`);
            `build` then also gets `check_fn`, the float32 classifier, which
            alone decides whether an image is misclassified.
    """

    name: str
    norms: tuple
    steps: int
    build: Callable
    step_size: Callable = None
    step_size_limit: float = 1.0
    options: dict = dataclasses.field(default_factory=dict)
    scaled_options: Callable = None
    traced: bool = True
    seeded_in_trace: bool = False
    costly: bool = False
    precisions: tuple = ()

    def defaults(self, epsilon, steps):
        """The option defaults at this radius and number of steps."""
        options = dict(self.options)
        if self.scaled_options is not None:
            options.update(self.scaled_options(epsilon, steps))
        return options


def register(attack):
    """Adds an `Attack` record to `ATTACKS`; returns it."""
    return ATTACKS.register(attack.name, attack)
