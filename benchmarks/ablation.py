"""Small ablations of the regularizer on an MNIST subset: estimator, divergence, weight.

Each configuration pretrains a small CNN (SimCLR + weight * R) on the first
--train_examples MNIST images, trains a plain linear probe on 10,000 labelled
training images, and attacks it with PGD-20 (L-inf, random start) at eps 0.1,
0.2 and 0.3 on the first 500 test images. One JSON line per configuration is
appended to --output (and printed).

Examples:
    python benchmarks/ablation.py --name=simclr --weight=0
    python benchmarks/ablation.py --name=tarrl_rel_w1 --weight=1 --divergence=relative_l2
    python benchmarks/ablation.py --name=tarrl_w5 --weight=5 --divergence=squared_l2
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import pathlib

from absl import app, flags

from tarrl_tf import attacks, data, evaluation, pretraining

REPO = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_string("name", None, "Name of the configuration.", required=True)
flags.DEFINE_string("dataset", f"npz:{REPO.parent / 'shared' / 'datasets' / 'mnist' / 'mnist.npz'}",
                    "Data source.")
flags.DEFINE_float("weight", 0.0, "Regularizer weight (0: plain SimCLR).")
flags.DEFINE_enum("estimator", "pgd", sorted(pretraining.ESTIMATORS), "Estimator.")
flags.DEFINE_integer("steps", 3, "PGD steps / power iterations.")
flags.DEFINE_float("epsilon", 0.3, "Training radius (L-inf).")
flags.DEFINE_enum("divergence", "squared_l2", ["squared_l2", "kl", "relative_l2"], "Divergence.")
flags.DEFINE_integer("train_examples", 8000, "Pretraining images.")
flags.DEFINE_integer("epochs", 8, "Pretraining epochs.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate (cosine decay).")
flags.DEFINE_integer("warmup_epochs", 2, "Epsilon and weight warm-up epochs.")
flags.DEFINE_integer("width", 32, "small_cnn width.")
flags.DEFINE_string("output", str(REPO / "runs" / "ablation.jsonl"), "JSON lines output.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    x, _ = data.load_arrays(FLAGS.dataset, "train", max_examples=FLAGS.train_examples)
    encoder = pretraining.make_encoder(x.shape[1:], width=FLAGS.width, seed=0)
    regularizer = pretraining.make_regularizer(FLAGS.estimator, epsilon=FLAGS.epsilon,
                                               steps=FLAGS.steps, divergence=FLAGS.divergence)
    _, history, seconds = pretraining.pretrain(
        encoder, x, regularizer=regularizer, weight=FLAGS.weight, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        warmup_epochs=FLAGS.warmup_epochs, verbose=0)
    specs = [attacks.make_attack("pgd_linf", epsilon=e, steps=20) for e in (0.1, 0.2, 0.3)]
    report, _, _ = evaluation.evaluate_on_dataset(
        encoder, encoder_name=FLAGS.name, dataset=FLAGS.dataset, attack_specs=specs,
        num_examples=500, train_examples=10000, sanity_checks=False)
    line = {
        "name": FLAGS.name, "weight": FLAGS.weight, "estimator": FLAGS.estimator,
        "steps": FLAGS.steps, "divergence": FLAGS.divergence, "seconds": round(seconds),
        "clean_accuracy": report["clean_accuracy"],
        "robust_accuracy": {str(a["epsilon"]): a["robust_accuracy"] for a in report["attacks"]},
        "R_squared_l2": {str(r["epsilon"]): r["R"] for r in report["robustness"]},
        "final_ssl_loss": history["ssl_loss"][-1],
        "final_training_robustness": history.get("robustness", [0.0])[-1],
    }
    print(json.dumps(line))
    pathlib.Path(FLAGS.output).parent.mkdir(parents=True, exist_ok=True)
    with open(FLAGS.output, "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    app.run(main)
