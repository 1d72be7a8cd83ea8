r"""Small ablations of the regularizer on an MNIST subset: estimator, divergence, weight, seed.

Each configuration pretrains a small CNN (SimCLR + weight * R, or any
training method of `tarrl_tf.training` with --method) on the first
--train_examples MNIST images, trains a plain linear probe on 10,000 labelled
training images, and attacks it with PGD-20 (random start; L-inf, or L2 with
--eval_norm=2) at each of --eval_epsilons on the first 500 test images. One
JSON line per configuration, with every setting, is appended to --output (and
printed); `benchmarks/results_table.py` turns the lines into tables and figures.

Examples:
    python benchmarks/ablation.py --name=simclr --weight=0
    python benchmarks/ablation.py --name=tarrl_rel_w1 --weight=1 --divergence=relative_l2
    python benchmarks/ablation.py --name=tarrl_rel_w1_s1 --weight=1 --divergence=relative_l2 --seed=1
    python benchmarks/ablation.py --name=tarrl_rel_w1_l2 --weight=1 --divergence=relative_l2 \
        --norm=2 --epsilon=2 --eval_norm=2 --eval_epsilons=1,2,3

BatchNorm on CIFAR-10 (RESULTS.md), R differentiated through inference-mode
passes against batch statistics, on a width-8 ResNet:
    python benchmarks/ablation.py --name=cifar_bn_moving --batch_statistics=false \
        --dataset=npz:../shared/datasets/cifar10/cifar10.npz --width=8 --train_examples=5000 \
        --epochs=15 --weight=10 --divergence=normalized_relative_l2 --steps=3 \
        --epsilon=0.0313725 --eval_epsilons=0.0313725 --output=benchmarks/batchnorm.jsonl

The zoo's CIFAR-10 encoders under the proxy's evaluation (RESULTS.md), trained elsewhere:
    python benchmarks/ablation.py --name=zoo_cifar10_resnet_acl_linf8 \
        --evaluate_encoder=cifar10_resnet_acl_linf8 --task=labels \
        --dataset=npz:../shared/datasets/cifar10/cifar10.npz --eval_epsilons=0.0313725 \
        --output=benchmarks/zoo_proxy_eval.jsonl

The CIFAR-10 proxy of the natural-images search (RESULTS.md), a baseline on it, and a second
stage from a saved SimCLR encoder:
    python benchmarks/ablation.py --name=cifar_proxy_acl --method=acl \
        --dataset=npz:../shared/datasets/cifar10/cifar10.npz --width=8 --train_examples=5000 \
        --epochs=15 --steps=3 --epsilon=0.0313725 --eval_epsilons=0.0313725 \
        --output=benchmarks/cifar_proxy.jsonl
    python benchmarks/ablation.py --name=cifar_proxy_w10_from_simclr ... \
        --weight=10 --init_encoder=runs/ablation/cifar_proxy_simclr/encoder.keras
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import pathlib

import keras
from absl import app, flags

from tarrl_tf import attacks, data, evaluation, pipeline, training
from tarrl_tf.precision import check_mixed_precision
from tarrl_tf.robustness import divergences, regularizers

REPO = pathlib.Path(__file__).resolve().parents[1]
EVAL_ATTACKS = {"inf": "pgd_linf", "2": "pgd_l2"}
EVAL_STEPS = 20
EVAL_EXAMPLES = 500
PROBE_TRAIN_EXAMPLES = 10000

flags.DEFINE_string("name", None, "Name of the configuration.", required=True)
flags.DEFINE_string("dataset", f"npz:{REPO.parent / 'shared' / 'datasets' / 'mnist' / 'mnist.npz'}",
                    "Data source.")
flags.DEFINE_integer("seed", 0, "Seed of the encoder's initialization and of pretraining.")
flags.DEFINE_enum("method", "tarrl", list(training.METHODS.names()),
                  "Training method (tarrl with --weight=0 is plain SimCLR).")
flags.DEFINE_string("teacher", None, "deacl's teacher: a .keras encoder.")
flags.DEFINE_string("init_encoder", None, "Start from this .keras encoder (a second stage).")
flags.DEFINE_string("task", "labels", "Downstream task of the probe (tarrl_tf.evaluation.tasks).")
flags.DEFINE_boolean("evaluate_only", False,
                     "Evaluate the encoder an earlier run of this --name saved; train nothing.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16"],
                  "Pretrain the networks in bfloat16 (tarrl_tf.precision); the evaluation is float32.")
flags.DEFINE_string("evaluate_encoder", None,
                    "Evaluate this .keras encoder or zoo entry with the probe and attack above, "
                    "train nothing; its line records the encoder and the evaluation only.")
flags.DEFINE_string("runs_dir", str(REPO / "runs" / "ablation"),
                    "Each configuration's encoder and backup go to <runs_dir>/<name>/.")
flags.DEFINE_float("weight", 0.0, "Regularizer weight (0: plain SimCLR).")
flags.DEFINE_enum("estimator", "pgd", list(regularizers.ESTIMATORS.names()), "Estimator.")
flags.DEFINE_integer("steps", 3, "PGD steps / power iterations.")
flags.DEFINE_enum("norm", "inf", ["inf", "2"], "Norm of the training threat model.")
flags.DEFINE_float("epsilon", 0.3, "Training radius (in --norm).")
flags.DEFINE_string("divergence", "squared_l2", "Any name tarrl_tf.divergences.get accepts.")
flags.DEFINE_integer("train_examples", 8000, "Pretraining images.")
flags.DEFINE_integer("epochs", 8, "Pretraining epochs.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate (cosine decay).")
flags.DEFINE_enum("regularize_on", "images", ["images", "views"],
                  "Estimate R on the images or on the first augmented view.")
flags.DEFINE_float("regularized_fraction", 1.0, "Part of each batch R is estimated on.")
flags.DEFINE_boolean("detach_anchor", False, "Hold f(x) fixed in R (only f(x') differentiated).")
flags.DEFINE_enum("regularize_output", "encoder", ["encoder", "projector"],
                  "Measure R on the encoder's features or on the SSL projector's output.")
flags.DEFINE_float("keep_weight", 0.0, "With --init_encoder: weight of the term keeping the "
                   "features near the initial encoder's (0: none).")
flags.DEFINE_integer("warmup_epochs", 2, "Epsilon and weight warm-up epochs.")
flags.DEFINE_integer("width", 32, "Encoder width (small_cnn for grayscale, cifar_resnet for RGB).")
flags.DEFINE_enum("normalization", None, ["batch", "group"],
                  "cifar_resnet's normalization (default batch); small_cnn has none.")
flags.DEFINE_enum("batch_statistics", "auto", ["auto", "true", "false"],
                  "Differentiate R through training-mode BatchNorm passes (auto: if the encoder has "
                  "BatchNorm).")
flags.DEFINE_boolean("shared_statistics", False,
                     "With batch statistics: the views and R's pair in one training-mode pass, "
                     "whose statistics become the moving ones.")
flags.DEFINE_list("eval_epsilons", ["0.1", "0.2", "0.3"], "Radii of the evaluation attack.")
flags.DEFINE_enum("eval_norm", "inf", list(EVAL_ATTACKS), "Norm of the evaluation attack.")
flags.DEFINE_enum("suite", None, list(attacks.SUITES.names()),
                  "Also run this attack suite at each --eval_epsilons; the line's `worst_case` "
                  "is its per-image worst case (the fixed-budget comparison ranks by it).")
flags.DEFINE_string("output", str(REPO / "benchmarks" / "ablation.jsonl"), "JSON lines output.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    divergences.get(FLAGS.divergence)  # An unknown name fails now, not after loading the data.
    eval_attack = EVAL_ATTACKS[FLAGS.eval_norm]
    specs = [attacks.make_attack(eval_attack, epsilon=float(e), steps=EVAL_STEPS)
             for e in FLAGS.eval_epsilons]
    if FLAGS.evaluate_encoder:
        return evaluate_encoder(FLAGS.evaluate_encoder, specs)
    x, y = data.load_arrays(FLAGS.dataset, "train", max_examples=FLAGS.train_examples)
    run_dir = pathlib.Path(FLAGS.runs_dir) / FLAGS.name
    run_dir.mkdir(parents=True, exist_ok=True)
    if FLAGS.evaluate_only:
        # The training history and time are in that run's log, not measured here.
        encoder, history, seconds = keras.models.load_model(run_dir / "encoder.keras"), {}, None
    else:
        encoder, history, seconds = pipeline.train(row(x), x, y, run_dir, pipeline.Settings(
            datasets_dir=str(REPO.parent / "shared" / "datasets"), output_dir=FLAGS.runs_dir))
        encoder.save(run_dir / "encoder.keras")
    report, measured = _probe(encoder, FLAGS.name, specs)
    line = {
        "name": FLAGS.name, "method": FLAGS.method, "task": FLAGS.task, "weight": FLAGS.weight,
        "estimator": FLAGS.estimator, "init_encoder": FLAGS.init_encoder, "teacher": FLAGS.teacher,
        "steps": FLAGS.steps, "divergence": FLAGS.divergence, "seconds": None if seconds is None else round(seconds),
        **measured,
        "R_squared_l2": {str(r["epsilon"]): r["R"] for r in report["robustness"]},
        "final_ssl_loss": history["ssl_loss"][-1] if "ssl_loss" in history else None,
        "final_training_robustness": history.get("robustness", [0.0])[-1],
        "training_history": {k: [round(v, 4) for v in values] for k, values in history.items()},
        "architecture": encoder.name,
        "normalization": FLAGS.normalization or ("batch" if encoder.name == "cifar_resnet" else None),
        "batch_statistics": {"auto": None, "true": True, "false": False}[FLAGS.batch_statistics],
        "seed": FLAGS.seed, "norm": FLAGS.norm, "epsilon": FLAGS.epsilon,
        "warmup_epochs": FLAGS.warmup_epochs, "regularize_on": FLAGS.regularize_on,
        "regularized_fraction": FLAGS.regularized_fraction, "detach_anchor": FLAGS.detach_anchor,
        "regularize_output": FLAGS.regularize_output, "keep_weight": FLAGS.keep_weight,
        "shared_statistics": FLAGS.shared_statistics, "train_examples": len(x), "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size, "learning_rate": FLAGS.learning_rate, "width": FLAGS.width,
        "mixed_precision": check_mixed_precision(FLAGS.mixed_precision),
    }
    _write(line)


def evaluate_encoder(name, specs):
    """One line for an encoder trained elsewhere (a zoo entry), under this script's evaluation."""
    _, measured = _probe(evaluation.load_encoder(name), name, specs)
    _write({"name": FLAGS.name, "encoder": name, "task": FLAGS.task, **measured})


def _probe(encoder, encoder_name, specs):
    """`(report, fields)`: the plain linear probe attacked with `specs`, and its line's fields."""
    # The probe and the attacks keep their default seed: the spread over --seed is pretraining's.
    report, _, _ = evaluation.evaluate_on_dataset(
        encoder, encoder_name=encoder_name, dataset=FLAGS.dataset, task=FLAGS.task,
        attack_specs=specs, num_examples=EVAL_EXAMPLES, train_examples=PROBE_TRAIN_EXAMPLES,
        sanity_checks=False, suite=FLAGS.suite)
    plain = [a for a in report["attacks"] if "suite" not in a]
    suite_fields = {} if not FLAGS.suite else {
        "suite": FLAGS.suite,
        "worst_case": {str(w["epsilon"]): w["robust_accuracy"] for w in report["worst_case"]},
        "worst_case_examples": report["worst_case"][0]["num_examples"],
        # The quick suite's Square sees a subset: the other attacks' worst case on every image.
        "worst_case_on_all": {str(w["epsilon"]): w["on_all_examples"]["robust_accuracy"]
                              for w in report["worst_case"] if "on_all_examples" in w},
        "suite_attacks": {f"{a['name']} {a['epsilon']}": [a["robust_accuracy"], a["num_examples"]]
                          for a in report["attacks"] if "suite" in a}}
    return report, {
        "clean_accuracy": report["clean_accuracy"],
        "robust_accuracy": {str(a["epsilon"]): a["robust_accuracy"] for a in plain},
        **suite_fields,
        "dataset": data.info(FLAGS.dataset).name, "eval_attack": specs[0].name,
        "eval_steps": EVAL_STEPS, "eval_examples": report["num_examples"],
        "probe_train_examples": report["num_train_examples"],
    }


def _write(line):
    print(json.dumps(line))
    pathlib.Path(FLAGS.output).parent.mkdir(parents=True, exist_ok=True)
    with open(FLAGS.output, "a") as f:
        f.write(json.dumps(line) + "\n")


def row(x):
    """The configuration as an experiments row (`tarrl_tf.pipeline.train` trains it)."""
    method = FLAGS.method
    if method == "tarrl" and FLAGS.weight == 0:
        method = "simclr"
    regularizer = {"steps": FLAGS.steps, "warmup_epochs": FLAGS.warmup_epochs}
    if method == "tarrl":
        regularizer.update(estimator=FLAGS.estimator, divergence=FLAGS.divergence,
                           weight=FLAGS.weight, regularize_on=FLAGS.regularize_on,
                           regularized_fraction=FLAGS.regularized_fraction,
                           detach_anchor=FLAGS.detach_anchor,
                           regularize_output=FLAGS.regularize_output)
        if FLAGS.keep_weight:
            regularizer["keep_weight"] = FLAGS.keep_weight
        if FLAGS.shared_statistics:
            regularizer["shared_statistics"] = True
    batch_statistics = {"auto": None, "true": True, "false": False}[FLAGS.batch_statistics]
    if batch_statistics is not None and method in ("tarrl", "acl", "deacl"):
        regularizer["batch_statistics"] = batch_statistics
    if method == "deacl":
        regularizer.pop("warmup_epochs")  # DeACL's rows have no warm-up.
    return {
        "name": FLAGS.name, "method": method, "seed": FLAGS.seed,
        "architecture": "cifar_resnet" if x.shape[-1] == 3 else "small_cnn",
        "width": FLAGS.width, "normalization": FLAGS.normalization,
        "epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size,
        "learning_rate": FLAGS.learning_rate,
        "threat_model": {"norm": FLAGS.norm, "epsilon": FLAGS.epsilon},
        "regularizer": regularizer, "teacher": FLAGS.teacher, "init_encoder": FLAGS.init_encoder,
        "mixed_precision": check_mixed_precision(FLAGS.mixed_precision),
    }


if __name__ == "__main__":
    app.run(main)
