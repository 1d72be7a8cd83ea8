"""The package as a user gets it: a wheel installed into a fresh virtual environment, used from a
folder that is not a clone, with its zoo served over loopback HTTP.

TensorFlow and the other dependencies come from the system site-packages
(`--system-site-packages`, `--no-deps`): nothing is downloaded.
"""

import functools
import http.server
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = ("tarrl-pretrain", "tarrl-evaluate", "tarrl-export", "tarrl-zoo")
ENTRY = "mnist_cnn_simclr"  # the smallest download of the repository's zoo


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`(venv, wheel)`: the wheel built from the repository's sources, installed in a new venv."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # built from a copy: building in place would leave build/ behind
    source.mkdir()
    for rel in ("pyproject.toml", "README.md", "tarrl_tf", "tarrl_tf_cli"):
        copy = shutil.copytree if (REPO / rel).is_dir() else shutil.copy2
        copy(REPO / rel, source / rel, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                          if (REPO / rel).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(root / "dist"), str(source)], check=True)
    (wheel,) = (root / "dist").glob("tarrl_tf-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True)
    return venv, wheel


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TARRL_ZOO_DIR", "TARRL_ZOO_URL")}
    return {**env, "TARRL_CACHE_DIR": str(tmp_path / "cache"), **extra}


def test_the_wheel_ships_the_library_and_the_commands_but_no_repository_files(installed):
    _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "tarrl_tf/zoo/remote.py" in names and "tarrl_tf_cli/pretrain.py" in names
    assert not [n for n in names if n.split("/")[0] in ("tools", "zoo", "tests", "benchmarks")]
    scripts = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for command in COMMANDS:
        assert f"{command} = tarrl_tf_cli." in scripts


@pytest.mark.large
def test_installed_commands_run_from_any_folder_and_load_a_served_zoo(installed, tmp_path):
    venv, _ = installed
    elsewhere = tmp_path / "elsewhere"  # not a clone: no zoo/, no tools/
    elsewhere.mkdir()
    env = _env(tmp_path)
    python = str(venv / "bin" / "python")

    where = subprocess.run([python, "-c", "import tarrl_tf, tarrl_tf_cli; "
                            "print(tarrl_tf.__file__); print(tarrl_tf_cli.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), where.stdout

    for command in COMMANDS:
        start = time.perf_counter()
        helped = subprocess.run([str(venv / "bin" / command), "--help"], cwd=elsewhere, env=env,
                                capture_output=True, text=True)
        assert helped.returncode == 0 and "flags:" in helped.stdout, helped.stderr
        assert time.perf_counter() - start < 5.0

    # The main job on its default dataset and settings, shrunk in size only.
    pretrained = subprocess.run(
        [str(venv / "bin" / "tarrl-pretrain"), "--epochs=1", "--train_examples=256",
         "--num_examples=60", "--head_epochs=2", "--attack_steps=2", "--nosanity_checks"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert pretrained.returncode == 0, pretrained.stderr[-3000:]
    assert "| clean accuracy |" in pretrained.stdout
    assert (elsewhere / "runs" / "pretrain" / "tarrl" / "report.json").is_file()
    assert "cuInit" not in pretrained.stderr and "retracing" not in pretrained.stderr

    # No clone, no zoo configured: a clear error naming the way out.
    no_zoo = subprocess.run([python, "-c", "import tarrl_tf; tarrl_tf.zoo.list()"],
                            cwd=elsewhere, env=env, capture_output=True, text=True)
    assert no_zoo.returncode != 0 and "TARRL_ZOO_URL" in no_zoo.stderr.splitlines()[-1]

    handler = functools.partial(_QuietHandler, directory=str(REPO / "zoo"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # a free port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        served = _env(tmp_path, TARRL_ZOO_URL=url)
        loaded = subprocess.run(
            [python, "-c", "import tarrl_tf; "
             f"e = tarrl_tf.zoo.load({ENTRY!r}); print(e.input_shape, e.output_shape); "
             f"print(tarrl_tf.zoo.serving_path({ENTRY!r}))"],
            cwd=elsewhere, env=served, capture_output=True, text=True, timeout=600)
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        assert "(None, 28, 28, 1) (None, 128)" in loaded.stdout
        assert loaded.stdout.split()[-1].startswith(str(tmp_path / "cache"))
        listed = subprocess.run([str(venv / "bin" / "tarrl-zoo"), "list", "--remote"],
                                cwd=elsewhere, env=served, capture_output=True, text=True)
        assert listed.returncode == 0 and f"{ENTRY}  " in listed.stdout, listed.stderr
    finally:
        server.shutdown()
        server.server_close()
    # Offline (the server is gone), the cached entry still loads.
    offline = subprocess.run([python, "-c", f"import tarrl_tf; tarrl_tf.zoo.load({ENTRY!r})"],
                             cwd=elsewhere, env=served, capture_output=True, text=True)
    assert offline.returncode == 0, offline.stderr[-3000:]
