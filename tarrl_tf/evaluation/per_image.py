"""Per-image results of an evaluation: what a report is computed from, and what shards exchange.

Every number of a report is a mean over test images of a per-image result:
clean correctness and loss; per attack run (its spec, on the first `n`
images) whether each image stays correct and its adversarial loss; per threat
model each image's representation shift. `Measured` computes them on a span
of the test set (all of it, or one shard's images); `Recorded` holds them
merged from every shard. Both answer `clean()`, `run(spec, n)` and
`shifts(threat_models)` with arrays over the whole test set, which is all
`assembly.assemble` reads: a report from merged shards is the one-run report.
"""

import json

import numpy as np
import tensorflow as tf

from tarrl_tf import attacks
from tarrl_tf.progress import Progress
from tarrl_tf.robustness import divergences
from tarrl_tf.robustness.regularizers import PGD


def run_key(spec, n):
    """The name of an attack run: its settings and its number of (first) images."""
    return json.dumps([spec.to_dict(), int(n)], sort_keys=True)


def correct_and_loss(classifier, x, y, batch_size=512):
    """Per example: is the prediction right, and its cross-entropy."""
    logits = classifier.predict(x, batch_size=batch_size, verbose=0)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=np.asarray(y, "int64"), logits=logits)
    return np.argmax(logits, axis=-1) == np.asarray(y), loss.numpy()


def representation_shifts(encoder, x, threat_models, *, steps=20, batch_size=256, seed=0,
                          verbose=False):
    """`{(norm, epsilon): d}`: the worst-case `squared_l2` shift of each example, per threat model.

    Maximized by PGD; `mean(d)` estimates `R`, `mean(sqrt(d))` the mean
    worst-case L2 shift of the normalized representation. Every batch draws the
    same random start pattern (the seed alone), so a slice of `x` from a
    multiple of `batch_size` gets the values the whole `x` gives its examples.
    """
    functions = {}
    shifts = {}
    for norm, epsilon in threat_models:
        if norm not in functions:
            functions[norm] = _shift_function(encoder, norm, steps, seed, x.shape[1:])
        radius = tf.constant(epsilon, tf.float32)
        progress = Progress(f"R {norm} eps={epsilon:.4g}", len(x)) if verbose else None
        batches = []
        for i in range(0, len(x), batch_size):
            batches.append(functions[norm](tf.constant(x[i:i + batch_size]), radius).numpy())
            if progress is not None:
                progress.update(min(i + batch_size, len(x)))
        if progress is not None:
            progress.close()
        shifts[(norm, epsilon)] = (np.concatenate(batches) if batches
                                   else np.zeros(0, np.float32))
    return shifts


def _shift_function(encoder, norm, steps, seed, image_shape):
    # One trace for every batch size (the short last batch included) and every radius of a
    # sweep: a function per radius made TF warn about retracing.
    estimator = PGD(epsilon=1.0, norm=norm, steps=steps, divergence="squared_l2")

    @tf.function(input_signature=[tf.TensorSpec([None, *image_shape], tf.float32),
                                  tf.TensorSpec([], tf.float32)])
    def batch_shift(x_batch, epsilon):
        anchor = encoder(x_batch, training=False)
        x_adv = estimator.perturb(encoder, x_batch, anchor=anchor, epsilon=epsilon, seed=seed)
        return divergences.squared_l2(anchor, encoder(x_adv, training=False))

    return batch_shift


class Measured:
    """Per-image results measured on `span = (start, stop)` of the test set, as they are asked for.

    Outside the span the arrays hold placeholders (False, NaN): a shard can
    run the whole report's code to learn which runs it needs, but only the
    merged results make a report.

    Args:
        classifier: the images-to-logits model to attack.
        features_encoder: the encoder whose shifts are measured.
        x: the test images (all of them).
        y: the test labels.
        span: the images measured here; `start` a multiple of `batch_size`.
        batch_size: images per attack call and per prediction.
        seed: the seed of the attacks and of the shifts' random starts.
        regularizer_steps: PGD steps of the shifts.
        verbose: progress bars.
    """

    def __init__(self, classifier, features_encoder, x, y, *, span, batch_size, seed,
                 regularizer_steps, verbose=False):
        self.labels = np.asarray(y)
        self.span = (int(span[0]), int(span[1]))
        self._classifier, self._encoder = classifier, features_encoder
        self._x = x
        self._options = dict(batch_size=batch_size, seed=seed, verbose=verbose)
        self._steps = regularizer_steps
        start, stop = self.span
        self.clean_part = correct_and_loss(classifier, x[start:stop], self.labels[start:stop],
                                           batch_size)
        self.runs, self.shift_parts = {}, {}

    def clean(self):
        return _whole(self.clean_part, self.span[0], len(self.labels))

    def run(self, spec, n):
        key = run_key(spec, n)
        if key not in self.runs:
            self.runs[key] = self._attack(spec, n)
        return _whole(self.runs[key], self.span[0], n)

    def _attack(self, spec, n):
        start, stop = self.span[0], min(self.span[1], n)
        if stop <= start:
            return np.zeros(0, bool), np.zeros(0, np.float32)
        x, y = self._x[start:stop], self.labels[start:stop]
        x_adv = attacks.run_attack(self._classifier, x, y, spec, first_index=start,
                                   **self._options)
        adv_ok, adv_loss = correct_and_loss(self._classifier, x_adv, y,
                                            self._options["batch_size"])
        # x itself lies in the ball: an example is robust only if both are right.
        return self.clean_part[0][:stop - start] & adv_ok, adv_loss

    def shifts(self, threat_models):
        missing = [t for t in threat_models if t not in self.shift_parts]
        if missing:
            start, stop = self.span
            self.shift_parts.update(representation_shifts(
                self._encoder, self._x[start:stop], missing, steps=self._steps,
                **self._options))
        return {t: _whole((self.shift_parts[t],), self.span[0], len(self.labels))[0]
                for t in threat_models}


class Recorded:
    """Per-image results of the whole test set, merged from shards (see `shards.merge`)."""

    def __init__(self, labels, clean, runs, shifts):
        self.labels, self._clean, self._runs, self._shifts = labels, clean, runs, shifts

    def clean(self):
        return self._clean

    def run(self, spec, n):
        try:
            return self._runs[run_key(spec, n)]
        except KeyError:
            raise ValueError(f"the shards hold no results of {spec.name} (eps={spec.epsilon:g}) "
                             f"on the first {n} images: were they evaluated with other "
                             "settings?") from None

    def shifts(self, threat_models):
        return {t: self._shifts[t] for t in threat_models}


def _whole(parts, start, n):
    """Arrays of length `n` holding `parts` from `start` on; placeholders elsewhere."""
    whole = []
    for part in parts:
        filler = False if part.dtype == bool else np.nan
        array = np.full(n, filler, dtype=part.dtype)
        array[start:start + len(part)] = part[:max(0, n - start)]
        whole.append(array)
    return tuple(whole)
