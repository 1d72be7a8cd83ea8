"""What every program does around its `main`: help that exits 0, a quiet TensorFlow, a summary.

TensorFlow's C++ start-up lines (oneDNN, "Could not find cuda drivers", the
CPU-instructions notice, "failed call to cuInit" on machines without a GPU)
are written before its log level applies, so `TF_CPP_MIN_LOG_LEVEL` cannot
hide them. `library()` imports TensorFlow with its standard error captured
and replays every line except those known ones: a real error still shows.
"""

import contextlib
import functools
import os
import re
import sys
import tempfile

from absl import app, flags

# TensorFlow's start-up notices on a CPU-only machine: information, not problems.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|\] oneDNN custom operations are on"
    r"|\] Could not find cuda drivers on your machine"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|\] failed call to cuInit: "
    r"|cuda_diagnostics\.cc:\d+\] "
    r"|\] Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation_placer\.cc:\d+\] computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT")
_HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull")


def run(main, module):
    """`app.run(main)` for a program whose flags are defined in `module` (its docstring is the usage).

    `--help` prints the usage and the program's flags and exits 0 (absl's own
    exits 1); `--helpfull` adds absl's flags.
    """
    # absl prints `__main__`'s docstring with usage errors: the program's, not a wrapper's.
    sys.modules["__main__"].__doc__ = module.__doc__
    app.run(main, flags_parser=functools.partial(_parse_flags, module=module))


def _parse_flags(argv, *, module):
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    asked = [a for a in args if a in _HELP_FLAGS]
    if asked:
        help_text = (flags.FLAGS.get_help() if "--helpfull" in asked
                     else flags.FLAGS.module_help(module.__name__))
        sys.stdout.write(f"{module.__doc__.rstrip()}\n\nflags:\n{help_text}\n")
        sys.exit(0)
    return app.parse_flags_with_usage(argv)


def library():
    """Imports TensorFlow quietly (see the module doc), then returns the `tarrl_tf` package."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _without_startup_noise():
        import tensorflow as tf

        tf.config.list_physical_devices()  # Where the cuInit line is written.
    tf.get_logger().addFilter(_keras_step_retracing)
    import tarrl_tf

    return tarrl_tf


@contextlib.contextmanager
def _without_startup_noise():
    """Captures file descriptor 2 (C++ writes there too) and replays all but `_NOISE` lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _NOISE.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _keras_step_retracing(record):
    """False for TF's retracing warning about Keras's own per-model step functions.

    Keras makes one `predict` (and `fit`) function per model; TF counts their traces together
    because they share code, so evaluating two encoders, each with a head, reads as "retracing"
    though each function traces once or twice. Retracing of tarrl_tf's own functions still shows.
    """
    message = record.getMessage()
    return not ("triggered tf.function retracing" in message and "one_step_on_" in message)


def check_registered(flag, value, names):
    """Raises a usage error unless `value` of `--flag` is one of the registered `names`."""
    if value not in names:
        raise app.UsageError(f"--{flag}={value!r} is not registered; choose one of {list(names)}")
    return value


def summary(paths, *, what="Wrote"):
    """The last lines of a program: the files it wrote, one per line."""
    paths = [str(p) for p in paths]
    if not paths:
        print(f"{what} no files.")
        return
    print(f"\n{what} {len(paths)} file{'s' if len(paths) != 1 else ''}:")
    for path in paths:
        print(f"  {path}")
