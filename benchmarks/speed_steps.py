"""Training-step times of every estimator and baseline against plain SimCLR, float32 and bfloat16.

One process, one batch, the configurations interleaved round-robin (load from
other processes hits them alike), medians of the rounds after the warm-up.
"""

import time

import keras
import numpy as np

import tarrl_tf
from tarrl_tf import training
from tarrl_tf.robustness import regularizers

PRECISIONS = ("float32", "bfloat16")
BASELINES = ("acl", "deacl", "supervised_at")
# PGD's step counts timed; the other estimators take one step (or power iteration).
PGD_STEPS = (3, 7)
NUM_CLASSES = 10


def encoder_settings(name, *, tiny=False):
    """`(input_shape, epsilon, baseline_steps, build)` of an encoder as the zoo trains it."""
    if name == "small_cnn":
        shape, epsilon, steps = ((8, 8, 1) if tiny else (28, 28, 1)), 0.3, 7
        options = {"width": 4, "representation_dim": 16} if tiny else {}
    elif name == "cifar_resnet":
        shape, epsilon, steps = ((8, 8, 3) if tiny else (32, 32, 3)), 8 / 255, 3
        options = {"width": 4, "blocks_per_stage": (1, 1, 1, 1)} if tiny else {}
    else:
        raise ValueError(f"unknown encoder {name!r}; expected small_cnn or cifar_resnet")
    builder = tarrl_tf.encoders.ARCHITECTURES.get(name)
    return shape, epsilon, steps, lambda: builder(input_shape=shape, **options)


def configuration_names(baseline_steps):
    """`simclr`, every registered estimator (PGD at each of `PGD_STEPS`), then the baselines."""
    names = ["simclr"]
    for estimator in regularizers.ESTIMATORS.names():
        names += [f"pgd-{s}" for s in PGD_STEPS] if estimator == "pgd" else [estimator]
    return names + list(BASELINES)


def make_model(name, encoder_fn, *, epsilon, baseline_steps, batch_size, precision):
    """The training model of configuration `name` and the data of one batch for it."""
    mixed = None if precision == "float32" else precision
    if name == "simclr":
        return tarrl_tf.TARRLModel(encoder_fn(), regularizer=None, weight=0.0, seed=0,
                                   mixed_precision=mixed)
    if name in BASELINES:
        needs = {"teacher": encoder_fn()} if name == "deacl" else {}
        if name == "supervised_at":
            needs["num_classes"] = NUM_CLASSES
        return training.build(name, encoder_fn(), epsilon=epsilon, norm="inf",
                              steps=baseline_steps, seed=0, mixed_precision=mixed, **needs)
    estimator, _, steps = name.partition("-")
    regularizer = regularizers.build(estimator, epsilon=epsilon, steps=int(steps or 1),
                                     divergence="normalized_relative_l2", num_examples=batch_size)
    return tarrl_tf.TARRLModel(encoder_fn(), regularizer=regularizer, weight=1.0, seed=0,
                               mixed_precision=mixed)


def batch_for(model, images):
    """One batch as `model` trains on it: images, with indices or labels where it needs them."""
    n = len(images)
    if getattr(model, "takes_indices", False):
        return (images, np.arange(n, dtype="int64"))
    if isinstance(model, training.SupervisedATModel):
        return (images, np.arange(n, dtype="int64") % NUM_CLASSES)
    return images


class TimedStep:
    """One compiled train step of a model, timed on the same batch every call."""

    def __init__(self, model, images):
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.build_optimizer()
        self.model = model
        self.batch = keras.tree.map_structure(keras.ops.convert_to_tensor,
                                              batch_for(model, images))
        with model.precision():
            model.make_train_function()
        self.function = model.train_function

    def __call__(self):
        start = time.perf_counter()
        with self.model.precision():
            float(self.function(iter([self.batch]))["loss"])  # waits for the step to finish
        return time.perf_counter() - start


def step_times(encoder, *, batch_size, rounds, warmup, names=None, precisions=PRECISIONS,
               tiny=False, log=print):
    """Median seconds per step, `{precision: {configuration: seconds}}`, and the baseline steps."""
    shape, epsilon, baseline_steps, encoder_fn = encoder_settings(encoder, tiny=tiny)
    names = names or configuration_names(baseline_steps)
    if "simclr" not in names:
        names = ["simclr", *names]
    images = np.random.default_rng(0).random((batch_size, *shape), dtype=np.float32)
    steps = {}
    for precision in precisions:
        for name in names:
            keras.utils.set_random_seed(0)
            model = make_model(name, encoder_fn, epsilon=epsilon, baseline_steps=baseline_steps,
                               batch_size=batch_size, precision=precision)
            steps[(precision, name)] = TimedStep(model, images)
    samples = {key: [] for key in steps}
    for round_ in range(warmup + rounds):
        # Round-robin over every configuration and precision: load hits them alike.
        for key, step in steps.items():
            seconds = step()
            if round_ >= warmup:  # the first rounds trace and warm up
                samples[key].append(seconds)
        log(f"{encoder}: round {round_ + 1}/{warmup + rounds}")
    medians = {precision: {} for precision in precisions}
    for (precision, name), values in samples.items():
        medians[precision][name] = float(np.median(values))
    return medians, baseline_steps


def ratios(medians):
    """Each configuration's median step over plain SimCLR's, per precision."""
    return {precision: {name: round(s / times["simclr"], 3) for name, s in times.items()
                        if name != "simclr"}
            for precision, times in medians.items()}


def mixed_precision_speedup(medians):
    """float32 step over bfloat16 step, per configuration (> 1: bfloat16 is faster)."""
    if not {"float32", "bfloat16"} <= set(medians):
        return {}
    return {name: round(s / medians["bfloat16"][name], 3)
            for name, s in medians["float32"].items()}
