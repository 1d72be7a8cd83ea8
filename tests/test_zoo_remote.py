"""Tests of a remote zoo (`tarrl_tf.zoo.remote`, `tarrl_tf.zoo.sources`) against a real HTTP
server on 127.0.0.1: a good fetch, a corrupted file, a server that dies mid-file, offline reuse."""

import contextlib
import functools
import http.server
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

import tarrl_tf
from tarrl_tf import export, zoo
from tarrl_tf.zoo import remote

REPO = pathlib.Path(__file__).resolve().parents[1]
NAME = "tiny_cnn_tarrl_linf01"
FACTS = dict(
    dataset="digits", architecture="small_cnn", method="tarrl", regularizer={"weight": 1.0},
    threat_model={"norm": "linf", "epsilon": 0.1},
    training={"epochs": 1, "batch_size": 8, "wall_clock_seconds": 1.0},
    metrics=[{"head": "linear", "clean_accuracy": 0.5, "robust_accuracy": 0.25, "num_examples": 8,
              "attack": {"name": "pgd_linf", "norm": "linf", "epsilon": 0.1, "steps": 3}}],
    headline={"task": "labels", "suite": "quick", "norm": "linf", "epsilon": 0.1,
              "clean_accuracy": 0.5, "robust_accuracy": 0.2, "num_examples": 8,
              "attacks": ["apgd_ce", "apgd_t", "square"]},
)


@pytest.fixture(scope="module")
def served_zoo(tmp_path_factory):
    """A zoo folder with one tiny entry (and a head), and the encoder it holds."""
    root = tmp_path_factory.mktemp("remote") / "zoo"
    keras.utils.set_random_seed(0)
    encoder = tarrl_tf.encoders.small_cnn(input_shape=(8, 8, 1), width=4, representation_dim=8)
    head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    export.create_zoo_entry(encoder, name=NAME, head=head, head_name="linear", zoo_dir=root,
                            **FACTS)
    return root, encoder


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the zoo folder; `server.corrupt` files get one byte changed, `server.cut` files
    stop halfway and the connection is closed (a server dying mid-file)."""

    def do_GET(self):  # noqa: N802 - the http.server name
        rel = self.path.lstrip("/")
        self.server.requests.append(rel)
        if rel in self.server.corrupt or rel in self.server.cut:
            data = bytearray((pathlib.Path(self.directory) / rel).read_bytes())
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if rel in self.server.corrupt:
                data[len(data) // 2] ^= 0xFF
                self.wfile.write(bytes(data))
            else:
                self.server.cut_count += 1
                self.wfile.write(bytes(data[: len(data) // 2]))
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(directory):
    handler = functools.partial(_Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # a free port
    server.requests, server.corrupt, server.cut, server.cut_count = [], set(), set(), 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def server(served_zoo):
    with _serve(served_zoo[0]) as served:
        yield served


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh cache per test, no local zoo in the environment, no pause between retries."""
    monkeypatch.setenv(remote.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    monkeypatch.delenv(remote.ZOO_URL_ENV, raising=False)
    monkeypatch.setattr(remote, "_RETRY_PAUSE_SECONDS", 0.0)
    return tmp_path / "cache"


def _outputs(model):
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    return np.asarray(model(x, training=False))


def _mirror_files(url):
    mirror = remote.mirror_dir(url)
    return sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file())


def test_a_good_fetch_loads_the_same_model_and_caches_only_what_was_needed(served_zoo, server):
    root, encoder = served_zoo
    srv, url = server
    assert NAME in zoo.list(zoo_url=url)  # beside the clone's own entries
    card = zoo.info(NAME, zoo_url=url)
    assert card["name"] == NAME and card["metrics"][0]["robust_accuracy"] == 0.25
    loaded = zoo.load(NAME, zoo_url=url)
    np.testing.assert_allclose(_outputs(loaded), _outputs(encoder), atol=1e-6)
    # The card and the encoder only: the SavedModel and the head were not needed yet.
    assert _mirror_files(url) == ["manifest.json", f"{NAME}/encoder.keras",
                                  f"{NAME}/model_card.json"]
    assert zoo.load_head(NAME, zoo_url=url).output_shape == (None, 3)
    path = zoo.serving_path(NAME, zoo_url=url)
    assert path == remote.mirror_dir(url) / NAME / "serving" / "1"
    assert zoo.verify(NAME, zoo_url=url)["files"] == len(card["files"]) + 1
    # Every file was checked against the manifest and stored whole.
    listed = json.loads((root / "manifest.json").read_text())["entries"][NAME]["files"]
    for rel in listed:
        assert (remote.mirror_dir(url) / NAME / rel).read_bytes() == (root / NAME / rel).read_bytes()
    assert not list((remote.mirror_dir(url) / remote.PARTIAL_DIRNAME).iterdir())


def test_the_environment_names_the_remote_zoo(server, monkeypatch):
    _, url = server
    monkeypatch.setenv(remote.ZOO_URL_ENV, url + "/")  # a final slash is fine
    assert zoo.info(NAME)["name"] == NAME
    assert remote.mirror_dir(url).is_dir()


def test_a_corrupted_file_is_refused_and_nothing_is_cached(server):
    srv, url = server
    srv.corrupt.add(f"{NAME}/encoder.keras")
    with pytest.raises(zoo.ChecksumError, match="sha256 mismatch .*nothing was cached"):
        zoo.load(NAME, zoo_url=url)
    assert f"{NAME}/encoder.keras" not in _mirror_files(url)
    assert not list((remote.mirror_dir(url) / remote.PARTIAL_DIRNAME).iterdir())
    # Refused at once: a server that sends other bytes is not asked again.
    assert srv.requests.count(f"{NAME}/encoder.keras") == 1


def test_a_server_dying_mid_file_leaves_nothing_half_written(served_zoo, server):
    srv, url = server
    rel = f"{NAME}/encoder.keras"
    srv.cut.add(rel)
    with pytest.raises(zoo.DownloadError, match=f"in {remote.ATTEMPTS} attempts.*nothing was cached"):
        zoo.load(NAME, zoo_url=url)
    assert srv.cut_count == remote.ATTEMPTS  # restarted from the start each time
    assert rel not in _mirror_files(url)
    assert not list((remote.mirror_dir(url) / remote.PARTIAL_DIRNAME).iterdir())
    # The server is back: the download starts again and the model loads.
    srv.cut.clear()
    np.testing.assert_allclose(_outputs(zoo.load(NAME, zoo_url=url)),
                               _outputs(served_zoo[1]), atol=1e-6)


def test_a_connection_cut_once_is_restarted(server, monkeypatch):
    srv, url = server
    rel = f"{NAME}/encoder.keras"
    srv.cut.add(rel)
    real_copy = remote._copy

    def heal_after_first_cut(url, *args, **kwargs):
        try:
            return real_copy(url, *args, **kwargs)
        finally:
            if url.endswith(rel):
                srv.cut.discard(rel)

    monkeypatch.setattr(remote, "_copy", heal_after_first_cut)
    zoo.load(NAME, zoo_url=url)
    assert srv.cut_count == 1 and srv.requests.count(rel) == 2


def test_cached_entries_load_offline(served_zoo):
    root, encoder = served_zoo
    with _serve(root) as (_, url):
        zoo.load(NAME, zoo_url=url)
        zoo.info(NAME, zoo_url=url)
    # The server is gone; the same URL is served from the cache without a request.
    np.testing.assert_allclose(_outputs(zoo.load(NAME, zoo_url=url)), _outputs(encoder), atol=1e-6)
    assert zoo.info(NAME, zoo_url=url)["name"] == NAME
    with pytest.warns(UserWarning, match="using the manifest cached"):
        assert NAME in zoo.list(zoo_url=url)
    # What was never fetched cannot come from nowhere: a clear error, not a hang.
    with pytest.warns(UserWarning), pytest.raises(zoo.DownloadError, match="Could not download"):
        zoo.load_head(NAME, zoo_url=url)


def test_a_damaged_cached_file_is_downloaded_again(served_zoo, server):
    _, url = server
    zoo.load(NAME, zoo_url=url)
    cached = remote.mirror_dir(url) / NAME / "encoder.keras"
    cached.write_bytes(cached.read_bytes()[:-10])
    zoo.load(NAME, zoo_url=url)
    assert cached.read_bytes() == (served_zoo[0] / NAME / "encoder.keras").read_bytes()


def test_fetch_refreshes_the_manifest_and_keeps_only_listed_files(server):
    srv, url = server
    entry_dir = zoo.fetch(NAME, zoo_url=url)
    stray = entry_dir / "serving" / "0" / "old.pb"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"from a replaced version")
    requests = len(srv.requests)
    zoo.fetch(NAME, zoo_url=url)
    assert srv.requests[requests:] == ["manifest.json"]  # nothing downloaded twice
    assert not stray.exists() and not stray.parent.exists()
    assert zoo.verify(NAME, zoo_url=url)["name"] == NAME


def test_a_file_url_is_a_remote_zoo_too(served_zoo):
    url = served_zoo[0].as_uri()
    assert url.startswith("file://")
    assert zoo.info(NAME, zoo_url=url)["name"] == NAME


def test_a_gs_url_is_read_through_tf_io_gfile(served_zoo, monkeypatch):
    import tensorflow as tf

    opened = []

    def fake_gfile(path, mode):  # a bucket stands in as a local folder
        opened.append(path)
        assert path.startswith("gs://bucket/zoo/") and mode == "rb"
        return open(served_zoo[0] / path[len("gs://bucket/zoo/"):], mode)

    monkeypatch.setattr(tf.io.gfile, "GFile", fake_gfile)
    assert zoo.info(NAME, zoo_url="gs://bucket/zoo")["name"] == NAME
    assert opened == ["gs://bucket/zoo/manifest.json", f"gs://bucket/zoo/{NAME}/model_card.json"]


def test_a_local_zoo_comes_before_the_remote_one(served_zoo, server, tmp_path, monkeypatch):
    srv, url = server
    local = pathlib.Path(shutil.copytree(served_zoo[0], tmp_path / "local"))
    assert zoo.info(NAME, zoo_dir=local, zoo_url=url)["name"] == NAME
    assert srv.requests == []
    # An explicit zoo_dir alone is that zoo: no fall-through to $TARRL_ZOO_URL.
    monkeypatch.setenv(remote.ZOO_URL_ENV, url)
    with pytest.raises(zoo.UnknownModelError, match="Unknown zoo model 'nope' in "):
        zoo.info("nope", zoo_dir=local)
    assert srv.requests == []
    # Otherwise the clone's zoo first, then the remote one; the error names both.
    clone = zoo.default_zoo_dir()
    with pytest.raises(zoo.UnknownModelError, match=f"at {url}; .*not in {clone} either"):
        zoo.info("nope")
    assert zoo.info("mnist_cnn_simclr")["name"] == "mnist_cnn_simclr"  # from the clone
    assert srv.requests == ["manifest.json"]


def test_no_zoo_in_reach_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo.manifest, "default_zoo_dir", lambda: tmp_path / "no_zoo")
    with pytest.raises(zoo.MissingFileError, match="No zoo in reach.*TARRL_ZOO_URL"):
        zoo.load(NAME)
    with pytest.raises(ValueError, match="must start with one of"):
        zoo.list(zoo_url="ftp://host/zoo")
    with pytest.raises(ValueError, match="must start with one of"):
        zoo.list(zoo_url=str(tmp_path))


def test_a_broken_manifest_is_refused_and_not_cached(tmp_path):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "manifest.json").write_text('{"format_version": 1, "entries": []}')
    with _serve(tmp_path / "zoo") as (_, url):
        with pytest.raises(zoo.InvalidModelCardError, match=f"Invalid manifest at {url}"):
            zoo.list(zoo_url=url)
    assert not (remote.mirror_dir(url) / "manifest.json").exists()


def test_the_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv(remote.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert remote.resolve_cache_dir() == tmp_path / "xdg" / "tarrl_tf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert remote.resolve_cache_dir() == tmp_path / "home" / ".cache" / "tarrl_tf"
    a, b = remote.mirror_dir("https://host/zoo"), remote.mirror_dir("https://host/other")
    assert a != b and a.parent == b.parent and a.name.startswith("host-")


def _zoo_tool(*args, env):
    return subprocess.run([sys.executable, "-m", "tools.zoo", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.large  # two tool processes, each importing TensorFlow
def test_tools_zoo_fetch_and_list_remote(server, cache):
    _, url = server
    env = {**os.environ, remote.ZOO_URL_ENV: url, "PYTHONPATH": str(REPO)}
    fetched = _zoo_tool("fetch", NAME, env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert f"{NAME}: {remote.mirror_dir(url) / NAME}/" in fetched.stdout
    assert f"Downloading {NAME} from {url}:" in fetched.stderr
    assert zoo.verify(NAME, zoo_url=url)["name"] == NAME
    (remote.mirror_dir(url) / NAME / "head.keras").unlink()
    listed = _zoo_tool("list", "--remote", env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"{NAME}  " in listed.stdout and "MB  not cached" in listed.stdout
    assert f"1 entries at {url}" in listed.stdout
    with pytest.raises(zoo.UnknownModelError, match=f"Unknown zoo model 'nope' at {url}"):
        zoo.fetch("nope", zoo_url=url)
