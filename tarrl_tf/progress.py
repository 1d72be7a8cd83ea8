"""A one-line progress bar with a rate (images/s, MB/s) for the long phases of the tools.

On a terminal the line is redrawn in place; anywhere else (a log file, a
pipe, a test) only the final line is written, so logs hold one line per
phase and no control characters.

Example:
```python
with Progress("pgd_linf eps=0.1", total=len(x), unit="images") as bar:
    for start in range(0, len(x), 128):
        ...
        bar.update(min(start + 128, len(x)))
# pgd_linf eps=0.1: 1000 images in 12.4 s (81 images/s)
```
"""

import sys
import time

_WIDTH = 24
# Redraws at most this often: a bar must not cost more than the work it shows.
_REDRAW_SECONDS = 0.2


class Progress:
    """Progress of one phase: `label [=====>    ] done/total unit, rate unit/s, eta`.

    Args:
        label: what runs (`"pgd_linf eps=0.1"`).
        total: how many units the phase processes.
        unit: their name (`"images"`, `"MB"`).
        scale: units per counted item (`1 / 2**20` to count bytes as MB).
        stream: where to write; default `sys.stderr` (stdout keeps the results).
    """

    def __init__(self, label, total, *, unit="images", scale=1.0, stream=None):
        self.label = label
        self.total = total
        self.unit = unit
        self.scale = scale
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._start = time.perf_counter()
        self._drawn = 0.0
        self._live = bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if kind is None:
            self.close()
        elif self._live:
            self.stream.write("\n")  # Leave the last bar visible above the traceback.

    def update(self, done):
        """Sets how many items are done (not an increment)."""
        self.done = done
        now = time.perf_counter()
        if self._live and now - self._drawn >= _REDRAW_SECONDS:
            self._drawn = now
            self.stream.write("\r" + self._bar(now - self._start))
            self.stream.flush()

    def close(self):
        """Writes the final line: how much, how long, how fast."""
        seconds = time.perf_counter() - self._start
        amount = self.done * self.scale
        line = (f"{self.label}: {_number(amount)} {self.unit} in {seconds:.1f} s "
                f"({_number(amount / max(seconds, 1e-9))} {self.unit}/s)")
        self.stream.write(("\r\033[K" if self._live else "") + line + "\n")
        self.stream.flush()

    def _bar(self, seconds):
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(fraction * _WIDTH)
        bar = "=" * filled + (">" if filled < _WIDTH else "") + " " * (_WIDTH - filled - 1)
        rate = self.done * self.scale / max(seconds, 1e-9)
        left = (self.total - self.done) * self.scale / rate if rate > 0 else 0.0
        return (f"{self.label} [{bar[:_WIDTH]}] {_number(self.done * self.scale)}/"
                f"{_number(self.total * self.scale)} {self.unit}, {_number(rate)} {self.unit}/s, "
                f"{left:.0f} s left\033[K")


def _number(x):
    if x >= 100 or float(x).is_integer():
        return f"{x:.0f}"
    return f"{x:.1f}" if x >= 1 else f"{x:.2g}"
