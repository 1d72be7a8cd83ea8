"""`tarrl_tf.progress.Progress`: one final line in logs, a redrawn bar on a terminal."""

import io

from tarrl_tf import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_one_line_per_phase():
    stream = io.StringIO()
    with progress.Progress("pgd_linf eps=0.1", 1000, stream=stream) as bar:
        for done in range(100, 1001, 100):
            bar.update(done)
    line = stream.getvalue()
    assert line.count("\n") == 1 and "\r" not in line and "\033" not in line
    assert line.startswith("pgd_linf eps=0.1: 1000 images in ") and line.endswith(" images/s)\n")


def test_a_terminal_gets_a_bar_with_the_rate(monkeypatch):
    monkeypatch.setattr(progress, "_REDRAW_SECONDS", 0.0)
    stream = _Terminal()
    bar = progress.Progress("Downloading x", 4 * 2**20, unit="MB", scale=1 / 2**20, stream=stream)
    bar.update(2**20)
    assert "\rDownloading x [" in stream.getvalue() and "1/4 MB, " in stream.getvalue()
    assert " MB/s, " in stream.getvalue() and " s left" in stream.getvalue()
    bar.update(4 * 2**20)
    bar.close()
    assert stream.getvalue().splitlines()[-1].endswith(" MB/s)")
    assert "Downloading x: 4 MB in " in stream.getvalue()


def test_a_failed_phase_leaves_its_bar_and_no_final_line():
    stream = _Terminal()
    try:
        with progress.Progress("spsa eps=0.3", 10, stream=stream) as bar:
            bar.update(5)
            raise RuntimeError("interrupted")
    except RuntimeError:
        pass
    assert stream.getvalue().endswith("\n") and " in " not in stream.getvalue().splitlines()[-1]
