"""Every command and snippet of README.md, run as written from a fresh copy of the clone.

Each ```bash block runs in a shell and each ```python block in a fresh interpreter, in order, in a
copy of the repository's tracked files (zoo/ linked, not copied) with its own virtual environment,
so `pip install -e .` and the console commands are exercised too. To stay fast the test changes
only sizes (`SHRINK`: epochs, examples), adds `--no-build-isolation --no-deps` to pip (no
download), collects the test suite instead of running it (it is running), serves the README's
zoo from the `http.server` command it shows, and names that server for the example URL. Blocks
marked `<!-- needs Docker and TF Serving ... -->` are the only ones not run.
"""

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOT_RUN = "<!-- needs Docker and TF Serving: not run by tests/test_readme.py -->"
EXAMPLE_URL = "https://example.org/tarrl-zoo"
# Flags appended to a command (absl: the last value of a flag wins) to keep the test fast.
SHRINK = {
    "tools.pretrain": "--epochs=1 --train_examples=256 --num_examples=60 --head_epochs=2 "
                      "--attack_steps=2 --nosanity_checks",
    "tools.evaluate": "--epochs=2 --num_examples=60 --steps=2 --regularizer_steps=2 "
                      "--nosanity_checks",
}
BLOCK_RE = re.compile(r"(?P<marker><!--[^\n]*-->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```", re.S)


def readme_blocks():
    """`(language, body, runs)` of every fenced block of README.md, in order."""
    text = (REPO / "README.md").read_text()
    return [(m["lang"], m["body"], m["marker"] is None or NOT_RUN not in m["marker"])
            for m in BLOCK_RE.finditer(text)]


def test_every_block_is_run_or_marked():
    blocks = readme_blocks()
    assert {lang for lang, _, _ in blocks} <= {"bash", "python", ""}, "unknown block language"
    not_run = [body.split()[0] for lang, body, runs in blocks if not runs]
    assert not_run == ["docker", "curl"]  # only what needs Docker and TF Serving
    assert all(lang in ("bash", "python") for lang, _, runs in blocks if not runs)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_clone(root):
    """The tracked files of the repository as they are now, zoo/ linked (185 MB)."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    clone = root / "clone"
    for rel in files:
        if rel.startswith("zoo/") or not (REPO / rel).exists():
            continue
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, clone / rel)
    (clone / "zoo").symlink_to(REPO / "zoo")
    return clone


def _adapted(command, url, port):
    """The README's command with the test's sizes, pip flags, server and URL."""
    command = command.replace(EXAMPLE_URL, url).replace("8000", str(port))
    command = command.replace("pip install -e ", "pip install --no-build-isolation --no-deps -e ")
    command = command.replace("python -m pytest -q", "python -m pytest -q --collect-only")
    for tool, flags in SHRINK.items():
        command = re.sub(rf"(python -m {re.escape(tool)}\b(?:[^\n&|;\\]|\\\n|\\.)*)",
                         lambda m: m[1].rstrip() + " " + flags, command)
    return command


@pytest.mark.large
def test_readme_commands_and_snippets_run_as_written(tmp_path):
    clone = _fresh_clone(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TARRL_ZOO_DIR")}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(venv),
               TARRL_CACHE_DIR=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    blocks = [(lang, body) for lang, body, runs in readme_blocks() if runs and lang]
    served = [body for lang, body in blocks if "http.server" in body]
    assert len(served) == 1, "the README shows how to serve a zoo, once"
    # The zoo server runs until stopped: started first, so the blocks using a remote zoo reach it.
    server = subprocess.Popen(["bash", "-c", _adapted(served[0], url, port).split("#")[0]],
                              cwd=clone, env=env, start_new_session=True)
    try:
        _wait_until_serving(f"{url}/manifest.json", server)
        for lang, body in blocks:
            if body in served:
                continue
            if lang == "python":
                code = body.replace("epochs=2", "epochs=1").replace(EXAMPLE_URL, url)
                result = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=clone,
                                        env=env, capture_output=True, text=True, timeout=900)
                assert result.returncode == 0, f"{body}\n{result.stderr[-3000:]}"
                continue
            command = _adapted(body, url, port)
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=clone,
                                    env=env, capture_output=True, text=True, timeout=1800)
            assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
            _check(command, result, clone, venv, env)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _check(command, result, clone, venv, env):
    """What each kind of command must have done, beyond exiting 0."""
    if "pip install" in command:
        where = subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import tarrl_tf, tarrl_tf_cli; print(tarrl_tf.__file__)"],
                               cwd=clone.parent, env=env, capture_output=True, text=True)
        assert where.stdout.strip() == str(clone / "tarrl_tf" / "__init__.py"), where.stderr
    if "tools.pretrain" in command:
        output_dir = re.search(r"--output_dir=(\S+)", command)
        runs = clone / (output_dir[1] if output_dir else "runs/pretrain")
        assert (runs / "tarrl" / "encoder.keras").is_file()
        # An encoder and its report's three files, per run (--nobaseline: one run).
        files = 4 if "--nobaseline" in command else 8
        assert "| clean accuracy |" in result.stdout and f"Wrote {files} files:" in result.stdout
    if "--strategy=multi_worker" in command:
        assert "Worker 1: trained; the chief (worker 0) writes" in result.stdout
    if "tools.evaluate" in command:
        report = json.loads((clone / "out" / "report.json").read_text())
        assert f"task `{report['task']}`" in result.stdout
        if "--merge=" in command:  # the shards' commands name no task: the default
            assert report["task"] == "labels" and "Shard 1 of 2: test images" in result.stdout
        else:
            assert report["task"] in command
        if "--suite=" in command:
            assert report["worst_case"] and "worst case" in result.stdout
    if "tools.export" in command:
        assert 'base_path: "/models/digits_tarrl"' in (clone / "serving" / "models.config").read_text()
    if "pytest" in command:
        assert "tests collected" in result.stdout or " collected" in result.stdout
    if "tarrl-zoo fetch" in command:
        assert "Fetched 1 entry into the cache" in result.stdout


def _wait_until_serving(url, process, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the zoo server exited"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert b'"entries"' in response.read()
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} was not served within {seconds} s")
