"""Input validation in MNE's style: errors name the problem and the fix."""

from __future__ import annotations

import difflib
import logging

logger = logging.getLogger("neurofm")


class NeurofmError(ValueError):
    """Bad input: the message says what is wrong and what to do about it."""


class EEGReadError(NeurofmError, OSError):
    """A recording could not be read."""


class ChannelError(NeurofmError):
    """Channel names or types that cannot be placed on the token grid."""


class UnitsError(NeurofmError):
    """Signal amplitudes that say the units are wrong."""


class SignalError(NeurofmError):
    """NaNs, flat channels or recordings too short for the recipe."""


def did_you_mean(word: str, options) -> str:
    """' (did you mean 'sfreq'?)' or '' when nothing is close."""
    options = [str(o) for o in options]
    lower = {o.lower(): o for o in options}
    close = difflib.get_close_matches(str(word).lower(), list(lower), n=1, cutoff=0.6)
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


def check_option(name: str, value, allowed) -> None:
    """Raise when ``value`` is not one of ``allowed``, suggesting the closest option."""
    if value not in allowed:
        raise NeurofmError(
            f"invalid {name} {value!r}{did_you_mean(value, allowed)}; "
            f"allowed: {', '.join(map(repr, allowed))}"
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
