"""The robust baselines TARRL is compared against, and a registry that builds them by name.

| name            | class                                            | needs         |
|-----------------|--------------------------------------------------|---------------|
| `acl`           | `tarrl_tf.acl_model.ACLModel`                    | -             |
| `deacl`         | `tarrl_tf.deacl_model.DeACLModel`                | `teacher`     |
| `supervised_at` | `tarrl_tf.supervised_at_model.SupervisedATModel` | `num_classes` |

All of them share `BaselineModel`: the threat model `B(x) = {x' : ||x' - x||_p <= eps,
0 <= x' <= 1}`, the input checks of `TARRLModel`, and one way to search the
ball: `tarrl_tf.regularizers.projected_gradient_ascent` on the model's own
objective. They differ only in that objective and in what they train.

Example:
```python
from tarrl_tf import baselines

model = baselines.build("deacl", student, teacher=simclr_encoder,
                        epsilon=8 / 255, norm="inf", steps=5, seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(unlabeled_images, epochs=10)
model.encoder.save("deacl_encoder.keras")  # Then a plain linear probe, as for TARRL.
```
"""

import numbers

import keras
import tensorflow as tf

from tarrl_tf import regularizers
from tarrl_tf.checks import InputCheckedModel, canonical_norm, check_choice

BASELINES = ("acl", "deacl", "supervised_at")


class BaselineModel(InputCheckedModel):
    """Base class of the baselines: the threat model, input checks and the PGD search.

    Subclasses set `self.encoder` (the model whose representation is
    evaluated downstream) and implement `train_step`, `test_step`, `objective`
    and `craft`. `craft` returns `argmax_{x' in B(x)} objective(x', ...)` as
    found by `projected_gradient_ascent` from a random start.

    Args:
        epsilon: radius of the ball, in input units (images in [0, 1]).
        norm: `"inf"` or `2`.
        steps: PGD steps per search.
        step_size: size of each step; defaults to `2.5 * epsilon / steps`
            (Madry et al.'s rule, also used by `regularizers.PGD`).
        seed: seed of the random starts (and of the views, in subclasses).
        epsilon_warmup_steps: optimizer steps over which the radius grows
            linearly to `epsilon` (as `TARRLModel`'s warm-up). Adversarial
            contrastive learning at a large radius from a random start can
            collapse to a constant representation, which no perturbation moves.
    """

    def __init__(self, *, epsilon, norm="inf", steps=5, step_size=None, seed=None,
                 epsilon_warmup_steps=0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(epsilon_warmup_steps, int) or epsilon_warmup_steps < 0:
            raise ValueError(
                f"epsilon_warmup_steps must be a non-negative int, got {epsilon_warmup_steps!r}")
        self.epsilon_warmup_steps = epsilon_warmup_steps
        if not isinstance(epsilon, numbers.Real) or isinstance(epsilon, bool) or not epsilon >= 0:
            raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        self.epsilon = float(epsilon)
        self.norm = canonical_norm(norm)
        self.steps = steps
        self.step_size = None if step_size is None else float(step_size)
        self.seed = seed
        # Offset from the views' seed, as in TARRLModel, so starts and views are not correlated.
        self.seed_generator = keras.random.SeedGenerator(None if seed is None else seed + 1)

    def call(self, images, training=None):
        return self.encoder(images, training=training)

    def _search(self, objective, x, epsilon=None):
        """PGD on `objective` (a sum over examples) from a random start in the ball."""
        if epsilon is None:
            epsilon = self.epsilon
            if self.epsilon_warmup_steps and self.optimizer is not None:
                step = tf.cast(self.optimizer.iterations + 1, "float32")
                epsilon *= tf.minimum(1.0, step / self.epsilon_warmup_steps)
        radius = tf.cast(epsilon, x.dtype)
        step_size = (2.5 * radius / self.steps if self.step_size is None
                     else tf.cast(self.step_size, x.dtype))
        return regularizers.projected_gradient_ascent(
            objective, x, epsilon=radius, norm=self.norm, steps=self.steps, step_size=step_size,
            random_start=True, clip_min=0.0, clip_max=1.0, seed=self.seed_generator,
        )

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, norm=self.norm, steps=self.steps,
                      step_size=self.step_size, seed=self.seed,
                      epsilon_warmup_steps=self.epsilon_warmup_steps)
        return config


def build(name, encoder, *, epsilon, norm, steps, teacher=None, num_classes=None, seed=None,
          **kwargs):
    """Builds the baseline `name` around `encoder` (uncompiled).

    Args:
        name: `"acl"`, `"deacl"` or `"supervised_at"`.
        encoder: the encoder to train (DeACL's student).
        epsilon: radius of the training threat model.
        norm: `"inf"` or `2`.
        steps: PGD steps of the inner maximization.
        teacher: DeACL's frozen SSL-trained encoder; only for `"deacl"`.
        num_classes: number of label classes; only for `"supervised_at"`.
        seed: seed of the model's randomness.
        **kwargs: further arguments of the model class (e.g. `method`,
            `adversarial_weight`, `weight`, `step_size`, `augmentation`).

    Raises:
        ValueError: an unknown name, a missing `teacher` or `num_classes`, or
            one given to a baseline that does not use it.
    """
    name = check_choice(name, BASELINES, name="baseline")
    if name == "deacl" and teacher is None:
        raise ValueError("deacl needs a teacher: a frozen encoder pretrained with plain SSL")
    if name != "deacl" and teacher is not None:
        raise ValueError(f"{name} takes no teacher (only deacl does)")
    if name == "supervised_at" and num_classes is None:
        raise ValueError("supervised_at needs num_classes (it trains a linear head on labels)")
    if name != "supervised_at" and num_classes is not None:
        raise ValueError(f"{name} takes no num_classes (only supervised_at does)")
    model_class = _classes()[name]
    threat = dict(epsilon=epsilon, norm=norm, steps=steps, seed=seed, **kwargs)
    if name == "deacl":
        return model_class(encoder, teacher, **threat)
    if name == "supervised_at":
        return model_class(encoder, num_classes, **threat)
    return model_class(encoder, **threat)


def _classes():
    # Imported here because the model modules import `BaselineModel` from this one.
    from tarrl_tf.acl_model import ACLModel
    from tarrl_tf.deacl_model import DeACLModel
    from tarrl_tf.supervised_at_model import SupervisedATModel

    return {"acl": ACLModel, "deacl": DeACLModel, "supervised_at": SupervisedATModel}
