"""What every program does around its `main`: help that exits 0, a quiet TensorFlow, a summary.

User errors (bad flags, data, files, names: `ValueError`, `FileNotFoundError`
and the other file errors a user can fix, `zipfile.BadZipFile`, a usage error) print one line, `error: <message>`, and
exit with status 2 before a traceback could show; anything else is a bug and
keeps its traceback (as does every error with $TARRL_TF_TRACEBACK=1). A run
stopped by a NaN (`NonFiniteError`) prints its one line and exits with 1.

TensorFlow's C++ start-up lines (oneDNN, "Could not find cuda drivers", the
CPU-instructions notice, "failed call to cuInit" on machines without a GPU)
are written before its log level applies, so `TF_CPP_MIN_LOG_LEVEL` cannot
hide them. `library()` imports TensorFlow with its standard error captured
and replays every line except those known ones: a real error still shows.
"""

import contextlib
import fractions
import functools
import math
import os
import re
import sys
import tempfile
import zipfile

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
    app.run(functools.partial(_guarded, main), flags_parser=functools.partial(_parse_flags, module=module))


# What the user can fix: a bad flag, name or file, or a folder that cannot be written.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               FileExistsError, PermissionError, zipfile.BadZipFile, app.UsageError)


def _guarded(main, argv):
    """`main(argv)`, with a user error as one `error:` line and status 2 (see the module doc)."""
    try:
        return main(argv)
    except Exception as e:
        if os.environ.get("TARRL_TF_TRACEBACK") or not isinstance(e, USER_ERRORS) and (
                type(e).__name__ != "NonFiniteError"):
            raise
        message = str(e) or type(e).__name__
        if isinstance(e, FileNotFoundError) and e.filename and e.filename not in message:
            message = f"{message}: {e.filename}"
        if isinstance(e, zipfile.BadZipFile):
            message = f"not a readable .keras file (damaged or truncated?): {message}"
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2 if isinstance(e, USER_ERRORS) else 1)


def _parse_flags(argv, *, module):
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    asked = [a for a in args if a in _HELP_FLAGS]
    if asked:
        help_text = (flags.FLAGS.get_help() if "--helpfull" in asked
                     else flags.FLAGS.module_help(module.__name__))
        sys.stdout.write(f"{module.__doc__.rstrip()}\n\nflags:\n{help_text}\n")
        sys.exit(0)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e} (see --help)", file=sys.stderr)
        sys.exit(2)


def number(text, *, flag):
    """A float from `text`, which may be a fraction like `8/255`; finite, or a usage error."""
    try:
        value = float(fractions.Fraction(text.strip())) if "/" in str(text) else float(text)
    except (ValueError, ZeroDivisionError):
        raise app.UsageError(f"--{flag}: {text!r} is not a number (e.g. 0.03 or 8/255)") from None
    if not math.isfinite(value):
        raise app.UsageError(f"--{flag}: {text!r} must be finite")
    return value


class NumberParser(flags.FloatParser):
    """A float flag that also takes a fraction (`--epsilon=8/255`)."""

    def convert(self, argument):
        if isinstance(argument, str) and "/" in argument:
            try:
                return float(fractions.Fraction(argument.strip()))
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"{argument!r} is not a number (e.g. 0.03 or 8/255)") from None
        return super().convert(argument)


def check_epsilon(flag, value, norm):
    """A usage error unless `value` is a finite radius > 0 (and <= 1 for L-inf: images in [0, 1])."""
    if not math.isfinite(value) or value <= 0 or (str(norm) == "inf" and value > 1):
        limit = "in (0, 1] for L-inf, as images lie in [0, 1]" if str(norm) == "inf" else "finite, > 0"
        raise app.UsageError(f"--{flag}={value:g} must be {limit}")
    return value


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
