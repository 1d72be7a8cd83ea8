"""No retracing: an epoch or an evaluation whose last batch is partial traces once, and reuses it."""

import gc
import weakref

import keras
import numpy as np
import pytest

import tarrl_tf
from tarrl_tf import attacks, training
from tarrl_tf.attacks.compiled import compiled_attack

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 3
# 10 images in batches of 4: two full batches and a partial one.
NUM_IMAGES, BATCH_SIZE = 10, 4


def _images(n=NUM_IMAGES):
    return np.random.default_rng(0).uniform(0.2, 0.8, (n, *IMAGE_SHAPE)).astype("float32")


def _encoder():
    return tarrl_tf.encoders.small_cnn(input_shape=IMAGE_SHAPE, width=4, representation_dim=8)


def _classifier():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input(IMAGE_SHAPE), keras.layers.Flatten(),
                             keras.layers.Dense(NUM_CLASSES)])


def _counting(model):
    """`model` whose `train_step` counts its Python runs (one per trace)."""
    model.traces = 0
    step = model.train_step

    def counted(data):
        model.traces += 1
        return step(data)

    model.train_step = counted
    return model


@pytest.mark.parametrize("name", ["simclr", "tarrl", "acl", "deacl", "supervised_at"])
def test_fit_traces_its_step_once_over_epochs_with_a_partial_batch(name):
    keras.utils.set_random_seed(0)
    extra = {"teacher": _encoder()} if name == "deacl" else {}
    extra.update(num_classes=NUM_CLASSES) if name == "supervised_at" else None
    model = _counting(training.build(name, _encoder(), epsilon=0.1, norm="inf", steps=2, seed=0,
                                     **extra))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = _images()
    data = (x, np.arange(NUM_IMAGES) % NUM_CLASSES) if name == "supervised_at" else (x,)
    model.fit(*data, batch_size=BATCH_SIZE, epochs=2, verbose=0)
    assert model.traces == 1


@pytest.mark.parametrize("name", ["fgsm", "pgd_linf", "pgd_l2", "bim", "mim", "spsa"])
def test_an_attack_is_traced_once_across_calls_and_a_partial_batch(name):
    classifier = _classifier()
    x, y = _images(), np.arange(NUM_IMAGES) % NUM_CLASSES
    spec = attacks.make_attack(name, epsilon=0.1 if name != "pgd_l2" else 0.5,
                               steps=None if name == "fgsm" else 3)
    for seed in (0, 0, 1, None):
        attacks.run_attack(classifier, x, y, spec, batch_size=BATCH_SIZE, seed=seed)
    compiled = compiled_attack(classifier, spec, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES,
                               clip_min=0.0, clip_max=1.0)
    assert compiled.tracing_count() == 1


def test_evaluate_attacks_traces_each_attack_once():
    classifier = _classifier()
    x, y = _images(), np.arange(NUM_IMAGES) % NUM_CLASSES
    specs = [attacks.make_attack("fgsm", epsilon=0.1), attacks.make_attack("pgd_linf", epsilon=0.1,
                                                                          steps=3)]
    for _ in range(2):
        attacks.evaluate_attacks(classifier, x, y, specs, batch_size=BATCH_SIZE, seed=0)
    counts = [compiled_attack(classifier, spec, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES,
                              clip_min=0.0, clip_max=1.0).tracing_count() for spec in specs]
    assert counts == [1, 1]


@pytest.mark.large
def test_a_kept_attack_does_not_keep_its_classifier_alive():
    classifier = _classifier()
    x, y = _images(), np.arange(NUM_IMAGES) % NUM_CLASSES
    attacks.run_attack(classifier, x, y, attacks.make_attack("pgd_linf", epsilon=0.1, steps=2),
                       batch_size=BATCH_SIZE, seed=0)
    ref = weakref.ref(classifier)
    del classifier
    gc.collect()
    assert ref() is None
