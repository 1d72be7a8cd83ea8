"""Training methods by name: what tools, experiment rows and zoo cards call a method.

| name            | model                                      | needs         |
|-----------------|--------------------------------------------|---------------|
| `simclr`        | `TARRLModel` with `weight=0` (plain SSL)   | -             |
| `tarrl`         | `TARRLModel` with a regularizer            | -             |
| `acl`           | `ACLModel`                                 | -             |
| `deacl`         | `DeACLModel`                               | `teacher`     |
| `supervised_at` | `SupervisedATModel` (trains on labels)     | `num_classes` |

Each model module registers its method(s) next to its class; adding a
method is a new model class plus one `register(TrainingMethod(...))`.

Example:
```python
from tarrl_tf import training

model = training.build("deacl", student, teacher=simclr_encoder,
                       epsilon=8 / 255, norm="inf", steps=5, seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(unlabeled_images, epochs=10)
model.encoder.save("deacl_encoder.keras")  # Then a plain linear probe, as for TARRL.
```
"""

import dataclasses
from typing import Callable

from tarrl_tf.registry import Registry

METHODS = Registry("training method")

# What each extra argument of `build` is, for the message when it is missing.
_NEEDS = {
    "teacher": "a teacher: a frozen encoder pretrained with plain SSL",
    "num_classes": "num_classes (it trains a linear head on labels)",
}


@dataclasses.dataclass(frozen=True)
class TrainingMethod:
    """One way of training an encoder.

    Attributes:
        name: the method's name in tools, experiment rows and model cards.
        make: `make(encoder, *, epsilon, norm, steps, seed, **needs_and_options)`
            returns the uncompiled training model.
        baseline: a method TARRL is compared against (`BASELINES`).
        needs: the extra arguments of `build` it requires (`"teacher"`,
            `"num_classes"`); no other method accepts them.
        labeled: trains on `(images, labels)` rather than images alone.
    """

    name: str
    make: Callable
    baseline: bool = True
    needs: tuple = ()
    labeled: bool = False


def register(method):
    """Adds a `TrainingMethod` to `METHODS`; returns it."""
    return METHODS.register(method.name, method)


def baselines():
    """Names of the registered baselines, in registration order."""
    return tuple(name for name, method in METHODS.items() if method.baseline)


def build(name, encoder, *, epsilon, norm, steps, teacher=None, num_classes=None, seed=None,
          **kwargs):
    """Builds the training model of method `name` around `encoder` (uncompiled).

    Args:
        name: a registered method (`METHODS.names()`).
        encoder: the encoder to train (DeACL's student).
        epsilon: radius of the training threat model.
        norm: `"inf"` or `2`.
        steps: PGD steps of the inner maximization (TARRL: of its estimator).
        teacher: DeACL's frozen SSL-trained encoder; only for `"deacl"`.
        num_classes: number of label classes; only for `"supervised_at"`.
        seed: seed of the model's randomness.
        **kwargs: further arguments of the model (e.g. `adversarial_weight`,
            `weight`, `step_size`, `augmentation`; TARRL's `estimator` and
            `divergence`).

    Raises:
        ValueError: an unknown name, a missing `teacher` or `num_classes`, or
            one given to a method that does not use it.
    """
    method = METHODS.get(name)
    given = {"teacher": teacher, "num_classes": num_classes}
    for argument, value in given.items():
        if argument in method.needs and value is None:
            raise ValueError(f"{name} needs {_NEEDS[argument]}")
        if argument not in method.needs and value is not None:
            owners = [n for n, m in METHODS.items() if argument in m.needs]
            raise ValueError(f"{name} takes no {argument} (only {' and '.join(owners)} does)")
    needs = {argument: given[argument] for argument in method.needs}
    return method.make(encoder, epsilon=epsilon, norm=norm, steps=steps, seed=seed, **needs, **kwargs)


def build_baseline(name, encoder, **kwargs):
    """`build` restricted to the baselines (`baselines()`): what `tarrl_tf.baselines.build` was."""
    if name not in baselines():
        raise ValueError(f"Unknown baseline {name!r}; expected one of {sorted(baselines())}")
    return build(name, encoder, **kwargs)
