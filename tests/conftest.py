"""Shared fixtures. Tests reading ../shared/data skip cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
