r"""The main job: pretrain a robust encoder without labels, then judge it downstream.

With no flags: on the embedded digits dataset, trains a TARRL encoder and a
plain SimCLR encoder the same way, evaluates both under PGD with a plain
linear head, and prints them side by side. Each run's encoder (`.keras`) and
report land in --output_dir/<run>/.

Examples (`python -m tools.pretrain` in a clone):
    tarrl-pretrain
    tarrl-pretrain --dataset=npz:mnist.npz --epsilon=0.3 --estimator=pgd --steps=7 --weight=25 \
        --epochs=10 --output_dir=runs/mnist
    tarrl-pretrain --dataset=npz:cifar10.npz --epsilon=8/255 --steps=3 --weight=30 --epochs=15 \
        --recipe=two_stage --second_stage_epochs=5 --keep_weight=10
    tarrl-pretrain --dataset=cifar10 --data_dir=~/tensorflow_datasets --epsilon=0.0314 \
        --estimator=fgsm --nobaseline --noevaluate
    tarrl-pretrain --strategy=mirrored --batch_size=512    # every GPU of this host

--batch_size is the GLOBAL batch, split over the replicas of --strategy. Under
--strategy=multi_worker run the same command on every host, each with its
$TF_CONFIG; the chief (worker 0) writes the encoders and reports.
"""

import os
import sys

from absl import app, flags

from tarrl_tf_cli import startup

flags.DEFINE_string("dataset", "digits", "'digits', 'npz:PATH', or a TFDS name.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_integer("train_examples", None, "Pretrain on the first N training images (default: all).")
flags.DEFINE_string("architecture", "auto",
                    "Encoder: 'auto' (by image size) or a registered architecture "
                    "(tarrl_tf.encoders.ARCHITECTURES).")
flags.DEFINE_integer("width", None, "Encoder width (default: the architecture's).")
flags.DEFINE_string("method", "simclr",
                    "Self-supervised method, registered in tarrl_tf.ssl.methods.METHODS.")
flags.DEFINE_string("estimator", "pgd",
                    "Estimator of R, registered in tarrl_tf.robustness.regularizers.ESTIMATORS.")
flags.DEFINE_enum("norm", "inf", ["inf", "2"], "Threat model norm.")
flags.DEFINE(startup.NumberParser(), "epsilon", 0.1,
             "Threat model radius (images in [0, 1]; a fraction like 8/255 is fine).")
flags.DEFINE_integer("steps", 5, "PGD steps, or power iterations.")
flags.DEFINE_string("divergence", "normalized_relative_l2",
                    "Divergence d, registered in tarrl_tf.robustness.divergences.DIVERGENCES "
                    "(normalized_relative_l2: the normalized shift relative to the batch's "
                    "spread on the sphere).")
flags.DEFINE_enum("regularize_on", "images", ["images", "views"],
                  "Estimate R on the batch's images or on the first augmented view.")
flags.DEFINE_float("weight", 10.0, "Regularizer weight of the TARRL run.")
flags.DEFINE_integer("warmup_epochs", 2, "Epochs over which epsilon and weight ramp up.",
                     lower_bound=0)
flags.DEFINE_integer("epochs", 30, "Pretraining epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Pretraining batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate (cosine decay).")
flags.DEFINE_string("recipe", "auto",
                    "How the TARRL run is trained (tarrl_tf.training.recipes.RECIPES): scratch, "
                    "two_stage (the SimCLR run first, then TARRL started from it), or auto "
                    "(two_stage for the cifar_resnet architecture, scratch otherwise).")
flags.DEFINE_integer("second_stage_epochs", None,
                     "Epochs of TARRL after the SimCLR stage with --recipe=two_stage "
                     "(default: a third of --epochs).", lower_bound=1)
flags.DEFINE_float("keep_weight", None,
                   "Weight of the term keeping the second stage's features near the SimCLR "
                   "stage's (--recipe=two_stage only; default: the recipe's, 10 for two_stage).",
                   lower_bound=0.0)
flags.DEFINE_string("strategy", "default",
                    "tf.distribute strategy of training (tarrl_tf.training.distribute.STRATEGIES): "
                    "default, mirrored (every GPU of this host), multi_worker (the hosts of "
                    "$TF_CONFIG). --batch_size is global.")
flags.DEFINE_boolean("baseline", True, "Also train plain SimCLR (weight 0) the same way.")
flags.DEFINE_boolean("evaluate", True, "Evaluate each encoder downstream after training.")
flags.DEFINE_string("task", "labels", "Downstream task of the evaluation.")
flags.DEFINE_list("attacks", ["pgd_linf"], "Attacks of the evaluation.")
flags.DEFINE_list("epsilons", None,
                  "Attack radii, e.g. 0.1,8/255 (default: epsilon/2, epsilon, 2*epsilon).")
flags.DEFINE_integer("attack_steps", None, "Attack iterations (default: each attack's own).")
flags.DEFINE_integer("head_epochs", 30, "Epochs of the downstream linear head.", lower_bound=1)
flags.DEFINE_boolean("sanity_checks", True, "Run the evaluation's checks against false robustness.")
flags.DEFINE_string("suite", None,
                    "Attack suite of the evaluation (tarrl_tf.attacks.SUITES); its per-image worst "
                    "case is the headline.")
flags.DEFINE_integer("num_examples", 1000, "Test examples to attack.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16"],
                  "Train the encoder and projector in bfloat16 (augmentation, losses and R stay "
                  "float32; the saved encoder is float32), and run the evaluation's PGD and BIM "
                  "searches in it (whether an image is fooled is decided in float32).")
flags.DEFINE_integer("seed", 0, "Seed of everything random.")
flags.DEFINE_string("output_dir", "runs/pretrain", "Where encoders and reports go.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every option is a --flag")
    startup.check_epsilon("epsilon", FLAGS.epsilon, FLAGS.norm)
    epsilons = ([startup.number(e, flag="epsilons") for e in FLAGS.epsilons] if FLAGS.epsilons
                else [FLAGS.epsilon / 2, FLAGS.epsilon, 2 * FLAGS.epsilon])
    tarrl_tf = startup.library()
    from tarrl_tf import data, encoders, evaluation
    from tarrl_tf.evaluation import reports
    from tarrl_tf.robustness import divergences, regularizers
    from tarrl_tf.ssl import methods
    from tarrl_tf.training import distribute, recipes

    startup.check_registered("strategy", FLAGS.strategy, distribute.STRATEGIES.names())
    startup.check_registered("architecture", FLAGS.architecture,
                             ("auto", *encoders.ARCHITECTURES.names()))
    startup.check_registered("method", FLAGS.method, methods.METHODS.names())
    startup.check_registered("estimator", FLAGS.estimator, regularizers.ESTIMATORS.names())
    startup.check_registered("divergence", FLAGS.divergence, divergences.NAMES)
    startup.check_registered("recipe", FLAGS.recipe, ("auto", *recipes.RECIPES.names()))
    if FLAGS.suite is not None:
        from tarrl_tf import attacks

        startup.check_registered("suite", FLAGS.suite, attacks.SUITES.names())
    specs = evaluation.attack_grid(FLAGS.attacks, epsilons, steps=FLAGS.attack_steps,
                                   precision=FLAGS.mixed_precision)
    # The dataset's labels and class count, then what the evaluation will need: all before
    # the training, as a typo must not cost the run.
    info = data.info(FLAGS.dataset, data_dir=FLAGS.data_dir)
    if FLAGS.evaluate:
        for spec in specs:
            startup.check_epsilon("epsilons", spec.epsilon, spec.norm)
        evaluation.tasks.get_task(info.name, FLAGS.task, num_classes=info.num_classes)
    recipe = recipes.RECIPES.get(chosen_recipe(tarrl_tf, info.input_shape, recipes))
    keep_weight = recipe.keep_weight if FLAGS.keep_weight is None else FLAGS.keep_weight
    if keep_weight and not recipe.first_stage:
        raise app.UsageError(f"--keep_weight={keep_weight:g} needs a first stage to keep near: "
                             f"use --recipe=two_stage, not {recipe.name}")
    strategy = distribute.make_strategy(FLAGS.strategy)
    distribute.check_global_batch(FLAGS.batch_size, strategy)
    images, _ = data.load_arrays(FLAGS.dataset, "train", data_dir=FLAGS.data_dir,
                                 max_examples=FLAGS.train_examples)
    trained, written = {}, []
    if recipe.first_stage:
        # The SimCLR run is the first stage: trained first, the TARRL run starts from it.
        trained["simclr"] = train_run(tarrl_tf, "simclr", images, 0.0, strategy)
        encoder, path, seconds = trained["simclr"]
        stage_epochs = recipes.second_stage_epochs(FLAGS.epochs, FLAGS.second_stage_epochs)
        tarrl = train_run(tarrl_tf, "tarrl", images, FLAGS.weight, strategy, epochs=stage_epochs,
                          init_encoder=encoder, keep_weight=keep_weight)
        # Its cost includes the first stage's.
        trained = {"tarrl": (*tarrl[:2], seconds + tarrl[2]), **trained}
    else:
        trained["tarrl"] = train_run(tarrl_tf, "tarrl", images, FLAGS.weight, strategy)
        if FLAGS.baseline:
            trained["simclr"] = train_run(tarrl_tf, "simclr", images, 0.0, strategy)
    results = {}
    for name, (encoder, path, seconds) in trained.items():
        if not distribute.is_chief(strategy):
            continue  # The chief writes and evaluates; the workers only train with it.
        written.append(path)
        if not FLAGS.evaluate or (name == "simclr" and not FLAGS.baseline):
            continue
        print(f"\n== {name}: evaluating on {FLAGS.dataset} ({FLAGS.task})", flush=True)
        if FLAGS.strategy != "default":
            # The saved encoder, outside the strategy: the evaluation's passes must not wait
            # for replicas (or workers) that do not evaluate.
            encoder = evaluation.load_encoder(path)
        report, _, _ = evaluation.evaluate_on_dataset(
            encoder, encoder_name=path, dataset=FLAGS.dataset, task=FLAGS.task, attack_specs=specs,
            num_examples=FLAGS.num_examples, data_dir=FLAGS.data_dir, seed=FLAGS.seed,
            epochs=FLAGS.head_epochs, sanity_checks=FLAGS.sanity_checks, suite=FLAGS.suite,
            verbose=True,
        )
        report["pretraining_seconds"] = seconds
        report["recipe"] = recipe.name if name == "tarrl" else "scratch"
        if name == "tarrl" and keep_weight:
            report["keep_weight"] = keep_weight
        written += reports.write_report(report, os.path.dirname(path)).values()
        results[name] = report
    if results:
        print("\n" + side_by_side(results))
    if not distribute.is_chief(strategy):
        print(f"Worker {distribute.worker_index(strategy)}: trained; the chief (worker 0) "
              "writes the encoders and reports.")
        return
    startup.summary(written)


def chosen_recipe(tarrl_tf, input_shape, recipes):
    if FLAGS.recipe != "auto":
        return FLAGS.recipe
    return recipes.default_recipe(
        tarrl_tf.training.pretraining.architecture_for(tuple(input_shape), FLAGS.architecture))


def train_run(tarrl_tf, name, images, weight, strategy, *, epochs=None, init_encoder=None,
              keep_weight=0.0):
    """Trains one run for `epochs` (default --epochs), from `init_encoder`'s weights if given.

    With `keep_weight`, its features are kept near `init_encoder`'s, which stays frozen.
    """
    epochs = epochs or FLAGS.epochs
    pretraining = tarrl_tf.training.pretraining
    from tarrl_tf.training import distribute

    keep_weight = keep_weight if weight else 0.0  # plain SSL has no second stage to keep
    with strategy.scope():  # the encoder's weights are the strategy's (mirrored) variables
        encoder = pretraining.make_encoder(images.shape[1:], architecture=FLAGS.architecture,
                                           width=FLAGS.width, seed=FLAGS.seed)
    if init_encoder is not None:
        encoder.set_weights(init_encoder.get_weights())
    regularizer = pretraining.make_regularizer(
        FLAGS.estimator, epsilon=FLAGS.epsilon, norm=FLAGS.norm, steps=FLAGS.steps,
        divergence=FLAGS.divergence, num_examples=len(images))
    run_dir = os.path.join(FLAGS.output_dir, name)
    start = " from the simclr encoder" if init_encoder is not None else ""
    replicas = strategy.num_replicas_in_sync
    print(f"\n== {name}: weight {weight}, {len(images)} images, {epochs} epochs{start}"
          + (f", {replicas} replicas ({FLAGS.strategy})" if replicas > 1 else ""), flush=True)
    model, history, seconds = pretraining.pretrain(
        encoder, images, method=FLAGS.method, regularizer=regularizer, weight=weight,
        epochs=epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        warmup_epochs=min(FLAGS.warmup_epochs, epochs), regularize_on=FLAGS.regularize_on,
        keep_weight=keep_weight, reference=init_encoder if keep_weight else None,
        seed=FLAGS.seed, mixed_precision=FLAGS.mixed_precision, strategy=strategy, verbose=2,
        backup_dir=distribute.worker_path(os.path.join(run_dir, "backup"), strategy),
    )
    path = os.path.join(run_dir, "encoder.keras")
    if not distribute.is_chief(strategy):
        return encoder, path, seconds
    os.makedirs(run_dir, exist_ok=True)
    model.encoder.save(path)
    print(f"Saved {path} ({seconds:.0f} s of training)", flush=True)
    return encoder, path, seconds


def side_by_side(results):
    """A table with one column per run: clean accuracy, robust accuracy per attack, R."""
    names = list(results)
    first = results[names[0]]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("clean accuracy", [f"{results[n]['clean_accuracy']:.4f}" for n in names])
    for i, attack in enumerate(first["attacks"]):
        row(f"{attack['name']} eps={attack['epsilon']:.4g} ({attack['steps']} steps)",
            [f"{results[n]['attacks'][i]['robust_accuracy']:.4f}" for n in names])
    for i, r in enumerate(first["robustness"]):
        row(f"R ({r['norm']}, eps={r['epsilon']:.4g})",
            [f"{results[n]['robustness'][i]['R']:.4f}" for n in names])
    for i, w in enumerate(first.get("worst_case", [])):
        row(f"worst case of {w['suite']} {w['norm']} eps={w['epsilon']:.4g} (n={w['num_examples']})",
            [f"{results[n]['worst_case'][i]['robust_accuracy']:.4f}" for n in names])
    row("pretraining seconds", [f"{results[n]['pretraining_seconds']:.0f}" for n in names])
    return "\n".join(lines)


def run():
    """The `tarrl-pretrain` command."""
    startup.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
