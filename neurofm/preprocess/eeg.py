"""EEG preprocessing: an :class:`~neurofm.preprocess.recipe.EEGRecipe` applied in chunks.

:class:`Stream` applies a recipe in chunks of ``chunk_seconds``, so memory does not
grow with the recording (a 12-hour EDF is never loaded whole). Per chunk:

1. read the samples the chunk needs (plus filter margins) through MNE;
2. re-reference (optional) and resample with a polyphase filter (``upfirdn``), the
   chunk's phase kept on the global sample grid so chunk edges are seamless;
3. one zero-phase FIR at the target rate does the band-pass *and* the notch
   (``firwin2``, Hamming window, MNE's transition-band rules), in float32;
4. scale to model units, clip.

Resampling before filtering means the long high-pass FIR runs at 200 Hz instead of at
the recording's rate, and band-pass plus notch cost one convolution instead of two:
this is where the speed over a plain MNE pipeline comes from (``bench/preprocess.py``).
Recording edges are padded by reflection (``'reflect_limited'``, as MNE does).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

from ..channels import ChannelTable
from ..errors import (
    SignalError,
    SignalWarning,
    check_finite,
    check_option,
    logger,
    validate_type,
    warn,
)
from .recipe import (
    LINE_FREQS,
    MAX_SECONDS,
    EEGRecipe,
    as_recipe,
    check_sfreq,
    fir_bands,
    notch_frequencies,
)

MAX_RATIO_TERM = 2**16  # resampling ratios up/down with larger terms are approximated
MAX_ABS_VOLTS = 1e3  # a sample beyond +/-1 kV is no measurement (and overflows float32 math)


# --------------------------------------------------------------------------- filters
def resample_ratio(sfreq_in: float, sfreq_out: float) -> tuple[int, int]:
    """(up, down) with sfreq_out / sfreq_in = up / down exactly (173.61 -> 200: 20000/17361).

    A rate that no ratio with terms up to ``MAX_RATIO_TERM`` reaches (99999.999 Hz) gets the
    nearest such ratio, with a ``SignalWarning`` saying by how much the rate is off.
    """
    fin = Fraction(sfreq_in).limit_denominator(1000)
    fout = Fraction(sfreq_out).limit_denominator(1000)
    ratio = fout / fin
    if max(ratio.numerator, ratio.denominator) > MAX_RATIO_TERM:
        exact = ratio
        if ratio < 1:
            ratio = ratio.limit_denominator(MAX_RATIO_TERM)
        else:
            ratio = 1 / (1 / ratio).limit_denominator(MAX_RATIO_TERM)
        off = float(ratio / exact - 1)
        warn(
            f"resampling {sfreq_in:g} Hz to {sfreq_out:g} Hz exactly needs a ratio of "
            f"{exact.numerator}/{exact.denominator}; using {ratio.numerator}/{ratio.denominator}, "
            f"so times drift by {off * 1e6:.3g} ppm. Resample the recording to a round rate "
            "first for exact times",
            SignalWarning,
        )
    return ratio.numerator, ratio.denominator


def n_resampled(n_in: int, up: int, down: int) -> int:
    """Number of samples after resampling (MNE's convention: round)."""
    return int(round(n_in * up / down))


@lru_cache(maxsize=16)
def _resample_filter(up: int, down: int) -> np.ndarray:
    """scipy.signal.resample_poly's anti-alias filter (Kaiser, beta 5), gain ``up``."""
    from scipy.signal import firwin

    half = 10 * max(up, down)
    h = firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    return h.astype(np.float32)


@lru_cache(maxsize=16)
def design_fir(sfreq, l_freq, h_freq, notch_freqs=(), notch_width=1.0) -> np.ndarray | None:
    """One zero-phase FIR for band-pass plus notches (firwin2, Hamming): see :func:`fir_bands`."""
    from scipy.signal import firwin2

    bands = fir_bands(sfreq, l_freq, h_freq, notch_freqs, notch_width)
    if bands is None:
        return None
    freq, gain, numtaps = bands
    return firwin2(numtaps, freq, gain, window="hamming", fs=sfreq).astype(np.float32)


def detect_line_noise(data: np.ndarray, sfreq: float, min_ratio: float = 4.0) -> float | None:
    """50 or 60 Hz when the mean spectrum has a clear peak there (ratio to its flanks)."""
    from scipy.signal import welch

    if data.shape[-1] < 2 * sfreq:
        return None  # too short to see a line spectrum
    nperseg = int(min(data.shape[-1], 4 * sfreq))
    freqs, psd = welch(data, fs=sfreq, nperseg=nperseg, axis=-1)
    spec = np.median(psd, axis=0)
    best, best_ratio = None, min_ratio
    for f0 in LINE_FREQS:
        if f0 + 5 >= sfreq / 2:
            continue
        peak = spec[np.abs(freqs - f0) <= 0.5].max()
        flank = (np.abs(freqs - f0) >= 2) & (np.abs(freqs - f0) <= 5)
        ratio = peak / max(np.median(spec[flank]), 1e-30)
        if ratio > best_ratio:
            best, best_ratio = f0, ratio
    return best


# --------------------------------------------------------------------------- stream
def _gather(fetch, lo: int, hi: int, n: int) -> np.ndarray:
    """Samples [lo, hi) of a length-n signal, reflected beyond its ends ('reflect_limited')."""
    idx = np.arange(lo, hi)
    idx = np.where(idx < 0, -idx, idx)
    idx = np.where(idx > n - 1, 2 * (n - 1) - idx, idx)
    valid = (idx >= 0) & (idx < n)
    a = int(idx[valid].min()) if valid.any() else 0
    b = int(idx[valid].max()) + 1 if valid.any() else 0
    core = fetch(a, b)
    out = np.zeros((core.shape[0], hi - lo), dtype=core.dtype)
    out[:, valid] = core[:, idx[valid] - a]
    return out


class Stream:
    """A recipe applied to one recording, chunk by chunk.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        From :func:`neurofm.read_eeg` (lazy is best: only what a chunk needs is read).
    recipe : Recipe
    picks : list of str | None
        Channels to process; default all EEG channels.
    chunk_seconds : float
        Output seconds per chunk; memory is proportional to it, not to the recording.
    """

    def __init__(self, raw, recipe: EEGRecipe, picks=None, chunk_seconds: float = 120.0):
        import mne

        validate_type(raw, mne.io.BaseRaw, "raw", "an mne.io.Raw (from neurofm.read_eeg)")
        validate_type(recipe, EEGRecipe, "recipe", "a neurofm.Recipe")
        self.raw, self.recipe = raw, recipe
        self._nan_spans: list = []
        if picks is None:
            types = dict(eeg=True, ecog=True, seeg=True, dbs=True)  # EEG and intracranial EEG
            picks = [raw.ch_names[i] for i in mne.pick_types(raw.info, **types, exclude=())]
        if not picks:
            raise SignalError("no EEG channel to process: read the file with neurofm.read_eeg")
        self.ch_names = [picks] if isinstance(picks, str) else list(picks)
        for name in self.ch_names:
            check_option("picks entry", name, raw.ch_names)
        self._picks = [raw.ch_names.index(n) for n in self.ch_names]
        self.sfreq_in = check_sfreq(
            raw.info["sfreq"], "the recording's sampling rate", SignalError,
            "check raw.info['sfreq'] (or the file's header)",
        )  # fmt: skip
        self.n_in = raw.n_times
        self.up, self.down = resample_ratio(self.sfreq_in, recipe.sfreq)
        self.n_out = n_resampled(self.n_in, self.up, self.down)
        if self.n_out < recipe.window_len:
            fits = np.floor(self.n_out / recipe.sfreq / recipe.patch_seconds) * recipe.patch_seconds
            raise SignalError(
                f"recording is {self.n_out / recipe.sfreq:.3g} s long, shorter than one window "
                f"({recipe.window_seconds:g} s): "
                + (f"use a Recipe with window_seconds <= {fits:g}" if fits > 0 else
                   f"it is shorter than one {recipe.patch_seconds:g} s patch too: use a longer "
                   "recording (or a Recipe with a shorter patch_seconds, for a model trained so)")
            )  # fmt: skip
        line = recipe.notch
        if line == "auto":
            n = min(self.n_in, int(120 * self.sfreq_in))
            line = detect_line_noise(self._read(0, n), self.sfreq_in)
            logger.info("line noise: %s", f"{line:g} Hz" if line else "no clear 50/60 Hz peak")
        self.line_freq = line
        self.notch_freqs = notch_frequencies(recipe, self.sfreq_in, line)
        self.fir = design_fir(
            recipe.sfreq, recipe.l_freq, recipe.h_freq, self.notch_freqs, recipe.notch_width
        )
        self.half = 0 if self.fir is None else (len(self.fir) - 1) // 2
        chunk_seconds = check_finite(chunk_seconds, "chunk_seconds", low=1.0, high=MAX_SECONDS)
        self.chunk = int(chunk_seconds * recipe.sfreq)

    def __repr__(self) -> str:
        return (
            f"<Stream {len(self.ch_names)} ch, {self.sfreq_in:g} -> {self.recipe.sfreq:g} Hz "
            f"({self.up}/{self.down}), FIR {0 if self.fir is None else len(self.fir)} taps, "
            f"notch {list(self.notch_freqs)}, {self.n_out / self.recipe.sfreq:.1f} s>"
        )

    # raw samples, bad ones found, re-referenced
    def _read(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b); non-finite ones (NaN, inf, beyond +/-1 kV) raise or become 0 + taint."""
        data = self.raw.get_data(picks=self._picks, start=a, stop=b)
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(data) <= MAX_ABS_VOLTS)  # NaN compares False
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            first = a + int(np.nonzero(bad.any(0))[0][0])
            if self.recipe.on_nan == "raise":
                names = [self.ch_names[r] for r in rows]
                raise SignalError(
                    f"non-finite samples (NaN, inf or beyond +/-{MAX_ABS_VOLTS:g} V) in channels "
                    f"{names[:8]} from {first / self.sfreq_in:.2f} s: interpolate them, or use "
                    "Recipe(on_nan='mask') to mask the patches they touch"
                )
            data[bad] = 0.0
            self._nan_spans.append((a, bad))
        if self.recipe.reference == "average":
            good = ~bad
            data -= (data.sum(0) / np.maximum(good.sum(0), 1))[None]  # mean of the good ones
            data[bad] = 0.0
        return data.astype(np.float32, copy=False)

    def _resampled(self, r0: int, r1: int) -> np.ndarray:
        """Resampled samples [r0, r1) (inside [0, n_out)), phase-exact on the global grid."""
        from scipy.signal import upfirdn

        up, down = self.up, self.down
        if up == down:
            return _gather(self._read, r0, r1, self.n_in)
        h = _resample_filter(up, down)
        delay = (len(h) - 1) // 2
        a = (r0 * down + delay - len(h)) // up
        b = ((r1 - 1) * down + delay) // up + 1
        x = _gather(self._read, a, b, self.n_in)
        z = (a * up - delay) % down  # leading zeros that put output k on global r
        hp = np.concatenate([np.zeros(z, np.float32), h]) if z else h
        k0 = (r0 * down + delay + z - a * up) // down
        return upfirdn(hp, x, up, down, axis=-1)[:, k0 : k0 + (r1 - r0)]

    def block(self, o0: int, o1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Filtered, scaled output samples [o0, o1) and a NaN-taint mask (or None)."""
        from scipy.signal import oaconvolve

        self._nan_spans = []
        lo, hi = o0 - self.half, o1 + self.half
        z = _gather(self._resampled, lo, hi, self.n_out)
        y = z if self.fir is None else oaconvolve(z, self.fir[None, :], mode="valid", axes=-1)
        y = y.astype(np.float32, copy=False) / np.float32(self.recipe.unit_scale)
        if self.recipe.clip is not None:
            np.clip(y, -self.recipe.clip, self.recipe.clip, out=y)
        return y, self._taint(o0, y.shape) if self._nan_spans else None

    def _taint(self, o0: int, shape) -> np.ndarray:
        """Output samples within a filter reach of a NaN input sample (C, n) bool."""
        reach = self.half + int(np.ceil(10 * max(self.up, self.down) / self.down)) + 1
        hits = np.zeros((shape[0], shape[1] + 2 * reach), bool)  # column j: output o0 + j - reach
        for a, bad in self._nan_spans:
            rows, cols = np.nonzero(bad)
            centre = np.round((a + cols) * self.up / self.down).astype(np.int64) - o0 + reach
            inside = (centre >= 0) & (centre < hits.shape[1])
            hits[rows[inside], centre[inside]] = True
        counts = np.pad(np.cumsum(hits, axis=1), ((0, 0), (1, 0)))
        width = 2 * reach + 1  # output j sees hits[j : j + width]
        return (counts[:, width : width + shape[1]] - counts[:, : shape[1]]) > 0

    def blocks(self):
        """Yield (start, data, taint) for consecutive output chunks covering the recording."""
        for o0 in range(0, self.n_out, self.chunk):
            o1 = min(o0 + self.chunk, self.n_out)
            y, taint = self.block(o0, o1)
            yield o0, y, taint


def preprocess(
    raw, recipe: EEGRecipe | dict | None = None, picks=None, chunk_seconds: float = 120.0
):
    """Apply a recipe to a whole recording and return it as an ``mne.io.RawArray``.

    The data are at ``recipe.sfreq`` in volts (not model units), so MNE's plotting and
    analysis work on the result. The input's :class:`~neurofm.channels.ChannelTable` goes
    with it (a BioSemi ``'A1'`` stays unknown). For model input use :func:`neurofm.tokenize`.
    """
    import mne

    recipe = as_recipe(recipe)
    stream = Stream(raw, recipe, picks=picks, chunk_seconds=chunk_seconds)
    data = np.concatenate([y for _, y, _ in stream.blocks()], axis=1) * recipe.unit_scale
    info = mne.create_info(stream.ch_names, recipe.sfreq, "eeg")
    out = mne.io.RawArray(data.astype(np.float64), info, verbose="error")
    montage = raw.get_montage()
    if montage is not None:
        out.set_montage(montage, on_missing="ignore", verbose="error")
    out.set_meas_date(raw.info["meas_date"])
    if len(raw.annotations):
        out.set_annotations(raw.annotations)
    table = ChannelTable.of(raw)
    return out if table is None else table.select(stream.ch_names).attach(out)
