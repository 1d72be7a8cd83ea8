"""Estimators of the robustness regularizer `R(f) = E_x max_{x' in B(x)} d(f(x), f(x'))`.

Each estimator finds a worst-case `x'` for a batch (`perturb`) with gradients
taken by `tf.GradientTape` with respect to the input, then holds it fixed, so
`R` is differentiated with respect to the encoder's weights only through
`f(x)` and `f(x')`. The threat model is `B(x) = {x' : ||x' - x||_p <= eps,
clip_min <= x' <= clip_max}`.

All passes over perturbed inputs run the encoder with `training=False`: `R`
is measured on the function that downstream heads and attackers see, and
BatchNorm moving statistics are never updated from perturbed inputs.

Adding an estimator: a `Regularizer` subclass implementing `perturb`, made
serializable and registered in `ESTIMATORS` (set `steps_argument` if it has
a number of steps); `tools/pretrain.py --estimator` and the experiments rows
find it by name.
"""

import keras
import tensorflow as tf

from tarrl_tf import replicas
from tarrl_tf.checks import canonical_norm, checked_images
from tarrl_tf.registry import Registry
from tarrl_tf.robustness import divergences
from tarrl_tf.robustness.search import madry_step_size, project, projected_gradient_ascent, unit
# Public here in 0.1.0, before the search had its own module.
from tarrl_tf.robustness.search import ascent_direction, random_in_ball  # noqa: F401, E402

ESTIMATORS = Registry("estimator")


class Regularizer:
    """Base class: the threat model, the divergence and the value of `R` on a batch.

    Subclasses implement `perturb`. Calling the regularizer returns `R`
    estimated on the batch, differentiable with respect to the encoder's
    weights.

    Args:
        epsilon: radius of the ball, in input units (images in [0, 1]).
        norm: `"inf"` (L-infinity) or `2` (L2).
        divergence: `"squared_l2"`, `"kl"`, or a divergence object
            (`tarrl_tf.divergences`).
        clip_min: lowest valid input value.
        clip_max: highest valid input value.
    """

    # The constructor argument that `build(..., steps=n)` sets (None: the estimator has no steps).
    steps_argument = None
    # Estimators that remember something per image take each image's index (`perturb(indices=)`)
    # and the number of images (`num_examples=`).
    needs_indices = False
    # State kept from step to step (tf.Variables), backed up with a training run.
    variables = ()

    def __init__(self, epsilon, *, norm="inf", divergence="squared_l2", clip_min=0.0, clip_max=1.0):
        if not 0 <= float(epsilon) < float("inf"):
            raise ValueError(f"epsilon must be finite and >= 0, got {epsilon}")
        if not clip_min < clip_max:
            raise ValueError(f"clip_min must be < clip_max, got {clip_min} and {clip_max}")
        self.epsilon = float(epsilon)
        self.norm = canonical_norm(norm)
        self.divergence = divergences.get(divergence)
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)

    def perturb(self, encoder, x, *, anchor, epsilon=None, seed=None):
        """Returns the worst-case inputs found for `x` (no gradient flows through them).

        Args:
            encoder: the model `f`.
            x: float images `[batch, H, W, C]` in `[clip_min, clip_max]`.
            anchor: `f(x)`; held fixed during the search.
            epsilon: overrides the radius (a float or scalar tensor; used by
                warm-up schedules without retracing).
            seed: an int or a `keras.random.SeedGenerator`.
        """
        raise NotImplementedError

    def __call__(self, encoder, x, *, anchor=None, epsilon=None, seed=None):
        """`R` on the batch: the mean of `d(f(x), f(x'))` at the worst-case `x'`."""
        x = checked_images(x, clip_min=self.clip_min, clip_max=self.clip_max)
        if anchor is None:
            anchor = encoder(x, training=False)
        x_adv = self.perturb(encoder, x, anchor=tf.stop_gradient(anchor), epsilon=epsilon, seed=seed)
        return tf.reduce_mean(self.divergence(anchor, encoder(x_adv, training=False)))

    def _radius(self, epsilon, dtype):
        return tf.cast(self.epsilon if epsilon is None else epsilon, dtype)

    def _divergence_sum(self, encoder, anchor, x):
        # A sum, not a mean: each example's input gradient must not shrink with the batch size.
        return tf.reduce_sum(self.divergence(anchor, encoder(x, training=False)))

    def get_config(self):
        return {
            "epsilon": self.epsilon,
            "norm": self.norm,
            "divergence": keras.saving.serialize_keras_object(self.divergence),
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "divergence")
        return f"{type(self).__name__}({args}, divergence={self.divergence.name!r})"


@ESTIMATORS.register("pgd")
@keras.saving.register_keras_serializable(package="tarrl_tf")
class PGD(Regularizer):
    """Projected gradient ascent on `d(f(x), f(x'))` from a random start (Madry et al.).

    Signed-gradient steps for L-inf, normalized-gradient steps for L2, by
    `projected_gradient_ascent` on the summed divergence.

    Args:
        epsilon: radius of the ball.
        norm: `"inf"` or `2`.
        steps: number of ascent steps.
        step_size: size of each step; defaults to `2.5 * epsilon / steps`,
            which follows `epsilon` during a warm-up.
        random_start: start from a random point of the ball. Needed for
            most divergences, whose gradient vanishes at `x' = x`.
        divergence, clip_min, clip_max: see `Regularizer`.

    Example:
    ```python
    regularizer = tarrl_tf.regularizers.PGD(epsilon=0.3, norm="inf", steps=5)
    r = regularizer(encoder, images)  # scalar, differentiable w.r.t. encoder weights
    ```
    """

    steps_argument = "steps"

    def __init__(self, epsilon, *, norm="inf", steps=5, step_size=None, random_start=True, **kwargs):
        super().__init__(epsilon, norm=norm, **kwargs)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        self.steps = steps
        self.step_size = None if step_size is None else float(step_size)
        self.random_start = bool(random_start)

    def _step_size(self, radius):
        if self.step_size is None:
            return madry_step_size(radius, self.steps)
        return tf.cast(self.step_size, radius.dtype)

    def perturb(self, encoder, x, *, anchor, epsilon=None, seed=None):
        x = tf.convert_to_tensor(x)
        radius = self._radius(epsilon, x.dtype)
        return projected_gradient_ascent(
            lambda x_adv: self._divergence_sum(encoder, anchor, x_adv), x,
            epsilon=radius, norm=self.norm, steps=self.steps, step_size=self._step_size(radius),
            random_start=self.random_start, clip_min=self.clip_min, clip_max=self.clip_max,
            seed=seed,
        )

    def get_config(self):
        config = super().get_config()
        config.update(steps=self.steps, step_size=self.step_size, random_start=self.random_start)
        return config


@ESTIMATORS.register("fgsm")
@keras.saving.register_keras_serializable(package="tarrl_tf")
class FGSM(PGD):
    """One signed-gradient step from a random start ("fast" adversarial training).

    The cheapest estimator: one input-gradient pass. The default step size
    `1.25 * epsilon` follows Wong et al. (2020); like any one-step method it
    can overfit to its own attack ("catastrophic overfitting"), so check it
    against PGD.

    Args:
        epsilon: radius of the ball.
        norm: `"inf"` or `2`.
        step_size: defaults to `1.25 * epsilon`.
        divergence, clip_min, clip_max: see `Regularizer`.
    """

    steps_argument = None

    def __init__(self, epsilon, *, norm="inf", step_size=None, **kwargs):
        kwargs.pop("steps", None)  # Fixed at one; present in configs written by `PGD.get_config`.
        kwargs.pop("random_start", None)
        super().__init__(epsilon, norm=norm, steps=1, step_size=step_size, random_start=True, **kwargs)

    def _step_size(self, radius):
        if self.step_size is None:
            return 1.25 * radius
        return tf.cast(self.step_size, radius.dtype)


@ESTIMATORS.register("power_iteration")
@keras.saving.register_keras_serializable(package="tarrl_tf")
class PowerIteration(Regularizer):
    """Linearized estimator: the top right-singular direction of the encoder's Jacobian.

    For small perturbations `d(f(x), f(x + r)) ~ 1/2 r^T H r` with `H`
    positive semi-definite (`J^T J` for the squared distance), so the worst
    L2 direction is `H`'s top eigenvector. Power iteration finds it with
    finite-difference Hessian-vector products, as in virtual adversarial
    training (Miyato et al. 2018). The direction is scaled to the ball: `eps * u`
    for L2, `eps * sign(u)` for L-inf (a heuristic there, as the L-inf maximizer
    of a quadratic form is not in closed form).

    Args:
        epsilon: radius of the ball.
        norm: `2` (natural for this estimator) or `"inf"`.
        iterations: power-iteration steps.
        xi: finite-difference step used to probe the Jacobian. The probe
            points are not clipped: they only measure the local slope.
        divergence, clip_min, clip_max: see `Regularizer`.

    Reference:
        Miyato et al., "Virtual Adversarial Training", TPAMI 2018.
    """

    steps_argument = "iterations"

    def __init__(self, epsilon, *, norm="2", iterations=1, xi=1e-3, **kwargs):
        super().__init__(epsilon, norm=norm, **kwargs)
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive int, got {iterations!r}")
        if not xi > 0:
            raise ValueError(f"xi must be > 0, got {xi}")
        self.iterations = iterations
        self.xi = float(xi)

    def perturb(self, encoder, x, *, anchor, epsilon=None, seed=None):
        x = tf.convert_to_tensor(x)
        radius = self._radius(epsilon, x.dtype)
        direction = unit(replicas.draw(lambda shape: keras.random.normal(
            shape, dtype=x.dtype, seed=seed), tf.shape(x)))

        def iterate(i, direction):
            with tf.GradientTape() as tape:
                tape.watch(direction)
                value = self._divergence_sum(encoder, anchor, x + self.xi * direction)
            return i + 1, unit(tape.gradient(value, direction))

        with replicas.local():  # per replica, as every search (see `search.py`)
            _, direction = tf.while_loop(
                lambda i, _: i < self.iterations, iterate, [tf.constant(0), direction]
            )
        step = direction if self.norm == "2" else tf.sign(direction)
        x_adv = project(x + radius * step, x, radius, self.norm, self.clip_min, self.clip_max)
        return tf.stop_gradient(x_adv)

    def get_config(self):
        config = super().get_config()
        config.update(iterations=self.iterations, xi=self.xi)
        return config


def build(estimator, *, epsilon, norm="inf", steps=5, divergence="squared_l2", num_examples=None):
    """An estimator by name (one of `ESTIMATORS`).

    `steps` is its PGD steps or power iterations; `num_examples`, the number
    of training images, goes to the estimators that remember each image.
    """
    cls = ESTIMATORS.get(estimator)
    options = {cls.steps_argument: steps} if cls.steps_argument else {}
    if cls.needs_indices:
        if num_examples is None:
            raise ValueError(f"estimator {estimator!r} remembers each image: pass num_examples")
        options["num_examples"] = num_examples
    return cls(epsilon, norm=norm, divergence=divergence, **options)


def get(regularizer):
    """Passes a regularizer through, or rebuilds one from its serialized config."""
    if regularizer is None or isinstance(regularizer, Regularizer):
        return regularizer
    if isinstance(regularizer, dict):
        return keras.saving.deserialize_keras_object(regularizer)
    classes = ", ".join(cls.__name__ for _, cls in ESTIMATORS.items())
    raise ValueError(
        f"regularizer must be a tarrl_tf.regularizers object ({classes}) or None, got {regularizer!r}"
    )
