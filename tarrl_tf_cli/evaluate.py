r"""Judge an encoder downstream: train a plain head on a task, attack it, write a report.

Writes `report.json`, `report.md` and `robust_accuracy.png` into --output_dir.
--encoder is a `.keras` file or a zoo name (a remote zoo with $TARRL_ZOO_URL).

Examples (`python -m tools.evaluate` in a clone):
    tarrl-evaluate --encoder=runs/pretrain/tarrl/encoder.keras --output_dir=out/
    tarrl-evaluate --encoder=runs/pretrain/tarrl/encoder.keras --dataset=digits --task=parity \
        --head=linear --attacks=pgd_linf,fgsm --epsilons=0.1,0.2,0.3 --output_dir=out/
    tarrl-evaluate --encoder=mnist_cnn_tarrl_linf03 --dataset=npz:mnist.npz --attacks=pgd_l2,cw_l2 \
        --epsilons=1.0,2.0 --num_examples=500 --subset_examples=100 --output_dir=out/
    tarrl-evaluate --encoder=mnist_cnn_tarrl_linf03 --dataset=npz:mnist.npz --attacks=pgd_linf \
        --epsilons=0.3 --suite=standard --num_examples=500 --output_dir=out/

Sharded (one process per shard, on as many devices or hosts; every other flag the same):
    tarrl-evaluate --encoder=E --shard=0 --num_shards=2 --output_dir=out/shards
    tarrl-evaluate --encoder=E --shard=1 --num_shards=2 --output_dir=out/shards
    tarrl-evaluate --merge=out/shards --output_dir=out/
Each shard attacks its whole batches of the test images and writes its per-image results
(shard_<i>_of_<k>.json); --merge makes the report of the run without shards from them.
"""

import sys

from absl import app, flags

from tarrl_tf_cli import startup

flags.DEFINE_string("encoder", None, "A .keras encoder file or a zoo name (needed unless --merge).")
flags.DEFINE_string("dataset", "digits", "'digits', 'npz:PATH', or a TFDS name.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string("task", "labels", "Downstream task (see tarrl_tf.evaluation.tasks).")
flags.DEFINE_string("head", "linear",
                    "Downstream head, one of tarrl_tf.evaluation.downstream.HEADS.")
flags.DEFINE_boolean("fine_tune", False, "Fine-tune the encoder too (plain training).")
flags.DEFINE_list("attacks", ["pgd_linf", "fgsm"],
                  "Attacks, registered in tarrl_tf.attacks.ATTACKS.")
flags.DEFINE_list("epsilons", ["0.1", "0.2", "0.3"], "Radii of the attacks (8/255 is fine).")
flags.DEFINE_list("l2_epsilons", None, "Radii of L2 attacks (default: --epsilons).")
flags.DEFINE_integer("steps", None, "Attack iterations (default: each attack's own).")
flags.DEFINE_string("suite", None,
                    "Attack suite (tarrl_tf.attacks.SUITES: standard, quick) run at every threat "
                    "model of --attacks; its per-image worst case is the headline robust accuracy.")
flags.DEFINE_integer("num_examples", 1000, "Test examples to attack.")
flags.DEFINE_integer("subset_examples", None,
                     "Attack only the first N test examples with the costly attacks "
                     "(tarrl_tf.evaluation.SUBSET_ATTACKS; default: all).", lower_bound=1)
flags.DEFINE_integer("train_examples", None, "Training examples for the head (default: all).")
flags.DEFINE_integer("epochs", 30, "Head training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Batch size of head training and attacks.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16"],
                  "'bfloat16': the PGD and BIM attacks search with the classifier in bfloat16 "
                  "(about 3x faster here); whether an image is fooled is still decided in float32.")
flags.DEFINE_integer("regularizer_steps", 20, "PGD steps for measuring the encoder's R.")
flags.DEFINE_boolean("sanity_checks", True, "Run the checks against false robustness.")
flags.DEFINE_integer("seed", 0, "Seed of head training and attack random starts.")
flags.DEFINE_integer("num_shards", None, "Split the test images into this many shards "
                     "(whole batches); with --shard, evaluate one of them.", lower_bound=1)
flags.DEFINE_integer("shard", None, "The shard to evaluate, 0 .. --num_shards - 1: writes its "
                     "per-image results, not a report.", lower_bound=0)
flags.DEFINE_string("merge", None, "A folder of shard results (shard_<i>_of_<k>.json): write "
                    "the report they make together, and evaluate nothing.")
flags.DEFINE_string("output_dir", None, "Where the report (or a shard's results) goes.",
                    required=True)
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every option is a --flag")
    if FLAGS.merge:
        return merge()
    if FLAGS.encoder is None:
        raise app.UsageError("--encoder is required (unless --merge)")
    if (FLAGS.shard is None) != (FLAGS.num_shards is None):
        raise app.UsageError("--shard and --num_shards go together")
    if FLAGS.shard is not None and FLAGS.shard >= FLAGS.num_shards:
        raise app.UsageError(f"--shard={FLAGS.shard} must be below --num_shards={FLAGS.num_shards}")
    epsilons = [startup.number(e, flag="epsilons") for e in FLAGS.epsilons]
    l2_epsilons = [startup.number(e, flag="l2_epsilons") for e in FLAGS.l2_epsilons or []]
    startup.library()
    from tarrl_tf import data, evaluation
    from tarrl_tf.evaluation import downstream, reports, shards

    from tarrl_tf import attacks

    startup.check_registered("head", FLAGS.head, tuple(downstream.HEADS))
    if FLAGS.suite is not None:
        startup.check_registered("suite", FLAGS.suite, attacks.SUITES.names())
    specs = evaluation.attack_grid(FLAGS.attacks, epsilons, l2_epsilons=l2_epsilons,
                                   steps=FLAGS.steps, precision=FLAGS.mixed_precision)
    for spec in specs:
        startup.check_epsilon("epsilons" if spec.norm == "inf" else "l2_epsilons", spec.epsilon,
                              spec.norm)
    info = data.info(FLAGS.dataset, data_dir=FLAGS.data_dir)
    evaluation.tasks.get_task(info.name, FLAGS.task, num_classes=info.num_classes)
    shard = None if FLAGS.shard is None else (FLAGS.shard, FLAGS.num_shards)
    # Before any work (a smaller test set than --num_examples is checked once it is loaded).
    shards.span(FLAGS.num_examples, FLAGS.batch_size, shard)
    encoder = evaluation.load_encoder(FLAGS.encoder)
    report, _, _ = evaluation.evaluate_on_dataset(
        encoder, encoder_name=FLAGS.encoder, dataset=FLAGS.dataset, task=FLAGS.task,
        attack_specs=specs, num_examples=FLAGS.num_examples, train_examples=FLAGS.train_examples,
        data_dir=FLAGS.data_dir, head=FLAGS.head, fine_tune=FLAGS.fine_tune, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, regularizer_steps=FLAGS.regularizer_steps,
        sanity_checks=FLAGS.sanity_checks, subset_examples=FLAGS.subset_examples, seed=FLAGS.seed,
        suite=FLAGS.suite, shard=shard, verbose=True,
    )
    if shard is not None:
        path = shards.write_record(report, FLAGS.output_dir)
        start, stop = report["span"]
        print(f"Shard {shard[0]} of {shard[1]}: test images {start}-{stop - 1} of "
              f"{report['plan']['num_examples']}. With every shard done: "
              f"tarrl-evaluate --merge={FLAGS.output_dir} --output_dir=REPORT_DIR")
        startup.summary([path])
        return
    paths = reports.write_report(report, FLAGS.output_dir)
    print(reports.to_markdown(report))
    startup.summary(paths.values())


def merge():
    """--merge: the report of the shards in that folder."""
    startup.library()
    from tarrl_tf.evaluation import reports, shards

    report = shards.merge(shards.read_records(FLAGS.merge))
    paths = reports.write_report(report, FLAGS.output_dir)
    print(reports.to_markdown(report))
    startup.summary(paths.values())


def run():
    """The `tarrl-evaluate` command."""
    startup.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
