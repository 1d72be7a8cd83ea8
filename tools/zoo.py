"""Lists, shows and verifies the model zoo.

Commands:
  list         one line per entry: name, dataset, method, threat model, metrics
  show NAME    the model card as JSON
  verify       every entry (or the NAMEs given): all checksums, no stray files,
               a valid card, and the Keras files and SavedModels load and agree;
               exits non-zero if any entry fails

Example commands (from the repo root):

    python -m tools.zoo list
    python -m tools.zoo show mnist_cnn_tarrl_linf03
    python -m tools.zoo verify
    python -m tools.zoo verify mnist_cnn_tarrl_linf03 --zoo_dir=/data/zoo
"""

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "zoo_dir", None, "Zoo directory; default $TARRL_ZOO_DIR or the repo's zoo/ folder."
)

_COMMANDS = ("list", "show", "verify")


def main(argv):
    args = argv[1:]
    if not args or args[0] not in _COMMANDS:
        raise app.UsageError(f"Expected a command, one of {list(_COMMANDS)}; got {args}")
    command, names = args[0], args[1:]
    from tarrl_tf import zoo

    try:
        if command == "list":
            return _list(zoo, names)
        if command == "show":
            if len(names) != 1:
                raise app.UsageError("show takes exactly one NAME")
            print(json.dumps(zoo.info(names[0], zoo_dir=FLAGS.zoo_dir), indent=2))
            return 0
        return _verify(zoo, names)
    except zoo.ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _list(zoo, names):
    if names:
        raise app.UsageError("list takes no NAME")
    entries = zoo.list(zoo_dir=FLAGS.zoo_dir)
    if not entries:
        print(f"(no entries in {zoo.resolve_zoo_dir(FLAGS.zoo_dir)})")
    for name in entries:
        card = zoo.info(name, zoo_dir=FLAGS.zoo_dir)
        threat = card["threat_model"]
        scores = ", ".join(
            f"{m['head']} clean {m['clean_accuracy']:.4f} / robust {m['robust_accuracy']:.4f} "
            f"({m['attack']['name']} {m['attack']['norm']} eps {m['attack']['epsilon']:g})"
            for m in card["metrics"]
        )
        print(
            f"{name}  {card['dataset']}  {card['architecture']}  {card['method']}  "
            f"{threat['norm']} eps {threat['epsilon']:g}  {scores}"
        )
    return 0


def _verify(zoo, names):
    names = names or zoo.list(zoo_dir=FLAGS.zoo_dir)
    failures = 0
    for name in names:
        try:
            report = zoo.verify(name, zoo_dir=FLAGS.zoo_dir)
        except Exception as e:  # Report every entry, then fail.
            failures += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
        else:
            print(
                f"ok   {name}: {report['files']} files, serving versions "
                f"{report['serving_versions']}, "
                f"max |keras - savedmodel| {report['max_abs_diff']:.2g}"
            )
    print(f"{len(names) - failures}/{len(names)} entries verified")
    return 1 if failures else 0


if __name__ == "__main__":
    app.run(main)
