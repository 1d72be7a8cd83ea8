"""The skeleton of every training model, and the threat model of the adversarial baselines.

`TrainingModel` is written once for `TARRLModel` and the baselines: the
encoder check, input checks reported as ValueError, `build`, metrics by name,
the warm-up ramp and `from_config`. `BaselineModel` adds the threat model
`B(x) = {x' : ||x' - x||_p <= eps, 0 <= x' <= 1}` and one way to search it:
`tarrl_tf.robustness.search.projected_gradient_ascent` on the model's own
objective. The baselines differ only in that objective and in what they train.
"""

import contextlib
import numbers

import keras
import tensorflow as tf

from tarrl_tf.checks import canonical_norm, graph_errors_as_value_errors
from tarrl_tf.encoders import image_input_shape
from tarrl_tf.robustness.search import madry_step_size, projected_gradient_ascent
from tarrl_tf.training.checkpoints import finite_gradients, stopped_at_non_finite
from tarrl_tf.precision import check_mixed_precision, mixed_precision


def check_model(model, name):
    """Raises a ValueError naming `name` unless `model` is a Keras layer or model."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"{name} must be a keras.Model or keras.layers.Layer, got {type(model)}")
    return model


def unrecorded(tape):
    """`tape.stop_recording()`, or nothing to stop without a tape (in evaluation).

    The search for worst-case inputs is never differentiated: only the passes
    over the inputs it found are.
    """
    return contextlib.nullcontext() if tape is None else tape.stop_recording()


def checked_reference(keep_weight, reference, encoder):
    """`(keep_weight, reference)` checked: a frozen copy of the encoder to keep near, or none."""
    if not keep_weight >= 0:
        raise ValueError(f"keep_weight must be >= 0, got {keep_weight}")
    if keep_weight > 0 and reference is None:
        raise ValueError("keep_weight > 0 needs a reference: the frozen encoder to keep near, "
                         "e.g. a copy of the one the encoder started from")
    if keep_weight == 0 and reference is not None:
        raise ValueError("reference is only used with keep_weight > 0")
    if reference is not None:
        check_model(reference, "reference")
        if reference is encoder:
            raise ValueError("reference must be a copy of the encoder, not the encoder itself "
                             "(it stays frozen)")
        reference.trainable = False
    return float(keep_weight), reference


def check_warmup_steps(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


class TrainingModel(keras.Model):
    """Base class: a model that trains an encoder with a custom `train_step`.

    Subclasses set `metric_names` (each gets a `keras.metrics.Mean` at
    `<name>_tracker`), `nested_models` (the attributes holding Keras models,
    serialized by `get_config` and rebuilt by `from_config`), `serialized_parts`
    (other Keras objects `get_config` serializes), and implement `build_parts` for what they own
    besides those models (projector, head, augmentation). They call
    `self.build_from(encoder)` at the end of `__init__`.

    `fit` and `evaluate` re-raise a failed in-graph input check
    (`tarrl_tf.checks.checked_images`) as a ValueError. With
    `mixed_precision="bfloat16"` they run the networks of `precision_networks`
    in bfloat16 (`tarrl_tf.precision`); all else stays float32.
    """

    metric_names = ()
    nested_models = ("encoder",)
    # Other attributes `get_config` serializes (the constructors accept their configs).
    serialized_parts = ()
    # The data are `(images, indices)` (`data.pretraining_dataset(..., with_indices=True)`).
    takes_indices = False
    # Config values for settings that configs saved by an earlier version lack.
    config_defaults = {}

    def __init__(self, mixed_precision=None, **kwargs):
        super().__init__(**kwargs)
        self.mixed_precision = check_mixed_precision(mixed_precision)
        for name in self.metric_names:
            setattr(self, f"{name}_tracker", keras.metrics.Mean(name=name))

    def fit(self, *args, **kwargs):
        self.build_optimizer()
        with graph_errors_as_value_errors(), stopped_at_non_finite(kwargs.get("callbacks")), \
                self.precision():
            return super().fit(*args, **kwargs)

    def build_optimizer(self):
        """Creates the optimizer's variables now, if it has none yet.

        Created in the first train step instead, they make `tf.function` trace
        that step twice (variables may only be created on a first trace). A
        model not built yet (an encoder of unknown input shape) creates its
        own variables in that step, so its optimizer waits for them.
        """
        if self.built and self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def evaluate(self, *args, **kwargs):
        with graph_errors_as_value_errors(), self.precision():
            return super().evaluate(*args, **kwargs)

    @property
    def unsaved_variables(self):
        """State outside the layers that a resumed run needs: an estimator's memory.

        `checkpoints.AtomicBackupAndRestore` backs it up with the random
        generators' states, which `save_weights` leaves out too.
        """
        return list(getattr(getattr(self, "regularizer", None), "variables", ()))

    def precision(self):
        """The block runs `precision_networks` in `mixed_precision` (nothing without one)."""
        return mixed_precision(self.precision_networks(), self.mixed_precision)

    def precision_networks(self):
        """The networks that compute in `mixed_precision`: the encoder and what it feeds."""
        return [self.encoder]

    def build_from(self, encoder):
        """Builds the model now if `encoder` has a known image input shape."""
        input_shape = image_input_shape(encoder)
        if input_shape is not None:
            self.build(input_shape)

    def build(self, input_shape):
        for name in self.nested_models:
            model = getattr(self, name)
            if model is not None and not model.built:  # None: an optional model left out
                model.build(input_shape)
        self.build_parts(input_shape)
        self.built = True

    def build_parts(self, input_shape):
        """Builds what the model owns besides `nested_models`."""

    def call(self, images, training=None):
        return self.encoder(images, training=training)

    @property
    def metrics(self):
        return [getattr(self, f"{name}_tracker") for name in self.metric_names]

    def record(self, **values):
        """Updates the named metrics with `values`; returns their results (the step's logs)."""
        for name, value in values.items():
            getattr(self, f"{name}_tracker").update_state(value)
        logs = {name: getattr(self, f"{name}_tracker").result() for name in values}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras (3.15) reduces multi-worker logs with `strategy.reduce(MEAN, v, axis=0)`,
            # which fails on scalars: one value per replica along axis 0 instead.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def apply_gradients(self, tape, loss, **terms):
        """One optimizer step on `loss`, this replica's part of the global batch's loss.

        Under `tf.distribute` the optimizer sums the replicas' gradients, and
        each replica's loss is a mean over its shard (or, for losses on the
        gathered global batch, the global value), so each counts 1/replicas,
        as Keras does for compiled losses: the sum is the one-device gradient.

        The loss, its named `terms` (as logged: `robustness` is R) and the
        gradients are checked finite in the graph first: a NaN stops
        training at its step, naming the term, before it reaches the weights.
        """
        # Read before the optimizer counts this step (even one its checks stop).
        step = self.optimizer.iterations + 1
        gradients = tape.gradient(loss, self.trainable_variables)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            gradients = [g if g is None else g / replicas for g in gradients]
        gradients = finite_gradients(gradients, self.trainable_variables, loss, step=step, **terms)
        self.optimizer.apply(gradients, self.trainable_variables)

    def ramp(self, warmup_steps):
        """Grows linearly from `1 / warmup_steps` to 1 over the first optimizer steps."""
        if warmup_steps == 0 or self.optimizer is None:
            return 1.0
        step = tf.cast(self.optimizer.iterations + 1, "float32")
        return tf.minimum(1.0, step / warmup_steps)

    def get_config(self):
        config = super().get_config()
        config["mixed_precision"] = self.mixed_precision
        for name in self.nested_models + self.serialized_parts:
            value = getattr(self, name)
            config[name] = None if value is None else keras.saving.serialize_keras_object(value)
        return config

    @classmethod
    def from_config(cls, config):
        # Settings whose default changed: a config saved before keeps the old behaviour.
        config = {**cls.config_defaults, **config}
        for name in cls.nested_models:
            if name in config:  # configs saved before an optional model existed lack it
                config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)


class BaselineModel(TrainingModel):
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
            (`tarrl_tf.robustness.search.madry_step_size`, also used by
            `regularizers.PGD`).
        seed: seed of the random starts (and of the views, in subclasses).
        epsilon_warmup_steps: optimizer steps over which the radius grows
            linearly to `epsilon` (as `TARRLModel`'s warm-up). Adversarial
            contrastive learning at a large radius from a random start can
            collapse to a constant representation, which no perturbation moves.
    """

    def __init__(self, *, epsilon, norm="inf", steps=5, step_size=None, seed=None,
                 epsilon_warmup_steps=0, **kwargs):
        super().__init__(**kwargs)
        self.epsilon_warmup_steps = check_warmup_steps(epsilon_warmup_steps, "epsilon_warmup_steps")
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

    def _search(self, objective, x, epsilon=None):
        """PGD on `objective` (a sum over examples) from a random start in the ball."""
        if epsilon is None:
            epsilon = self.epsilon * self.ramp(self.epsilon_warmup_steps)
        radius = tf.cast(epsilon, x.dtype)
        step_size = (madry_step_size(radius, self.steps) if self.step_size is None
                     else tf.cast(self.step_size, x.dtype))
        return projected_gradient_ascent(
            objective, x, epsilon=radius, norm=self.norm, steps=self.steps, step_size=step_size,
            random_start=True, clip_min=0.0, clip_max=1.0, seed=self.seed_generator,
        )

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, norm=self.norm, steps=self.steps,
                      step_size=self.step_size, seed=self.seed,
                      epsilon_warmup_steps=self.epsilon_warmup_steps)
        return config
