"""The three allowed outcomes of bad input, for property-based tests.

A case may give correct data, raise a ``NeurofmError`` (a message naming the fix), or
issue a named ``NeurofmWarning``. Anything else fails the test: a foreign exception
(a raw traceback from NumPy, SciPy, MNE, pydantic ...), or a hang, caught by a per-case
alarm. Data that comes back must then be checked by the caller: "correct" is the test's
own assertion, never assumed.

Hypothesis settings come from the profile chosen in conftest.py: a fixed seed and a
small budget in CI (``NEUROFM_FUZZ=ci``, the default), more cases and random seeds with
``NEUROFM_FUZZ=long`` (or ``NEUROFM_FUZZ_EXAMPLES=N``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from dataclasses import dataclass, field

from neurofm.errors import NeurofmError, NeurofmWarning

CASE_SECONDS = 20.0
# cases run this session, by outcome; conftest.py prints them in the terminal summary
COUNTS: dict[str, int] = {"ok": 0, "warning": 0, "error": 0}


class Hang(AssertionError):
    """A case ran past its time limit: a hang, an infinite loop or a runaway allocation."""


@dataclass
class Outcome:
    kind: str  # "ok" | "error" | "warning"
    value: object = None
    error: NeurofmError | None = None
    warnings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.kind in ("ok", "warning")


@contextlib.contextmanager
def time_limit(seconds: float = CASE_SECONDS):
    """Raise ``Hang`` when the block runs longer than ``seconds`` (main thread, POSIX)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise Hang(f"case ran longer than {seconds:g} s: a hang or a runaway loop")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(fn, *args, seconds: float = CASE_SECONDS, **kwargs) -> Outcome:
    """Run ``fn(*args, **kwargs)`` and classify what happened; fail on anything foreign."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with time_limit(seconds):
                value = fn(*args, **kwargs)
        except NeurofmError as err:
            COUNTS["error"] += 1
            return Outcome("error", error=err)
        except Hang:
            raise
        except Exception as err:  # the point: anything else is a bug
            raise AssertionError(
                f"foreign exception {type(err).__module__}.{type(err).__name__}: {err}"
            ) from err
    named = [w for w in caught if issubclass(w.category, NeurofmWarning)]
    kind = "warning" if named else "ok"
    COUNTS[kind] += 1
    return Outcome(kind, value=value, warnings=named)
