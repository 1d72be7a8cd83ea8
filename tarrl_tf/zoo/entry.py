"""One zoo entry on disk: its card read against the manifest, and every check of `zoo.verify`."""

import builtins
import copy
import json
import pathlib

from tarrl_tf.zoo import serving
from tarrl_tf.zoo.card import validate_model_card
from tarrl_tf.zoo.manifest import (ENCODER_FILENAME, HEAD_FILENAME, MODEL_CARD_FILENAME,
                                   RENDERED_FILENAMES, SERVING_DIRNAME, ChecksumError,
                                   InvalidModelCardError, MissingFileError, check_files,
                                   entry_problems)


def read_card(entry_dir, name, entry):
    """The model card in `entry_dir`, valid and agreeing with the manifest `entry`."""
    card = json.loads((pathlib.Path(entry_dir) / MODEL_CARD_FILENAME).read_text())
    validate_model_card(card)
    if card["name"] != name:
        raise InvalidModelCardError(
            f"Model card in {entry_dir} is for {card['name']!r}, not {name!r}"
        )
    listed = {k: v for k, v in entry["files"].items() if k != MODEL_CARD_FILENAME}
    if card["files"] != listed:
        raise InvalidModelCardError(
            f"Model card of {name!r} and the manifest list different files or checksums"
        )
    return copy.deepcopy(card)


def serving_versions(files):
    """Sorted integer versions of the SavedModels among an entry's `files`."""
    versions = set()
    for rel in files:
        parts = pathlib.PurePosixPath(rel).parts
        if len(parts) > 2 and parts[0] == SERVING_DIRNAME and parts[1].isdigit():
            versions.add(int(parts[1]))
    return sorted(versions)


def check_entry_dir(entry_dir, *, name, entry):
    """The checks of `verify` on a directory and its manifest entry (used before publishing)."""
    problems = entry_problems(entry)
    if problems:
        raise InvalidModelCardError(f"Invalid manifest entry for {name!r}: " + "; ".join(problems))
    entry_dir = pathlib.Path(entry_dir)
    if not entry_dir.is_dir():
        raise MissingFileError(f"Zoo entry directory {entry_dir} is missing")
    files = entry["files"]
    check_files(entry_dir, files, builtins.list(files))
    present = {p.relative_to(entry_dir).as_posix() for p in entry_dir.rglob("*") if p.is_file()}
    # The rendered pages (README.md, sweep.svg) are for people, derived from the card.
    extra = sorted(present - set(files) - set(RENDERED_FILENAMES))
    if extra:
        raise ChecksumError(
            f"Zoo entry {entry_dir} holds files the manifest does not list: {extra}"
        )
    read_card(entry_dir, name, entry)
    max_diff = check_models(entry_dir, files)
    return {
        "name": name,
        "files": len(files),
        "serving_versions": serving_versions(files),
        "max_abs_diff": max_diff,
    }


def check_models(entry_dir, files):
    """Loads the Keras files safely and checks every SavedModel version against them."""
    import keras  # Deferred: reading cards needs no Keras.

    encoder = keras.models.load_model(entry_dir / ENCODER_FILENAME, compile=False, safe_mode=True)
    head = None
    if HEAD_FILENAME in files:
        head = keras.models.load_model(entry_dir / HEAD_FILENAME, compile=False, safe_mode=True)
    images, expected = serving.probe_outputs(encoder, head)
    versions = serving_versions(files)
    if not versions:
        raise MissingFileError(
            f"Zoo entry {entry_dir} ships no SavedModel under {SERVING_DIRNAME}/"
        )
    return max(
        serving.check_saved_model(entry_dir / SERVING_DIRNAME / str(v), images=images, expected=expected)
        for v in versions
    )
