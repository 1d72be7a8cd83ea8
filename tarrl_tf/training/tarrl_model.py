"""`TARRLModel`: self-supervised pretraining plus the task-agnostic robustness regularizer."""

import keras
import tensorflow as tf

from tarrl_tf.checks import check_choice, checked_images
from tarrl_tf.encoders import image_input_shape
from tarrl_tf.robustness import regularizers
from tarrl_tf.robustness.divergences import cosine_distance
from tarrl_tf.robustness.batchnorm import (batch_statistics_pass, behaves_same_in_training,
                                           resolve_batch_statistics)
from tarrl_tf.ssl import augment, methods
from tarrl_tf.training.base import (TrainingModel, check_model, check_warmup_steps,
                                    checked_reference)
from tarrl_tf.training.registry import TrainingMethod, register

REGULARIZE_ON = ("images", "views")
REGULARIZE_OUTPUTS = ("encoder", "projector")


@keras.saving.register_keras_serializable(package="tarrl_tf")
class TARRLModel(TrainingModel):
    """Pretrains any encoder with `ssl_loss + weight * R(encoder)`.

    Each step draws two views of the batch, computes the method's loss on
    them, and adds `weight` times the robustness regularizer
    `R = mean_x max_{x' in B(x)} d(f(x), f(x'))`, estimated by default on the
    batch's images as they are. `R` needs no labels and bounds the adversarial
    loss of any head built on the encoder (see docs/method.md); `weight=0` is
    exactly plain SSL.

    The search for `x'` runs the encoder with `training=False`, aiming at the
    function that downstream models use. The differentiated passes of `R`
    do too, unless the encoder has BatchNormalization: then `f(x)` and
    `f(x')` take one training-mode pass together and the moving statistics
    are restored after it (`robustness.batchnorm.batch_statistics_pass`);
    through inference mode the gradient takes the moving statistics as
    constants though training moves them, which broke CIFAR-10 training
    down (RESULTS.md). The anchor `f(x)` takes one extra pass, except when
    `R` is estimated on the first view of an encoder without
    training-dependent layers, which shares the views' pass.

    Metrics: `loss`, `ssl_loss`, and `robustness` (the value of `R`; in
    training only when `weight > 0`, as it is differentiated; in evaluation
    whenever a regularizer is set, in inference mode, on the unaugmented
    inputs and at the full epsilon).

    Args:
        encoder: any `keras.Model` (or layer) mapping float images
            `[batch, H, W, C]` in `[clip_min, clip_max]` to features.
        method: `"simclr"`, `"barlow_twins"` or a `tarrl_tf.methods.Method`.
        regularizer: a `tarrl_tf.regularizers` estimator, or None for plain SSL.
        weight: the regularizer's weight (>= 0).
        augmentation: a layer making random views; defaults to
            `ViewAugmentation.for_input_shape(encoder's input shape)`.
        epsilon_warmup_steps: steps over which epsilon grows linearly to its value.
        weight_warmup_steps: steps over which the weight grows linearly to its value.
        regularize_on: `"images"` (default) estimates `R` on the batch's
            images, as downstream models and attackers see them; `"views"` on
            the first augmented view. `R` is an expectation over the data: on
            views, color jitter moves the images (MNIST's background up to 0.3
            with the default views), and the ball around a brightened digit is
            a threat model no test image faces. On MNIST at eps 0.3, "images"
            gave higher PGD accuracy at the same clean accuracy (RESULTS.md).
        share_anchor: with `regularize_on="views"`, reuse the views' training
            pass as the anchor; None decides from the encoder's layers.
        batch_statistics: differentiate `R` through training-mode passes
            with the batch's statistics (above); None: when the encoder has
            BatchNormalization. False reproduces the inference-mode passes.
        regularized_fraction: fraction of each batch on which `R` is
            estimated in training. `R` is a mean over inputs, so a part of
            the batch estimates it without bias at a proportionally lower
            cost (see benchmarks/step_time.py).
        shared_statistics: with `batch_statistics`, the views, `x` and `x'`
            take ONE training-mode pass whose statistics also become the moving
            ones, so SSL and `R` train the function inference runs; None (the
            default): whenever `batch_statistics` is on. With separate passes
            (False) the zoo's CIFAR-10 ResNet kept, in inference mode, a
            worst-case shift 30 to 90 times that of the mode `R` saw, and lost
            its robustness (RESULTS.md, "Natural images"). No extra pass (`x`
            is the first view with `regularize_on="views"`).
        detach_anchor: hold `f(x)` fixed in `R` (no gradient through it), so
            only the perturbed pass is differentiated: the encoder learns to
            keep `f(x')` near `f(x)`, not also to move `f(x)`. Cheaper by the
            anchor's backward pass.
        regularize_output: `"encoder"` (default) measures `R` on the
            encoder's features, the representation downstream heads use;
            `"projector"` on the SSL method's projection of them (the space
            its loss shapes; the projector is discarded after pretraining,
            so `R` there bounds no downstream head directly).
        keep_weight: weight of a term that keeps the encoder's features near
            those of `reference`, a frozen copy of the encoder it started
            from (`mean 1 - cos(f(v), f0(v))` on the first view; metric
            `keep_loss`): for a second stage started from a trained SSL
            encoder, so that R does not pull away what the first stage
            learned. 0 (default): no such term.
        reference: the frozen encoder of `keep_weight` (needed when it is
            > 0; never trained here).
        seed: seed for the views and the regularizer's random starts.
        mixed_precision: None (float32) or `"bfloat16"`: in `fit` and
            `evaluate` the encoder and the projector compute in bfloat16 (their
            output layers, the augmentation, losses, `R` and the metrics in
            float32; `tarrl_tf.precision`). Every `TrainingModel` takes it.

    Estimators that remember each image (`regularizers.PersistentPGD`) take
    the images' indices as the data's second element, `(images, indices)`,
    as `tarrl_tf.data.pretraining_dataset(..., with_indices=True)` yields them.

    Example:
    ```python
    encoder = tarrl_tf.encoders.small_cnn(input_shape=(28, 28, 1))
    model = tarrl_tf.TARRLModel(
        encoder, method="simclr",
        regularizer=tarrl_tf.regularizers.PGD(epsilon=0.3, norm="inf", steps=5),
        weight=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(unlabeled_images, epochs=2)
    model.encoder.save("encoder.keras")
    ```
    """

    metric_names = ("loss", "ssl_loss", "robustness", "keep_loss")
    nested_models = ("encoder", "reference")
    serialized_parts = ("method", "regularizer", "augmentation")
    # Saved before shared statistics became the default for BatchNorm encoders.
    config_defaults = {"shared_statistics": False}

    def __init__(
        self,
        encoder,
        method="simclr",
        regularizer=None,
        weight=1.0,
        augmentation=None,
        epsilon_warmup_steps=0,
        weight_warmup_steps=0,
        regularize_on="images",
        share_anchor=None,
        regularized_fraction=1.0,
        batch_statistics=None,
        shared_statistics=None,
        detach_anchor=False,
        regularize_output="encoder",
        keep_weight=0.0,
        reference=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_model(encoder, "encoder")
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        regularizer = regularizers.get(regularizer)
        if weight > 0 and regularizer is None:
            raise ValueError("weight > 0 needs a regularizer, e.g. tarrl_tf.regularizers.PGD(...)")
        if not 0 < regularized_fraction <= 1:
            raise ValueError(f"regularized_fraction must be in (0, 1], got {regularized_fraction}")
        check_warmup_steps(epsilon_warmup_steps, "epsilon_warmup_steps")
        check_warmup_steps(weight_warmup_steps, "weight_warmup_steps")
        self.regularize_on = check_choice(regularize_on, REGULARIZE_ON, name="regularize_on")
        self.regularize_output = check_choice(regularize_output, REGULARIZE_OUTPUTS,
                                              name="regularize_output")
        self.keep_weight, self.reference = checked_reference(keep_weight, reference, encoder)
        self.encoder = encoder
        self.method = methods.get(method)
        self.regularizer = regularizer
        if self.takes_indices and regularize_on == "views":
            raise ValueError(f"{type(regularizer).__name__} remembers each image's perturbation; "
                             "views differ at every visit, so use regularize_on='images'")
        self.weight = float(weight)
        self.epsilon_warmup_steps = epsilon_warmup_steps
        self.weight_warmup_steps = weight_warmup_steps
        self.seed = seed
        self.augmentation = augment.resolve(augmentation, image_input_shape(encoder), seed)
        if share_anchor is None:
            share_anchor = behaves_same_in_training(*self._regularized_networks())
        self.share_anchor = bool(share_anchor)
        self.regularized_fraction = float(regularized_fraction)
        self.batch_statistics = resolve_batch_statistics(batch_statistics,
                                                         *self._regularized_networks())
        if shared_statistics is None:
            shared_statistics = self.batch_statistics
        elif shared_statistics and not self.batch_statistics:
            raise ValueError("shared_statistics puts the views and R's pair in one BatchNorm "
                             "batch: it needs batch_statistics (an encoder with BatchNorm)")
        self.shared_statistics = bool(shared_statistics)
        self.detach_anchor = bool(detach_anchor)
        self.seed_generator = keras.random.SeedGenerator(None if seed is None else seed + 1)
        self.build_from(encoder)

    def build_parts(self, input_shape):
        if self.reference is not None:
            shapes = [tuple(model.compute_output_shape(input_shape)[1:])
                      for model in (self.encoder, self.reference)]
            if shapes[0] != shapes[1]:
                raise ValueError(f"reference must map images to the encoder's representation "
                                 f"shape {shapes[0]}, got {shapes[1]}")
        self.method.build(self.encoder.compute_output_shape(input_shape))
        self.augmentation.build(input_shape)
        if hasattr(self.regularizer, "build"):
            self.regularizer.build(input_shape)

    def precision_networks(self):
        reference = [] if self.reference is None else [self.reference]
        return [self.encoder] + self.method.networks() + reference

    @property
    def takes_indices(self):
        """The data are `(images, indices)`: the estimator remembers each image."""
        return getattr(self.regularizer, "needs_indices", False)

    @property
    def trains_regularizer(self):
        return self.regularizer is not None and self.weight > 0

    def _images(self, data):
        """The batch's images, checked, and their indices (None unless the estimator needs them)."""
        images, indices, _ = keras.utils.unpack_x_y_sample_weight(data)
        if self.regularizer is None:
            return checked_images(images), None
        if not self.takes_indices:
            indices = None
        elif indices is None:
            raise ValueError(
                f"{type(self.regularizer).__name__} needs each image's index: train on "
                "(images, indices), e.g. data.pretraining_dataset(images, ..., with_indices=True)")
        return checked_images(images, clip_min=self.regularizer.clip_min,
                              clip_max=self.regularizer.clip_max), indices

    def _ssl_loss(self, images, training):
        views = tf.concat(
            [self.augmentation(images, training=True), self.augmentation(images, training=True)], 0
        )
        # One encoder pass over both views: larger matmuls, BatchNorm sees both.
        features = self.encoder(views, training=training)
        z1, z2 = tf.split(self.method(features, training=training), 2)
        return self.method.loss(z1, z2), tf.split(views, 2)[0], tf.split(features, 2)[0], z1

    def regularized(self, x, training=False):
        """The output `R` is measured on: the encoder's features, or their projection."""
        features = self.encoder(x, training=training)
        if self.regularize_output == "projector":
            return self.method(features, training=training)
        return features

    def _regularized_networks(self):
        if self.regularize_output == "projector":
            return [self.encoder] + self.method.networks()
        return [self.encoder]

    def _regularized_part(self, *tensors):
        """The first `regularized_fraction` of each tensor's batch (None stays None)."""
        if self.regularized_fraction == 1:
            return tensors
        count = tf.cast(tf.math.ceil(
            self.regularized_fraction * tf.cast(tf.shape(tensors[0])[0], "float32")), "int32")
        return tuple(None if t is None else t[:count] for t in tensors)

    def _robustness(self, images, indices, view, view_features, tape, epsilon=None):
        x, anchor = images, None
        if self.regularize_on == "views":
            x, anchor = view, view_features if self.share_anchor else None
        x, anchor, indices = self._regularized_part(x, anchor, indices)
        if self.batch_statistics:
            return self._batch_statistics_robustness(x, indices, tape, epsilon)
        if anchor is None:
            anchor = self.regularized(x)
        with tape.stop_recording():
            x_adv = self._perturb(x, indices, anchor, epsilon)
        return self._divergence(anchor, self.regularized(x_adv))

    def _batch_statistics_robustness(self, x, indices, tape, epsilon):
        with tape.stop_recording():
            x_adv = self._perturb(x, indices, self.regularized(x), epsilon)
        anchor, perturbed = batch_statistics_pass(
            lambda z: self.regularized(z, training=True), x, x_adv, self._regularized_networks())
        return self._divergence(anchor, perturbed)

    def _divergence(self, anchor, perturbed):
        if self.detach_anchor:
            anchor = tf.stop_gradient(anchor)
        return tf.reduce_mean(self.regularizer.divergence(anchor, perturbed))

    def _perturb(self, x, indices, anchor, epsilon):
        extra = {} if indices is None else {"indices": indices}
        return self.regularizer.perturb(self.regularized, x, anchor=tf.stop_gradient(anchor),
                                        epsilon=epsilon, seed=self.seed_generator, **extra)

    def _shared_pass(self, images, indices, tape, epsilon):
        """`shared_statistics`: SSL and `R` from one training-mode pass over views, x and x'."""
        views = [self.augmentation(images, training=True) for _ in range(2)]
        on_views = self.regularize_on == "views"
        x, indices = self._regularized_part(views[0] if on_views else images, indices)
        with tape.stop_recording():
            x_adv = self._perturb(x, indices, self.regularized(x), epsilon)
        parts = views + ([x_adv] if on_views else [x, x_adv])
        features = self.encoder(tf.concat(parts, 0), training=True)
        sizes = [tf.shape(part)[0] for part in parts]
        if self.regularize_output == "projector":
            outputs = tf.split(self.method(features, training=True), sizes)
            z1, z2 = outputs[:2]
        else:
            outputs = tf.split(features, sizes)
            z1, z2 = tf.split(self.method(tf.concat(outputs[:2], 0), training=True), 2)
        anchor = outputs[0][:sizes[-1]] if on_views else outputs[2]
        robustness = self._divergence(anchor, outputs[-1])
        first_features = tf.split(features, sizes)[0]
        return self.method.loss(z1, z2), views[0], first_features, robustness

    def train_step(self, data):
        images, indices = self._images(data)
        shared = self.shared_statistics and self.trains_regularizer
        with tf.GradientTape() as tape:
            if self.trains_regularizer:
                epsilon = self.regularizer.epsilon * self.ramp(self.epsilon_warmup_steps)
            if shared:
                ssl_loss, view, features, robustness = self._shared_pass(images, indices, tape,
                                                                         epsilon)
            else:
                ssl_loss, view, features, projection = self._ssl_loss(images, training=True)
                view_features = projection if self.regularize_output == "projector" else features
            loss = ssl_loss
            terms = {"ssl_loss": ssl_loss}
            if self.keep_weight > 0:
                terms["keep_loss"] = self._keep_loss(view, features)
                loss = loss + self.keep_weight * terms["keep_loss"]
            if self.trains_regularizer:
                if not shared:
                    robustness = self._robustness(images, indices, view, view_features, tape,
                                                  epsilon=epsilon)
                loss = loss + self.weight * self.ramp(self.weight_warmup_steps) * robustness
                terms["robustness"] = robustness
        self.apply_gradients(tape, loss, **terms)
        return self.record(loss=loss, **terms)

    def _keep_loss(self, view, features):
        # The views' training pass is the encoder's side: no extra pass of the encoder.
        target = tf.stop_gradient(self.reference(view, training=False))
        return tf.reduce_mean(cosine_distance(features, target))

    def test_step(self, data):
        images, _ = self._images(data)
        ssl_loss, _, _, _ = self._ssl_loss(images, training=False)
        if self.regularizer is None:
            return self.record(loss=ssl_loss, ssl_loss=ssl_loss)
        robustness = self.regularizer(self.regularized, images, seed=self.seed_generator)
        return self.record(loss=ssl_loss + self.weight * robustness, ssl_loss=ssl_loss,
                           robustness=robustness)

    def get_config(self):
        config = super().get_config()
        config.update(
            weight=self.weight,
            epsilon_warmup_steps=self.epsilon_warmup_steps,
            weight_warmup_steps=self.weight_warmup_steps,
            regularize_on=self.regularize_on,
            share_anchor=self.share_anchor,
            regularized_fraction=self.regularized_fraction,
            batch_statistics=self.batch_statistics,
            shared_statistics=self.shared_statistics,
            detach_anchor=self.detach_anchor,
            regularize_output=self.regularize_output,
            keep_weight=self.keep_weight,
            seed=self.seed,
        )
        return config


def _make_tarrl(encoder, *, epsilon, norm, steps, seed, estimator="pgd", divergence="squared_l2",
                weight=1.0, epsilon_warmup_steps=0, weight_warmup_steps=None, num_examples=None,
                **options):
    """TARRL from plain values; the weight ramps up with epsilon unless told otherwise."""
    regularizer = regularizers.build(estimator, epsilon=epsilon, norm=norm, steps=steps,
                                     divergence=divergence, num_examples=num_examples)
    if weight_warmup_steps is None:
        weight_warmup_steps = epsilon_warmup_steps
    return TARRLModel(encoder, regularizer=regularizer, weight=weight, seed=seed,
                      epsilon_warmup_steps=epsilon_warmup_steps,
                      weight_warmup_steps=weight_warmup_steps, **options)


def _make_simclr(encoder, *, epsilon, norm, steps, seed, epsilon_warmup_steps=0, **options):
    # Plain SSL: the threat model is the evaluation's only, and nothing ramps up.
    del epsilon, norm, steps, epsilon_warmup_steps
    return TARRLModel(encoder, regularizer=None, weight=0.0, seed=seed, **options)


register(TrainingMethod("simclr", make=_make_simclr, baseline=False))
register(TrainingMethod("tarrl", make=_make_tarrl, baseline=False))
