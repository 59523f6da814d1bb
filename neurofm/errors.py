"""Error and warning classes, and the checks used at every public boundary.

In MNE-Python's style, a message says what is wrong and what to do about it. Data-quality
problems that do not stop the work (flat channels, dropped windows, guessed orientations)
are *named warnings*: a ``NeurofmWarning`` subclass, issued through :func:`warn` so that they
reach both ``warnings`` filters (tests, notebooks) and the ``neurofm`` logger (CLI runs).
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
import warnings

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


class ConfigError(NeurofmError):
    """A config file or mapping that does not validate: one line per problem, with a fix."""


class CheckpointError(NeurofmError, OSError):
    """A checkpoint folder or weights file that is missing, damaged or of another model."""


class ShardError(NeurofmError, OSError):
    """A corpus shard that is missing, damaged or was made with another recipe."""


class NeurofmWarning(UserWarning):
    """Something neurofm did to your data that you should know about."""


class SignalWarning(NeurofmWarning):
    """Signal quality: flat or non-finite channels masked, windows dropped at the end."""


class UnitsWarning(NeurofmWarning):
    """Amplitudes at the edge of the plausible range for the declared units."""


class ChannelWarning(NeurofmWarning):
    """Channel or parcel names and positions: unknown names, ignored positions, no coordinates."""


class ShardWarning(NeurofmWarning):
    """A damaged shard was skipped, or left out of the index."""


class FileFormatWarning(NeurofmWarning):
    """A file header that is odd but readable (the reader says what it assumed)."""


def warn(message: str, category: type[NeurofmWarning] = NeurofmWarning, stacklevel: int = 2):
    """Issue a named warning and log it once through the ``neurofm`` logger."""
    logger.debug("%s: %s", category.__name__, message)
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def validate_type(value, types, name: str, type_name: str | None = None):
    """Raise a ``NeurofmError`` naming ``name`` when ``value`` is not an instance of ``types``.

    ``types`` may hold ``"path-like"`` and ``"numeric"`` as MNE's ``_validate_type`` does.
    Returns ``value`` so it can be used inline.
    """
    import os

    types = types if isinstance(types, tuple) else (types,)
    resolved = []
    for t in types:
        if t == "path-like":
            resolved += [str, os.PathLike]
        elif t == "numeric":
            resolved += [numbers.Real]
        elif t is None:
            resolved.append(type(None))
        else:
            resolved.append(t)
    bad_bool = isinstance(value, bool) and bool not in resolved and numbers.Real in resolved
    if bad_bool or not isinstance(value, tuple(resolved)):
        want = type_name or " or ".join(
            getattr(t, "__name__", str(t)) if not isinstance(t, str) else t for t in types
        )
        raise NeurofmError(f"{name} must be {want}, got {type(value).__name__} {value!r:.80}")
    return value


def check_finite(value, name: str, *, low=None, high=None, low_open=False) -> float:
    """A finite real number within ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    validate_type(value, "numeric", name, "a number")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    if not math.isfinite(value) or below or (high is not None and value > high):
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"<= {high}"
        rng = " and ".join(s for s in (lo, hi) if s) or "finite"
        raise NeurofmError(f"{name}={value!r} is invalid: it must be finite and {rng}")
    return value
