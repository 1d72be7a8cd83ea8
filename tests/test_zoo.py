"""Tests of `tarrl_tf.zoo`, `export.create_zoo_entry` and `tools/zoo.py`."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import tarrl_tf
from tarrl_tf import export, files, zoo

REPO = pathlib.Path(__file__).resolve().parent.parent
H, W, C, D, K = 8, 8, 1, 8, 3
WITH_HEAD = "tiny_cnn_tarrl_linf03"
NO_HEAD = "tiny_cnn_simclr_linf03"


def _facts(**overrides):
    """Model card facts as a training run would report them."""
    facts = dict(
        dataset="mnist",
        architecture="small_cnn",
        method="tarrl",
        regularizer={"weight": 1.0, "estimator": "pgd", "steps": 3, "divergence": "cosine"},
        threat_model={"norm": np.inf, "epsilon": 0.3},
        training={"epochs": 2, "batch_size": 16, "wall_clock_seconds": 12.5, "hardware": "cpu"},
        metrics=[
            {
                "head": "linear_probe",
                "clean_accuracy": 0.5,
                "robust_accuracy": np.float32(0.25),
                "num_examples": 64,
                "split": "test",
                "attack": {
                    "name": "pgd",
                    "norm": "inf",
                    "epsilon": 0.3,
                    "step_size": 0.01,
                    "steps": 40,
                    "random_start": True,
                },
            }
        ],
        headline={"task": "labels", "suite": "standard", "norm": "linf", "epsilon": 0.3,
                  "clean_accuracy": 0.5, "robust_accuracy": 0.2, "num_examples": 64,
                  "attacks": ["apgd_ce", "apgd_t", "square"]},
    )
    facts.update(overrides)
    return facts


def _tiny_models(seed=0):
    keras.utils.set_random_seed(seed)
    encoder = tarrl_tf.encoders.small_cnn(input_shape=(H, W, C), width=4, representation_dim=D)
    head = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)], name="linear_probe")
    return encoder, head


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A temporary zoo with one entry shipping a head and one without."""
    zoo_dir = tmp_path_factory.mktemp("zoo")
    encoder, head = _tiny_models()
    export.create_zoo_entry(
        encoder, name=WITH_HEAD, head=head, head_name="linear_probe", zoo_dir=zoo_dir, **_facts()
    )
    simclr_encoder, _ = _tiny_models(seed=1)
    export.create_zoo_entry(
        simclr_encoder, name=NO_HEAD, zoo_dir=zoo_dir, **_facts(method="simclr", regularizer={})
    )
    return {"zoo_dir": zoo_dir, "encoder": encoder, "head": head}


@pytest.fixture
def zoo_copy(built, tmp_path):
    """A copy of the built zoo that a test may damage."""
    return pathlib.Path(shutil.copytree(built["zoo_dir"], tmp_path / "zoo"))


def _snapshot(zoo_dir):
    """Every path under the zoo (hidden ones included) and the manifest bytes."""
    paths = sorted(p.relative_to(zoo_dir).as_posix() for p in pathlib.Path(zoo_dir).rglob("*"))
    return paths, (pathlib.Path(zoo_dir) / zoo.MANIFEST_FILENAME).read_bytes()


def _crash_replacing_manifest(monkeypatch):
    """Makes `os.replace` fail when it would replace the manifest."""
    real_replace = os.replace

    def crash(src, dst, *args, **kwargs):
        if str(dst).endswith(zoo.MANIFEST_FILENAME):
            raise OSError("simulated crash while replacing the manifest")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crash)


def _repo_entries():
    return sorted(zoo.read_manifest(zoo.default_zoo_dir())["entries"])


# --------------------------------------------------------------------------- the repo's zoo


def test_repo_manifest_is_valid(monkeypatch):
    monkeypatch.delenv(zoo.ZOO_DIR_ENV, raising=False)
    assert zoo.resolve_zoo_dir() == REPO / "zoo"
    manifest = zoo.read_manifest()
    assert manifest["format_version"] == zoo.MANIFEST_FORMAT_VERSION
    assert zoo.list() == sorted(manifest["entries"])


@pytest.mark.parametrize("name", _repo_entries())
def test_repo_zoo_entry_verifies(name):
    report = zoo.verify(name, zoo_dir=zoo.default_zoo_dir())
    assert report["name"] == name


# --------------------------------------------------------------------------- reading


def test_verify_every_entry_of_a_built_zoo(built):
    for name in zoo.list(zoo_dir=built["zoo_dir"]):
        report = zoo.verify(name, zoo_dir=built["zoo_dir"])
        assert report["serving_versions"] == [1]
        assert report["max_abs_diff"] <= 1e-5


def test_list_info_load_and_serving_path(built):
    zoo_dir = built["zoo_dir"]
    assert zoo.list(zoo_dir=zoo_dir) == sorted([WITH_HEAD, NO_HEAD])
    assert sorted(p.name for p in zoo_dir.iterdir()) == sorted(
        [WITH_HEAD, NO_HEAD, zoo.MANIFEST_FILENAME]
    )

    card = zoo.info(WITH_HEAD, zoo_dir=zoo_dir)
    assert card["name"] == WITH_HEAD and card["method"] == "tarrl"
    assert card["threat_model"] == {"norm": "linf", "epsilon": 0.3}
    metric = card["metrics"][0]
    assert metric["attack"]["norm"] == "linf" and metric["attack"]["steps"] == 40
    for value in (metric["clean_accuracy"], metric["robust_accuracy"], card["training"]["epochs"]):
        assert isinstance(value, (int, float)) and not isinstance(value, bool)
    assert card["software"]["tensorflow"] and card["software"]["keras"] == keras.__version__
    assert card["serving"]["head"] == "linear_probe" and card["serving"]["num_classes"] == K
    assert {zoo.ENCODER_FILENAME, zoo.HEAD_FILENAME, "serving/1/saved_model.pb"} <= set(
        card["files"]
    )
    assert zoo.MODEL_CARD_FILENAME not in card["files"]
    manifest_files = zoo.read_manifest(zoo_dir)["entries"][WITH_HEAD]["files"]
    assert {k: v for k, v in manifest_files.items() if k != zoo.MODEL_CARD_FILENAME} == card[
        "files"
    ]

    images = np.random.default_rng(2).random((2, H, W, C), dtype=np.float32)
    encoder = zoo.load(WITH_HEAD, zoo_dir=zoo_dir)
    np.testing.assert_allclose(encoder(images), built["encoder"](images), atol=1e-6)
    head = zoo.load_head(WITH_HEAD, zoo_dir=zoo_dir)
    np.testing.assert_allclose(
        head(encoder(images)), built["head"](built["encoder"](images)), atol=1e-6
    )
    with pytest.raises(zoo.ZooError, match="no downstream head"):
        zoo.load_head(NO_HEAD, zoo_dir=zoo_dir)

    path = zoo.serving_path(WITH_HEAD, zoo_dir=zoo_dir)
    assert path == zoo_dir / WITH_HEAD / "serving" / "1"
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    np.testing.assert_allclose(layer(images)["embedding"], encoder(images), atol=1e-5)
    assert zoo.serving_versions(NO_HEAD, zoo_dir=zoo_dir) == [1]
    with pytest.raises(zoo.ZooError, match="no serving version 2"):
        zoo.serving_path(WITH_HEAD, version=2, zoo_dir=zoo_dir)


def test_zoo_dir_from_environment(built, monkeypatch, tmp_path):
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(built["zoo_dir"]))
    assert zoo.list() == sorted([WITH_HEAD, NO_HEAD])
    assert zoo.info(NO_HEAD)["method"] == "simclr"
    # An explicit zoo_dir wins over the environment.
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path / "nowhere"))
    assert zoo.list(zoo_dir=built["zoo_dir"]) == sorted([WITH_HEAD, NO_HEAD])
    with pytest.raises(zoo.MissingFileError, match="No zoo manifest"):
        zoo.list()


def test_unknown_name_is_a_clear_error(built):
    for fn in (zoo.info, zoo.load, zoo.load_head, zoo.serving_path, zoo.verify):
        with pytest.raises(zoo.UnknownModelError, match="Unknown zoo model 'mnist_nope'") as info:
            fn("mnist_nope", zoo_dir=built["zoo_dir"])
        assert isinstance(info.value, KeyError)
        assert WITH_HEAD in str(info.value)  # lists what is available


# --------------------------------------------------------------------------- damage


def test_checksum_mismatch_is_detected(zoo_copy):
    path = zoo_copy / WITH_HEAD / zoo.ENCODER_FILENAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.ChecksumError, match="sha256 mismatch"):
        zoo.load(WITH_HEAD, zoo_dir=zoo_copy)
    with pytest.raises(zoo.ChecksumError, match="sha256 mismatch"):
        zoo.verify(WITH_HEAD, zoo_dir=zoo_copy)
    zoo.verify(NO_HEAD, zoo_dir=zoo_copy)  # the other entry is untouched


def test_truncated_files_are_detected(zoo_copy):
    variables = zoo_copy / WITH_HEAD / "serving/1/variables/variables.data-00000-of-00001"
    with open(variables, "r+b") as f:
        f.truncate(variables.stat().st_size // 2)
    with pytest.raises(zoo.ChecksumError, match="truncated"):
        zoo.serving_path(WITH_HEAD, zoo_dir=zoo_copy)
    with pytest.raises(zoo.ChecksumError, match="truncated"):
        zoo.verify(WITH_HEAD, zoo_dir=zoo_copy)
    zoo.load(WITH_HEAD, zoo_dir=zoo_copy)  # the Keras file itself is intact

    encoder_file = zoo_copy / NO_HEAD / zoo.ENCODER_FILENAME
    encoder_file.write_bytes(encoder_file.read_bytes()[:100])
    with pytest.raises(zoo.ChecksumError, match="truncated"):
        zoo.load(NO_HEAD, zoo_dir=zoo_copy)


def test_missing_and_stray_files_are_detected(zoo_copy):
    (zoo_copy / WITH_HEAD / zoo.HEAD_FILENAME).unlink()
    with pytest.raises(zoo.MissingFileError, match="head.keras"):
        zoo.load_head(WITH_HEAD, zoo_dir=zoo_copy)
    with pytest.raises(zoo.MissingFileError, match="head.keras"):
        zoo.verify(WITH_HEAD, zoo_dir=zoo_copy)
    (zoo_copy / NO_HEAD / "serving" / "notes.txt").write_text("not listed")
    with pytest.raises(zoo.ChecksumError, match="does not list"):
        zoo.verify(NO_HEAD, zoo_dir=zoo_copy)


def test_edited_model_card_is_detected(zoo_copy):
    card_path = zoo_copy / WITH_HEAD / zoo.MODEL_CARD_FILENAME
    card = json.loads(card_path.read_text())
    card["metrics"][0]["robust_accuracy"] = 0.99
    card_path.write_text(json.dumps(card, indent=2))
    with pytest.raises(zoo.ChecksumError):
        zoo.info(WITH_HEAD, zoo_dir=zoo_copy)


# --------------------------------------------------------------------------- model card schema


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("threat_model", "epsilon"), "8/255", "threat_model.epsilon must be a non-negative"),
        (("threat_model", "norm"), "linf2", "threat_model.norm"),
        (("metrics", 0, "attack", "epsilon"), "0.3", "attack.epsilon"),
        (("metrics", 0, "robust_accuracy"), "0.25", "robust_accuracy"),
        (("metrics", 0, "clean_accuracy"), 97.5, "not a percentage"),
        (("training", "epochs"), "10", "training.epochs"),
        (("training", "wall_clock_seconds"), float("nan"), "wall_clock_seconds"),
        (("method",), "magic", "method must be one of"),
        (("regularizer", "weight"), "1e-2", "store numbers as numbers"),
        (("name",), "Model V2 final", "systematic zoo name"),
        (("metrics",), [], "non-empty"),
    ],
)
def test_model_card_validation_rejects(built, path, value, message):
    card = zoo.info(WITH_HEAD, zoo_dir=built["zoo_dir"])
    zoo.validate_model_card(card)
    target = card
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        zoo.validate_model_card(card)


@pytest.mark.parametrize("field", zoo.REQUIRED_CARD_FIELDS)
def test_model_card_requires_every_field(built, field):
    card = zoo.info(WITH_HEAD, zoo_dir=built["zoo_dir"])
    del card[field]
    with pytest.raises(zoo.InvalidModelCardError, match=f"missing field '{field}'"):
        zoo.validate_model_card(card)


def test_write_model_card_records_only_given_facts(tmp_path):
    (tmp_path / "encoder.keras").write_bytes(b"weights")
    card = export.write_model_card(tmp_path, name="toy_cnn_simclr", **_facts(method="simclr"))
    on_disk = json.loads((tmp_path / zoo.MODEL_CARD_FILENAME).read_text())
    assert on_disk == card
    assert card["files"] == {
        "encoder.keras": {"sha256": zoo.sha256_file(tmp_path / "encoder.keras"), "bytes": 7}
    }
    assert card["metrics"][0]["robust_accuracy"] == 0.25 and card["training"]["epochs"] == 2
    assert set(card["software"]) >= {"tensorflow", "keras"}
    with pytest.raises(ValueError, match="epsilon"):
        export.write_model_card(
            tmp_path,
            name="toy_cnn_simclr",
            **_facts(threat_model={"norm": "linf", "epsilon": "8/255"}),
        )


def test_card_metrics_from_an_evaluation_report(tmp_path):
    # The shape `tarrl_tf.evaluation.evaluate` returns (trimmed).
    report = {
        "head": "linear",
        "fine_tune": False,
        "num_examples": 64,
        "clean_accuracy": 0.9,
        "clean_loss": 0.3,
        "attacks": [
            {"name": "pgd_linf", "norm": "inf", "epsilon": 0.3, "steps": 40, "step_size": 0.01,
             "robust_accuracy": np.float64(0.4), "adversarial_loss": 2.0, "num_examples": 64},
            {"name": "fgsm", "norm": "inf", "epsilon": 0.1, "steps": 1, "step_size": 0.1,
             "robust_accuracy": 0.6, "adversarial_loss": 1.0, "num_examples": 64},
        ],
    }
    metrics = export.card_metrics(report)
    assert [m["attack"]["name"] for m in metrics] == ["pgd_linf", "fgsm"]
    assert metrics[0]["attack"] == {
        "name": "pgd_linf", "norm": "inf", "epsilon": 0.3, "steps": 40, "step_size": 0.01
    }
    assert metrics[0]["robust_accuracy"] == 0.4 and type(metrics[0]["robust_accuracy"]) is float
    assert all(m["head"] == "linear" and m["clean_accuracy"] == 0.9 for m in metrics)
    (tmp_path / "encoder.keras").write_bytes(b"weights")
    card = export.write_model_card(tmp_path, name="toy_cnn_tarrl", **_facts(metrics=metrics))
    assert card["metrics"][0]["attack"]["norm"] == "linf"  # canonical spelling in the card


# --------------------------------------------------------------------------- writing


def test_create_zoo_entry_rejects_bad_requests(zoo_copy):
    encoder, head = _tiny_models()
    before = _snapshot(zoo_copy)
    with pytest.raises(ValueError, match="already exists"):
        export.create_zoo_entry(encoder, name=NO_HEAD, zoo_dir=zoo_copy, **_facts())
    with pytest.raises(ValueError, match="Invalid zoo name"):
        export.create_zoo_entry(encoder, name="model_v2 final", zoo_dir=zoo_copy, **_facts())
    with pytest.raises(ValueError, match="epsilon"):
        export.create_zoo_entry(
            encoder,
            name="tiny_cnn_tarrl_linf8",
            zoo_dir=zoo_copy,
            **_facts(threat_model={"norm": "linf", "epsilon": "8/255"}),
        )
    with pytest.raises(ValueError, match="head_name is required"):
        export.create_zoo_entry(encoder, name="tiny_x", head=head, zoo_dir=zoo_copy, **_facts())
    with pytest.raises(ValueError, match="has no metrics"):
        export.create_zoo_entry(
            encoder, name="tiny_x", head=head, head_name="mlp", zoo_dir=zoo_copy, **_facts()
        )
    assert _snapshot(zoo_copy) == before


def test_failed_entry_leaves_no_trace(zoo_copy, monkeypatch):
    encoder, head = _tiny_models()
    before = _snapshot(zoo_copy)
    real_write = export.write_model_card

    def crash_writing_card(entry_dir, **facts):
        real_write(entry_dir, **facts)
        path = pathlib.Path(entry_dir) / zoo.MODEL_CARD_FILENAME
        path.write_text(path.read_text()[:50])  # half a card
        raise OSError("simulated crash while writing the model card")

    monkeypatch.setattr(zoo.publish, "write_model_card", crash_writing_card)
    with pytest.raises(OSError, match="simulated crash"):
        export.create_zoo_entry(
            encoder,
            name="tiny_new",
            head=head,
            head_name="linear_probe",
            zoo_dir=zoo_copy,
            **_facts(),
        )
    assert _snapshot(zoo_copy) == before
    monkeypatch.undo()

    _crash_replacing_manifest(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        export.create_zoo_entry(encoder, name="tiny_new", zoo_dir=zoo_copy, **_facts())
    assert _snapshot(zoo_copy) == before
    monkeypatch.undo()

    export.create_zoo_entry(encoder, name="tiny_new", zoo_dir=zoo_copy, **_facts())
    assert "tiny_new" in zoo.list(zoo_dir=zoo_copy)
    zoo.verify("tiny_new", zoo_dir=zoo_copy)


def test_create_zoo_entry_in_an_empty_directory(tmp_path):
    encoder, _ = _tiny_models()
    zoo_dir = tmp_path / "fresh"
    export.create_zoo_entry(encoder, name="tiny_cnn_tarrl", zoo_dir=zoo_dir, **_facts())
    manifest = json.loads((zoo_dir / zoo.MANIFEST_FILENAME).read_text())
    assert list(manifest["entries"]) == ["tiny_cnn_tarrl"]
    assert zoo.verify("tiny_cnn_tarrl", zoo_dir=zoo_dir)["files"] == len(
        manifest["entries"]["tiny_cnn_tarrl"]["files"]
    )


def _tree(path):
    """`{relative path: bytes}` of every file under `path`."""
    path = pathlib.Path(path)
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _new_metrics(robust):
    return [{**_facts()["metrics"][0], "clean_accuracy": 0.875, "robust_accuracy": robust}]


def test_replace_swaps_an_entry(zoo_copy):
    old_card = zoo.info(WITH_HEAD, zoo_dir=zoo_copy)
    other = _tree(zoo_copy / NO_HEAD)
    encoder, _ = _tiny_models(seed=2)
    training = {**_facts()["training"], "evaluation_command": "reproduce.py --reevaluate"}
    # The new entry ships no head: the old head.keras must not linger.
    export.create_zoo_entry(encoder, name=WITH_HEAD, zoo_dir=zoo_copy, replace=True,
                            **_facts(metrics=_new_metrics(0.75), training=training))

    assert zoo.list(zoo_dir=zoo_copy) == sorted([WITH_HEAD, NO_HEAD])
    report = zoo.verify(WITH_HEAD, zoo_dir=zoo_copy)  # every checksum and load agrees
    card = zoo.info(WITH_HEAD, zoo_dir=zoo_copy)
    assert card["metrics"][0]["robust_accuracy"] == 0.75
    assert card["metrics"][0]["clean_accuracy"] == 0.875
    assert card["training"]["evaluation_command"] == "reproduce.py --reevaluate"
    assert zoo.HEAD_FILENAME not in card["files"] and "head" not in card["serving"]
    assert not (zoo_copy / WITH_HEAD / zoo.HEAD_FILENAME).exists()
    assert card["files"][zoo.ENCODER_FILENAME] != old_card["files"][zoo.ENCODER_FILENAME]
    assert report["files"] == len(card["files"]) + 1
    images = np.random.default_rng(3).random((2, H, W, C), dtype=np.float32)
    np.testing.assert_allclose(zoo.load(WITH_HEAD, zoo_dir=zoo_copy)(images), encoder(images),
                               atol=1e-6)
    assert _tree(zoo_copy / NO_HEAD) == other
    zoo.verify(NO_HEAD, zoo_dir=zoo_copy)
    assert sorted(p.name for p in zoo_copy.iterdir()) == sorted(
        [WITH_HEAD, NO_HEAD, zoo.MANIFEST_FILENAME])  # nothing hidden left behind


def _rename_failing(monkeypatch, when):
    """Makes `os.rename` fail when `when(src, dst)`; returns the list of renames done."""
    real_rename = os.rename
    done = []

    def rename(src, dst):
        src, dst = pathlib.Path(src), pathlib.Path(dst)
        if when(src, dst):
            raise OSError("simulated crash while swapping the entry")
        done.append((src, dst))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    return done


def test_failed_replace_leaves_the_old_entry(zoo_copy, monkeypatch):
    before = _snapshot(zoo_copy)
    entry = _tree(zoo_copy / WITH_HEAD)
    encoder, head = _tiny_models(seed=2)
    facts = _facts(metrics=_new_metrics(0.75))

    def unchanged():
        assert _snapshot(zoo_copy) == before  # no hidden folder, same manifest bytes
        assert _tree(zoo_copy / WITH_HEAD) == entry

    with pytest.raises(ValueError, match="epsilon"):  # an invalid card
        export.create_zoo_entry(
            encoder, name=WITH_HEAD, zoo_dir=zoo_copy, replace=True,
            **_facts(threat_model={"norm": "linf", "epsilon": "8/255"}))
    unchanged()

    final = zoo_copy / WITH_HEAD
    crashes = {
        "moving the old entry aside": lambda src, dst: src == final,
        "moving the new entry in": lambda src, dst: dst == final and src.name.startswith(".tmp-"),
    }
    for where, when in crashes.items():
        done = _rename_failing(monkeypatch, when)
        with pytest.raises(OSError, match="simulated crash"):
            export.create_zoo_entry(encoder, name=WITH_HEAD, head=head, head_name="linear_probe",
                                    zoo_dir=zoo_copy, replace=True, **facts)
        monkeypatch.undo()
        unchanged()
        swaps = [(src, dst) for src, dst in done if final in (src, dst)]
        if where == "moving the new entry in":  # the old entry had been moved aside, and back
            aside = swaps[0][1]
            assert aside.parent.name.startswith(".old-")
            assert swaps == [(final, aside), (aside, final)]
        else:
            assert swaps == []

    _crash_replacing_manifest(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        export.create_zoo_entry(encoder, name=WITH_HEAD, zoo_dir=zoo_copy, replace=True, **facts)
    monkeypatch.undo()
    unchanged()
    zoo.verify(WITH_HEAD, zoo_dir=zoo_copy)


def test_replace_of_a_missing_entry_creates_it(zoo_copy):
    encoder, _ = _tiny_models(seed=2)
    export.create_zoo_entry(encoder, name="tiny_new", zoo_dir=zoo_copy, replace=True, **_facts())
    assert zoo.list(zoo_dir=zoo_copy) == sorted([WITH_HEAD, NO_HEAD, "tiny_new"])
    zoo.verify("tiny_new", zoo_dir=zoo_copy)
    with pytest.raises(ValueError, match="already exists.*replace=True"):
        export.create_zoo_entry(encoder, name="tiny_new", zoo_dir=zoo_copy, **_facts())


def test_an_entry_published_meanwhile_stays_in_the_manifest(zoo_copy, monkeypatch):
    """Another process publishes while this entry is being exported: both end up listed."""
    real_export = export.export_serving
    other, _ = _tiny_models(seed=3)
    pending = ["tiny_meanwhile"]

    def export_while_another_publishes(*args, **kwargs):
        if pending:
            export.create_zoo_entry(other, name=pending.pop(), zoo_dir=zoo_copy, **_facts())
        return real_export(*args, **kwargs)

    monkeypatch.setattr(zoo.publish, "export_serving", export_while_another_publishes)
    encoder, _ = _tiny_models(seed=2)
    export.create_zoo_entry(encoder, name="tiny_new", zoo_dir=zoo_copy, **_facts())
    assert zoo.list(zoo_dir=zoo_copy) == sorted([WITH_HEAD, NO_HEAD, "tiny_meanwhile", "tiny_new"])
    for name in ("tiny_meanwhile", "tiny_new"):
        zoo.verify(name, zoo_dir=zoo_copy)


def test_manifest_lock_makes_a_second_process_wait(tmp_path):
    log = tmp_path / "log"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from tarrl_tf.files import locked
            with locked({str(tmp_path)!r}):
                open({str(log)!r}, "a").write("first-in\\n")
                time.sleep(1.0)
                open({str(log)!r}, "a").write("first-out\\n")
        """)])
    while not log.exists() or not log.read_text():
        assert holder.poll() is None, "the lock holder died"
        time.sleep(0.01)
    with files.locked(tmp_path):
        log.open("a").write("second\n")
    assert holder.wait(timeout=60) == 0
    assert log.read_text().split() == ["first-in", "first-out", "second"]


# --------------------------------------------------------------------------- tools/zoo.py


def _tool(*args):
    return subprocess.run(
        [sys.executable, "-m", "tools.zoo", *args],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.large
def test_tools_zoo_cli(zoo_copy):
    listed = _tool("list", f"--zoo_dir={zoo_copy}")
    assert listed.returncode == 0, listed.stderr
    assert WITH_HEAD in listed.stdout and NO_HEAD in listed.stdout
    assert "robust 0.2500 (pgd linf eps 0.3)" in listed.stdout

    shown = _tool("show", WITH_HEAD, f"--zoo_dir={zoo_copy}")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == zoo.info(WITH_HEAD, zoo_dir=zoo_copy)

    verified = _tool("verify", f"--zoo_dir={zoo_copy}")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "2/2 entries verified" in verified.stdout

    # Damage one entry: verify reports every entry and fails overall.
    variables = zoo_copy / NO_HEAD / "serving/1/variables/variables.index"
    variables.write_bytes(variables.read_bytes()[:-1])
    verified = _tool("verify", f"--zoo_dir={zoo_copy}")
    assert verified.returncode != 0
    assert f"ok   {WITH_HEAD}" in verified.stdout
    assert f"FAIL {NO_HEAD}: ChecksumError" in verified.stdout
    assert "1/2 entries verified" in verified.stdout
