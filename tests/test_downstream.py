"""Tests of `tarrl_tf.downstream`: heads, plain head training, and the Lipschitz constant of the bound."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tarrl_tf import attacks, downstream
from tarrl_tf.testing import dense_encoder as make_dense_encoder
from tarrl_tf.testing import prototype_data

NUM_CLASSES = 3  # of `testing.prototype_data`'s default problem
IMAGE_SHAPE = (8, 8, 1)


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_same_weights(before, model):
    after = model.get_weights()
    assert len(before) == len(after)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)


# --- build_head / build_classifier --------------------------------------------------------


@pytest.mark.parametrize("head, dense_layers", [("linear", 1), ("mlp", 2)])
def test_head_maps_representations_to_logits(head, dense_layers):
    model = downstream.build_head(NUM_CLASSES, head=head, hidden_dim=8)
    z = np.random.default_rng(0).standard_normal((5, 16)).astype("float32")
    assert model(z).shape == (5, NUM_CLASSES)
    assert sum(isinstance(layer, keras.layers.Dense) for layer in model.layers) == dense_layers


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_head_reads_the_normalized_representation(head):
    """The bound is stated for the unit-normalized representation: rescaling z changes nothing."""
    model = downstream.build_head(NUM_CLASSES, head=head, hidden_dim=8)
    z = np.random.default_rng(0).standard_normal((5, 16)).astype("float32")
    np.testing.assert_allclose(model(z), model(7.5 * z), rtol=1e-5, atol=1e-5)


def test_build_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match="head"):
        downstream.build_head(NUM_CLASSES, head="transformer")
    with pytest.raises(ValueError, match="num_classes"):
        downstream.build_head(1)


def test_classifier_is_encoder_then_head(make_cnn):
    encoder = make_cnn(input_shape=IMAGE_SHAPE)
    head = downstream.build_head(NUM_CLASSES)
    classifier = downstream.build_classifier(encoder, head)
    x, _ = prototype_data(6)
    assert classifier.input_shape == (None, *IMAGE_SHAPE)
    np.testing.assert_allclose(classifier(x), head(encoder(x)), rtol=1e-5, atol=1e-6)


# --- train_classifier ---------------------------------------------------------------------


def test_linear_probe_learns_a_separable_task_on_frozen_features():
    encoder = make_dense_encoder()
    x_train, y_train = prototype_data(150, seed=1)
    x_test, y_test = prototype_data(60, seed=2)
    classifier, head = downstream.train_classifier(
        encoder, x_train, y_train, num_classes=NUM_CLASSES, epochs=20, batch_size=32
    )
    accuracy = attacks.clean_accuracy(classifier, x_test, y_test)
    assert accuracy >= 0.9, f"chance is {1 / NUM_CLASSES:.2f}, got {accuracy:.2f}"
    # The returned head is the classifier's head, and the classifier reads the caller's encoder.
    assert classifier.layers[-1] is head
    assert classifier.layers[1] is encoder
    # Plain training lowers the loss below that of an untrained head (log(3) ~ 1.10).
    assert downstream.cross_entropy(classifier, x_test, y_test) < 0.5


def test_frozen_training_leaves_the_encoder_unchanged(make_cnn):
    encoder = make_cnn(input_shape=IMAGE_SHAPE)
    before = weights_of(encoder)
    x, y = prototype_data(40)
    _, head = downstream.train_classifier(encoder, x, y, num_classes=NUM_CLASSES, epochs=2,
                                          batch_size=16)
    assert_same_weights(before, encoder)
    assert head.layers[-1].kernel.shape == (encoder.output_shape[-1], NUM_CLASSES)


def test_fine_tuning_trains_a_copy_and_leaves_the_callers_encoder_unchanged(make_cnn):
    encoder = make_cnn(input_shape=IMAGE_SHAPE)
    before = weights_of(encoder)
    x, y = prototype_data(40)
    classifier, _ = downstream.train_classifier(
        encoder, x, y, num_classes=NUM_CLASSES, fine_tune=True, epochs=2, batch_size=16,
        learning_rate=1e-2,
    )
    assert_same_weights(before, encoder)
    tuned = classifier.layers[1]
    assert tuned is not encoder
    # The copy did train (otherwise "fine_tune" would silently be a linear probe).
    assert any(not np.array_equal(b, a) for b, a in zip(before, tuned.get_weights()))


def test_training_is_reproducible_with_a_seed():
    encoder = make_dense_encoder()
    x, y = prototype_data(30)
    heads = [downstream.train_classifier(encoder, x, y, num_classes=NUM_CLASSES, epochs=2,
                                         batch_size=8, seed=3)[1] for _ in range(2)]
    for a, b in zip(heads[0].get_weights(), heads[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0, 1, 2, 3] * 5), r"\[0, 3\)"),                    # out of range
        (np.array([0, 1, 2, -1] * 5), r"\[0, 3\)"),                   # negative
        (np.array([0, 1, 2, 1] * 5)[:, None], "shape"),               # wrong shape [N, 1]
        (np.array([0, 1, 2] * 5), "20 integers"),                     # wrong count
        (np.array([0.0, 1.0, 2.0, 1.0] * 5), "dtype float"),          # float labels
        (np.array([True, False] * 10), "dtype bool"),                 # bools are not labels
    ],
)
def test_train_classifier_rejects_bad_labels(labels, match):
    x, _ = prototype_data(20)
    with pytest.raises(ValueError, match=match):
        downstream.train_classifier(make_dense_encoder(), x, labels, num_classes=NUM_CLASSES,
                                    epochs=1)


def test_train_classifier_rejects_images_outside_unit_range():
    x, y = prototype_data(20)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        downstream.train_classifier(make_dense_encoder(), x * 255, y, num_classes=NUM_CLASSES,
                                    epochs=1)


# --- linear_head_lipschitz / cross_entropy ------------------------------------------------


def test_linear_head_lipschitz_is_sqrt2_times_the_spectral_norm():
    head = downstream.build_head(NUM_CLASSES)
    head.build((None, 16))
    kernel = np.random.default_rng(0).standard_normal((16, NUM_CLASSES)).astype("float32") * 3
    head.layers[-1].kernel.assign(kernel)
    expected = np.sqrt(2.0) * np.linalg.svd(kernel, compute_uv=False).max()
    assert downstream.linear_head_lipschitz(head) == pytest.approx(expected, rel=1e-6)
    # Not the Frobenius norm (larger for a rank > 1 kernel): the bound would be looser than stated.
    assert downstream.linear_head_lipschitz(head) < np.sqrt(2.0) * np.linalg.norm(kernel) - 1e-3


def test_lipschitz_constant_bounds_the_loss_gradient():
    """`||grad_n l(W n + b, y)||_2 <= sqrt(2) ||W||_2` for any normalized input n and label."""
    head = downstream.build_head(NUM_CLASSES)
    head.build((None, 16))
    rng = np.random.default_rng(1)
    head.layers[-1].kernel.assign(rng.standard_normal((16, NUM_CLASSES)).astype("float32") * 4)
    dense = head.layers[-1]
    n = tf.math.l2_normalize(tf.constant(rng.standard_normal((64, 16)), tf.float32), axis=-1)
    y = tf.constant(rng.integers(0, NUM_CLASSES, 64))
    with tf.GradientTape() as tape:
        tape.watch(n)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, dense(n)))
    gradient_norms = tf.norm(tape.gradient(loss, n), axis=-1).numpy()
    assert gradient_norms.max() <= downstream.linear_head_lipschitz(head) + 1e-5


def test_linear_head_lipschitz_refuses_an_mlp_head():
    head = downstream.build_head(NUM_CLASSES, head="mlp", hidden_dim=8)
    head.build((None, 16))
    with pytest.raises(ValueError, match="linear"):
        downstream.linear_head_lipschitz(head)


def test_cross_entropy_matches_keras():
    encoder = make_dense_encoder()
    head = downstream.build_head(NUM_CLASSES)
    classifier = downstream.build_classifier(encoder, head)
    x, y = prototype_data(30)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, classifier(x))
    assert downstream.cross_entropy(classifier, x, y, batch_size=7) == pytest.approx(
        float(expected), rel=1e-5)
