"""Small utilities: memory readings and atomic writes. Errors live in neurofm.errors."""

from __future__ import annotations

from pathlib import Path

# The error vocabulary lives in neurofm.errors; these names stay importable from here.
from .errors import (  # noqa: F401
    ChannelError,
    CheckpointError,
    ConfigError,
    EEGReadError,
    NeurofmError,
    NeurofmWarning,
    ShardError,
    SignalError,
    SignalWarning,
    UnitsError,
    check_finite,
    check_option,
    did_you_mean,
    logger,
    validate_type,
    warn,
)


def _proc_status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB; None off Linux."""
    from pathlib import Path

    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def rss_mib() -> float:
    """This process's resident memory now, in MiB (Linux; NaN elsewhere)."""
    now = _proc_status_mib("VmRSS")
    return float("nan") if now is None else now


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (Linux VmHWM; ru_maxrss elsewhere).

    ``ru_maxrss`` survives ``exec``, so a child process started from a big parent would
    report the parent's peak; VmHWM belongs to the process's own address space.
    """
    peak = _proc_status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


# ---------------------------------------------------------------------- atomic writes
# A write goes to a hidden sibling ``.<name>.<host>-<pid>-<random>.<kind>`` (kind: part =
# a file being written, tmp = a folder being written, old = a folder being replaced) and
# is renamed into place. A writer killed with SIGKILL leaves its sibling behind; the next
# write of the same path on the same host removes siblings whose process is gone (a pid
# means nothing on another host sharing the folder, e.g. over NFS: those are left alone).
# Siblings without a host (neurofm before it was added) count as this host's. Readers
# never look at them.
_KINDS = ("part", "tmp", "old")


def _host() -> str:
    """This machine's name, reduced to characters safe in a file name (no dash)."""
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _temp_sibling(path: Path, kind: str) -> Path:
    import os
    import secrets

    name = f".{path.name}.{_host()}-{os.getpid()}-{secrets.token_hex(4)}.{kind}"
    return path.with_name(name)


def _siblings(path: Path, kind: str) -> list[tuple[Path, int | None]]:
    """(sibling, writer pid) for the temporary siblings of ``path`` of one kind; the pid
    is None for a writer on another host (it cannot be checked from here)."""
    import re

    pattern = re.compile(
        rf"\.{re.escape(path.name)}\.(?:([A-Za-z0-9._]+)-)?(\d+)-[0-9a-f]+\.{kind}"
    )
    if not path.parent.is_dir():
        return []
    here = _host()
    return [(p, int(m.group(2)) if m.group(1) in (None, here) else None)
            for p in path.parent.iterdir() if (m := pattern.fullmatch(p.name))]  # fmt: skip


def _stale(pid: int | None) -> bool:
    """Whether a sibling's writer is known to be gone: a dead process on this host."""
    return pid is not None and not _alive(pid)


def _alive(pid: int) -> bool:
    import os

    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk (best effort for folders: not every OS opens them)."""
    import os

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale(path) -> None:
    """Delete what killed writes of ``path`` on this host left behind (their processes
    are gone).

    An interrupted folder swap on a file system without an atomic exchange leaves the
    previous folder as ``.<name>.*.old`` and ``path`` absent: it is put back first.
    """
    import os

    path = Path(path)
    backups = [p for p, pid in _siblings(path, "old") if _stale(pid)]
    if backups and not path.exists():
        os.rename(max(backups, key=lambda p: p.stat().st_mtime), path)
    path.with_name(path.name + ".part").unlink(missing_ok=True)  # neurofm < 0.1's debris
    for kind in _KINDS:
        for sibling, pid in _siblings(path, kind):
            if _stale(pid):
                _remove(sibling)


def interrupted_backup(path) -> Path | None:
    """The previous folder of ``path`` when a non-atomic swap was cut short, else None."""
    backups = [p for p, _ in _siblings(Path(path), "old")]
    return max(backups, key=lambda p: p.stat().st_mtime) if backups else None


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers see the old file or the new.

    The file is flushed to disk before the rename; on any exception the temporary file
    is removed, and temporaries of killed writers are removed by the next write.
    """
    import os

    path = Path(path)
    remove_stale(path)
    tmp = _temp_sibling(path, "part")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step; False where the OS or file system cannot.

    Linux: ``renameat2(RENAME_EXCHANGE)`` (ext4, xfs, btrfs, tmpfs, ...); macOS:
    ``renamex_np(RENAME_SWAP)``. NFS and Windows have no such call.
    """
    import ctypes
    import errno
    import os
    import sys

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux"):
            rc = libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2)  # AT_FDCWD
        elif sys.platform == "darwin":
            rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), 2)
        else:
            return False
    except (AttributeError, OSError):  # no such symbol (old C library), no libc handle
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def atomic_write_dir(path, write, *, keep=lambda name: True) -> Path:
    """Fill a new folder with ``write(tmp_dir)`` and switch ``path`` to it in one step.

    At every instant ``path`` is either the whole previous folder or the whole new one,
    even if the process is killed: the new folder is written beside it, flushed to disk,
    and exchanged with the old one by one atomic rename (:func:`exchange`); the old one
    is then deleted. Entries of the old folder that ``write`` did not create and
    ``keep(name)`` accepts (a model card, logs) are carried over as hard links.

    Without an atomic exchange (NFS, Windows) the old folder is first renamed to a
    hidden ``.old`` sibling: a kill between the two renames leaves ``path`` absent, and
    :func:`interrupted_backup` finds the previous folder (``load_model`` reads it; the
    next write puts it back).
    """
    path = Path(path)
    if path.is_symlink() or path.name in ("", ".."):
        path = path.resolve()  # a link: write the folder it points to; the link stays
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = _temp_sibling(path, "tmp")
    try:
        tmp.mkdir()
        write(tmp)
        for old in path.iterdir() if path.is_dir() else ():
            if not (tmp / old.name).exists() and keep(old.name):
                _link(old, tmp / old.name)
        for f in [*tmp.rglob("*"), tmp]:
            _fsync(f)
        _swap(tmp, path)
    finally:
        _remove(tmp)  # after the swap: the old folder; on an error: the unfinished new one
    _fsync(path.parent)
    return path


def _swap(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``; the previous folder, if any, ends up at ``new``."""
    import os

    if not path.exists():
        os.rename(new, path)
    elif not exchange(new, path):
        backup = _temp_sibling(path, "old")
        os.rename(path, backup)
        try:
            os.rename(new, path)
        except BaseException:
            os.rename(backup, path)
            raise
        os.rename(backup, new)


def _link(src: Path, dst: Path) -> None:
    """Hard links (no copy, same file system) of a file or a folder tree; copies if refused."""
    import os
    import shutil

    def link(a, b):
        try:
            os.link(a, b, follow_symlinks=False)
        except OSError:
            shutil.copy2(a, b, follow_symlinks=False)

    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=link)
    else:
        link(src, dst)


def file_sha256(file) -> str:
    """SHA-256 of a file, given by path or as an open binary file (read from its start)."""
    import contextlib
    import hashlib

    digest = hashlib.sha256()
    with contextlib.nullcontext(file) if hasattr(file, "read") else open(file, "rb") as f:
        f.seek(0)
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
