"""Training-step time of each robustness estimator, and of ACL and DeACL, relative to plain SimCLR.

Runs every configuration in the same process on the same synthetic batch and
prints the median step time and its ratio to plain SimCLR (`weight=0`).
Ratios, not seconds, are the result: they carry across machines.

    python benchmarks/step_time.py
    python benchmarks/step_time.py --encoder=cifar_resnet --batch_size=128

There is no XLA option: `jit_compile=True` fails on the whole step (the
augmentation's `CropAndResize` has no XLA CPU kernel), and on the rest of the
step it was 1.5-4.3x slower than graph mode on this project's CPU.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time

import numpy as np
from absl import app, flags

import keras
import tarrl_tf
from tarrl_tf import training
from tarrl_tf.robustness import regularizers

flags.DEFINE_enum("encoder", "small_cnn", list(tarrl_tf.encoders.ARCHITECTURES.names()),
                  "Encoder to time.")
flags.DEFINE_integer("batch_size", 256, "Images per step.")
flags.DEFINE_integer("steps", 30, "Timed steps per configuration (after warm-up).")
FLAGS = flags.FLAGS


def configurations(encoder_fn, epsilon):
    """Model factories by name: TARRL's estimators, plain SimCLR, and the robust-SSL baselines."""

    def tarrl(regularizer, fraction=1.0):
        return lambda: tarrl_tf.TARRLModel(
            encoder_fn(), regularizer=regularizer, weight=0.0 if regularizer is None else 1.0,
            regularized_fraction=fraction, seed=0)

    def baseline(name, steps):
        teacher = {"teacher": encoder_fn()} if name == "deacl" else {}
        return lambda: training.build(name, encoder_fn(), epsilon=epsilon, norm="inf",
                                       steps=steps, seed=0, **teacher)

    return {
        "simclr (weight=0)": tarrl(None),
        "fgsm": tarrl(regularizers.FGSM(epsilon=epsilon)),
        "fgsm, half batch": tarrl(regularizers.FGSM(epsilon=epsilon), 0.5),
        "power_iteration-1": tarrl(regularizers.PowerIteration(epsilon=epsilon, norm="inf")),
        "power_iteration-1, half": tarrl(regularizers.PowerIteration(epsilon=epsilon, norm="inf"), 0.5),
        "pgd-3": tarrl(regularizers.PGD(epsilon=epsilon, steps=3)),
        "pgd-7": tarrl(regularizers.PGD(epsilon=epsilon, steps=7)),
        "pgd-7, half batch": tarrl(regularizers.PGD(epsilon=epsilon, steps=7), 0.5),
        "acl pgd-3": baseline("acl", 3),
        "acl pgd-7": baseline("acl", 7),
        "deacl pgd-3 (2nd stage)": baseline("deacl", 3),
        "deacl pgd-7 (2nd stage)": baseline("deacl", 7),
    }


def train_function(make_model):
    keras.utils.set_random_seed(0)
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.make_train_function()
    return model.train_function


def timed_step(function, batch):
    start = time.perf_counter()
    float(function(iter([batch]))["loss"])  # Wait for the step to finish.
    return time.perf_counter() - start


def main(argv):
    del argv
    if FLAGS.encoder == "small_cnn":
        shape, epsilon = (28, 28, 1), 0.3
        encoder_fn = lambda: tarrl_tf.encoders.small_cnn(input_shape=shape)
    else:
        shape, epsilon = (32, 32, 3), 8 / 255
        encoder_fn = lambda: tarrl_tf.encoders.cifar_resnet(input_shape=shape)
    images = np.random.default_rng(0).random((FLAGS.batch_size, *shape), dtype=np.float32)
    print(f"encoder={FLAGS.encoder} batch_size={FLAGS.batch_size} steps={FLAGS.steps}")
    batch = keras.ops.convert_to_tensor(images)
    functions = {
        name: train_function(make_model)
        for name, make_model in configurations(encoder_fn, epsilon).items()
    }
    times = {name: [] for name in functions}
    for round_ in range(FLAGS.steps + 3):
        # Round-robin, so load from other processes hits every configuration alike.
        for name, function in functions.items():
            seconds = timed_step(function, batch)
            if round_ >= 3:  # The first rounds trace and warm up.
                times[name].append(seconds)
    baseline = float(np.median(times["simclr (weight=0)"]))
    for name, samples in times.items():
        seconds = float(np.median(samples))
        print(f"{name:28s} {1000 * seconds:8.1f} ms/step  {seconds / baseline:5.2f}x simclr")


if __name__ == "__main__":
    app.run(main)
