"""`SupervisedATModel`: supervised PGD adversarial training, the upper reference."""

import keras
import tensorflow as tf

from tarrl_tf.checks import ERROR_MARKER, checked_images
from tarrl_tf.training.base import BaselineModel, check_model
from tarrl_tf.training.registry import TrainingMethod, register


@keras.saving.register_keras_serializable(package="tarrl_tf")
class SupervisedATModel(BaselineModel):
    """Madry et al.'s PGD adversarial training of an encoder plus a linear head, on labels.

    Each step replaces the batch by PGD's maximizer of the cross-entropy
    within the ball and trains encoder and head on it (no clean term).
    `epsilon=0` is plain supervised training (the search cannot move).

    For a fair comparison with the self-supervised encoders, save
    `model.encoder` alone and evaluate it like them, with a fresh, plainly
    trained probe (`tarrl_tf.evaluation.downstream.train_classifier`); `model.head` is a
    training device. The head is a dense layer on the raw representation,
    as in Madry et al., not the probe's linear layer on the L2-normalized
    representation: on small problems the normalized head kept adversarial
    training at the chance-level loss for many epochs, while fresh
    normalized probes on encoders trained with the dense head were as
    robust as that head (tests/test_baselines.py).

    BatchNorm: PGD runs in inference mode (the `steps` attack passes leave
    the moving statistics alone and aim at the deployed function); the
    training pass runs in training mode on the adversarial batch, as in
    Madry et al.: the network is only ever trained on adversarial inputs,
    so its statistics are those of adversarial inputs.

    Data: `(images, labels)` with integer labels `[batch]` in
    `[0, num_classes)`. Metrics: `loss` and `accuracy`, both on the
    adversarial inputs (in evaluation too).

    Args:
        encoder: any `keras.Model` mapping float images `[batch, H, W, C]` in
            [0, 1] to features.
        num_classes: number of classes (>= 2).
        epsilon: radius of the ball of the attack.
        norm: `"inf"` or `2`.
        steps: PGD steps per batch (7, as Madry et al. on CIFAR-10).
        step_size: defaults to `2.5 * epsilon / steps`.
        seed: seed for the attack's random starts.

    Example:
    ```python
    model = tarrl_tf.SupervisedATModel(
        encoder, num_classes=10, epsilon=8 / 255, norm="inf", steps=7, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(128), epochs=10)
    model.encoder.save("at_encoder.keras")
    ```

    Reference:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018.
    """

    metric_names = ("loss", "accuracy")

    def __init__(self, encoder, num_classes, *, epsilon, norm="inf", steps=7, step_size=None,
                 seed=None, **kwargs):
        super().__init__(epsilon=epsilon, norm=norm, steps=steps, step_size=step_size, seed=seed,
                         **kwargs)
        check_model(encoder, "encoder")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.head = keras.Sequential(
            [keras.layers.Flatten(), keras.layers.Dense(num_classes, name="logits")], name="head")
        self.build_from(encoder)

    def precision_networks(self):
        return [self.encoder, self.head]

    def build_parts(self, input_shape):
        self.head.build(self.encoder.compute_output_shape(input_shape))

    def _logits(self, images, training):
        return self.head(self.encoder(images, training=training), training=training)

    def _cross_entropy(self, logits, labels):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)

    def objective(self, x_adv, labels):
        """Mean cross-entropy of the head on `x_adv` (inference mode): the loss PGD maximizes."""
        return tf.reduce_mean(self._cross_entropy(self._logits(x_adv, False), labels))

    def craft(self, x, labels, *, epsilon=None):
        """Perturbs `x` within the ball to maximize `objective(., labels)`; epsilon overrides the radius."""
        return self._craft(checked_images(x), self._labels(labels), epsilon)

    def _craft(self, x, labels, epsilon=None):
        # Always the true labels: a model's own predictions as labels would leak its mistakes.
        return self._search(
            lambda x_adv: tf.reduce_sum(self._cross_entropy(self._logits(x_adv, False), labels)),
            x, epsilon)

    def _labels(self, labels):
        labels = tf.convert_to_tensor(labels)
        if labels.shape.rank != 1 or not labels.dtype.is_integer:
            raise ValueError(
                f"labels must be integers of shape [batch], got shape {tuple(labels.shape)} "
                f"dtype {labels.dtype.name}")
        labels = tf.cast(labels, "int32")
        in_range = tf.logical_and(tf.reduce_min(labels) >= 0,
                                  tf.reduce_max(labels) < self.num_classes)
        message = f"labels outside [0, {self.num_classes})"
        if tf.executing_eagerly():
            if not bool(in_range):
                raise ValueError(message)
            return labels
        check = tf.debugging.assert_equal(in_range, True, message=ERROR_MARKER + message)
        with tf.control_dependencies([check]):
            return tf.identity(labels)

    def _examples(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if labels is None:
            raise ValueError("SupervisedATModel needs labeled data: (images, labels)")
        if sample_weight is not None:
            raise ValueError("SupervisedATModel does not support sample weights")
        return checked_images(images), self._labels(labels)

    def train_step(self, data):
        x, labels = self._examples(data)
        with tf.GradientTape() as tape:
            with tape.stop_recording():
                x_adv = self._craft(x, labels)
            logits = self._logits(x_adv, True)
            loss = tf.reduce_mean(self._cross_entropy(logits, labels))
        self.apply_gradients(tape, loss)
        return self._update_metrics(loss, logits, labels)

    def test_step(self, data):
        x, labels = self._examples(data)
        logits = self._logits(self._craft(x, labels), False)
        return self._update_metrics(tf.reduce_mean(self._cross_entropy(logits, labels)), logits, labels)

    def _update_metrics(self, loss, logits, labels):
        correct = tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels)
        return self.record(loss=loss, accuracy=tf.cast(correct, "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config


register(TrainingMethod("supervised_at", make=SupervisedATModel, needs=("num_classes",),
                        labeled=True))
