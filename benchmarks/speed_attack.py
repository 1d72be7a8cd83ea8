"""The evaluation's attack path against CleverHans' PGD called eagerly, batch by batch.

The same classifier, images, radius, step size and batch size; both from a
random start. The rounds alternate between the two, and the first round of
each (it traces) is left out of the medians.
"""

import time

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

import tarrl_tf
from tarrl_tf import attacks, data, zoo
from tarrl_tf.evaluation import downstream
from tarrl_tf.testing import prototype_data

SYNTHETIC = "synthetic"


def classifier_and_images(source, *, num_images, datasets_dir=None, zoo_dir=None):
    """`(classifier, x, y, epsilon, description)`.

    `source` is a zoo entry with a head (its encoder and head, its dataset's
    test images, its card's radius) or `"synthetic"` (a tiny CNN with a linear
    head trained in seconds on 8x8 prototype images, radius 0.1).
    """
    if source == SYNTHETIC:
        x_train, y_train = prototype_data(96, seed=1)
        x, y = prototype_data(num_images, seed=2)
        encoder = tarrl_tf.encoders.small_cnn(input_shape=x.shape[1:], width=4,
                                              representation_dim=16)
        classifier, _ = downstream.train_classifier(encoder, x_train, y_train, num_classes=3,
                                                    epochs=3, batch_size=32)
        return classifier, x, y, 0.1, "tiny small_cnn on 8x8 prototype images"
    card = zoo.info(source, zoo_dir=zoo_dir)
    classifier = downstream.build_classifier(zoo.load(source, zoo_dir=zoo_dir),
                                             zoo.load_head(source, zoo_dir=zoo_dir))
    path = f"{datasets_dir}/{card['dataset']}/{card['dataset']}.npz"
    x, y = data.load_arrays(f"npz:{path}", "test", max_examples=num_images)
    epsilon = float(card["threat_model"]["epsilon"])
    return classifier, x, y, epsilon, f"zoo entry {source} on {len(x)} {card['dataset']} test images"


def eager_cleverhans_pgd(classifier, x, y, spec, batch_size, random_start=True):
    """`cleverhans.tf2`'s `projected_gradient_descent`, called eagerly on each batch."""
    def model_fn(images):
        return classifier(images, training=False)

    batches = []
    for start in range(0, len(x), batch_size):
        batches.append(projected_gradient_descent(
            model_fn, tf.constant(x[start:start + batch_size]), eps=spec.epsilon,
            eps_iter=spec.step_size, nb_iter=spec.steps, norm=np.inf, clip_min=0.0, clip_max=1.0,
            y=tf.constant(y[start:start + batch_size]), targeted=False, rand_init=random_start,
            sanity_checks=False).numpy())
    return np.concatenate(batches)


def robust(classifier, x, x_adv, y):
    """Per image: right both clean and under the attack, as the evaluation counts it."""
    def right(images):
        return np.argmax(classifier.predict(images, batch_size=512, verbose=0), axis=-1) == y

    return right(x) & right(x_adv)


def robust_accuracy(classifier, x, x_adv, y):
    return float(np.mean(robust(classifier, x, x_adv, y)))


def same_start(classifier, x, y, *, epsilon, steps, batch_size):
    """Both paths from the images themselves (no random start), compared image by image.

    From one start both take the same steps (CleverHans' `optimize_linear`,
    `clip_eta` and clipping), so they differ only where the evaluation keeps an
    image's first misclassified iterate and CleverHans steps on past it: every
    image CleverHans fools, the evaluation must fool too. With random starts
    the two paths also draw different starts, and their accuracies differ by
    that noise as well.
    """
    spec = attacks.make_attack("pgd_linf", epsilon=epsilon, steps=steps, random_start=False)
    ours = robust(classifier, x, attacks.run_attack(classifier, x, y, spec,
                                                    batch_size=batch_size, seed=0), y)
    theirs = robust(classifier, x, eager_cleverhans_pgd(classifier, x, y, spec, batch_size,
                                                        random_start=False), y)
    return {
        "robust_accuracy": {"evaluation": float(np.mean(ours)),
                            "cleverhans_eager": float(np.mean(theirs))},
        "fooled_by_cleverhans_only": int(np.sum(ours & ~theirs)),
        "fooled_by_evaluation_only": int(np.sum(theirs & ~ours)),
        "attack": spec.to_dict(),
    }


def attack_speedup(classifier, x, y, *, epsilon, steps, batch_size, rounds, log=print):
    """Seconds of the paths, their ratios to eager CleverHans and robust accuracies (PGD, L-inf).

    The evaluation's path runs twice: in float32, and with its search in
    bfloat16 (`AttackSpec.precision`; verdicts in float32).
    """
    spec = attacks.make_attack("pgd_linf", epsilon=epsilon, steps=steps)
    low = attacks.make_attack("pgd_linf", epsilon=epsilon, steps=steps, precision="bfloat16")
    paths = {
        "evaluation": lambda: attacks.run_attack(classifier, x, y, spec, batch_size=batch_size,
                                                 seed=0),
        "evaluation_bfloat16": lambda: attacks.run_attack(classifier, x, y, low,
                                                          batch_size=batch_size, seed=0),
        "cleverhans_eager": lambda: eager_cleverhans_pgd(classifier, x, y, spec, batch_size),
    }
    seconds = {name: [] for name in paths}
    first = {}
    accuracy = {}
    for round_ in range(rounds + 1):
        for name, run in paths.items():
            start = time.perf_counter()
            x_adv = run()
            elapsed = time.perf_counter() - start
            if round_ == 0:
                first[name] = round(elapsed, 3)  # with its traces
            else:
                seconds[name].append(elapsed)
            accuracy[name] = robust_accuracy(classifier, x, x_adv, y)
        log(f"attack: round {round_ + 1}/{rounds + 1}")
    medians = {name: float(np.median(values)) for name, values in seconds.items()}
    ours = ("evaluation", "evaluation_bfloat16")
    gaps = {name: round(100 * abs(accuracy[name] - accuracy["cleverhans_eager"]), 2)
            for name in ours}
    return {
        "ratio": round(medians["cleverhans_eager"] / medians["evaluation"], 3),
        "bfloat16_ratio": round(medians["cleverhans_eager"] / medians["evaluation_bfloat16"], 3),
        "first_call_ratio": round(first["cleverhans_eager"] / first["evaluation"], 3),
        "median_seconds": {name: round(s, 3) for name, s in medians.items()},
        "first_call_seconds": first,
        "robust_accuracy": accuracy,
        "accuracy_gap_points": gaps,
        "agree_within_half_a_point": {name: bool(gap <= 0.5) for name, gap in gaps.items()},
        "same_start": same_start(classifier, x, y, epsilon=epsilon, steps=steps,
                                 batch_size=batch_size),
        "attack": spec.to_dict(),
        "num_images": int(len(x)),
        "batch_size": int(batch_size),
        "rounds": int(rounds),
    }
