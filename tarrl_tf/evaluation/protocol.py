"""The evaluation protocol of an encoder: the report behind `tools/evaluate.py`.

Train a plain head on the frozen encoder for a task, attack the whole
pipeline (CleverHans and ART, through `tarrl_tf.attacks`), measure the encoder's
regularizer `R` on the same examples, and, for linear heads, set the
task-agnostic bound beside the measured adversarial loss.
"""

import math
import numbers
import os

import keras
import tensorflow as tf

from tarrl_tf import attacks, data, zoo
from tarrl_tf import checks
from tarrl_tf.checks import check_images
from tarrl_tf.files import check_keras_file
from tarrl_tf.precision import check_mixed_precision
from tarrl_tf.evaluation import downstream, shards, tasks
from tarrl_tf.evaluation.assembly import BOUND_NOTE, SUBSET_ATTACKS, assemble  # noqa: F401
from tarrl_tf.evaluation.per_image import Measured, representation_shifts


def representation_shift(encoder, x, *, epsilon, norm, steps=20, batch_size=256, seed=0,
                          verbose=False):
    """Worst-case change of the normalized representation inside the ball, per example.

    Maximizes the `squared_l2` divergence with PGD. Returns `d`, one value
    per example: `mean(d)` estimates `R`, `mean(sqrt(d))` the mean worst-case
    L2 shift of the normalized representation.
    """
    return representation_shifts(encoder, x, [(norm, epsilon)], steps=steps,
                                 batch_size=batch_size, seed=seed, verbose=verbose)[(norm, epsilon)]


def evaluate(
    encoder,
    *,
    train,
    test,
    num_classes,
    attack_specs,
    head="linear",
    fine_tune=False,
    epochs=30,
    batch_size=256,
    regularizer_steps=20,
    sanity_checks=True,
    spsa_examples=100,
    subset_examples=None,
    suite=None,
    suite_threat_models=None,
    suite_examples=None,
    seed=0,
    shard=None,
    verbose=False,
):
    """Trains a head on `train`, attacks the classifier on `test`, returns the report dict.

    Args:
        encoder: the encoder to judge.
        train: `(x, y)` for the head, labels already mapped to the task.
        test: `(x, y)` to attack.
        num_classes: classes of the task.
        attack_specs: `tarrl_tf.attacks.AttackSpec`s.
        head: `"linear"` or `"mlp"`.
        fine_tune: train the encoder too (plainly) instead of freezing it.
        epochs: epochs of head training.
        batch_size: batch size of head training and attacks.
        regularizer_steps: PGD steps for measuring `R`.
        sanity_checks: run the checks against false robustness.
        spsa_examples: test examples for the gradient-free sanity check.
        subset_examples: attacks named in `SUBSET_ATTACKS` run on the first
            `subset_examples` test examples only (None: on all).
        suite: optional attack suite (`tarrl_tf.attacks.SUITES`: `"standard"`,
            `"quick"`) run at every threat model of `attack_specs`; its per-image
            worst case is the report's headline (`worst_case`).
        suite_threat_models: optional `[(norm, epsilon)]`, some of the threat
            models of `attack_specs`, to run the suite at only (a full suite
            costs minutes per hundred images on a CIFAR ResNet).
        suite_examples: optional; the suite attacks the first `suite_examples`
            test examples only (None: all).
        seed: seed for head training and attack random starts.
        shard: optional `(index, count)`: attack only shard `index` of `count`
            of the test set (whole batches, see `shards.span`) and return its
            per-image record in place of the report; `shards.merge` of every
            shard's record is the report of the run without `shard`. Every
            shard trains the same head (the same seed and data; the merge
            checks that their heads are equal).
        verbose: a progress bar per attack and per measurement of R (images/s).

    Returns:
        `(report, classifier, head)`. The report is a dict with `clean_accuracy`, `clean_loss`, `attacks` (one row per
        spec: settings, `robust_accuracy`, `adversarial_loss`, and the
        `num_examples`, `clean_accuracy` and `clean_loss` of the examples it
        attacked), `robustness` (`R` per threat model), `bound` (linear heads)
        and `sanity_checks` with `reliable` (every check passed). With a
        suite: its attacks' rows (marked `"suite"`) in `attacks`, `suite`, and
        `worst_case`, one row per threat model (see `worst_case.py`). With
        `shard`, the shard's record (`shards.record`) in its place.
    """
    x_test, y_test = test
    check_images(x_test, name="test images")
    plan = evaluation_plan(
        attack_specs, num_examples=len(x_test), head=head, fine_tune=fine_tune,
        num_classes=num_classes, num_train_examples=len(train[0]), batch_size=batch_size,
        regularizer_steps=regularizer_steps, sanity_checks=sanity_checks,
        spsa_examples=spsa_examples, subset_examples=subset_examples, suite=suite,
        suite_threat_models=suite_threat_models, suite_examples=suite_examples, seed=seed)
    span = shards.span(len(x_test), batch_size, shard)  # a bad shard fails before training
    classifier, head_model = downstream.train_classifier(
        encoder, *train, num_classes=num_classes, head=head, fine_tune=fine_tune, epochs=epochs,
        batch_size=batch_size, seed=seed,
    )
    measured = Measured(classifier, classifier.layers[1] if fine_tune else encoder, x_test,
                        y_test, span=span, batch_size=batch_size, seed=seed,
                        regularizer_steps=regularizer_steps, verbose=verbose)
    lipschitz = downstream.linear_head_lipschitz(head_model) if head == "linear" else None
    # Sharded, the report of this shard's images alone means nothing; computing it runs
    # every attack the report needs, on this shard's images.
    report = assemble(plan, measured, lipschitz)
    if shard is not None:
        report = shards.record(plan, measured, shard, head_model, lipschitz)
    return report, classifier, head_model


def evaluation_plan(attack_specs, *, num_examples, head, fine_tune, num_classes,
                    num_train_examples, batch_size, regularizer_steps, sanity_checks,
                    spsa_examples, subset_examples, suite, suite_threat_models, suite_examples,
                    seed):
    """The settings of an evaluation as plain JSON values, checked (see `evaluate`)."""
    subset_examples = _checked_subset(subset_examples)
    suite_examples = _checked_subset(suite_examples, "suite_examples")
    threat_models = sorted({(s.norm, s.epsilon) for s in attack_specs if s.epsilon > 0})
    threat_models_of_suite = None
    if suite is not None:
        suite = attacks.SUITES.get(suite).name
        if not threat_models:
            raise ValueError(f"suite {suite!r} needs a threat model: at least one attack spec "
                             "with epsilon > 0 (the suite runs at their norms and radii)")
        threat_models_of_suite = threat_models
        if suite_threat_models is not None:
            threat_models_of_suite = [_matching_threat_model(t, threat_models)
                                      for t in suite_threat_models]
            if not threat_models_of_suite:
                raise ValueError("suite_threat_models is empty; pass None to run the suite at "
                                 "every threat model")
    return {
        "head": head, "fine_tune": bool(fine_tune), "num_classes": int(num_classes),
        "num_train_examples": int(num_train_examples), "num_examples": int(num_examples),
        "attack_specs": [spec.to_dict() for spec in attack_specs],
        "subset_examples": subset_examples, "suite": suite,
        "suite_threat_models": (None if threat_models_of_suite is None
                                else [list(t) for t in threat_models_of_suite]),
        "suite_examples": suite_examples, "regularizer_steps": int(regularizer_steps),
        "sanity_checks": bool(sanity_checks), "spsa_examples": int(spsa_examples),
        "batch_size": int(batch_size), "seed": int(seed),
    }


def _matching_threat_model(threat_model, threat_models):
    norm, epsilon = checks.canonical_norm(threat_model[0]), float(threat_model[1])
    for known in threat_models:
        if known[0] == norm and math.isclose(known[1], epsilon):
            return known
    raise ValueError(f"suite threat model {(norm, epsilon)} is not a threat model of the attack "
                     f"specs {threat_models}")


def _checked_subset(value, name="subset_examples"):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer or None (all examples), got {value!r}"
        )
    return int(value)


def load_encoder(path_or_name, *, zoo_dir=None):
    """Loads an encoder from a `.keras` file or, failing that, from the zoo by name."""
    if os.path.exists(path_or_name):
        if str(path_or_name).endswith(".keras"):
            check_keras_file(path_or_name)
        return keras.models.load_model(path_or_name)
    try:
        names = zoo.list(zoo_dir=zoo_dir)
    except zoo.ZooError as error:  # No zoo here (e.g. a wheel install): say so, after the path.
        names, problem = [], f"; the zoo is unavailable: {error}"
    else:
        problem = f" (zoo entries: {', '.join(names) or 'none'})"
    if path_or_name in names:
        return zoo.load(path_or_name, zoo_dir=zoo_dir)
    raise ValueError(f"No encoder file and no zoo entry named {path_or_name!r}{problem}")


def attack_grid(names, epsilons, *, l2_epsilons=None, steps=None, precision=None):
    """One `AttackSpec` per attack and radius; L2 attacks take `l2_epsilons` when given.

    `precision` ("bfloat16") goes to the attacks whose search can run in it
    (`AttackSpec.precision`); the others stay float32.
    """
    precision = check_mixed_precision(precision)
    specs = []
    for name in names:
        probe = attacks.make_attack(name, epsilon=0.0)
        radii = l2_epsilons if probe.norm == "2" and l2_epsilons else epsilons
        own = precision if precision in attacks.ATTACKS.get(name).precisions else None
        specs += [attacks.make_attack(name, epsilon=eps, steps=None if name == "fgsm" else steps,
                                      precision=own)
                  for eps in radii]
    return specs


def evaluate_on_dataset(
    encoder,
    *,
    encoder_name,
    dataset,
    task="labels",
    attack_specs,
    num_examples=1000,
    train_examples=None,
    data_dir=None,
    **kwargs,
):
    """Loads the data, maps the task's labels, and runs `evaluate`.

    Args:
        encoder: the encoder to judge.
        encoder_name: how the report names it (a path or zoo name).
        dataset: a `tarrl_tf.data` source (`"digits"`, `"npz:PATH"`, a TFDS name).
        task: a task of `tarrl_tf.evaluation.tasks` for that dataset.
        attack_specs: the attacks to run.
        num_examples: test examples to attack (the first ones of the split).
        train_examples: training examples for the head (None: all).
        data_dir: TFDS data directory.
        **kwargs: passed to `evaluate` (head, fine_tune, epochs, subset_examples,
            shard, ...).

    Returns:
        `(report, classifier, head)`; with `shard`, the shard's record in
        place of the report (`shards.merge` makes the report).
    """
    info = data.info(dataset, data_dir=data_dir)
    derived = tasks.get_task(info.name, task, num_classes=info.num_classes)
    x_train, y_train = data.load_arrays(dataset, "train", data_dir=data_dir,
                                        max_examples=train_examples)
    x_test, y_test = data.load_arrays(dataset, "test", data_dir=data_dir, max_examples=num_examples)
    expected = tuple(encoder.input_shape[1:])
    actual = tuple(x_train.shape[1:])
    if len(expected) != len(actual) or any(e not in (None, a) for e, a in zip(expected, actual)):
        raise ValueError(
            f"The encoder takes images of shape {expected}, but {dataset!r} has {actual}"
        )
    report, classifier, head = evaluate(
        encoder,
        train=(x_train, derived.map_labels(y_train)),
        test=(x_test, derived.map_labels(y_test)),
        num_classes=derived.num_classes,
        attack_specs=attack_specs,
        **kwargs,
    )
    # The dataset by name (and the sha256 of its file), never by a path of this machine.
    before = {"encoder": encoder_name, **data.describe(dataset, data_dir=data_dir), "task": task,
              "class_names": list(derived.class_names)}
    after = {"versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}
    if kwargs.get("shard") is not None:  # a shard's record: the merge adds them to the report
        return {**report, "report_fields": {"before": before, "after": after}}, classifier, head
    return {**before, **report, **after}, classifier, head
