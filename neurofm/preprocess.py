"""The preprocessing ``Recipe`` and its chunked application to EEG recordings.

A :class:`Recipe` says how a recording becomes model input: sampling rate, band,
notch, reference, unit scale, clipping, patch and window lengths. It is a pydantic
model, serialisable to JSON, and lives inside every checkpoint so that ``encode`` and
fine-tuning prepare data exactly as pretraining did.

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

import math
import numbers
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from .config import StrictConfig
from .errors import SignalWarning, check_finite, validate_type, warn
from .utils import NeurofmError, SignalError, logger

LINE_FREQS = (50.0, 60.0)
SFREQ_RANGE = (10.0, 100_000.0)  # Hz: plausible EEG and intracranial sampling rates
MAX_FIR_TAPS = 2**20  # a longer band-pass FIR means a transition band too narrow to design
MAX_RATIO_TERM = 2**16  # resampling ratios up/down with larger terms are approximated
MAX_ABS_VOLTS = 1e3  # a sample beyond +/-1 kV is no measurement (and overflows float32 math)
MAX_SECONDS = 86400.0  # patch, window and stride lengths: at most a day


def check_sfreq(sfreq, what: str = "sfreq", error: type[NeurofmError] = NeurofmError,
                fix: str = "give the rate in Hz (samples per second), not a period or kHz") -> float:  # fmt: skip
    """A plausible sampling rate in Hz, or ``error`` saying what is wrong and ``fix``."""
    validate_type(sfreq, "numeric", what, "a number (Hz)")
    lo, hi = SFREQ_RANGE
    if not lo <= float(sfreq) <= hi:  # NaN fails too
        raise error(
            f"{what}={float(sfreq):g} Hz is not a plausible sampling rate (EEG is sampled at "
            f"{lo:g} Hz to {hi:g} Hz): {fix}"
        )
    return float(sfreq)


class Recipe(StrictConfig):
    """How a recording becomes model input (EEG).

    Defaults follow LaBraM: 200 Hz, 0.1-75 Hz band, notch at the line frequency,
    volts divided by 100 uV, patches of 1 s.
    """

    modality: Literal["eeg"] = "eeg"
    sfreq: float = Field(200.0, description="target sampling rate (Hz)")
    l_freq: float | None = Field(0.1, ge=0, allow_inf_nan=False,
                                 description="high-pass edge (Hz); None or 0: no high-pass")  # fmt: skip
    h_freq: float | None = Field(75.0, gt=0, allow_inf_nan=False,
                                 description="low-pass edge (Hz), below sfreq/2; None: no low-pass")  # fmt: skip
    notch: Literal["auto"] | float | tuple[float, ...] | None = Field(
        "auto", description="line frequency (Hz) or 'auto' (detected from a 50/60 Hz peak)"
    )
    notch_width: float = Field(
        1.0,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description="stop band width around each line harmonic (Hz)",
    )
    reference: Literal["average"] | None = Field(
        None, description="None keeps the recorded reference"
    )
    unit_scale: float = Field(1e-4, ge=1e-12, le=1.0, allow_inf_nan=False,
                              description="volts per model unit (LaBraM: 100 uV)")  # fmt: skip
    clip: float | None = Field(None, gt=0, le=1e9, allow_inf_nan=False,
                               description="clip |x| at this many model units")  # fmt: skip
    normalize: Literal["none", "channel"] = Field(
        "none", description="'channel': z-score each channel within each window"
    )
    patch_seconds: float = Field(1.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    window_seconds: float = Field(10.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    stride_seconds: float | None = Field(None, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
                                         description="None: windows do not overlap")  # fmt: skip
    flat_threshold: float = Field(
        1e-8,
        ge=0,
        le=1e-4,
        allow_inf_nan=False,
        description="a patch whose std (V) is below this is masked",
    )
    on_nan: Literal["raise", "mask"] = Field(
        "raise", description="non-finite samples (NaN, inf): refuse, or mask the patches they touch"
    )
    version: int = Field(1, ge=1)

    @field_validator("sfreq")
    @classmethod
    def _sfreq(cls, value):
        return check_sfreq(value, "sfreq")

    @field_validator("notch", mode="before")
    @classmethod
    def _notch_values(cls, value):
        if value is None or (isinstance(value, str) and value == "auto"):
            return value
        for f in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < f < math.inf:
                raise ValueError(
                    f"{f!r} is not a line frequency: give the mains frequency in Hz (50 or 60; "
                    "its harmonics are removed too), a list of them, 'auto' (detect a 50/60 Hz "
                    "peak) or None (no notch)"
                )
        return value

    @model_validator(mode="after")
    def _check(self):
        nyq = self.sfreq / 2
        for name in ("l_freq", "h_freq"):
            value = getattr(self, name)
            if value is not None and value >= nyq:
                raise ValueError(
                    f"{name}={value:g} must be below sfreq/2={nyq:g} (Nyquist): lower {name} or "
                    "raise sfreq"
                )
        if self.l_freq and self.h_freq and self.l_freq >= self.h_freq:
            raise ValueError(f"l_freq={self.l_freq} must be below h_freq={self.h_freq}")
        for name in ("patch_seconds", "window_seconds", "stride_seconds"):
            value = getattr(self, name)
            if value is None:
                continue
            n = value * self.sfreq
            if round(n) < 1 or abs(n - round(n)) > 1e-6:
                raise ValueError(
                    f"{name}={value:g} is not a whole number of samples (at least one) at "
                    f"{self.sfreq:g} Hz"
                )
        ratio = self.window_seconds / self.patch_seconds
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(
                f"window_seconds={self.window_seconds} must be a multiple of patch_seconds={self.patch_seconds}"
            )
        self._check_filter()
        return self

    def _check_filter(self):
        """The FIR every recording gets can be designed, whatever line frequency it has."""
        fir_bands(self.sfreq, self.l_freq, self.h_freq)  # the band alone
        w, auto = self.notch_width, self.notch == "auto"
        for line in LINE_FREQS if auto else [self.notch]:
            for f in () if auto or line is None else np.atleast_1d(line):
                if not w / 2 + 1 < f < self.sfreq / 2:
                    raise ValueError(
                        f"notch={f:g} Hz with notch_width={w:g}: a notch needs its stop band and "
                        f"1 Hz transitions between 0 and sfreq/2={self.sfreq / 2:g} Hz. Give the "
                        "line frequency (50 or 60), a narrower notch_width, or notch=None"
                    )
            try:
                fir_bands(self.sfreq, self.l_freq, self.h_freq,
                          notch_frequencies(self, math.inf, line), w)  # fmt: skip
            except NeurofmError as err:
                raise ValueError(
                    f"notch='auto' may remove {line:g} Hz; {err}" if auto else err
                ) from None

    @property
    def patch_len(self) -> int:
        return round(self.patch_seconds * self.sfreq)

    @property
    def window_len(self) -> int:
        return round(self.window_seconds * self.sfreq)

    @property
    def stride_len(self) -> int:
        return round((self.stride_seconds or self.window_seconds) * self.sfreq)

    @property
    def n_patches(self) -> int:
        return self.window_len // self.patch_len

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        return cls(**data)


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


def fir_bands(sfreq, l_freq, h_freq, notch_freqs=(), notch_width=1.0):
    """Band edges (Hz), gains and length of the band-pass plus notch FIR, or None if no filter.

    Transition bands as MNE's ``filter_length='auto'``: ``min(max(0.25 f, 2), f)`` below
    the high-pass edge, ``min(max(0.25 f, 2), nyq - f)`` above the low-pass edge (clipped to
    Nyquist, as MNE does), 1 Hz around each notch; length ``3.3 / narrowest transition``
    seconds. Raises ``NeurofmError`` when the edges overlap or the filter would be too long.
    """
    nyq = sfreq / 2
    edges = [(0.0, 0.0 if l_freq else 1.0, "0 Hz")]
    trans = []  # (width, what)
    if l_freq:
        lt = min(max(0.25 * l_freq, 2.0), l_freq)
        trans.append((lt, f"below the high-pass edge l_freq={l_freq:g}"))
        if l_freq - lt > 0:  # 0.1 Hz: the stop edge is DC
            edges.append((l_freq - lt, 0.0, "the high-pass stop edge"))
        edges.append((l_freq, 1.0, f"l_freq={l_freq:g}"))
    for f in sorted(notch_freqs):
        lo, hi = f - notch_width / 2, f + notch_width / 2
        what = f"the notch at {f:g} Hz"
        edges += [(lo - 1.0, 1.0, what), (lo, 0.0, what), (hi, 0.0, what), (hi + 1.0, 1.0, what)]
        trans.append((1.0, what))
    if h_freq:
        ht = min(max(0.25 * h_freq, 2.0), nyq - h_freq)
        trans.append((ht, f"between h_freq={h_freq:g} and Nyquist ({nyq:g} Hz)"))
        edges += [(h_freq, 1.0, f"h_freq={h_freq:g}"), (h_freq + ht, 0.0, "the low-pass stop edge")]
    if not trans:
        return None
    width, what = min(trans)
    taps = 3.3 / width * sfreq if width > 0 else math.inf
    if taps > MAX_FIR_TAPS:
        raise NeurofmError(
            f"the filter would need {taps:.3g} taps ({taps / sfreq:.3g} s at {sfreq:g} Hz): "
            f"its transition band {what} is only {width:.3g} Hz wide (at most {MAX_FIR_TAPS} "
            "taps). Raise l_freq, keep h_freq further below Nyquist, or lower sfreq"
        )
    if edges[-1][0] < nyq:
        edges.append((nyq, edges[-1][1], f"Nyquist ({nyq:g} Hz)"))
    for (f0, _, a), (f1, _, b) in zip(edges, edges[1:]):
        if not f1 - f0 > 1e-9 * nyq:
            raise NeurofmError(
                f"filter bands overlap: {a} reaches {f0:g} Hz, {b} starts at {f1:g} Hz. Widen "
                "the band (l_freq, h_freq), narrow notch_width, or set notch=None"
            )
    return [e[0] for e in edges], [e[1] for e in edges], math.ceil(taps) | 1


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


def notch_frequencies(recipe: Recipe, sfreq_in: float, line: float | None) -> tuple[float, ...]:
    """Line harmonics to remove: inside the kept band and below both Nyquist rates."""
    if line is None:
        return ()
    top = min(recipe.h_freq or np.inf, recipe.sfreq / 2 - recipe.notch_width - 1, sfreq_in / 2)
    out = set()
    for base in np.atleast_1d(line).astype(float):  # > notch_width/2 + 1 Hz: Recipe checks it
        out.update(base * np.arange(1, math.ceil(top / base)))
    return tuple(sorted(float(f) for f in out if f < top))


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

    def __init__(self, raw, recipe: Recipe, picks=None, chunk_seconds: float = 120.0):
        import mne

        validate_type(raw, mne.io.BaseRaw, "raw", "an mne.io.Raw (from neurofm.read_eeg)")
        validate_type(recipe, Recipe, "recipe", "a neurofm.Recipe")
        self.raw, self.recipe = raw, recipe
        self._nan_spans: list = []
        if picks is None:
            types = dict(eeg=True, ecog=True, seeg=True, dbs=True)  # EEG and intracranial EEG
            picks = [raw.ch_names[i] for i in mne.pick_types(raw.info, **types, exclude=())]
        if not picks:
            raise SignalError("no EEG channel to process: read the file with neurofm.read_eeg")
        self.ch_names = list(picks)
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
                f"({recipe.window_seconds:g} s): use a Recipe with window_seconds <= {fits:g}"
                + ("" if fits > 0 else " and a shorter patch_seconds, or a longer recording")
            )
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


def preprocess(raw, recipe: Recipe | dict | None = None, picks=None, chunk_seconds: float = 120.0):
    """Apply a recipe to a whole recording and return it as an ``mne.io.RawArray``.

    The data are at ``recipe.sfreq`` in volts (not model units), so MNE's plotting and
    analysis work on the result. For model input use :func:`neurofm.tokenize`.
    """
    import mne

    from .tokens import as_recipe

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
    return out
