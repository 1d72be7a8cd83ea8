"""The BatchNorm gap: an encoder's worst-case shift in inference mode against batch-statistics mode.

TARRL differentiates R through training-mode passes (`batch_statistics_pass`):
the encoder normalized by the plain images' own batch statistics. Downstream
heads and attackers run it in inference mode, with the moving statistics its
SSL views set. For each encoder this measures the worst-case shift
(`squared_l2` of the normalized representation, PGD-10 at --epsilon, inference-mode search as in
training) on the first --num_examples test images both ways, then again in
inference mode after `recalibrate` on the first --recalibration_images
training images, and writes one JSON line each. With --save_dir the
recalibrated encoder is saved as `<save_dir>/<name>.keras` (evaluate it with
`benchmarks/ablation.py --evaluate_encoder=...`).

Example:
    python benchmarks/batchnorm_gap.py --encoder=cifar10_resnet_tarrl_linf8 \
        --encoder=cifar10_resnet_acl_linf8 --save_dir=runs/recalibrated
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import pathlib

import tensorflow as tf
from absl import app, flags

from tarrl_tf import data, divergences, evaluation, regularizers
from tarrl_tf.robustness.batchnorm import batch_statistics_pass, recalibrate

REPO = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_multi_string("encoder", None, "Zoo entry or .keras encoder (repeatable).",
                          required=True)
flags.DEFINE_string("dataset", f"npz:{REPO.parent / 'shared' / 'datasets' / 'cifar10' / 'cifar10.npz'}",
                    "Dataset source (tarrl_tf.data).")
flags.DEFINE_float("epsilon", 8 / 255, "L-inf radius.")
flags.DEFINE_integer("steps", 10, "PGD steps of the search.")
flags.DEFINE_integer("num_examples", 512, "Test images measured.")
flags.DEFINE_integer("recalibration_images", 5000, "Training images of the recalibration.")
flags.DEFINE_string("save_dir", None, "Save each recalibrated encoder here.")
flags.DEFINE_string("output", str(REPO / "benchmarks" / "batchnorm_gap.jsonl"), "JSON lines.")
FLAGS = flags.FLAGS
BATCH = 128


def shifts(encoder, x, search):
    """Mean worst-case shift in inference mode and through batch statistics."""
    inference, batch_statistics = [], []
    for start in range(0, len(x), BATCH):
        xb = tf.constant(x[start:start + BATCH])
        anchor = encoder(xb, training=False)
        x_adv = search.perturb(encoder, xb, anchor=anchor, seed=0)
        inference.append(divergences.squared_l2(anchor, encoder(x_adv, training=False)))
        clean, perturbed = batch_statistics_pass(lambda z: encoder(z, training=True), xb, x_adv,
                                                 [encoder])
        batch_statistics.append(divergences.squared_l2(clean, perturbed))
    return (float(tf.reduce_mean(tf.concat(inference, 0))),
            float(tf.reduce_mean(tf.concat(batch_statistics, 0))))


def main(argv):
    del argv
    search = regularizers.PGD(epsilon=FLAGS.epsilon, steps=FLAGS.steps, divergence="squared_l2")
    x_test, _ = data.load_arrays(FLAGS.dataset, "test", max_examples=FLAGS.num_examples)
    x_train, _ = data.load_arrays(FLAGS.dataset, "train", max_examples=FLAGS.recalibration_images)
    for name in FLAGS.encoder:
        encoder = evaluation.load_encoder(name)
        inference, batch_statistics = shifts(encoder, x_test, search)
        recalibrate(encoder, x_train)
        recalibrated, _ = shifts(encoder, x_test, search)
        short = pathlib.Path(name).stem if name.endswith(".keras") else name
        line = {"encoder": short, "dataset": data.info(FLAGS.dataset).name,
                "epsilon": FLAGS.epsilon, "steps": FLAGS.steps,
                "num_examples": int(len(x_test)), "recalibration_images": int(len(x_train)),
                "shift_inference": round(inference, 5),
                "shift_batch_statistics": round(batch_statistics, 5),
                "shift_inference_recalibrated": round(recalibrated, 5)}
        if FLAGS.save_dir:
            pathlib.Path(FLAGS.save_dir).mkdir(parents=True, exist_ok=True)
            encoder.save(pathlib.Path(FLAGS.save_dir) / f"{short}.keras")
        print(json.dumps(line), flush=True)
        with open(FLAGS.output, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    app.run(main)
