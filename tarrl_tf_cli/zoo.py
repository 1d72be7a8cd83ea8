r"""Lists, shows, fetches and verifies the model zoo, and renders its pages.

Commands:
  list         one line per entry in reach: name, dataset, method, threat model, metrics;
               a damaged entry is marked BAD (and the exit status is 1);
               with --remote, the entries of the remote zoo (and which are cached)
  show NAME    the model card as JSON
  fetch NAME.. downloads entries from the remote zoo into the cache (then they load offline)
  verify       every entry (or the NAMEs given): all checksums, no stray files,
               a valid card, and the Keras files and SavedModels load and agree;
               exits non-zero if any entry fails
  pages        renders zoo/README.md and each entry's README.md and sweep.svg from the cards

The zoo: --zoo_dir (else $TARRL_ZOO_DIR, else a clone's zoo/), then the
remote zoo at --zoo_url (else $TARRL_ZOO_URL), cached in $TARRL_CACHE_DIR
(default ~/.cache/tarrl_tf).

Examples (`python -m tools.zoo` in a clone):

    tarrl-zoo list
    tarrl-zoo show mnist_cnn_tarrl_linf03
    tarrl-zoo list --remote --zoo_url=https://example.org/tarrl-zoo
    tarrl-zoo fetch mnist_cnn_tarrl_linf03 --zoo_url=https://example.org/tarrl-zoo
    tarrl-zoo verify mnist_cnn_tarrl_linf03 --zoo_dir=/data/zoo
    tarrl-zoo pages
"""

import json
import sys

from absl import app, flags

from tarrl_tf_cli import startup

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "zoo_dir", None, "Local zoo directory; default $TARRL_ZOO_DIR or the clone's zoo/ folder."
)
flags.DEFINE_string("zoo_url", None, "Base URL of a remote zoo; default $TARRL_ZOO_URL.")
flags.DEFINE_boolean("remote", False, "list: the entries of the remote zoo.")

_COMMANDS = ("list", "show", "fetch", "verify", "pages")


def main(argv):
    args = argv[1:]
    if not args or args[0] not in _COMMANDS:
        raise app.UsageError(f"Expected a command, one of {list(_COMMANDS)}; got {args}")
    command, names = args[0], args[1:]
    if command in ("list", "pages") and names:
        raise app.UsageError(f"{command} takes no NAME")
    if command in ("show",) and len(names) != 1:
        raise app.UsageError("show takes exactly one NAME")
    if command == "fetch" and not names:
        raise app.UsageError("fetch takes one NAME or more")
    startup.library()
    from tarrl_tf import zoo

    try:
        if command == "list":
            return _list_remote(zoo) if FLAGS.remote else _list(zoo)
        if command == "show":
            print(json.dumps(zoo.info(names[0], zoo_dir=FLAGS.zoo_dir, zoo_url=FLAGS.zoo_url),
                             indent=2))
            return 0
        if command == "fetch":
            return _fetch(zoo, names)
        if command == "pages":
            return _pages(zoo)
        return _verify(zoo, names)
    except zoo.ZooError as e:  # A name, folder or address the user gave: one line, status 2.
        raise ValueError(str(e)) from None


def _line(name, card):
    threat = card["threat_model"]
    scores = ", ".join(
        f"{m['head']} clean {m['clean_accuracy']:.4f} / robust {m['robust_accuracy']:.4f} "
        f"({m['attack']['name']} {m['attack']['norm']} eps {m['attack']['epsilon']:g})"
        for m in card["metrics"]
    )
    return (f"{name}  {card['dataset']}  {card['architecture']}  {card['method']}  "
            f"{threat['norm']} eps {threat['epsilon']:g}  {scores}")


def _list(zoo):
    """Every entry, a bad one (damaged card, missing file) marked `BAD` and not hiding the rest."""
    entries = zoo.list(zoo_dir=FLAGS.zoo_dir, zoo_url=FLAGS.zoo_url)
    bad = 0
    for name in entries:
        try:
            line = _line(name, zoo.info(name, zoo_dir=FLAGS.zoo_dir, zoo_url=FLAGS.zoo_url))
        except Exception as e:  # List every entry, then fail.
            bad += 1
            line = f"BAD  {name}: {type(e).__name__}: {' '.join(str(e).split())}"
        print(line)
    broken = f", {bad} bad (see `tarrl-zoo verify NAME`)" if bad else ""
    print(f"\n{len(entries)} entries{broken}; wrote no files.")
    return 1 if bad else 0


def _list_remote(zoo):
    url = zoo.remote.resolve_url(FLAGS.zoo_url)
    if url is None:
        raise zoo.ZooError(f"--remote needs --zoo_url or ${zoo.ZOO_URL_ENV}")
    entries = zoo.remote.read_manifest(url)["entries"]
    mirror = zoo.remote.mirror_dir(url)
    for name, entry in sorted(entries.items()):
        files = entry["files"]
        size = sum(f["bytes"] for f in files.values()) / 2**20
        cached = not zoo.remote.missing(mirror / name, files, list(files))
        print(f"{name}  {size:.1f} MB  {'cached' if cached else 'not cached'}")
    print(f"\n{len(entries)} entries at {url}; cache: {mirror}")
    return 0


def _fetch(zoo, names):
    fetched = {name: zoo.fetch(name, zoo_url=FLAGS.zoo_url) for name in names}
    print(f"\nFetched {len(fetched)} entr{'y' if len(fetched) == 1 else 'ies'} into the cache "
          "(they now load offline):")
    for name, path in fetched.items():
        print(f"  {name}: {path}/")
    return 0


def _pages(zoo):
    target = zoo.resolve_zoo_dir(FLAGS.zoo_dir)
    startup.summary(zoo.pages.write_pages(target))
    return 0


def _verify(zoo, names):
    names = names or zoo.list(zoo_dir=FLAGS.zoo_dir, zoo_url=FLAGS.zoo_url)
    failures = 0
    for name in names:
        try:
            report = zoo.verify(name, zoo_dir=FLAGS.zoo_dir, zoo_url=FLAGS.zoo_url)
        except Exception as e:  # Report every entry, then fail.
            failures += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
        else:
            print(
                f"ok   {name}: {report['files']} files, serving versions "
                f"{report['serving_versions']}, "
                f"max |keras - savedmodel| {report['max_abs_diff']:.2g}"
            )
    print(f"{len(names) - failures}/{len(names)} entries verified; wrote no files.")
    return 1 if failures else 0


def run():
    """The `tarrl-zoo` command."""
    startup.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
