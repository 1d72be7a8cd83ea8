"""Running attacks on Keras classifiers: crafting, accuracies, report rows."""

import numpy as np
import tensorflow as tf

from tarrl_tf.attacks.compiled import compiled_attack
from tarrl_tf.attacks.spec import AttackSpec, check_integer
from tarrl_tf.checks import check_images
from tarrl_tf.progress import Progress


def run_attack(
    model,
    x,
    y,
    spec,
    *,
    batch_size=128,
    clip_min=0.0,
    clip_max=1.0,
    seed=None,
    first_index=0,
    verbose=False,
):
    """Crafts adversarial examples for a Keras classifier.

    Args:
        model: a Keras model mapping `[batch, H, W, C]` images to logits; it is
            called with `training=False`.
        x: float images, rank 4, values in `[clip_min, clip_max]`.
        y: true labels, 1-D integers, one per image. Always required: the
            attacks never fall back to the model's own predictions.
        spec: an `AttackSpec`.
        batch_size: examples per attack call.
        clip_min: smallest valid pixel value.
        clip_max: largest valid pixel value.
        seed: optional integer; the same seed gives the same random starts.
            Each batch draws them from `(seed, index of its first image)`
            alone (`batch_seed`), not from the batches before it.
        first_index: the index of `x[0]` in a larger set of which `x` is a
            slice. A slice starting at a multiple of `batch_size` is cut into
            the batches the whole set is, with the same seeds: its images get
            the results the run on the whole set gives them (a test set
            attacked in shards, `tarrl_tf.evaluation.shards`).
        verbose: show a progress bar with the images per second.

    The attack is built (and traced) once per classifier and settings and
    kept with the classifier (`compiled.py`): later calls, other seeds, and a
    partial last batch reuse it; each batch's seed only resets the compiled
    attack's random generator.

    Returns:
        `x_adv`, float32 NumPy array of `x`'s shape, with
        `||x_adv - x|| <= spec.epsilon` in `spec.norm` and values in
        `[clip_min, clip_max]`. `spec.epsilon == 0` returns `x` unchanged.
    """
    x, y = _check_inputs(x, y, clip_min=clip_min, clip_max=clip_max)
    spec = _check_spec(spec)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    if seed is not None:
        seed = check_integer(seed, "seed", minimum=0)
    first_index = check_integer(first_index, "first_index", minimum=0)
    if spec.epsilon == 0:
        # Nothing to search; also spares CleverHans divisions by a zero radius.
        return x.copy()
    num_classes = _num_classes(model, x, y)
    compiled = compiled_attack(model, spec, image_shape=x.shape[1:], num_classes=num_classes,
                               clip_min=clip_min, clip_max=clip_max)
    x_adv = np.empty_like(x)
    progress = Progress(f"{spec.name} eps={spec.epsilon:.4g}", len(x)) if verbose else None
    for start in range(0, len(x), batch_size):
        stop = min(start + batch_size, len(x))
        this_seed = None if seed is None else batch_seed(seed, first_index + start)
        x_adv[start:stop] = compiled.attack(x[start:stop], y[start:stop], seed=this_seed)
        if progress is not None:
            progress.update(stop)
    if progress is not None:
        progress.close()
    return x_adv


def batch_seed(seed, first_image):
    """The seed of the batch that starts at image `first_image` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, first_image]).generate_state(1)[0])


def clean_accuracy(model, x, y, *, batch_size=256, clip_min=0.0, clip_max=1.0):
    """Fraction of `x` that `model` classifies as `y` (inference mode, batched)."""
    x, y = _check_inputs(x, y, clip_min=clip_min, clip_max=clip_max)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    return float(np.mean(_predict(model, x, batch_size=batch_size) == y))


def robust_accuracy(
    model, x, y, spec, *, batch_size=128, clip_min=0.0, clip_max=1.0, seed=None, verbose=False
):
    """Fraction of examples classified correctly both clean and under the attack.

    `x` itself lies in the threat ball, so an example counts as robust only if
    `x` and `x_adv` are both classified correctly (robust <= clean accuracy).
    The keyword arguments are those of `run_attack`.
    """
    (row,) = evaluate_attacks(
        model,
        x,
        y,
        [spec],
        batch_size=batch_size,
        clip_min=clip_min,
        clip_max=clip_max,
        seed=seed,
        verbose=verbose,
    )
    return row["robust_accuracy"]


def evaluate_attacks(
    model, x, y, specs, *, batch_size=128, clip_min=0.0, clip_max=1.0, seed=None, verbose=False
):
    """Runs several attacks; returns one report row per spec.

    Each row is `spec.to_dict()` plus `robust_accuracy` (see `robust_accuracy`)
    and `num_examples`. The keyword arguments are those of `run_attack`; every
    attack gets the same `seed`.
    """
    specs = [_check_spec(spec) for spec in specs]
    x, y = _check_inputs(x, y, clip_min=clip_min, clip_max=clip_max)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    clean_ok = _predict(model, x, batch_size=batch_size) == y
    rows = []
    for spec in specs:
        x_adv = run_attack(
            model,
            x,
            y,
            spec,
            batch_size=batch_size,
            clip_min=clip_min,
            clip_max=clip_max,
            seed=seed,
            verbose=verbose,
        )
        adv_ok = _predict(model, x_adv, batch_size=batch_size) == y
        rows.append(
            {
                **spec.to_dict(),
                "robust_accuracy": float(np.mean(clean_ok & adv_ok)),
                "num_examples": len(x),
            }
        )
    return rows


def _num_classes(model, x, y):
    logits = model(tf.constant(x[:1]), training=False)
    if len(logits.shape) != 2:
        raise ValueError(
            "The model must return logits of shape [batch, classes], "
            f"got shape {tuple(logits.shape)}"
        )
    num_classes = int(logits.shape[-1])
    if y.max() >= num_classes:
        raise ValueError(f"Labels must be < {num_classes} (the model's classes), got {y.max()}")
    return num_classes


def _predict(model, x, *, batch_size):
    return np.concatenate(
        [
            np.argmax(model(x[start : start + batch_size], training=False), axis=-1)
            for start in range(0, len(x), batch_size)
        ]
    )


def _check_inputs(x, y, *, clip_min, clip_max):
    check_images(x, clip_min=clip_min, clip_max=clip_max, name="x")
    x = np.asarray(x, dtype=np.float32)
    if y is None:
        raise ValueError(
            "Labels y are required; attacks never use the model's predictions as labels"
        )
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"y must be 1-D integer class labels, got shape {y.shape} and dtype {y.dtype}"
            + ("; convert one-hot labels with np.argmax(y, axis=-1)" if y.ndim == 2 else "")
        )
    if len(y) != len(x):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if y.min() < 0:
        raise ValueError(f"Labels must be >= 0, got {y.min()}")
    return x, y.astype(np.int64)


def _check_spec(spec):
    if not isinstance(spec, AttackSpec):
        raise TypeError(
            f"Expected an AttackSpec (see make_attack), got {type(spec).__name__}"
        )
    return spec


