"""Shared fixtures. Tests reading ../shared/data skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tests never download: atlases (and weights) come from the cache in its real layout, or
# fail naming the files to place. tests/test_offline.py unsets it to test the online path.
os.environ.setdefault("NEUROFM_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EEG_DIR = SHARED / "eeg"


def shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(
            f"../shared/data/{rel} is absent (real-data tests need ../shared beside the repo)"
        )
    return path


@pytest.fixture
def write_edf(tmp_path):
    """Write an EDF with the given labels and synthetic EEG; returns its path."""
    from neurofm.io.edf import write_edf as _write
    from neurofm.synthetic import eeg

    def make(labels, seconds=30.0, sfreq=256, name="rec.edf", data=None, **kwargs):
        n = int(seconds * sfreq)
        x = eeg(len(labels), n, sfreq, line=None) if data is None else data
        return _write(tmp_path / name, x, sfreq, labels, **kwargs)

    return make


@pytest.fixture
def sine():
    def make(freq, sfreq, seconds, n_channels=2, amp=50e-6):
        t = np.arange(int(round(seconds * sfreq))) / sfreq
        return np.repeat((amp * np.sin(2 * np.pi * freq * t))[None], n_channels, axis=0)

    return make


# --- property-based tests (hypothesis): fixed seed in CI, longer on request -------------
def _hypothesis_profiles():
    from hypothesis import HealthCheck, settings

    common = dict(
        deadline=None,  # per-case hangs are caught by tests/fuzz.py's alarm instead
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )
    settings.register_profile("ci", derandomize=True, max_examples=25, **common)
    settings.register_profile("long", max_examples=500, **common)
    name = os.environ.get("NEUROFM_FUZZ", "ci")
    examples = os.environ.get("NEUROFM_FUZZ_EXAMPLES")
    if examples:
        settings.register_profile("custom", settings.get_profile(name), max_examples=int(examples))
        name = "custom"
    settings.load_profile(name)


_hypothesis_profiles()


def pytest_terminal_summary(terminalreporter):
    import sys

    fuzz = sys.modules.get("fuzz") or sys.modules.get("tests.fuzz")
    if fuzz and sum(fuzz.COUNTS.values()):
        c = fuzz.COUNTS
        terminalreporter.write_line(
            f"fuzz: {sum(c.values())} generated bad-input cases: {c['ok']} correct data, "
            f"{c['warning']} named warnings, {c['error']} neurofm errors"
        )


# --- the dev environment: braindecode must import (reference models, baselines) ---------
def pytest_sessionstart(session):
    """One clear failure, not six tracebacks from inside torchaudio.

    A broken braindecode import (torch/torchaudio mismatch) always stops the run here. A
    missing braindecode stops it in CI (``CI`` set) and under ``make test``; elsewhere the
    tests that need it skip with the reason.
    """
    from neurofm.devcheck import braindecode_problem

    problem = braindecode_problem()
    if problem is None:
        return
    missing = problem.startswith("braindecode is not installed")
    if not missing or os.environ.get("CI") or os.environ.get("NEUROFM_REQUIRE_BASELINES"):
        pytest.exit(f"dev environment check failed: {problem}", returncode=3)
