"""Keras 3 shims for CleverHans 4.0.0 and ART 1.20's attacks, kept here so no caller works around them."""

import collections
import contextlib
import random
import warnings

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.spsa import SPSAAdam as _CleverHansSPSAAdam

# Square's iterates come back within three calls: the current ones, the robust ones, the candidates.
_REMEMBERED_CALLS = 3

with warnings.catch_warnings():
    # ART's estimators package warns that PyTorch is missing; nothing here needs it.
    warnings.simplefilter("ignore", UserWarning)
    from art.estimators.classification import TensorFlowV2Classifier


class _KerasAdamWithLr(keras.optimizers.Adam):
    # cleverhans 4.0.0's SPSAAdam calls `Adam.__init__(lr=...)` and reads
    # `self.lr`; Keras 3 renamed both to `learning_rate`.
    def __init__(self, lr, **kwargs):
        super().__init__(learning_rate=lr, **kwargs)

    @property
    def lr(self):
        return self.learning_rate


class SPSAAdam(_CleverHansSPSAAdam, _KerasAdamWithLr):
    """CleverHans' SPSAAdam, constructible under Keras 3 (see `_KerasAdamWithLr`)."""


class ResettableAdam:
    """The optimizer handed to CleverHans' CarliniWagnerL2 under Keras 3.

    CW resets Adam before each binary-search step with
    `for v in optimizer.variables(): v.assign(zeros)`. In Keras 3 `variables`
    is a list (calling it raises TypeError) and holds the learning rate, which
    that loop would set to zero. Here `variables()` starts a fresh Adam and
    leaves nothing to zero.
    """

    def __init__(self, learning_rate):
        self._learning_rate = learning_rate
        self._adam = keras.optimizers.Adam(learning_rate=learning_rate)

    def variables(self):
        self._adam = keras.optimizers.Adam(learning_rate=self._learning_rate)
        return []

    def apply_gradients(self, grads_and_vars):
        self._adam.apply_gradients(grads_and_vars)


class ARTClassifier(TensorFlowV2Classifier):
    """ART's `TensorFlowV2Classifier` around a logits function, with a loss of our choice.

    ART's attack loops (APGD's step-size schedule, Square's random search) are
    used as they are; what they ask of the estimator is served here:

    - `loss_gradient`, `compute_loss` and `predict` run one `tf.function` each
      (a `None` batch dimension, one trace). ART's own run the Keras 3 model
      eagerly, layer by layer, which makes 100 APGD iterations several times
      slower on a CPU; its `predict` also ignores `batch_size`.
    - `compute_loss` returns the per-example loss directly. ART's sets
      `loss_object.reduction` to `tf.keras.losses.Reduction` members, Keras 2
      names that Keras 3 keeps only as a legacy alias.
    - The loss is a plain function `loss(logits, labels) -> [batch]` of logits
      and the label rows APGD hands over. ART's TensorFlow DLR loss loops over
      the batch in Python (eager only) and needs a third class; its targeted
      APGD minimizes that loss towards the target without the true class, not
      AutoAttack's targeted DLR (see `tarrl_tf.attacks.art_attacks`).
    - `predict` remembers the logits of the rows of its last three calls (keyed
      by the rows' bytes, so a hit is the same image exactly) and computes only
      the rows it has not seen. ART's Square asks for the logits of its current
      iterates, of the robust ones again, then of the candidates, on every one of
      its 5,000 iterations; the first two are rows it has seen, so each iteration
      costs one pass on the candidates instead of three.
    - `tracking(y)`: ART's APGD judges only its last iterate, while AutoAttack
      keeps any iterate that is misclassified. Every iterate passes through
      `compute_loss`, so while tracking, the first misclassified one of each
      image is kept (`found`). The rows APGD attacks are those the preceding
      full-size `predict` classified correctly, in order (its loop over
      restarts); calls of any other size are not tracked.

    Args:
        model_fn: `model_fn(x) -> logits`, the classifier in inference mode.
        loss: `loss(logits, labels) -> per-example loss` (maximized by APGD).
        num_classes: classes of the logits.
        image_shape: `(H, W, C)`.
        clip_min: smallest valid pixel value.
        clip_max: largest valid pixel value.
    """

    def __init__(self, model_fn, *, loss, num_classes, image_shape, clip_min, clip_max):
        super().__init__(model=model_fn, nb_classes=int(num_classes),
                         input_shape=tuple(int(d) for d in image_shape),
                         clip_values=(float(clip_min), float(clip_max)))
        images = tf.TensorSpec((None, *self.input_shape), tf.float32)
        labels = tf.TensorSpec((None, self.nb_classes), tf.float32)

        def loss_and_gradient(x, y):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(model_fn(x), y)
            # Per-example losses of independent examples: the gradient of their
            # sum is each example's own gradient.
            return value, tape.gradient(value, x)

        def loss_and_logits(x, y):
            logits = model_fn(x)
            return loss(logits, y), logits

        self._logits = tf.function(model_fn, input_signature=[images])
        self._loss_fn = tf.function(loss_and_logits, input_signature=[images, labels])
        self._track = None
        self._seen = collections.deque(maxlen=_REMEMBERED_CALLS)  # {row bytes: logits} per call
        self._loss_and_gradient = tf.function(loss_and_gradient, input_signature=[images, labels])

    def predict(self, x, batch_size=256, training_mode=False, **kwargs):
        del training_mode, kwargs  # always inference mode
        x = np.asarray(x, np.float32)
        if len(x) == 0:
            return np.zeros((0, self.nb_classes), np.float32)
        logits = self._remembered_logits(x, batch_size)
        track = self._track
        if track is not None and len(x) == len(track["labels"]):
            track["rows"] = np.flatnonzero(np.argmax(logits, axis=1) == track["labels"])
        return logits

    def _remembered_logits(self, x, batch_size):
        keys = [row.tobytes() for row in x]
        logits = np.empty((len(x), self.nb_classes), np.float32)
        missing = []
        for i, key in enumerate(keys):
            for seen in self._seen:
                if key in seen:
                    logits[i] = seen[key]
                    break
            else:
                missing.append(i)
        if missing:
            new = x[missing]
            logits[missing] = np.concatenate([self._logits(new[i:i + batch_size]).numpy()
                                              for i in range(0, len(new), batch_size)])
        self._seen.append(dict(zip(keys, logits.copy())))  # callers may write to theirs
        return logits

    def compute_loss(self, x, y, reduction="none", **kwargs):
        del kwargs
        x = np.asarray(x, np.float32)
        value, logits = self._loss_fn(x, np.asarray(y, np.float32))
        track = self._track
        if track is not None and track["rows"] is not None and len(x) == len(track["rows"]):
            rows = track["rows"]
            wrong = np.argmax(logits.numpy(), axis=1) != track["labels"][rows]
            for i in np.flatnonzero(wrong):
                track["found"].setdefault(int(rows[i]), x[i].copy())
        value = value.numpy()
        return {"none": value, "mean": value.mean(), "sum": value.sum()}[reduction]

    @contextlib.contextmanager
    def tracking(self, y):
        """Keeps the first misclassified iterate per image of `y` (true labels) in `found`."""
        self._track = {"labels": np.asarray(y), "rows": None, "found": {}}
        try:
            yield self._track["found"]
        finally:
            self._track = None

    def loss_gradient(self, x, y, **kwargs):
        del kwargs
        _, gradient = self._loss_and_gradient(np.asarray(x, np.float32), np.asarray(y, np.float32))
        return gradient.numpy()


@contextlib.contextmanager
def seeded_global_generators(seed):
    """Seeds NumPy's and Python's global generators for a block, then restores them.

    ART's APGD and Square draw their random starts and squares from both
    (`np.random`, `random`) and take no seed of their own.
    """
    if seed is None:
        yield
        return
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@contextlib.contextmanager
def random_ops_from(generator):
    """While inside, `tf.random.uniform` and `tf.random.normal` draw from `generator`.

    CleverHans draws SPSA's perturbations with TF's legacy stateful ops.
    Traced, each op keeps its own state, which moves on with every call and
    cannot be reset: a batch's numbers would depend on the batches attacked
    before it. Traced inside this block, they draw from the compiled attack's
    `tf.random.Generator`, which `run_attack` resets from each batch's seed
    (`compiled.py`).
    """
    uniform, normal = tf.random.uniform, tf.random.normal

    def draw_uniform(shape, minval=0, maxval=None, dtype=tf.float32, seed=None, name=None):
        del seed  # the generator's state is the seed
        return generator.uniform(shape, minval=minval, maxval=maxval, dtype=dtype, name=name)

    def draw_normal(shape, mean=0.0, stddev=1.0, dtype=tf.float32, seed=None, name=None):
        del seed
        return generator.normal(shape, mean=mean, stddev=stddev, dtype=dtype, name=name)

    tf.random.uniform, tf.random.normal = draw_uniform, draw_normal
    try:
        yield
    finally:
        tf.random.uniform, tf.random.normal = uniform, normal
