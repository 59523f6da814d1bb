"""Synthetic EEG with known content, for tests, benchmarks and demos.

Real corpora with seizures or emotions cannot ship; signals built here carry a known
ground truth (a 10 Hz alpha rhythm, line noise at a known frequency, later spike-wave
bursts at known times) so that a test can check a pipeline or a model finds it.
"""

from __future__ import annotations

import numpy as np


def pink_noise(n_channels: int, n_times: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise, unit variance per channel."""
    spec = rng.standard_normal((n_channels, n_times // 2 + 1)) + 1j * rng.standard_normal(
        (n_channels, n_times // 2 + 1)
    )
    f = np.arange(n_times // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n=n_times, axis=-1)
    return x / x.std(axis=-1, keepdims=True)


def eeg(n_channels: int, n_times: int, sfreq: float, *, seed: int = 0, start: int = 0,
        amplitude: float = 20e-6, alpha: float = 10.0, line: float | None = 60.0) -> np.ndarray:  # fmt: skip
    """EEG-like volts: pink background, an ``alpha`` Hz rhythm, ``line`` Hz interference.

    ``start`` (samples) keeps the sinusoids continuous across chunks of one long signal,
    so a 12-hour recording can be generated chunk by chunk with ``seed`` varied per chunk.
    """
    rng = np.random.default_rng(seed)
    t = (start + np.arange(n_times)) / sfreq
    x = amplitude * pink_noise(n_channels, n_times, rng)
    phases = rng.uniform(0, 2 * np.pi, (n_channels, 1))
    x += 0.8 * amplitude * np.sin(2 * np.pi * alpha * t + phases)
    if line:
        x += 0.5 * amplitude * np.sin(2 * np.pi * line * t)
    return x
