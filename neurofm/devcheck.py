"""Check that the development environment can import what the tests compare against.

braindecode (the reference models and baselines) imports torchaudio, whose compiled
library loads only beside the exact torch release it was built for. A torchaudio that
resolved beside another torch fails deep inside its import with an ``undefined symbol``
``OSError``; this turns that into one message naming the cause and the fix.

Run by ``make`` after installing the lock (``python -m neurofm.devcheck``) and by the test
suite at start-up. ``import neurofm`` itself never needs braindecode.
"""

from __future__ import annotations

import sys
from importlib import metadata

FIX = (
    "Rebuild the environment from the lock: `rm -rf .venv && make test` (it installs "
    "requirements/dev.lock, exact versions). If the lock itself pins a mismatched pair, "
    "pin torch and torchaudio to the same release in constraints.txt and run `make lock`."
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def braindecode_problem() -> str | None:
    """None when ``import braindecode`` works, else a message with the cause and the fix.

    A missing braindecode is reported too; callers decide whether that is an error
    (in CI and ``make``, always) or a reason to skip (a user's own environment).
    """
    try:
        import braindecode  # noqa: F401
    except ModuleNotFoundError as err:
        return (
            f"braindecode is not installed ({err}). The parity tests and baselines need it. "
            "Install the dev environment from the lock: `make test` builds .venv from "
            "requirements/dev.lock."
        )
    except (OSError, ImportError) as err:
        torch, audio = _version("torch"), _version("torchaudio")
        cause = "a torch/torchaudio mismatch"
        if torch and audio and torch.split("+")[0] != audio.split("+")[0]:
            cause = f"a torch/torchaudio mismatch: torch {torch} beside torchaudio {audio}"
        return (
            f"braindecode cannot be imported: {type(err).__name__}: {str(err)[:300]}. "
            f"Likely cause: {cause} (torchaudio's compiled library loads only beside the "
            f"torch release it was built for). Fix: {FIX}"
        )
    return None


def main() -> int:
    problem = braindecode_problem()
    if problem:
        print(f"neurofm dev environment check FAILED\n{problem}", file=sys.stderr)
        return 1
    print(f"dev environment ok: torch {_version('torch')}, torchaudio {_version('torchaudio')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
