"""Downloads on first use, a cache, and the offline rule (atlases now, model weights next).

=====================  =====================================================================
``NEUROFM_HOME``       neurofm's own cache folder (default ``$XDG_CACHE_HOME/neurofm``, else
                       ``~/.cache/neurofm``); atlases go to ``$NEUROFM_HOME/atlases`` when
                       it is set, else to nilearn's data folder (``$NILEARN_DATA``, else
                       ``~/nilearn_data``), where nilearn's own fetchers put them.
``NEUROFM_OFFLINE``    ``1`` (or ``true``/``yes``/``on``): never touch the network; what is
                       not in the cache is an error that says where to place the files by
                       hand. The ``offline=`` argument of a function wins over it.
=====================  =====================================================================

A file is looked up in the cache first; only when it is missing, and neurofm is online,
is it downloaded, once, into the first cache folder. Offline, no downloader is ever
called, so no connection is ever opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import NeurofmError, check_option

TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def neurofm_home() -> Path:
    """``$NEUROFM_HOME``, else ``$XDG_CACHE_HOME/neurofm``, else ``~/.cache/neurofm``."""
    if os.environ.get("NEUROFM_HOME"):
        return Path(os.environ["NEUROFM_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "neurofm"


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` when given, else whether ``NEUROFM_OFFLINE`` is set to a true value."""
    if offline is not None:
        return bool(offline)
    value = os.environ.get("NEUROFM_OFFLINE", "").strip().lower()
    check_option("NEUROFM_OFFLINE value", value, TRUE + FALSE)
    return value in TRUE


def find_cached(folders: Sequence[Path], files: Sequence[str]) -> Path | None:
    """The first folder that holds every one of ``files`` (paths relative to it)."""
    for folder in folders:
        if all((Path(folder) / f).is_file() for f in files):
            return Path(folder)
    return None


def placement(what: str, folder: Path, files: Sequence[str]) -> str:
    """How to put ``what`` in the cache by hand: the exact paths."""
    paths = ", ".join(str(Path(folder) / f) for f in files)
    return f"place {what}'s files by hand at {paths}"


def obtain(what: str, folders: Sequence[Path], files: Sequence[str],
           download: Callable[[Path], object], *, offline: bool | None = None,
           fallback: str = "") -> Path:  # fmt: skip
    """The cache folder holding ``files``: the first of ``folders`` that has them all, else
    ``folders[0]`` after ``download(folders[0])`` has written them there.

    Offline (``offline=True`` or ``NEUROFM_OFFLINE=1``) ``download`` is never called: a
    missing file raises a ``NeurofmError`` that names the exact paths to place by hand
    (``fallback`` adds another way out, e.g. passing the files themselves).
    """
    found = find_cached(folders, files)
    if found is not None:
        return found
    target = Path(folders[0])
    hint = placement(what, target, files) + (f"; or {fallback}" if fallback else "")
    if is_offline(offline):
        looked = ", ".join(map(str, folders))
        raise NeurofmError(f"{what} is not in the cache ({looked}) and neurofm is offline "
                           f"(offline=True or NEUROFM_OFFLINE=1): {hint}; or go online "
                           "(unset NEUROFM_OFFLINE) to download it once")  # fmt: skip
    try:
        download(target)
    except Exception as err:  # the network, a server, a full disk: all say the same fix
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise NeurofmError(f"could not download {what} into {target} ({reason}): check the "
                           f"network and retry, or {hint}") from err  # fmt: skip
    if find_cached([target], files) is None:
        missing = [f for f in files if not (target / f).is_file()]
        raise NeurofmError(f"downloading {what} did not leave {missing} in {target}: {hint}")
    return target
