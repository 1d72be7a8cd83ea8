"""Publishing a zoo entry: all files written, verified, and renamed into place, or nothing."""

import os
import pathlib
import shutil

from tarrl_tf.files import dumps_json, locked, temporary_dir, write_atomic
from tarrl_tf.zoo import manifest
from tarrl_tf.zoo.card import make_card, validate_model_card, write_model_card
from tarrl_tf.zoo.entry import check_entry_dir
from tarrl_tf.zoo.serving import (CLASSIFY_OUTPUTS, CLASSIFY_SIGNATURE, EMBEDDING_OUTPUT,
                                  INPUT_RANGE, SERVING_INPUT, SERVING_SIGNATURE, check_models,
                                  export_serving)


def create_zoo_entry(
    encoder,
    *,
    name,
    dataset,
    architecture,
    method,
    regularizer,
    threat_model,
    training,
    metrics,
    head=None,
    head_name=None,
    notes=None,
    headline=None,
    zoo_dir=None,
    replace=False,
):
    """Adds `zoo_dir/<name>/` and its manifest entry, all or nothing.

    Writes `encoder.keras` (and `head.keras`), `serving/1/` (the SavedModel),
    and `model_card.json` (see `write_model_card` for the facts arguments) into
    a hidden temporary folder, runs the checks of `tarrl_tf.zoo.verify` on it,
    renames it into place and then updates `manifest.json` (temporary file +
    `os.replace`). On any failure the folder is removed and the manifest is
    left as it was.

    With `replace=True` an existing entry of that name is swapped out the same
    way: only once the new entry is written and verified, the old folder is
    renamed aside into a hidden folder, the new one renamed in, the manifest
    replaced, and the old folder deleted. On any failure the old entry and the
    manifest are left exactly as they were. A name that does not exist yet is
    simply created (as `os.replace` creates a missing file).

    Args:
        encoder: the encoder (see `export_serving`).
        name: systematic zoo name, e.g. `"mnist_cnn_tarrl_linf03"`.
        head: optional downstream head (embeddings -> logits) to ship.
        head_name: the name the metrics use for `head`; required with `head`.
        zoo_dir: default: `tarrl_tf.zoo.resolve_zoo_dir()`.
        replace: swap out an existing entry of that name instead of refusing.
        dataset, architecture, method, regularizer, threat_model, training,
        metrics, notes, headline: the model card facts, see `write_model_card`.

    Returns:
        The entry's directory.
    """
    manifest.validate_name(name)
    input_shape, embedding_dim, num_classes = check_models(encoder, head)
    facts = dict(
        name=name,
        dataset=dataset,
        architecture=architecture,
        method=method,
        regularizer=regularizer,
        threat_model=threat_model,
        training=training,
        metrics=metrics,
        notes=notes,
        headline=headline,
    )
    serving = {
        "input": {
            "name": SERVING_INPUT,
            "dtype": "float32",
            "shape": [None, *input_shape],
            "range": list(INPUT_RANGE),
        },
        "embedding_dim": embedding_dim,
        "signatures": {SERVING_SIGNATURE: [EMBEDDING_OUTPUT]},
    }
    # Fail on bad facts before spending time on the export.
    placeholder = {manifest.ENCODER_FILENAME: {"sha256": "0" * 64, "bytes": 0}}
    validate_model_card(make_card(files=placeholder, serving=serving, **facts))
    if head is not None:
        if head_name is None:
            raise ValueError("head_name is required with head: the name the metrics use for it")
        heads = {m.get("head") for m in metrics if isinstance(m, dict)}
        if head_name not in heads:
            raise ValueError(
                f"The shipped head {head_name!r} has no metrics; the metrics name {sorted(heads)}"
            )
        serving["signatures"][CLASSIFY_SIGNATURE] = list(CLASSIFY_OUTPUTS)
        serving["head"] = head_name
        serving["num_classes"] = num_classes

    zoo_root = manifest.resolve_zoo_dir(zoo_dir)
    zoo_root.mkdir(parents=True, exist_ok=True)
    final = zoo_root / name
    if not replace:
        _check_free(zoo_root, name)  # Fail before the export; checked again under the lock.

    tmp = pathlib.Path(temporary_dir(zoo_root, prefix=f".tmp-{name}-"))
    aside = None  # A hidden folder holding the old entry while the new one moves in.
    try:
        encoder.save(tmp / manifest.ENCODER_FILENAME)
        if head is not None:
            head.save(tmp / manifest.HEAD_FILENAME)
        export_serving(encoder, tmp / manifest.SERVING_DIRNAME, head=head, version=1)
        write_model_card(tmp, serving=serving, **facts)
        entry = {"model_card": manifest.MODEL_CARD_FILENAME, "files": manifest.describe_files(tmp)}
        check_entry_dir(tmp, name=name, entry=entry)
        # Another process may have published since: the manifest is read, changed
        # and written under one lock.
        with locked(zoo_root):
            contents = _read_manifest_or_empty(zoo_root)
            if not replace:
                _check_free(zoo_root, name)
            if final.exists():
                aside = pathlib.Path(temporary_dir(zoo_root, prefix=f".old-{name}-"))
                os.rename(final, aside / name)
            os.rename(tmp, final)
            contents["entries"][name] = entry
            contents["entries"] = dict(sorted(contents["entries"].items()))
            write_atomic(zoo_root / manifest.MANIFEST_FILENAME, dumps_json(contents))
    except BaseException:
        # Undo in reverse order: the new entry out, the old one back in.
        if not tmp.exists() and final.exists():
            os.rename(final, tmp)
        if aside is not None and (aside / name).exists():
            os.rename(aside / name, final)
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return final


def _read_manifest_or_empty(zoo_root):
    if (zoo_root / manifest.MANIFEST_FILENAME).exists():
        return manifest.read_manifest(zoo_root)
    return manifest.empty_manifest()


def _check_free(zoo_root, name):
    if name in _read_manifest_or_empty(zoo_root)["entries"] or (zoo_root / name).exists():
        raise ValueError(
            f"Zoo entry {name!r} already exists in {zoo_root}; pick a new name "
            "(or pass replace=True to swap it out)"
        )
