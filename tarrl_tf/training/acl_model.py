"""`ACLModel`: adversarial contrastive learning, the ACL / RoCL baseline."""

import keras
import tensorflow as tf

from tarrl_tf.checks import checked_images
from tarrl_tf.encoders import image_input_shape
from tarrl_tf.robustness.batchnorm import (batch_statistics_pass, behaves_same_in_training,
                                           resolve_batch_statistics)
from tarrl_tf.ssl import methods
from tarrl_tf.ssl.augment import resolve as resolve_augmentation
from tarrl_tf.training.base import BaselineModel, check_model, unrecorded
from tarrl_tf.training.registry import TrainingMethod, register


@keras.saving.register_keras_serializable(package="tarrl_tf")
class ACLModel(BaselineModel):
    """Adversarial contrastive pretraining: the SSL loss on clean and on attacked views.

    Each step draws two views `v1, v2` of the batch. PGD perturbs `v1` within
    the ball to maximize the method's loss against `v2` (NT-Xent for
    SimCLR), and the model trains on

        ssl(v1, v2) + adversarial_weight * ssl(v1_adv, v2).

    The attack is on the SSL objective itself, so its strength (and cost:
    `steps` extra forward-backward passes) is tied to the method, whereas
    TARRL attacks a divergence of the representation.

    BatchNorm: the attack runs with `training=False`, and only the clean
    views set the moving statistics, as in `TARRLModel`. ACL gets the same
    effect with a second set of BatchNorm layers for adversarial inputs and
    evaluates with the clean one (Jiang et al. 2020, "dual BN"); without it,
    perturbed batches would shift the statistics that the downstream probe
    and the attacker see. Crafting in inference mode also makes the attack
    deterministic given its start (no dropout) and aims it at the function
    that is deployed. With BatchNorm (`batch_statistics`), the adversarial
    branch takes one training-mode pass over `v1_adv` and `v2` together and
    the moving statistics are restored after it, for the reason given in
    `robustness.batchnorm.batch_statistics_pass`. Without it, the adversarial branch
    runs in inference mode; encoders and projectors without
    training-dependent layers compute the same function in both modes, so
    their clean pass of `v2` is reused as its target, and the others get one
    inference-mode pass of `v2`, so both sides of the adversarial loss are
    computed the same way.

    Metrics: `loss`, `ssl_loss` (the clean branch) and `adversarial_ssl_loss`.
    Evaluation draws views and attacks them too.

    Args:
        encoder: any `keras.Model` mapping float images `[batch, H, W, C]` in
            [0, 1] to features.
        method: `"simclr"`, `"barlow_twins"` or a `tarrl_tf.methods.Method`.
        epsilon: radius of the ball of the attack.
        norm: `"inf"` or `2`.
        steps: PGD steps per batch.
        step_size: defaults to `2.5 * epsilon / steps`.
        adversarial_weight: weight of the adversarial branch (> 0).
        augmentation: a layer making random views; defaults to
            `ViewAugmentation.for_input_shape(encoder's input shape)`.
        batch_statistics: train the adversarial branch through training-mode
            passes (above); None: when the encoder or projector has
            BatchNormalization.
        seed: seed for the views and the attack's random starts.

    Example:
    ```python
    model = tarrl_tf.ACLModel(encoder, epsilon=8 / 255, norm="inf", steps=5, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(unlabeled_images, epochs=10)
    model.encoder.save("acl_encoder.keras")
    ```

    Reference:
        Jiang et al., "Robust Pre-Training by Adversarial Contrastive
        Learning", NeurIPS 2020. Kim et al., "Adversarial Self-Supervised
        Contrastive Learning" (RoCL), NeurIPS 2020.
    """

    metric_names = ("loss", "ssl_loss", "adversarial_ssl_loss")
    serialized_parts = ("method", "augmentation")

    def __init__(self, encoder, method="simclr", *, epsilon, norm="inf", steps=5, step_size=None,
                 adversarial_weight=1.0, augmentation=None, batch_statistics=None, seed=None,
                 **kwargs):
        super().__init__(epsilon=epsilon, norm=norm, steps=steps, step_size=step_size, seed=seed,
                         **kwargs)
        check_model(encoder, "encoder")
        if not adversarial_weight > 0:
            raise ValueError(
                f"adversarial_weight must be > 0, got {adversarial_weight} "
                "(plain SSL is TARRLModel(..., weight=0))")
        self.encoder = encoder
        self.method = methods.get(method)
        self.adversarial_weight = float(adversarial_weight)
        self.augmentation = resolve_augmentation(augmentation, image_input_shape(encoder), seed)
        self.shares_clean_target = behaves_same_in_training(encoder, self.method)
        self.batch_statistics = resolve_batch_statistics(batch_statistics, encoder, self.method)
        self.build_from(encoder)

    def precision_networks(self):
        return [self.encoder] + self.method.networks()

    def build_parts(self, input_shape):
        self.method.build(self.encoder.compute_output_shape(input_shape))
        self.augmentation.build(input_shape)

    def _project(self, images, training):
        return self.method(self.encoder(images, training=training), training=training)

    def objective(self, first_view, second_view):
        """The method's loss of `first_view` against `second_view` (inference mode); PGD's target."""
        return self.method.loss(self._project(first_view, False), self._project(second_view, False))

    def craft(self, first_view, second_view, *, epsilon=None):
        """Perturbs `first_view` within the ball to maximize `objective(., second_view)`.

        Args:
            first_view: the views to perturb, float images in [0, 1].
            second_view: their positives, held fixed.
            epsilon: overrides the model's radius.
        """
        first_view, second_view = checked_images(first_view), checked_images(second_view)
        return self._craft(first_view, self._project(second_view, False), epsilon)

    def _craft(self, first_view, target, epsilon=None):
        target = tf.stop_gradient(target)
        # The loss is a mean over the batch; times the batch size it is the sum the search expects.
        batch = tf.cast(tf.shape(first_view)[0], first_view.dtype)
        return self._search(
            lambda x: batch * self.method.loss(self._project(x, False), target), first_view, epsilon)

    def _views(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        images = checked_images(images)
        return self.augmentation(images, training=True), self.augmentation(images, training=True)

    def _terms(self, v1, v2, training, tape=None):
        # One encoder pass over both clean views: larger matmuls, BatchNorm sees both.
        z1, z2 = tf.split(self._project(tf.concat([v1, v2], 0), training), 2)
        ssl_loss = self.method.loss(z1, z2)
        # In evaluation the clean pass is already in inference mode.
        target = z2 if self.shares_clean_target or not training else self._project(v2, False)
        with unrecorded(tape):
            v1_adv = self._craft(v1, target)
        if training and self.batch_statistics:
            adversarial, target = batch_statistics_pass(
                lambda z: self._project(z, True), v1_adv, v2, [self.encoder, self.method])
            return ssl_loss, self.method.loss(adversarial, target)
        return ssl_loss, self.method.loss(self._project(v1_adv, False), target)

    def train_step(self, data):
        v1, v2 = self._views(data)
        with tf.GradientTape() as tape:
            ssl_loss, adversarial_ssl_loss = self._terms(v1, v2, training=True, tape=tape)
            loss = ssl_loss + self.adversarial_weight * adversarial_ssl_loss
        self.apply_gradients(tape, loss, ssl_loss=ssl_loss,
                             adversarial_ssl_loss=adversarial_ssl_loss)
        return self.record(loss=loss, ssl_loss=ssl_loss, adversarial_ssl_loss=adversarial_ssl_loss)

    def test_step(self, data):
        ssl_loss, adversarial_ssl_loss = self._terms(*self._views(data), training=False)
        loss = ssl_loss + self.adversarial_weight * adversarial_ssl_loss
        return self.record(loss=loss, ssl_loss=ssl_loss, adversarial_ssl_loss=adversarial_ssl_loss)

    def get_config(self):
        config = super().get_config()
        config.update(adversarial_weight=self.adversarial_weight,
                      batch_statistics=self.batch_statistics)
        return config


register(TrainingMethod("acl", make=ACLModel))
