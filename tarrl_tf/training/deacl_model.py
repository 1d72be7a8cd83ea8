"""`DeACLModel`: decoupled adversarial contrastive learning, the DeACL baseline."""

import math

import keras
import tensorflow as tf

from tarrl_tf.checks import checked_images
from tarrl_tf.encoders import image_input_shape
from tarrl_tf.robustness.batchnorm import (batch_statistics_pass, behaves_same_in_training,
                                           resolve_batch_statistics)
from tarrl_tf.robustness.divergences import cosine_distance
from tarrl_tf.ssl.augment import resolve as resolve_augmentation
from tarrl_tf.training.base import BaselineModel, check_model, unrecorded
from tarrl_tf.training.registry import TrainingMethod, register


@keras.saving.register_keras_serializable(package="tarrl_tf")
class DeACLModel(BaselineModel):
    """DeACL's second stage: robust distillation of a frozen SSL teacher into a student.

    Stage one is plain SSL (e.g. `TARRLModel(..., weight=0)`) and gives the
    teacher. Stage two, this model, trains the student on weakly augmented
    images `x` with

        mean(1 - cos(s(x), t(x))) + weight * mean(1 - cos(s(x_adv), s(x))),

    where `x_adv` maximizes the second term by PGD. This is the loss of the
    official code's default (`loss_type="ce2gt_ae2ce"`: clean student to
    teacher, adversarial student to clean student, a TRADES-style split
    between accuracy and robustness), whose `trades_k` (our `weight`)
    defaults to 2 on its command line; we keep the package-wide default of 1.
    One difference: that code's attack pushes `s(x')` away from the teacher's
    `t(x)`, while here PGD maximizes the term that is trained, so the
    `robustness` metric is the maximum the step minimizes. The robustness
    term is then exactly TARRL's regularizer with the `squared_l2`
    divergence (halved): what sets DeACL apart is that the accuracy term is
    distillation from a fixed target, which decouples SSL from the costly
    adversarial part.

    The teacher is frozen in place (`teacher.trainable = False`), always runs
    with `training=False` and its outputs carry no gradient, so its weights
    and BatchNorm statistics never change. Its representation must have as
    many values per example as the student's.

    BatchNorm (as in `TARRLModel`): the student's moving statistics come
    from its clean pass alone, and the attack runs in inference mode. With
    BatchNorm (`batch_statistics`), the robustness term takes one
    training-mode pass over `x` and `x_adv` together, and the moving
    statistics are restored after it (see `robustness.batchnorm.batch_statistics_pass`);
    without it, the term compares inference-mode passes of `x_adv` and `x`
    (the clean training pass itself for students without training-dependent
    layers).

    Metrics: `loss`, `distillation_loss` and `robustness`. Evaluation uses
    the unaugmented images.

    Args:
        student: the encoder to train, usually freshly initialized.
        teacher: the frozen encoder pretrained with plain SSL.
        epsilon: radius of the ball of the attack.
        norm: `"inf"` or `2`.
        steps: PGD steps per batch.
        step_size: defaults to `2.5 * epsilon / steps`.
        weight: weight of the robustness term (> 0).
        augmentation: a layer making the training views; defaults to a weak
            one (crops of at least half the image, flips for RGB).
        batch_statistics: train the robustness term through training-mode
            passes (above); None: when the student has BatchNormalization.
        seed: seed for the views and the attack's random starts.

    Example:
    ```python
    model = tarrl_tf.DeACLModel(
        tarrl_tf.encoders.cifar_resnet(), teacher=simclr_encoder,
        epsilon=8 / 255, norm="inf", steps=5, weight=2.0, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(unlabeled_images, epochs=10)
    model.encoder.save("deacl_encoder.keras")  # The student.
    ```

    Reference:
        Zhang et al., "Decoupled Adversarial Contrastive Learning for
        Self-supervised Adversarial Robustness", ECCV 2022; code at
        github.com/pantheon5100/DeACL (`solo/methods/mocov2_distillation_AT.py`).
    """

    metric_names = ("loss", "distillation_loss", "robustness")
    nested_models = ("student", "teacher")
    serialized_parts = ("augmentation",)

    def __init__(self, student, teacher, *, epsilon, norm="inf", steps=5, step_size=None,
                 weight=1.0, augmentation=None, batch_statistics=None, seed=None, **kwargs):
        super().__init__(epsilon=epsilon, norm=norm, steps=steps, step_size=step_size, seed=seed,
                         **kwargs)
        check_model(student, "student")
        check_model(teacher, "teacher")
        if student is teacher:
            raise ValueError("student and teacher must be different models (the teacher is frozen)")
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        teacher.trainable = False
        self.student = student
        self.teacher = teacher
        self.weight = float(weight)
        self.augmentation = resolve_augmentation(augmentation, image_input_shape(student), seed,
                                                 weak=True)
        self.shares_anchor = behaves_same_in_training(student)
        self.batch_statistics = resolve_batch_statistics(batch_statistics, student)
        self.build_from(student)

    @property
    def encoder(self):
        """The student: the encoder this model trains."""
        return self.student

    def precision_networks(self):
        return [self.student, self.teacher]

    def build_parts(self, input_shape):
        sizes = [math.prod(model.compute_output_shape(input_shape)[1:])
                 for model in (self.student, self.teacher)]
        if sizes[0] != sizes[1]:
            raise ValueError(
                f"student and teacher representations must have the same size, got {sizes[0]} "
                f"(student) and {sizes[1]} (teacher)")
        self.augmentation.build(input_shape)

    def objective(self, x_adv, x):
        """Mean `1 - cos(s(x_adv), s(x))` in inference mode: the term PGD maximizes."""
        return tf.reduce_mean(
            cosine_distance(self.student(x, training=False), self.student(x_adv, training=False)))

    def craft(self, x, *, epsilon=None):
        """Perturbs `x` within the ball to maximize `objective(., x)`; epsilon overrides the radius."""
        x = checked_images(x)
        return self._craft(x, self.student(x, training=False), epsilon)

    def _craft(self, x, anchor, epsilon=None):
        anchor = tf.stop_gradient(anchor)
        return self._search(
            lambda x_adv: tf.reduce_sum(cosine_distance(anchor, self.student(x_adv, training=False))),
            x, epsilon)

    def _terms(self, x, training, tape=None):
        target = tf.stop_gradient(self.teacher(x, training=False))
        features = self.student(x, training=training)
        distillation_loss = tf.reduce_mean(cosine_distance(features, target))
        anchor = features if self.shares_anchor or not training else self.student(x, training=False)
        with unrecorded(tape):
            x_adv = self._craft(x, anchor)
        if training and self.batch_statistics:
            anchor, perturbed = batch_statistics_pass(
                lambda z: self.student(z, training=True), x, x_adv, [self.student])
        else:
            perturbed = self.student(x_adv, training=False)
        return distillation_loss, tf.reduce_mean(cosine_distance(anchor, perturbed))

    def _images(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return checked_images(images)

    def train_step(self, data):
        x = self.augmentation(self._images(data), training=True)
        with tf.GradientTape() as tape:
            distillation_loss, robustness = self._terms(x, training=True, tape=tape)
            loss = distillation_loss + self.weight * robustness
        self.apply_gradients(tape, loss, distillation_loss=distillation_loss,
                             robustness=robustness)
        return self.record(loss=loss, distillation_loss=distillation_loss, robustness=robustness)

    def test_step(self, data):
        distillation_loss, robustness = self._terms(self._images(data), training=False)
        return self.record(loss=distillation_loss + self.weight * robustness,
                           distillation_loss=distillation_loss, robustness=robustness)

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight, batch_statistics=self.batch_statistics)
        return config


register(TrainingMethod("deacl", make=DeACLModel, needs=("teacher",)))
