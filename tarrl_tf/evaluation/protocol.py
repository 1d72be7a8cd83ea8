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
import numpy as np
import tensorflow as tf

from tarrl_tf import attacks, data, zoo
from tarrl_tf import checks
from tarrl_tf.checks import check_images
from tarrl_tf.files import check_keras_file
from tarrl_tf.evaluation import downstream, sanity, tasks, worst_case
from tarrl_tf.progress import Progress
from tarrl_tf.evaluation.sanity import sanity_checks as run_sanity_checks
from tarrl_tf.robustness import divergences
from tarrl_tf.robustness.regularizers import PGD

BOUND_NOTE = (
    "PGD finds a lower estimate of each inner maximum, so 'bound' = clean loss + Lipschitz "
    "constant x estimated worst-case representation shift is an estimate, not a certificate."
)
# Too slow on a CPU for a full test set: with `subset_examples` they attack the first examples only.
SUBSET_ATTACKS = tuple(name for name, attack in attacks.ATTACKS.items() if attack.costly)


def representation_shift(encoder, x, *, epsilon, norm, steps=20, batch_size=256, seed=0,
                         verbose=False):
    """Worst-case change of the normalized representation inside the ball, per example.

    Maximizes the `squared_l2` divergence with PGD. Returns `d`, one value
    per example: `mean(d)` estimates `R`, `mean(sqrt(d))` the mean worst-case
    L2 shift of the normalized representation.
    """
    return representation_shifts(encoder, x, [(norm, epsilon)], steps=steps,
                                 batch_size=batch_size, seed=seed, verbose=verbose)[(norm, epsilon)]


def representation_shifts(encoder, x, threat_models, *, steps=20, batch_size=256, seed=0,
                          verbose=False):
    """`{(norm, epsilon): d}`: `representation_shift` for several threat models."""
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
        shifts[(norm, epsilon)] = np.concatenate(batches)
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
        verbose: a progress bar per attack and per measurement of R (images/s).

    Returns:
        A dict with `clean_accuracy`, `clean_loss`, `attacks` (one row per
        spec: settings, `robust_accuracy`, `adversarial_loss`, and the
        `num_examples`, `clean_accuracy` and `clean_loss` of the examples it
        attacked), `robustness` (`R` per threat model), `bound` (linear heads)
        and `sanity_checks` with `reliable` (every check passed). With a
        suite: its attacks' rows (marked `"suite"`) in `attacks`, `suite`, and
        `worst_case`, one row per threat model (see `worst_case.py`).
    """
    subset_examples = _checked_subset(subset_examples)
    threat_models = sorted({(s.norm, s.epsilon) for s in attack_specs if s.epsilon > 0})
    if suite is not None:
        suite = attacks.SUITES.get(suite).name
        if not threat_models:
            raise ValueError(f"suite {suite!r} needs a threat model: at least one attack spec "
                             "with epsilon > 0 (the suite runs at their norms and radii)")
        if suite_threat_models is not None:
            threat_models_of_suite = [_matching_threat_model(t, threat_models)
                                      for t in suite_threat_models]
            if not threat_models_of_suite:
                raise ValueError("suite_threat_models is empty; pass None to run the suite at "
                                 "every threat model")
        else:
            threat_models_of_suite = threat_models
    suite_examples = _checked_subset(suite_examples, "suite_examples")
    x_test, y_test = test
    check_images(x_test, name="test images")
    classifier, head_model = downstream.train_classifier(
        encoder, *train, num_classes=num_classes, head=head, fine_tune=fine_tune, epochs=epochs,
        batch_size=batch_size, seed=seed,
    )
    features_encoder = classifier.layers[1] if fine_tune else encoder
    report = {
        "head": head,
        "fine_tune": bool(fine_tune),
        "num_classes": int(num_classes),
        "num_train_examples": int(len(train[0])),
        "num_examples": int(len(x_test)),
    }
    # One clean pass, sliced per row: a subset row's clean numbers are those of its examples.
    clean = _correct_and_loss(classifier, x_test, y_test)
    report["clean_accuracy"] = float(np.mean(clean[0]))
    report["clean_loss"] = float(np.mean(clean[1]))
    report["attacks"] = []
    for spec in attack_specs:
        n = len(x_test)
        if subset_examples is not None and spec.name in SUBSET_ATTACKS:
            n = min(n, subset_examples)
        report["attacks"].append(
            attack_row(classifier, x_test, y_test, clean, spec, n, batch_size, seed, verbose))

    def run(spec, n):
        return attack_row_and_mask(classifier, x_test, y_test, clean, spec, n, batch_size, seed,
                                   verbose)

    suite_runs = None
    if suite is not None:
        rows, report["worst_case"], suite_runs = worst_case.run_suite(
            run, suite, threat_models_of_suite, min(len(x_test), suite_examples or len(x_test)))
        report["attacks"] += rows
        report["suite"] = suite
    shifts = representation_shifts(features_encoder, x_test, threat_models,
                                   steps=regularizer_steps, batch_size=batch_size, seed=seed,
                                   verbose=verbose)
    report["robustness"] = [
        {"norm": norm, "epsilon": eps, "estimator": "pgd", "steps": regularizer_steps,
         "divergence": "squared_l2", "R": float(np.mean(d)),
         "mean_shift": float(np.mean(np.sqrt(d))), "num_examples": int(len(d))}
        for (norm, eps), d in shifts.items()
    ]
    if head == "linear":
        report["bound"] = _bound_rows(report, downstream.linear_head_lipschitz(head_model), shifts)
        report["bound_note"] = BOUND_NOTE
    if sanity_checks:
        checks = run_sanity_checks(lambda spec, n: run(spec, n)[0], y_test, attack_specs, report,
                                   spsa_examples)
        if suite_runs:
            checks += sanity.suite_checks(run, suite_runs)
        report["sanity_checks"] = checks
        report["reliable"] = all(check["passed"] for check in checks)
    return report, classifier, head_model


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


def _correct_and_loss(classifier, x, y):
    """Per example: is the prediction right, and its cross-entropy."""
    logits = classifier.predict(x, batch_size=512, verbose=0)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=np.asarray(y, "int64"), logits=logits)
    return np.argmax(logits, axis=-1) == np.asarray(y), loss.numpy()


def attack_row(classifier, x, y, clean, spec, n, batch_size, seed, verbose=False):
    """The row of `spec` run on the first `n` examples; `clean` is `_correct_and_loss(x, y)`."""
    return attack_row_and_mask(classifier, x, y, clean, spec, n, batch_size, seed, verbose)[0]


def attack_row_and_mask(classifier, x, y, clean, spec, n, batch_size, seed, verbose=False):
    """`attack_row` and, per example, whether it is right both clean and under the attack."""
    x, y, clean_ok, clean_loss = x[:n], y[:n], clean[0][:n], clean[1][:n]
    x_adv = attacks.run_attack(classifier, x, y, spec, batch_size=batch_size, seed=seed,
                               verbose=verbose)
    adv_ok, adv_loss = _correct_and_loss(classifier, x_adv, y)
    return {
        **spec.to_dict(),
        # x itself lies in the ball: an example is robust only if both are right.
        "robust_accuracy": float(np.mean(clean_ok & adv_ok)),
        "adversarial_loss": float(np.mean(adv_loss)),
        "num_examples": int(len(x)),
        "clean_accuracy": float(np.mean(clean_ok)),
        "clean_loss": float(np.mean(clean_loss)),
    }, clean_ok & adv_ok


def _bound_rows(report, lipschitz, shifts):
    rows = []
    for row in report["attacks"]:
        key = (row["norm"], row["epsilon"])
        if key not in shifts:
            continue
        # Both sides on the examples the row attacked (the first ones of the test set).
        n = row["num_examples"]
        shift = float(np.mean(np.sqrt(shifts[key][:n])))
        rows.append({
            "attack": row["name"], "norm": row["norm"], "epsilon": row["epsilon"],
            "clean_loss": row["clean_loss"], "lipschitz": lipschitz,
            "representation_shift": shift, "bound": row["clean_loss"] + lipschitz * shift,
            "adversarial_loss": row["adversarial_loss"], "num_examples": n,
        })
    return rows


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


def attack_grid(names, epsilons, *, l2_epsilons=None, steps=None):
    """One `AttackSpec` per attack and radius; L2 attacks take `l2_epsilons` when given."""
    specs = []
    for name in names:
        probe = attacks.make_attack(name, epsilon=0.0)
        radii = l2_epsilons if probe.norm == "2" and l2_epsilons else epsilons
        specs += [attacks.make_attack(name, epsilon=eps, steps=None if name == "fgsm" else steps)
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
        **kwargs: passed to `evaluate` (head, fine_tune, epochs, subset_examples, ...).

    Returns:
        `(report, classifier, head)`.
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
    report = {"encoder": encoder_name, **data.describe(dataset, data_dir=data_dir), "task": task,
              "class_names": list(derived.class_names), **report,
              "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}
    return report, classifier, head
