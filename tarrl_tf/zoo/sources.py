"""Where a zoo entry comes from, by name, wherever tarrl_tf is installed.

In order: an explicit `zoo_dir=`, else `$TARRL_ZOO_DIR`, else the `zoo/`
of the clone tarrl_tf runs from (if any); then the remote zoo at
`zoo_url=` or `$TARRL_ZOO_URL`, mirrored into the local cache
(`tarrl_tf.zoo.remote`). The first zoo that lists a name serves it. An
explicit `zoo_dir=` is that zoo alone, unless `zoo_url=` is given too.
"""

import os

from tarrl_tf.zoo import remote
from tarrl_tf.zoo.manifest import (MANIFEST_FILENAME, ZOO_DIR_ENV, MissingFileError,
                                   UnknownModelError, clone_zoo_dir, read_manifest,
                                   resolve_zoo_dir)


def local_zoo_dir(zoo_dir=None):
    """The local zoo to look in first: `zoo_dir`, `$TARRL_ZOO_DIR`, the clone's `zoo/`, or None."""
    if zoo_dir is None and not os.environ.get(ZOO_DIR_ENV):
        return clone_zoo_dir()  # None outside a clone, where resolve_zoo_dir would name a non-zoo
    return resolve_zoo_dir(zoo_dir)


def remote_url(zoo_dir=None, zoo_url=None):
    """The remote zoo to look in next, or None."""
    if zoo_dir is not None and zoo_url is None:
        return None
    return remote.resolve_url(zoo_url)


def names(*, zoo_dir=None, zoo_url=None):
    """Sorted names of every entry the zoos in reach list."""
    local, url = _sources(zoo_dir, zoo_url)
    found = set()
    if local is not None:
        found |= set(read_manifest(local)["entries"])
    if url is not None:
        found |= set(remote.read_manifest(url)["entries"])
    return sorted(found)


def locate(name, *, zoo_dir=None, zoo_url=None, wanted=None, refresh=False):
    """`(entry_dir, manifest entry)` of `name` from the first zoo that lists it.

    Args:
        wanted: `wanted(files) -> paths` of the entry's files needed locally
            (default: all); a remote entry's are mirrored into the cache first.
        refresh: read a remote zoo's manifest anew even if the cache has the files.

    Raises:
        UnknownModelError: no zoo in reach lists `name`.
        MissingFileError: there is no zoo in reach at all.
    """
    wanted = wanted or list
    local, url = _sources(zoo_dir, zoo_url)
    local_entries = {}
    if local is not None:
        local_entries = read_manifest(local)["entries"]
        if name in local_entries:
            return local / name, local_entries[name]
        if url is None:
            raise UnknownModelError(
                f"Unknown zoo model {name!r} in {local}; available: "
                f"{', '.join(sorted(local_entries)) or 'none'}")
    try:
        return remote.ensure_files(url, name, wanted, refresh=refresh)
    except UnknownModelError as error:
        if local is None:
            raise
        raise UnknownModelError(f"{error}; not in {local} either (it has: "
                                f"{', '.join(sorted(local_entries)) or 'none'})") from None


def _sources(zoo_dir, zoo_url):
    local, url = local_zoo_dir(zoo_dir), remote_url(zoo_dir, zoo_url)
    if local is None and url is None:
        raise MissingFileError(
            "No zoo in reach: tarrl_tf does not run from a clone with a zoo/ folder, and neither "
            f"zoo_dir= / ${ZOO_DIR_ENV} (a local zoo folder with a {MANIFEST_FILENAME}) nor "
            f"zoo_url= / ${remote.ZOO_URL_ENV} (the base URL of a remote zoo) is set")
    return local, url
