"""Online encoding: :class:`StreamEncoder` turns chunks of samples into one embedding per hop.

A BCI loop pushes whatever the amplifier delivers (one sample, a few, several hops' worth)
and gets back an embedding each time a hop of new signal is complete::

    enc = StreamEncoder("eeg-tiny.sample", ch_names, sfreq=500, hop_seconds=0.25,
                        units="uV", line_freq=50)
    for out in enc.push(chunk):          # chunk: (samples, channels)
        print(out.time, out.embedding.shape)
    enc.latency                           # p50/p99 ms per hop: preprocessing and model

Everything that does not depend on the signal is done once, at construction: channel
names are mapped as :func:`~neurofm.read_eeg` maps them (``'EEG FP1-REF'`` -> ``Fp1``,
EOG/ECG dropped, unknown names refused unless placed), the model's
:class:`~neurofm.Recipe` is turned into causal filters, and the model is loaded, set to
``eval`` and warmed up.

**The causal chain** (:class:`CausalChain`; :func:`causal_preprocess` is the same chain
over a whole array at once, the one-shot reference it is tested against). Per chunk, in
float64, every filter's state carried to the next chunk:

1. units to model units (``units`` to volts, divided by ``recipe.unit_scale``); average
   reference if the recipe says so (per sample, so causal);
2. the stream's first sample is subtracted from each channel (added back at the end when
   the recipe has no high-pass): the filters start as if the signal had been constant
   before it, instead of seeing a step from zero (an amplifier's DC offset) that the
   0.1 Hz high-pass would take a minute to forget;
3. Butterworth high-pass (order 2) at ``l_freq``, at the *input* rate (``sosfilt``,
   carried ``zi``): drift and DC are gone before resampling, so they cannot leak through
   the anti-alias filter's stop band;
4. polyphase resampling to ``recipe.sfreq`` (the offline
   :class:`~neurofm.preprocess.eeg.Stream`'s ``up/down`` and anti-alias FIR, made
   **minimum-phase**: the same magnitude response, ``scipy.signal.minimum_phase``), its
   input history carried: model-rate sample *k* depends on inputs up to time
   *k / recipe.sfreq* only;
5. Butterworth low-pass (order 4) at ``h_freq`` and an ``iirnotch`` (Q = f /
   ``notch_width``) at each line harmonic the offline stream removes
   (:func:`~neurofm.preprocess.recipe.notch_frequencies`), one cascade of second-order
   sections with carried ``zi``; then ``clip``;
6. a ring buffer of the last window at the model rate, cut into patches as
   :func:`neurofm.tokenize` cuts them (``flat_threshold``, ``normalize``), the encoder's
   forward pass at batch 1 in ``inference_mode``.

**How it differs from the offline, zero-phase** :class:`~neurofm.preprocess.eeg.Stream`.
Offline, one linear-phase FIR (6601 taps for 0.1-75 Hz at 200 Hz: 33 s of signal) is
centred on each sample: it shifts nothing in time but looks 16.5 s ahead, which a stream
cannot. The causal chain keeps the same pass band and removes the same line harmonics,
but delays the signal by a frequency-dependent group delay
(:meth:`StreamEncoder.group_delay`). With the default recipe, from 160 Hz: 13 ms at
5-20 Hz, 15-21 ms at 30-50 Hz, 35 ms at 1 Hz, 106 ms at 0.5 Hz (the high-pass), more
within a few Hz of a notched line; from 250, 500 or 1000 Hz about 2 ms less; at 200 Hz
(no resampling) 3-4 ms at 5-30 Hz. The anti-alias FIR is most of it: 10 ms
minimum-phase, where its linear-phase original would add 50-62 ms. Causal filters also
warm up: after the stream starts (or :meth:`StreamEncoder.reset`) the high-pass settles
over tens of seconds (a stream started 30 s into the bundled recording agrees with one
started at 0 to 1e-5 after 30 s). So the stream's embeddings equal an offline encoding
*through the same causal chain* (:meth:`StreamEncoder.encode_offline`) to float
precision, and approximate the zero-phase :func:`neurofm.tokenize` path: on the bundled
recording with ``eeg-tiny.sample``, cosine 0.90 at equal end times, 0.98 against
zero-phase windows ending 15 ms (the delay) earlier, as close as zero-phase windows one
sample (5 ms) apart are to each other (``tests/test_stream.py`` prints these).

**In an acquisition loop** (pylsl; no dependency on it)::

    import numpy as np
    from pylsl import StreamInlet, resolve_byprop

    inlet = StreamInlet(resolve_byprop("type", "EEG", timeout=5)[0])
    info = inlet.info()
    ch, names = info.desc().child("channels").child("channel"), []
    for _ in range(info.channel_count()):
        names.append(ch.child_value("label"))
        ch = ch.next_sibling()
    enc = StreamEncoder("eeg-tiny.sample", names, info.nominal_srate(),
                        hop_seconds=0.25, units="uV", line_freq=50)
    while running:
        chunk, stamps = inlet.pull_chunk(timeout=1.0)   # a list of samples
        if stamps:
            for out in enc.push(np.asarray(chunk)):      # (samples, channels)
                decoder.update(out.embedding)             # your classifier
    print(enc.latency)

With mne-lsl: ``inlet = mne_lsl.lsl.StreamInlet(resolve_streams(stype="EEG")[0])``,
``inlet.open_stream()``, then ``sinfo = inlet.get_sinfo()`` gives the names
(``sinfo.get_channel_names()``) and the rate (``sinfo.sfreq``), and ``chunk, stamps =
inlet.pull_chunk()`` is already a (samples, channels) array. Times are seconds since the
first sample (plus ``start_time``); add the LSL timestamp of the first sample for the
LSL clock. ``callback=`` receives each embedding as it is made.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .channels import SIGNAL_TYPES, ChannelTable
from .errors import (
    ChannelError,
    NeurofmError,
    SignalError,
    UnitsError,
    check_finite,
    check_option,
    validate_type,
)
from .preprocess.eeg import MAX_ABS_VOLTS, _resample_filter, resample_ratio
from .preprocess.recipe import LINE_FREQS, MAX_SECONDS, EEGRecipe, check_sfreq, notch_frequencies
from .tokens import MAX_ABS_X, Tokens, patchify

__all__ = ["CausalChain", "Latency", "StreamEmbedding", "StreamEncoder", "causal_preprocess"]

HIGHPASS_ORDER = 2  # Butterworth orders: 2 keeps the high-pass's low-frequency delay short
LOWPASS_ORDER = 4
POOLINGS = ("mean", "cls", "channel", "none")
IIR_REACH = 1e-2  # a NaN taints outputs while the IIR's impulse response is above this
MAX_MINPHASE_TAPS = 1 << 15  # longer anti-alias FIRs (odd ratios) stay linear-phase
LATENCY_HISTORY = 10_000  # hops kept for the percentiles
_LINE = object()  # line_freq not given: the recipe's notch


# --------------------------------------------------------------------------- design
@lru_cache(maxsize=16)
def causal_resample_filter(up: int, down: int) -> np.ndarray:
    """The offline anti-alias FIR made minimum-phase (same magnitude, gain ``up``), float64.

    :func:`~neurofm.preprocess.eeg._resample_filter` (Kaiser, 20 max(up, down) + 1 taps)
    is linear-phase: causal, it would delay everything by half its length. Its minimum-phase
    counterpart keeps the magnitude response and concentrates the energy at the start.
    Filters longer than ``MAX_MINPHASE_TAPS`` (ratios such as 20000/17361) stay linear.
    """
    from scipy.signal import minimum_phase

    h = _resample_filter(up, down).astype(np.float64)
    if up == down or len(h) > MAX_MINPHASE_TAPS:
        return h
    return minimum_phase(h, method="homomorphic", half=False)


@dataclass(frozen=True)
class CausalDesign:
    """What the causal chain does for one input rate and recipe (see :func:`design_chain`)."""

    sfreq_in: float
    sfreq: float
    up: int
    down: int
    highpass: np.ndarray | None  # (sections, 6) high-pass at sfreq_in; None: none
    fir: np.ndarray | None  # anti-alias FIR at sfreq_in * up; None: no resampling
    sos: np.ndarray | None  # (sections, 6) low-pass and notches at sfreq; None: none
    notch_freqs: tuple[float, ...]
    scale: float  # input units -> model units
    limit: float  # MAX_ABS_VOLTS in model units: beyond it a sample is no measurement
    reference: str | None
    clip: float | None
    taint_reach: int  # model-rate samples after a bad input's last one that it reaches

    def n_out(self, n_in: int) -> int:
        """Model-rate samples available after ``n_in`` input samples: ceil(n_in up / down)."""
        return -(-n_in * self.up // self.down)

    def group_delay(self, freqs) -> np.ndarray:
        """Seconds by which the chain delays each frequency (Hz): filters and resampler."""
        from scipy.signal import group_delay, sosfreqz

        freqs = np.atleast_1d(np.asarray(freqs, dtype=float))
        delay = np.zeros_like(freqs)
        if self.fir is not None:
            rate = self.sfreq_in * self.up
            _, d = group_delay((self.fir, [1.0]), w=freqs, fs=rate)
            delay += d / rate
        lo, hi = np.maximum(freqs - 1e-3, 0), freqs + 1e-3
        for sos, rate in ((self.highpass, self.sfreq_in), (self.sos, self.sfreq)):
            if sos is not None:  # minus the phase's derivative
                dphi = np.angle(
                    sosfreqz(sos, worN=hi, fs=rate)[1] / sosfreqz(sos, worN=lo, fs=rate)[1]
                )
                delay -= dphi / (2 * np.pi * (hi - lo))
        return delay


def design_chain(recipe: EEGRecipe, sfreq_in: float, line_freq, scale: float = 1.0) -> CausalDesign:
    """The causal filters that stand in for ``recipe``'s zero-phase ones at ``sfreq_in``.

    ``line_freq`` is the mains frequency (50, 60, a tuple of them, or None: no notch);
    ``scale`` takes input numbers to model units.
    """
    from scipy.signal import butter, iirnotch, sosfilt, tf2sos

    up, down = resample_ratio(sfreq_in, recipe.sfreq)
    fir = None if up == down else causal_resample_filter(up, down)
    fs = recipe.sfreq
    notches = notch_frequencies(recipe, sfreq_in, line_freq)
    sections = []  # everything but the high-pass
    if recipe.h_freq:
        sections.append(butter(LOWPASS_ORDER, recipe.h_freq, "lowpass", fs=fs, output="sos"))
    for f in notches:
        b, a = iirnotch(f, f / recipe.notch_width, fs=fs)
        sections.append(tf2sos(b, a))
    reach = 0  # how long a glitch rings through the low-pass and notches (the high-pass's
    if sections:  # slow tail stays below IIR_REACH of the impulse)
        impulse = np.zeros(int(10 * fs))
        impulse[0] = 1.0
        resp = np.abs(sosfilt(np.concatenate(sections), impulse))
        reach = int(np.nonzero(resp > IIR_REACH * resp.max())[0][-1])
    highpass = None
    if recipe.l_freq:
        highpass = butter(HIGHPASS_ORDER, recipe.l_freq, "highpass", fs=sfreq_in, output="sos")
    return CausalDesign(
        sfreq_in=sfreq_in, sfreq=fs, up=up, down=down, highpass=highpass, fir=fir,
        sos=np.concatenate(sections) if sections else None, notch_freqs=notches, scale=scale,
        limit=MAX_ABS_VOLTS / recipe.unit_scale, reference=recipe.reference, clip=recipe.clip,
        taint_reach=reach,
    )  # fmt: skip


def _check_line(recipe: EEGRecipe, line_freq):
    """The line frequency to notch: ``line_freq`` if given, else the recipe's (not 'auto')."""
    if line_freq is _LINE:
        if recipe.notch == "auto":
            raise NeurofmError(
                "the model's recipe says notch='auto' (offline, the line frequency is detected "
                "from the recording's spectrum), but a stream cannot look ahead: pass "
                "line_freq=50 (Europe, Asia, Africa, Australia), line_freq=60 (the Americas, "
                "parts of Japan) or line_freq=None (no notch)"
            )
        return recipe.notch
    if line_freq is None:
        return None
    for f in np.atleast_1d(line_freq):
        validate_type(f, "numeric", "line_freq", "50, 60 or None (the mains frequency in Hz)")
    values = tuple(float(f) for f in np.atleast_1d(line_freq))
    for f in values:
        if not recipe.notch_width / 2 + 1 < f < recipe.sfreq / 2:
            raise NeurofmError(
                f"line_freq={f:g} Hz cannot be notched at {recipe.sfreq:g} Hz: give the mains "
                f"frequency ({' or '.join(f'{v:g}' for v in LINE_FREQS)}), or None"
            )
    return values[0] if len(values) == 1 else values


# --------------------------------------------------------------------------- bad samples
def _bad_samples(x: np.ndarray, limit: float) -> np.ndarray:
    """(n, C) bool: NaN, inf, or beyond ``limit`` (``MAX_ABS_VOLTS`` in model units)."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(x) <= limit)  # NaN compares False


def _hold(x: np.ndarray, bad: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Bad samples replaced by the channel's last good value (``last``: before ``x``)."""
    if not bad.any():
        return x
    n = x.shape[0]
    idx = np.where(~bad, np.arange(n)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)  # index of the last good sample, or -1
    filled = np.take_along_axis(x, np.maximum(idx, 0), axis=0)
    return np.where(idx >= 0, filled, last[None, :])


def _taint(design: CausalDesign, bad: np.ndarray, i0: int, k0: int, k1: int,
           until: np.ndarray) -> np.ndarray:  # fmt: skip
    """(k1 - k0, C) bool: outputs [k0, k1) within reach of a bad input; updates ``until``.

    ``bad`` (n, C) marks inputs ``i0 + row``. Input *i* reaches outputs
    ``ceil(i up / down)`` to ``floor((i up + taps - 1) / down) + taint_reach``; ``until``
    (C,) holds, per channel, the last output an earlier bad input reaches.
    """
    C = bad.shape[1]
    out = np.arange(k0, k1)[:, None] <= until[None, :]  # earlier inputs' reach: from k0 on
    hits = np.zeros((k1 - k0 + 1, C), np.int64)
    rows, cols = np.nonzero(bad)
    if rows.size:
        i = i0 + rows
        up, down = design.up, design.down
        taps = 1 if design.fir is None else len(design.fir)
        lo = -(-i * up // down)  # <= k1: an input reaches no output before its own time
        hi = (i * up + taps - 1) // down + design.taint_reach
        np.maximum.at(until, cols, hi)
        np.add.at(hits, (np.clip(lo, k0, k1) - k0, cols), 1)
        np.add.at(hits, (np.clip(hi + 1, k0, k1) - k0, cols), -1)
        out |= np.cumsum(hits, axis=0)[:-1] > 0
    return out


def _bad_error(x: np.ndarray, bad: np.ndarray, i0: int, sfreq: float, names) -> NeurofmError:
    rows, cols = np.nonzero(bad)
    which = [names[c] for c in np.unique(cols)]
    if np.isfinite(x[bad]).all():  # numbers, just too large: units
        return UnitsError(
            f"samples beyond +/-{MAX_ABS_VOLTS:g} V in channels {which[:8]} at "
            f"{(i0 + rows.min()) / sfreq:.3f} s of the stream: no EEG reaches that. Give "
            "the StreamEncoder the units the numbers are in (units='uV' for microvolts, "
            "'mV', 'nV'); if they are an amplifier's overflow markers, on_nan='mask' masks "
            "the patches they touch"
        )
    return SignalError(
        f"non-finite samples (NaN, inf or beyond +/-{MAX_ABS_VOLTS:g} V) in channels "
        f"{which[:8]} at {(i0 + rows.min()) / sfreq:.3f} s of the stream: fill them before "
        "pushing (e.g. hold the last value), or build the StreamEncoder with on_nan='mask' "
        "to mask the patches they touch"
    )


# --------------------------------------------------------------------------- the chain
class CausalChain:
    """The causal preprocessing of one stream, with its state carried between chunks.

    Parameters
    ----------
    design : CausalDesign
        From :func:`design_chain`.
    n_channels : int
    on_nan : 'raise' | 'mask'
        Bad samples (NaN, inf, beyond +/-1 kV) refused, or held at the channel's last good
        value with the outputs they reach marked (see :meth:`process`).
    names : sequence of str | None
        Channel names for error messages.
    """

    def __init__(self, design: CausalDesign, n_channels: int, on_nan: str = "raise", names=None):
        check_option("on_nan", on_nan, ("raise", "mask"))
        self.design, self.n_channels, self.on_nan = design, n_channels, on_nan
        self.names = list(names) if names is not None else [f"#{i}" for i in range(n_channels)]
        self.reset()

    def reset(self) -> CausalChain:
        """Forget the signal: the next sample starts a new stream."""
        d, C = self.design, self.n_channels
        self.n_in = self.n_out = 0
        self.offset = None  # (C,) the first sample, model units
        self.last = np.zeros(C)  # last good sample (on_nan='mask')
        self.until = np.full(C, -1, np.int64)  # last tainted output, per channel
        self._hist = np.zeros((0, C))  # inputs [hist_start, n_in), the resampler's memory
        self._hist_start = 0
        self.zi = None if d.sos is None else np.zeros((d.sos.shape[0], 2, C))
        self.zi_hp = None if d.highpass is None else np.zeros((d.highpass.shape[0], 2, C))
        return self

    def process(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Filter the next input samples ``x`` (n, C), in the stream's units.

        Returns
        -------
        y : (m, C) float64
            The model-rate samples that became available, in model units
            (``m = ceil(n_in up / down)`` minus those returned before).
        taint : (m, C) bool | None
            Outputs within reach of a bad input (``on_nan='mask'``); None when there is none.
        """
        from scipy.signal import sosfilt

        d = self.design
        x = np.asarray(x, dtype=np.float64) * d.scale  # a new array: x is ours
        taint = None
        bad = _bad_samples(x, d.limit)
        any_bad = bool(bad.any())
        if any_bad and self.on_nan == "raise":
            raise _bad_error(x, bad, self.n_in, d.sfreq_in, self.names)
        if d.reference == "average":
            good = ~bad
            mean = np.where(good, x, 0).sum(1) / np.maximum(good.sum(1), 1)
            x -= mean[:, None]
        if self.offset is None and len(x):
            self.offset = np.where(bad[0], 0.0, x[0])
            self.last = self.offset.copy()
        if any_bad:
            x = _hold(x, bad, self.last)
        if len(x):
            self.last = x[-1].copy()
            x -= self.offset
        i0, k0 = self.n_in, self.n_out
        self.n_in += len(x)
        k1 = d.n_out(self.n_in)
        if d.highpass is not None and len(x):
            x, self.zi_hp = sosfilt(d.highpass, x, axis=0, zi=self.zi_hp)
        y = self._resample(x, k0, k1)
        if d.sos is not None and len(y):
            y, self.zi = sosfilt(d.sos, y, axis=0, zi=self.zi)
        if d.highpass is None and self.offset is not None:
            y += self.offset
        if d.clip is not None:
            np.clip(y, -d.clip, d.clip, out=y)
        if any_bad or (self.until >= k0).any():
            taint = _taint(d, bad, i0, k0, k1, self.until)
        self.n_out = k1
        return y, taint

    def _resample(self, x: np.ndarray, k0: int, k1: int) -> np.ndarray:
        """Outputs [k0, k1): y[k] = sum_i h[k down - i up] x[i], from the carried history.

        The history starts at an input index that is a multiple of ``down``, so that
        ``upfirdn``'s output j over it is the global output k = j + start up / down;
        it holds every input the next output still needs (inputs before the stream: 0).
        """
        from scipy.signal import upfirdn

        d = self.design
        if d.fir is None:
            return x
        hist = np.concatenate([self._hist, x]) if len(self._hist) else x
        start = self._hist_start
        if k1 > k0:
            j0 = k0 - start * d.up // d.down
            y = upfirdn(d.fir, hist, d.up, d.down, axis=0)[j0 : j0 + (k1 - k0)]
        else:
            y = np.zeros((0, x.shape[1]))
        first = max(-(-(k1 * d.down - len(d.fir) + 1) // d.up), 0)  # the next output's
        first = first // d.down * d.down
        self._hist, self._hist_start = hist[first - start :].copy(), first
        return y


def causal_preprocess(data, sfreq: float, recipe: EEGRecipe, *, line_freq=_LINE,
                      units="V", on_nan: str = "raise", return_taint: bool = False):  # fmt: skip
    """The causal chain of :class:`StreamEncoder` applied to a whole array at once.

    The one-shot reference for the stream (and a way to prepare a decoder's training data
    as it will be seen online): the first sample subtracted (see the module docstring),
    the high-pass ``sosfilt`` from rest over the whole signal, one ``upfirdn`` with the
    minimum-phase anti-alias FIR, then the low-pass and notches. A
    :class:`CausalChain` fed the same samples in chunks of any size gives the same output
    to float precision (``tests/test_stream.py``).

    Parameters
    ----------
    data : array (n_channels, n_times)
        In ``units``.
    sfreq : float
        Sampling rate of ``data`` (Hz).
    recipe : Recipe
        The model's recipe (``model.recipe``).
    line_freq : 50 | 60 | None
        The mains frequency; needed when the recipe says ``notch='auto'``.
    units : str | float
        ``'V'``, ``'mV'``, ``'uV'``, ``'nV'`` or a factor to volts.
    on_nan : 'raise' | 'mask'
    return_taint : bool
        Also return the (n_channels, n_out) mask of outputs a bad sample reaches.

    Returns
    -------
    y : ndarray (n_channels, ceil(n_times * up / down)), float64
        At ``recipe.sfreq``, in model units.
    """
    from scipy.signal import sosfilt, upfirdn

    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise SignalError(f"data must be (n_channels, n_times); got shape {data.shape}")
    design = _design(recipe, sfreq, line_freq, units)
    check_option("on_nan", on_nan, ("raise", "mask"))
    x = data.T * design.scale
    bad = _bad_samples(x, design.limit)
    if bad.any() and on_nan == "raise":
        raise _bad_error(x, bad, 0, sfreq, [f"#{i}" for i in range(x.shape[1])])
    if design.reference == "average":
        good = ~bad
        x = x - (np.where(good, x, 0).sum(1) / np.maximum(good.sum(1), 1))[:, None]
    offset = np.where(bad[0], 0.0, x[0]) if len(x) else np.zeros(x.shape[1])
    x = _hold(x, bad, offset) - offset
    n_out = design.n_out(len(x))
    if design.highpass is not None:
        x = sosfilt(design.highpass, x, axis=0)
    y = x if design.fir is None else upfirdn(design.fir, x, design.up, design.down, axis=0)
    y = y[:n_out]
    if design.sos is not None:
        y = sosfilt(design.sos, y, axis=0)
    if design.highpass is None:
        y = y + offset
    if design.clip is not None:
        y = np.clip(y, -design.clip, design.clip)
    if not return_taint:
        return y.T
    taint = _taint(design, bad, 0, 0, n_out, np.full(x.shape[1], -1, np.int64))
    return y.T, taint.T


def _units_scale(units, recipe: EEGRecipe) -> float:
    from .io.eeg import _units_factor

    return _units_factor(units) / recipe.unit_scale


def _design(recipe, sfreq, line_freq, units) -> CausalDesign:
    validate_type(recipe, EEGRecipe, "recipe", "a neurofm.Recipe (model.recipe)")
    sfreq = check_sfreq(sfreq, "sfreq", SignalError)
    return design_chain(recipe, sfreq, _check_line(recipe, line_freq), _units_scale(units, recipe))


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class StreamEmbedding:
    """One hop's embedding.

    time : float
        End of the window in seconds (``start_time`` + model-rate samples / ``sfreq``):
        the window holds the signal up to this time.
    embedding : ndarray
        ``(dim,)`` for pooling ``'mean'``/``'cls'``, ``(channels, dim)`` for
        ``'channel'``, ``(channels, patches, dim)`` for ``'none'``.
    real : ndarray
        (channels, patches) bool: the tokens the model saw (False: flat or masked NaN).
    """

    time: float
    embedding: np.ndarray
    real: np.ndarray


def _percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


@dataclass(frozen=True)
class Latency:
    """Per-hop wall-clock time in milliseconds, over the last hops (p50 and p99).

    ``preprocess`` is the causal chain's share for the samples that led to the hop plus
    patching into tokens; ``model`` the encoder's forward pass; ``total`` both.
    """

    hops: int
    preprocess_p50: float
    preprocess_p99: float
    model_p50: float
    model_p99: float
    total_p50: float
    total_p99: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        return (
            f"{self.hops} hops, p50/p99 ms: preprocess {self.preprocess_p50:.2f}/"
            f"{self.preprocess_p99:.2f}, model {self.model_p50:.2f}/{self.model_p99:.2f}, "
            f"total {self.total_p50:.2f}/{self.total_p99:.2f}"
        )


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` for the block, restored after (None: untouched)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- the encoder
class StreamEncoder:
    """Encode a live EEG stream: push chunks of samples, get one embedding per hop.

    Parameters
    ----------
    model : str | Path | Encoder
        A weights name (``'eeg-tiny.sample'``, shipped), a checkpoint folder, or an EEG
        encoder (``neurofm.models.create_model('eeg-base')``). Its recipe prepares the
        signal; the model is put in ``eval`` mode.
    ch_names : list of str
        The stream's channel names, one per column of a chunk, as the amplifier names
        them: mapped as :func:`neurofm.read_eeg` maps a file's (``'EEG FP1-REF'`` ->
        ``Fp1``, ``T3`` -> ``T7``); EOG, ECG, EMG, trigger and misc columns are dropped
        (``include=`` keeps other types); channels the model cannot place are refused.
    sfreq : float
        The stream's sampling rate (Hz); resampled to the recipe's.
    hop_seconds : float
        Seconds of new signal between embeddings; a whole number of samples at the
        recipe's rate. Default 0.5.
    window_seconds : float | None
        Seconds of signal per embedding; None: the recipe's (``recipe.window_seconds``).
        A multiple of ``recipe.patch_seconds``.
    units : str | float
        The units of the pushed numbers: ``'V'`` (MNE, the default), ``'uV'`` (most
        amplifiers and LSL outlets), ``'mV'``, ``'nV'``, or a factor to volts.
    line_freq : 50 | 60 | None
        The mains frequency to notch. Default: the recipe's notch; a recipe that says
        ``'auto'`` (detected offline from the whole recording) needs it given.
    device : str | torch.device
        Where the model runs (``'cpu'``, ``'cuda'``).
    threads : int | None
        ``torch.set_num_threads`` for each forward pass (restored after): 1 gives the
        steadiest batch-1 latency on a shared CPU. None: leave torch's setting.
    pooling : 'mean' | 'cls' | 'channel' | 'none'
        ``'mean'``: one vector (``dim``,) for the window: the model's ``pooled`` output
        when it pools by mean (LayerNorm of the mean over real tokens), else the mean
        of the real tokens' features;
        ``'cls'``: the [CLS] token; ``'channel'``: each channel's mean over its patches
        (channels, dim): left and right stay apart; ``'none'``: every token
        (channels, patches, dim).
    on_nan : 'raise' | 'mask' | None
        Non-finite samples in a chunk: refused (SignalError), or held at the channel's
        last value and the patches they reach masked. None: the recipe's ``on_nan``.
    callback : callable | None
        Called with each :class:`StreamEmbedding` as it is made.
    start_time : float | None
        Added to every time (e.g. the LSL timestamp of the first sample). None: 0.
    rename, include, montage, positions
        As in :func:`neurofm.read_eeg`: names no rule knows, channel types to keep,
        positions of channels outside the 10-05 vocabulary.
    check_units : bool
        Refuse a first window whose median channel amplitude (std, filtered) lies outside
        0.5 uV - 10 mV, as ``read_eeg`` does: the ``units`` are wrong.

    Attributes
    ----------
    ch_names : list of str
        The canonical names of the channels encoded (the model's rows), in order.
    recipe : Recipe
        The recipe the stream applies (the model's, with ``window_seconds``).
    design : CausalDesign
        The causal filters (``design.group_delay(freqs)``).
    """

    def __init__(self, model="eeg-tiny.sample", ch_names=None, sfreq=None, *,
                 hop_seconds: float = 0.5, window_seconds: float | None = None,
                 units="V", line_freq=_LINE, device="cpu", threads: int | None = 1,
                 pooling: str = "mean", on_nan: str | None = None,
                 callback: Callable | None = None, start_time: float | None = None,
                 rename: dict | None = None, include=("eeg",), montage=None,
                 positions: dict | None = None, check_units: bool = True):  # fmt: skip
        check_option("pooling", pooling, POOLINGS)
        if ch_names is None or sfreq is None:
            raise NeurofmError(
                "StreamEncoder needs ch_names= (one name per column of a chunk) and sfreq= "
                "(the stream's rate in Hz): e.g. StreamEncoder('eeg-tiny.sample', "
                "['Fp1', 'Fp2', ...], 250)"
            )
        if threads is not None:
            validate_type(threads, int, "threads", "a whole number of torch threads, or None")
            check_finite(threads, "threads", low=1)
        if callback is not None and not callable(callback):
            raise NeurofmError(f"callback must be callable, got {type(callback).__name__}")
        self.model = self._model(model, device)
        if pooling == "cls" and self.model.cls_token is None:
            raise NeurofmError(
                f"pooling='cls' needs a model with a [CLS] token; {self.model.config.name} "
                "has none: use pooling='mean'"
            )
        recipe = self.model.recipe
        if window_seconds is not None:
            recipe = recipe.replace(window_seconds=window_seconds)
        self.recipe: EEGRecipe = recipe
        hop = check_finite(hop_seconds, "hop_seconds", low=0, low_open=True, high=MAX_SECONDS)
        hop_len = hop * recipe.sfreq
        if abs(hop_len - round(hop_len)) > 1e-6 or round(hop_len) < 1:
            raise NeurofmError(
                f"hop_seconds={hop:g} is not a whole number of samples at the model's "
                f"{recipe.sfreq:g} Hz: use a multiple of {1 / recipe.sfreq:g} s"
            )
        self.hop_len, self.hop_seconds = round(hop_len), hop
        self.threads, self.pooling, self.callback = threads, pooling, callback
        self.device = torch.device(device)
        self.start_time = 0.0 if start_time is None else check_finite(start_time, "start_time")
        on_nan = recipe.on_nan if on_nan is None else on_nan
        check_option("on_nan", on_nan, ("raise", "mask"))
        self.on_nan = on_nan
        self.units, self.check_units = units, bool(check_units)

        self._map_channels(ch_names, sfreq, rename, include, montage, positions)
        self.design = _design(recipe, sfreq, line_freq, units)
        self.sfreq = self.design.sfreq_in
        self.line_freq = _check_line(recipe, line_freq)
        self.chain = CausalChain(self.design, len(self.ch_names), on_nan, self.ch_names)
        W = recipe.window_len
        self._buf = np.zeros((2 * W + self.hop_len, len(self.ch_names)), np.float32)
        self._taint = np.zeros(self._buf.shape, bool)
        self._times: deque = deque(maxlen=LATENCY_HISTORY)
        self._space = torch.as_tensor(self._ids, dtype=torch.long)[None]
        self._pos = torch.as_tensor(self._positions, dtype=torch.float32)[None]
        self.reset()
        self._warm_up()

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _model(model, device):
        from .models import load_model
        from .models.encoder import Encoder

        if not isinstance(model, torch.nn.Module):
            model = load_model(model, modality="eeg")
        if not isinstance(model, Encoder):
            raise NeurofmError(
                f"StreamEncoder takes an encoder, got a {type(model).__name__}: pass a "
                "weights name ('eeg-tiny.sample'), a checkpoint folder, or an Encoder"
            )
        if model.config.modality != "eeg":
            raise NeurofmError(
                f"StreamEncoder streams EEG, but {model.config.name!r} is an "
                f"{model.config.modality} model: pass an EEG model ('eeg-tiny.sample')"
            )
        return model.to(device).eval()

    def _map_channels(self, ch_names, sfreq, rename, include, montage, positions):
        """Names -> kept columns, ids, positions: read_eeg's rules, on a one-sample array."""
        import warnings

        from .io.eeg import read_eeg

        names = [ch_names] if isinstance(ch_names, str) else list(ch_names)
        sfreq = check_sfreq(sfreq, "sfreq", SignalError, "give the stream's rate in Hz")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw, report = read_eeg(
                np.zeros((len(names), 1)), sfreq=sfreq, ch_names=names, rename=rename,
                include=include, montage=montage, positions=positions, check_units=False,
                return_report=True,
            )  # fmt: skip
        kept = [c for c in report.channels if c.status != "dropped" and c.type in SIGNAL_TYPES]
        self.report = report
        self._columns = np.array([names.index(c.original) for c in kept], dtype=np.int64)
        self.n_columns = len(names)
        table = (ChannelTable.of(raw) or ChannelTable((), ())).select([c.name for c in kept])
        self.ch_names = list(table.names)
        self._ids, self._positions = table.ids(), table.positions(raw)
        ids = torch.as_tensor(self._ids)[None]
        pos = torch.as_tensor(self._positions, dtype=torch.float32)[None]
        lost = ~self.model.space_embed.placeable(ids, pos)[0]
        if lost.any():
            bad = [kept[i].original for i in np.nonzero(lost.numpy())[0]]
            raise ChannelError(
                f"channels {bad[:8]} are not 10-05 electrodes and have no position, so the "
                f"model cannot place them: pass rename={{{bad[0]!r}: 'Fp1'}} if they are "
                f"10-05 electrodes under other names, positions={{{bad[0]!r}: 'Cz'}} or "
                f"positions={{{bad[0]!r}: [x, y, z]}} (MNI mm), montage= for a whole cap; or "
                "leave them out of ch_names and drop their columns (e.g. include=('eeg',) "
                "keeps EEG-typed names only)"
            )
        for w in caught:  # read_eeg's own warnings, when the check above did not supersede them
            warnings.warn(w.message, w.category, stacklevel=3)

    def _warm_up(self) -> None:
        """One forward pass on noise: checks the tokens once and pays first-call costs."""
        r = self.recipe
        S, N, P = len(self.ch_names), r.window_patches, r.patch_len
        x = torch.randn(1, S, N, P, generator=torch.Generator().manual_seed(0))
        t = torch.arange(N, dtype=torch.float64)[None] * r.patch_seconds
        tokens = Tokens(x=x, space=self._space, pos=self._pos, t=t,
                        mask=torch.ones(1, S, N, dtype=torch.bool), names=[tuple(self.ch_names)])  # fmt: skip
        self.model.check_tokens(tokens)
        with _torch_threads(self.threads), torch.inference_mode():
            self.model(tokens.to(self.device), validate=False)

    def __repr__(self) -> str:
        d = self.design
        return (
            f"<StreamEncoder {self.model.config.name}, {len(self.ch_names)} ch, "
            f"{d.sfreq_in:g} -> {d.sfreq:g} Hz ({d.up}/{d.down}), window "
            f"{self.recipe.window_seconds:g} s, hop {self.hop_seconds:g} s, "
            f"notch {list(d.notch_freqs)}, {self.pooling} pooling, {self.n_samples} samples in>"
        )

    # ------------------------------------------------------------------ state
    def reset(self) -> StreamEncoder:
        """Start over: filters at rest, buffer empty, time at ``start_time`` (latency kept)."""
        self.chain.reset()
        self._fill = 0  # samples in _buf
        self._base = 0  # model-rate index of _buf[0]
        self._next_end = self.recipe.window_len  # model-rate sample where the next hop ends
        self._last_end = None
        self._pending_pre = 0.0  # chain seconds not yet charged to a hop
        self._carry = 0.0  # chain seconds of pushes that gave no output yet
        self._buf[:] = 0
        self._taint[:] = False
        return self

    @property
    def n_samples(self) -> int:
        """Input samples pushed since the start (or the last :meth:`reset`)."""
        return self.chain.n_in

    @property
    def latency(self) -> Latency:
        """p50/p99 milliseconds per hop over the last hops (NaN before the first)."""
        arr = np.array(self._times, dtype=float).reshape(-1, 2) * 1e3
        pre, mod = arr[:, 0], arr[:, 1]
        tot = pre + mod
        return Latency(len(arr), _percentile(pre, 50), _percentile(pre, 99), _percentile(mod, 50),
                       _percentile(mod, 99), _percentile(tot, 50), _percentile(tot, 99))  # fmt: skip

    def clear_latency(self) -> None:
        """Forget the latency history."""
        self._times.clear()

    def group_delay(self, freqs=(1.0, 5.0, 10.0, 20.0, 30.0)) -> dict:
        """{Hz: seconds} by which the causal chain delays each frequency (offline: 0)."""
        return dict(zip(map(float, np.atleast_1d(freqs)), self.design.group_delay(freqs)))

    # ------------------------------------------------------------------ streaming
    def _check_chunk(self, chunk) -> np.ndarray:
        try:
            x = np.asarray(chunk, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise SignalError(f"a chunk must hold numbers (samples x channels): {err}") from None
        C = self.n_columns
        if x.ndim == 1 and x.size == C:  # one sample (pylsl's pull_sample)
            x = x[None]
        if x.ndim != 2 or x.shape[1] != C:
            hint = " (is it transposed? chunks are samples x channels)" if (
                x.ndim == 2 and x.shape[0] == C) else ""  # fmt: skip
            raise SignalError(
                f"a chunk of shape {x.shape} does not fit this stream's {C} channels "
                f"(ch_names): push (samples, {C}) arrays{hint}, or build the StreamEncoder "
                "with the names of the columns you push"
            )
        return x

    def push(self, chunk) -> list[StreamEmbedding]:
        """Feed the next samples; returns the embeddings of the hops they complete.

        Parameters
        ----------
        chunk : array (samples, channels)
            Any number of samples (0, 1, less than a hop, several hops), one column per
            name of ``ch_names``, in ``units``. A 1-D array of one value per channel is
            one sample.

        Returns
        -------
        list of StreamEmbedding
            One per completed hop, oldest first (also passed to ``callback``).
        """
        x = self._check_chunk(chunk)
        if not len(x):
            return []
        t0 = time.perf_counter()
        y, taint = self.chain.process(x[:, self._columns])
        self._carry += time.perf_counter() - t0
        if not len(y):  # (downsampling) no model-rate sample yet: charged to the next ones
            return []
        cost, self._carry = self._carry / len(y), 0.0  # chain seconds per output sample
        out = []
        done = 0
        while done < len(y):  # up to the next hop's end, then that hop
            take = min(self._next_end - self._total(), len(y) - done)
            g0 = self._total()  # a hop is charged for its own hop_len samples only
            self._pending_pre += cost * max(0, g0 + take - max(g0, self._next_end - self.hop_len))
            self._append(
                y[done : done + take], None if taint is None else taint[done : done + take]
            )
            done += take
            if self._total() == self._next_end:
                out.append(self._hop(self._next_end))
                self._next_end += self.hop_len
        return out

    def _total(self) -> int:
        """Model-rate samples appended to the buffer so far."""
        return self._base + self._fill

    def _append(self, y: np.ndarray, taint) -> None:
        W, n = self.recipe.window_len, len(y)
        if self._fill + n > len(self._buf):  # keep the last window's worth, at the front
            keep = min(W, self._fill)
            self._buf[:keep] = self._buf[self._fill - keep : self._fill]
            self._taint[:keep] = self._taint[self._fill - keep : self._fill]
            self._base += self._fill - keep
            self._fill = keep
        self._buf[self._fill : self._fill + n] = y
        self._taint[self._fill : self._fill + n] = False if taint is None else taint
        self._fill += n

    def _hop(self, end: int) -> StreamEmbedding:
        """The embedding of the window ending at model-rate sample ``end`` (the newest)."""
        t0 = time.perf_counter()
        W = self.recipe.window_len
        i = end - self._base
        window, taint = self._buf[i - W : i], self._taint[i - W : i]
        if self.check_units and self._last_end is None:
            self._check_level(window)
        tokens = self._tokens(window.T[None], taint.T[None], np.array([end - W]))
        t1 = time.perf_counter()
        emb = self._encode(tokens)[0]
        t2 = time.perf_counter()
        pre, self._pending_pre = self._pending_pre + (t1 - t0), 0.0
        self._times.append((pre, t2 - t1))
        self._last_end = end
        result = StreamEmbedding(self._time(end), emb, tokens.mask[0].numpy())
        if self.callback is not None:
            self.callback(result)
        return result

    def _check_level(self, window: np.ndarray) -> None:
        """The first window's median channel std must look like EEG in volts (read_eeg's rule)."""
        from .io.eeg import _TYPICAL_STD_V, STD_RANGE_V, UNITS

        std = window.std(axis=0) * self.recipe.unit_scale  # volts
        std = std[std > 0]
        if not std.size:
            return
        level, (lo, hi) = float(np.median(std)), STD_RANGE_V
        if lo <= level <= hi:
            return
        factor = self.design.scale * self.recipe.unit_scale  # volts per pushed unit
        exp = 3 * round(np.log10(_TYPICAL_STD_V / level) / 3)
        good = factor * 10.0**exp
        name = next((f"{k!r}" for k, v in UNITS.items() if np.isclose(v, good) and k != "µV"),
                    f"{good:g}")  # fmt: skip
        raise UnitsError(
            f"the stream's median channel amplitude (std, filtered) is {level:.3g} V in the "
            f"first window, but EEG lies between {lo:g} and {hi:g} V: the numbers are not in "
            f"units={self.units!r}. Fix: StreamEncoder(..., units={name}); "
            "check_units=False skips this check"
        )

    def _time(self, end: int) -> float:
        return self.start_time + end / self.recipe.sfreq

    def flush(self) -> list[StreamEmbedding]:
        """The embedding of the latest window if samples arrived since the last hop.

        At the end of a recording, the signal after the last full hop would otherwise
        never be encoded. Needs a full window; returns an empty list otherwise. The next
        hops stay on their grid.
        """
        end = self._total()
        if end < self.recipe.window_len or end == self._last_end:
            return []
        return [self._hop(end)]

    # ------------------------------------------------------------------ tokens and model
    def _tokens(self, windows: np.ndarray, taint: np.ndarray, starts: np.ndarray) -> Tokens:
        """Tokens of (B, S, W) windows starting at model-rate samples ``starts``."""
        r = self.recipe
        P, N, B = r.patch_len, r.window_patches, len(windows)
        x = patchify(windows, P)
        mask = ~patchify(taint, P).any(axis=-1)
        mask &= x.std(axis=-1) > r.flat_threshold / r.unit_scale
        if r.normalize == "channel":
            mu = x.mean(axis=(2, 3), keepdims=True)
            sd = x.std(axis=(2, 3), keepdims=True)
            x = (x - mu) / np.maximum(sd, 1e-6)
        peak = float(np.abs(x).max()) if x.size else 0.0
        if peak > MAX_ABS_X:
            raise UnitsError(
                f"the stream reaches {peak:.3g} model units ({peak * r.unit_scale:.3g} V): "
                f"the units are wrong; give units= the pushed numbers are in ('uV', 'mV', 'V')"
            )
        t = (starts[:, None] + np.arange(N)[None, :] * P) / r.sfreq  # float64: long sessions
        return Tokens(
            x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            space=self._space.expand(B, -1),
            pos=self._pos.expand(B, -1, -1),
            t=torch.from_numpy(t),
            mask=torch.from_numpy(mask),
            names=[tuple(self.ch_names)] * B,
        )

    def _encode(self, tokens: Tokens) -> np.ndarray:
        """(B, ...) pooled features, as numpy."""
        with _torch_threads(self.threads), torch.inference_mode():
            out = self.model(tokens.to(self.device), validate=False)
            if self.pooling == "mean":
                if self.model.config.pooling == "mean":
                    feats = out.pooled
                else:
                    w = out.mask[..., None].to(out.tokens.dtype)
                    feats = (out.tokens * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1)
            elif self.pooling == "cls":
                feats = out.cls
            elif self.pooling == "channel":
                w = out.mask[..., None].to(out.tokens.dtype)
                feats = (out.tokens * w).sum(2) / w.sum(2).clamp(min=1)
            else:
                feats = out.tokens
            return feats.float().cpu().numpy()

    def encode_offline(self, data, *, batch_size: int = 32) -> list[StreamEmbedding]:
        """Encode a whole recording as the stream would, hop by hop, in batches.

        The same causal chain (a fresh :class:`CausalChain` over the whole array: what
        :func:`causal_preprocess` computes), the same windows
        (ending every ``hop_seconds`` from the first full window) and the same model:
        what :meth:`push` returns for the same samples, to float precision, without the
        Python loop. Use it to prepare a decoder's training data. The stream's state is
        not touched.

        Parameters
        ----------
        data : array (n_channels, n_times)
            One row per name of ``ch_names``, in ``units``, at ``sfreq``.
        batch_size : int
            Windows per forward pass.
        """
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] != self.n_columns:
            raise SignalError(
                f"data of shape {data.shape} does not fit this stream's {self.n_columns} "
                "channels: give (n_channels, n_times), one row per name of ch_names"
            )
        tmp = CausalChain(self.design, len(self.ch_names), self.on_nan, self.ch_names)
        y, taint = tmp.process(data[self._columns].T)
        y = y.T.astype(np.float32)
        taint = np.zeros(y.shape, bool) if taint is None else taint.T
        W = self.recipe.window_len
        ends = np.arange(W, y.shape[1] + 1, self.hop_len)
        if not len(ends):
            raise SignalError(
                f"the recording is {data.shape[1] / self.sfreq:.3g} s long, shorter than one "
                f"window ({self.recipe.window_seconds:g} s): give a longer recording, or "
                "build the StreamEncoder with a shorter window_seconds"
            )
        if self.check_units:
            self._check_level(y[:, :W].T)
        out = []
        for b in range(0, len(ends), batch_size):
            e = ends[b : b + batch_size]
            idx = (e[:, None] - W) + np.arange(W)[None]
            win = np.moveaxis(y[:, idx], 1, 0)  # (B, S, W)
            tnt = np.moveaxis(taint[:, idx], 1, 0)
            tokens = self._tokens(win, tnt, e - W)
            feats = self._encode(tokens)
            out += [StreamEmbedding(self._time(int(end)), f, m.numpy())
                    for end, f, m in zip(e, feats, tokens.mask, strict=True)]  # fmt: skip
        return out
