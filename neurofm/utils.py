"""Small utilities: memory readings and atomic writes. Errors live in neurofm.errors."""

from __future__ import annotations

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


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers see the old file or the new."""
    import os
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    write(tmp)
    os.replace(tmp, path)
