"""Compiled attacks, kept per classifier: an attack is built and traced once per settings.

An evaluation runs the same attacks on the same classifier many times (every
report row, the sanity checks, a suite's re-runs with fewer iterations). Each
`run_attack` call used to build and trace its attack anew, seconds each; here
the built attack (and its `tf.function`, with a `None` batch dimension, so a
partial last batch does not retrace) is kept for as long as the classifier
lives, keyed by the settings that shape it.

Seeds never retrace: every random draw of a traced attack comes from the
compiled attack's `tf.random.Generator` (PGD's start directly; CleverHans'
own `tf.random` calls, as in SPSA, are traced to draw from it,
`compat.random_ops_from`), and `attack(x, y, seed=)` resets that generator
from the batch's seed before the call. A batch's draws are thus a function
of its seed alone, not of the batches before it (`run.batch_seed`).
"""

import contextlib
import random
import weakref

import tensorflow as tf

from tarrl_tf.attacks.compat import random_ops_from, seeded_global_generators
from tarrl_tf.attacks.registry import ATTACKS
from tarrl_tf.precision import mixed_precision

# classifier -> {settings: CompiledAttack}; the entries go with their classifier.
_CACHE = weakref.WeakKeyDictionary()


def compiled_attack(model, spec, *, image_shape, num_classes, clip_min, clip_max):
    """The `CompiledAttack` of `spec` on `model`, built on the first call with these settings."""
    settings = dict(image_shape=tuple(int(d) for d in image_shape), num_classes=int(num_classes),
                    clip_min=float(clip_min), clip_max=float(clip_max))
    per_model = _CACHE.setdefault(model, {})
    key = (spec, *settings.values())
    if key not in per_model:
        per_model[key] = CompiledAttack(model, spec, **settings)
    return per_model[key]


def logits_fn(model, precision=None):
    """`model` in inference mode, held weakly so a kept attack does not keep its classifier alive.

    With a `precision`, its layers compute in it while the call is traced
    (`tarrl_tf.precision`); the model's own policies are back afterwards.
    """
    ref = weakref.ref(model)

    def model_fn(x):
        with mixed_precision([ref()], precision):
            return ref()(x, training=False)

    return model_fn


class CompiledAttack:
    """`attack(x, y, seed=) -> x_adv` on NumPy batches, each seeded on its own."""

    def __init__(self, model, spec, *, image_shape, num_classes, clip_min, clip_max):
        self._attack = ATTACKS.get(spec.name)
        # Created here, outside any trace; reset by `attack` before every batch.
        self._rng = tf.random.Generator.from_seed(0)
        # A lower-precision search is checked by the float32 classifier (`pgd.py`).
        extra = {} if spec.precision is None else {"check_fn": logits_fn(model)}
        self._craft = self._attack.build(spec, logits_fn(model, spec.precision),
                                         image_shape=image_shape, num_classes=num_classes,
                                         clip_min=clip_min, clip_max=clip_max, rng=self._rng,
                                         **extra)
        self._function = None
        if self._attack.traced:
            signature = (tf.TensorSpec((None, *image_shape), tf.float32),
                         tf.TensorSpec((None,), tf.int64))
            # Traces `self`, not a closure: TF's retracing warning groups closures by
            # their code, so one function per settings would be reported as retracing.
            # autograph=False: CleverHans' loops run over Python ints and unroll at trace time.
            self._function = tf.function(self, input_signature=signature, autograph=False)

    def __call__(self, x, y):
        return self._craft(x, y)

    def attack(self, x, y, seed=None):
        """`x_adv` for one batch; its random draws follow from `seed` alone (None: fresh ones)."""
        if self._function is None:
            # Eager attacks (ART's) draw from NumPy's and Python's global generators.
            with seeded_global_generators(seed):
                return self._craft(x, y)
        self._rng.reset_from_seed(random.SystemRandom().getrandbits(62) if seed is None else seed)
        # Only matters while tracing (once): TF's random ops in `craft` then draw from `_rng`.
        redirect = (random_ops_from(self._rng) if self._attack.seeded_in_trace
                    else contextlib.nullcontext())
        with redirect:
            return self._function(x, y).numpy()

    def tracing_count(self):
        """Traces of the compiled function so far (0 for eager attacks)."""
        return 0 if self._function is None else self._function.experimental_get_tracing_count()
