"""Re-runs any row of the results: pretrain, evaluate downstream, write the zoo entry and card.

A thin command around `tarrl_tf.pipeline` (see there for what a run writes).
Rows are data, in benchmarks/experiments.json. `--quick` shrinks everything
(examples, epochs, attack steps) to check the pipeline in minutes, and
writes its zoo entry to a temporary zoo, never to zoo/.

`--reevaluate` trains nothing: it loads the encoder of the published entry
`<row>` from --zoo_dir, runs the row's current "evaluation" on it (the same
code as a full run), writes the reports, and replaces the entry with one that
keeps the old card's training facts, method, regularizer, threat model and
notes, with the new metrics and head (`training.evaluation_command` records
the re-evaluation). With --quick the replaced entry goes to a temporary zoo.

Examples:
    python benchmarks/reproduce.py --list
    python benchmarks/reproduce.py --row=mnist_cnn_tarrl_linf03 --quick
    python benchmarks/reproduce.py --row=mnist_cnn_simclr --row=mnist_cnn_tarrl_linf03
    python benchmarks/reproduce.py --row=mnist_cnn_tarrl_linf03 --reevaluate
    python benchmarks/reproduce.py --row=mnist_cnn_tarrl_linf03 --replace
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib
import tempfile

from absl import app, flags

from tarrl_tf import pipeline, zoo
from tarrl_tf.files import dumps_json, write_atomic

REPO = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_multi_string("row", None, "Row(s) of experiments.json to run.")
flags.DEFINE_boolean("list", False, "List the rows and exit.")
flags.DEFINE_boolean("quick", False, "Tiny budgets, temporary zoo: checks the pipeline in minutes.")
flags.DEFINE_string("experiments", str(REPO / "benchmarks" / "experiments.json"), "Rows file.")
flags.DEFINE_string("datasets_dir", str(REPO.parent / "shared" / "datasets"),
                    "Folder of <name>/<name>.npz offline datasets.")
flags.DEFINE_string("output_dir", None, "Encoders and reports (default: runs/reproduce[_quick]).")
flags.DEFINE_string("zoo_dir", None, "Zoo to publish into (default: zoo/; --quick: a temp zoo).")
flags.DEFINE_boolean("publish", True, "Publish the zoo entry.")
flags.DEFINE_boolean("replace", False,
                     "Train anew and replace the row's published entry (default: refuse to).")
flags.DEFINE_string("strategy", "default",
                    "tf.distribute strategy of training: default, mirrored, or multi_worker "
                    "(reads $TF_CONFIG); the rows' batch sizes are global.")
flags.DEFINE_boolean("reevaluate", False,
                     "Re-evaluate the published entry of each --row without training, and "
                     "replace it with the new metrics.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tarrl_tf.training import distribute

    distribute.STRATEGIES.get(FLAGS.strategy)  # an unknown name fails before any work
    rows = pipeline.load_rows(FLAGS.experiments)
    if FLAGS.list or not FLAGS.row:
        for name, row in rows.items():
            print(f"{name:36s} {row['method']:14s} {row['dataset']:14s} "
                  f"{row['threat_model']['norm']} eps={row['threat_model']['epsilon']}")
        return
    unknown = [name for name in FLAGS.row if name not in rows]
    if unknown:
        raise ValueError(f"Unknown row(s) {unknown}; see --list")
    output_dir = FLAGS.output_dir or str(
        REPO / "runs" / ("reproduce_quick" if FLAGS.quick else "reproduce"))
    source_zoo = zoo.resolve_zoo_dir(FLAGS.zoo_dir)  # where --reevaluate finds the entries
    zoo_dir = FLAGS.zoo_dir
    # Quick numbers never replace real ones: a quick re-evaluation publishes into a temp zoo too.
    if FLAGS.quick and (zoo_dir is None or FLAGS.reevaluate):
        zoo_dir = tempfile.mkdtemp(prefix="tarrl_quick_zoo_")
        write_atomic(os.path.join(zoo_dir, zoo.MANIFEST_FILENAME), dumps_json(zoo.empty_manifest()))
    settings = pipeline.Settings(datasets_dir=FLAGS.datasets_dir, output_dir=output_dir,
                                 zoo_dir=zoo_dir, publish=FLAGS.publish, replace=FLAGS.replace,
                                 quick=FLAGS.quick, strategy=FLAGS.strategy)
    if not FLAGS.reevaluate:
        # A first stage or teacher out of reach fails now, not after the rows before it trained.
        pipeline.check_sources([rows[name] for name in FLAGS.row], settings)
    for name in FLAGS.row:
        if FLAGS.reevaluate:
            pipeline.reevaluate_row(rows[name], settings, source_zoo)
        else:
            pipeline.run_row(rows[name], settings)


if __name__ == "__main__":
    app.run(main)
