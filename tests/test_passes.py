"""No pass computed twice: the images each training step runs through the encoder, counted.

An encoder whose first layer counts the images it sees (at run time, inside
the compiled step and its search loop) is trained for one batch of `B`
images with `k` search steps. The counts are each method's pass budget,
written out from its definition: a duplicated pass, or a search that runs
one step too many, changes them.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tarrl_tf import training

B, K, NUM_CLASSES = 6, 3, 3
SHAPE = (8, 8, 1)


@keras.saving.register_keras_serializable(package="tarrl_tf_tests")
class ImageCounter(keras.layers.Layer):
    """The identity, counting the images of every call that runs."""

    def build(self, input_shape):
        self.images = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                      dtype="float32", name="images")

    def call(self, x):
        self.images.assign_add(tf.cast(tf.shape(x)[0], "float32"))
        return x


def _encoder(batch_norm):
    inputs = keras.Input(SHAPE)
    counter = ImageCounter()
    h = keras.layers.Conv2D(4, 3, padding="same")(counter(inputs))
    if batch_norm:
        h = keras.layers.BatchNormalization()(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    return keras.Model(inputs, keras.layers.Dense(8)(h)), counter


def _images_through_one_step(name, *, batch_norm, **options):
    keras.utils.set_random_seed(0)
    encoder, counter = _encoder(batch_norm)
    extra = dict(options)
    if options.get("keep_weight"):
        extra["reference"] = _encoder(batch_norm)[0]
    if name == "deacl":
        extra["teacher"] = _encoder(batch_norm)[0]
    if name == "supervised_at":
        extra["num_classes"] = NUM_CLASSES
    model = training.build(name, encoder, epsilon=0.1, norm="inf", steps=K, seed=0, **extra)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(0.2, 0.8, (B, *SHAPE)).astype("float32")
    y = np.arange(B) % NUM_CLASSES
    data = (x, y) if name == "supervised_at" else (x,)
    model.train_on_batch(*data)  # traces and builds the optimizer
    before = float(counter.images.numpy())
    model.train_on_batch(*data)
    return (float(counter.images.numpy()) - before) / B


# Per image of the batch: views (2: SimCLR's pair in one pass), anchor f(x) (1), search (K),
# the differentiated perturbed pass (1; 2 with batch statistics, where f(x) and f(x') share
# one training-mode batch).
@pytest.mark.parametrize("name, options, batch_norm, passes", [
    ("simclr", {}, False, 2),
    ("tarrl", {}, False, 2 + 1 + K + 1),
    ("tarrl", {"detach_anchor": True}, False, 2 + 1 + K + 1),
    ("tarrl", {"regularize_output": "projector"}, False, 2 + 1 + K + 1),
    # The keep term compares the views' pass with the reference's: no pass of the encoder.
    ("tarrl", {"keep_weight": 1.0}, False, 2 + 1 + K + 1),
    # On the first view of an encoder without training-dependent layers, the views' pass is
    # the anchor.
    ("tarrl", {"regularize_on": "views"}, False, 2 + K + 1),
    ("tarrl", {"shared_statistics": False}, True, 2 + 1 + K + 2),
    # One training-mode pass over the views, x and x' (the first view is x with "views"): the
    # default with BatchNorm.
    ("tarrl", {}, True, 1 + K + 4),
    ("tarrl", {"shared_statistics": True, "regularize_on": "views"}, True, 1 + K + 3),
    # ACL's clean target is the views' pass (or one inference pass of the second view).
    ("acl", {}, False, 2 + K + 1),
    ("acl", {}, True, 2 + 1 + K + 2),
    # DeACL's student: the distillation pass is the anchor without BatchNorm.
    ("deacl", {}, False, 1 + K + 1),
    ("deacl", {}, True, 1 + 1 + K + 2),
    ("supervised_at", {}, False, K + 1),
])
def test_a_training_step_runs_each_pass_once(name, options, batch_norm, passes):
    assert _images_through_one_step(name, batch_norm=batch_norm, **options) == passes


def test_regularized_fraction_runs_the_regularizer_on_that_share_of_the_batch():
    # Half of 6 images: the anchor, the search and the perturbed pass on 3.
    assert _images_through_one_step("tarrl", batch_norm=False, regularized_fraction=0.5) == (
        2 + (1 + K + 1) / 2)
