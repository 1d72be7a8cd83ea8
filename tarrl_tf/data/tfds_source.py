"""TensorFlow Datasets sources: the real TFDS builder, prepared from `data_dir`."""


def builder(name, data_dir):
    """`tfds.builder`, with a short ValueError for a name TFDS does not know."""
    # Imported here: TFDS is slow to import and the other sources do not need it.
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        # TFDS's own message lists every registered dataset; ours stays readable.
        raise ValueError(
            f"Unknown dataset {name!r}: not 'digits', not 'npz:PATH', and not a TFDS "
            "dataset (see tfds.list_builders())"
        ) from None
    if builder.info.supervised_keys is None:
        raise ValueError(f"TFDS dataset {name!r} has no (image, label) supervised keys")
    return builder


def prepare(builder):
    """Downloads and prepares the data if `data_dir` lacks it, as `tfds.load` does."""
    try:
        builder.download_and_prepare()
    except Exception as err:  # TFDS fails in many ways offline (network, missing optional modules).
        # A ValueError: the data the user named are not there (the commands say so in one line).
        raise ValueError(
            f"TFDS could not download or prepare {builder.name!r} into {builder.data_dir!r}: "
            f"{type(err).__name__}: {_first_line(err)}. Without a network, point `data_dir` at "
            "prepared TFDS data or use an 'npz:PATH' source"
        ) from err
    return builder


def _first_line(err):
    """TFDS's network errors run over many lines (every retry); the first says what failed."""
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else ""
