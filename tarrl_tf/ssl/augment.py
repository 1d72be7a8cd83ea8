"""Random views for self-supervised pretraining, run inside the training step.

All randomness comes from the layer's `keras.random.SeedGenerator`, so a
seeded model draws the same views every run, and every op is batched (one
`crop_and_resize` for the whole batch) to keep the step cheap. Under
`tf.distribute` each replica takes its rows of the global batch's numbers
(`replicas.draw`): the views do not change with the number of devices.
"""

import math

import keras
import tensorflow as tf

from tarrl_tf import replicas


@keras.saving.register_keras_serializable(package="tarrl_tf")
class ViewAugmentation(keras.layers.Layer):
    """Random resized crop, flip, color jitter, grayscale and noise, per image.

    Outputs stay in [0, 1]: the augmentation defines a new view, and the
    clip keeps that view a valid image.

    Args:
        crop_scale: range of the crop's area as a fraction of the image.
        crop_ratio: range of the crop's aspect ratio.
        flip: random horizontal flips (off for digits, where a flip changes
            meaning).
        brightness: maximum additive brightness change.
        contrast: maximum relative contrast change.
        saturation: maximum relative saturation change (RGB only).
        grayscale_probability: chance of dropping color (RGB only).
        noise_stddev: standard deviation of additive Gaussian noise.
        seed: seed of the layer's `SeedGenerator`.

    Example:
    ```python
    views = ViewAugmentation.for_input_shape((32, 32, 3), seed=0)
    v1, v2 = views(images, training=True), views(images, training=True)
    ```
    """

    def __init__(
        self,
        crop_scale=(0.3, 1.0),
        crop_ratio=(0.75, 1.333),
        flip=False,
        brightness=0.4,
        contrast=0.4,
        saturation=0.0,
        grayscale_probability=0.0,
        noise_stddev=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {crop_ratio}")
        self.crop_scale = tuple(float(v) for v in crop_scale)
        self.crop_ratio = tuple(float(v) for v in crop_ratio)
        self.flip = bool(flip)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.grayscale_probability = float(grayscale_probability)
        self.noise_stddev = float(noise_stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @classmethod
    def for_input_shape(cls, input_shape, seed=None):
        """The default views: SimCLR's recipe for RGB, a milder one for grayscale."""
        height, channels = input_shape[0], input_shape[-1]
        if channels == 3:
            return cls(crop_scale=(0.2, 1.0), flip=True, brightness=0.4, contrast=0.4,
                       saturation=0.4, grayscale_probability=0.2, seed=seed)
        # Tiny images (8x8 digits) lose their content under small crops.
        low = 0.5 if height < 16 else 0.3
        return cls(crop_scale=(low, 1.0), brightness=0.3, contrast=0.3, noise_stddev=0.05, seed=seed)

    def _uniform(self, shape, low, high):
        return replicas.draw(
            lambda shape: keras.random.uniform(shape, low, high, seed=self.seed_generator), shape)

    def call(self, images, training=True):
        if not training:
            return images
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        images = self._crop(images, batch, height, width)
        if self.flip:
            flipped = self._uniform([batch, 1, 1, 1], 0.0, 1.0) < 0.5
            images = tf.where(flipped, tf.reverse(images, axis=[2]), images)
        if self.brightness:
            images += self._uniform([batch, 1, 1, 1], -self.brightness, self.brightness)
        if self.contrast:
            mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
            factor = self._uniform([batch, 1, 1, 1], 1 - self.contrast, 1 + self.contrast)
            images = (images - mean) * factor + mean
        if images.shape[-1] == 3:
            images = self._color(images, batch)
        if self.noise_stddev:
            images += self.noise_stddev * replicas.draw(
                lambda shape: keras.random.normal(shape, seed=self.seed_generator), tf.shape(images))
        return tf.clip_by_value(images, 0.0, 1.0)

    def _crop(self, images, batch, height, width):
        area = self._uniform([batch], *self.crop_scale)
        log_ratio = self._uniform([batch], *[math.log(r) for r in self.crop_ratio])
        ratio = tf.exp(log_ratio)
        crop_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
        crop_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
        top = self._uniform([batch], 0.0, 1.0) * (1.0 - crop_h)
        left = self._uniform([batch], 0.0, 1.0) * (1.0 - crop_w)
        boxes = tf.stack([top, left, top + crop_h, left + crop_w], axis=1)
        return tf.image.crop_and_resize(images, boxes, tf.range(batch), [height, width])

    def _color(self, images, batch):
        gray = tf.reduce_mean(images, axis=-1, keepdims=True)
        if self.saturation:
            factor = self._uniform([batch, 1, 1, 1], 1 - self.saturation, 1 + self.saturation)
            images = (images - gray) * factor + gray
        if self.grayscale_probability:
            drop = self._uniform([batch, 1, 1, 1], 0.0, 1.0) < self.grayscale_probability
            images = tf.where(drop, tf.broadcast_to(gray, tf.shape(images)), images)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            crop_scale=self.crop_scale,
            crop_ratio=self.crop_ratio,
            flip=self.flip,
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation,
            grayscale_probability=self.grayscale_probability,
            noise_stddev=self.noise_stddev,
            seed=self.seed,
        )
        return config


def resolve(augmentation, input_shape, seed, *, weak=False):
    """The augmentation layer a training model was given, rebuilt from a config, or its default.

    The default is `ViewAugmentation.for_input_shape` (SimCLR's views), or with
    `weak` a crop of at least half the image plus flips for RGB (DeACL's
    second stage trains on weakly augmented images).
    """
    if isinstance(augmentation, dict):
        return keras.saving.deserialize_keras_object(augmentation)
    if augmentation is not None:
        return augmentation
    if input_shape is None:
        raise ValueError("Pass `augmentation` for an encoder whose input shape is unknown")
    if weak:
        return ViewAugmentation(crop_scale=(0.5, 1.0), flip=input_shape[-1] == 3, brightness=0.0,
                                contrast=0.0, seed=seed)
    return ViewAugmentation.for_input_shape(input_shape[1:], seed=seed)
