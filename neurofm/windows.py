"""Windows of a prepared recording as :class:`~neurofm.tokens.Tokens`, for EEG and fMRI.

::

    tokens = neurofm.tokenize("recording.edf", neurofm.Recipe())          # EEG
    tokens = neurofm.tokenize(series, neurofm.FMRIRecipe(t_r=0.72))       # fMRI
    for batch in neurofm.iter_tokens(raw, recipe, batch_size=64): ...    # constant memory
    tokens = neurofm.tokenize(raw, recipe, event_id=["T1", "T2"], tmin=0, tmax=4)  # per event
    tokens = neurofm.tokenize(epochs, recipe)                             # per epoch

The recipe's ``modality`` picks how the source is read and prepared; without a recipe, an
``xarray.DataArray``, a nibabel image or a ``.nii``/``.nii.gz`` path is fMRI, anything
else EEG (with the modality's default recipe).

- **EEG**: a path, an ``mne.io.Raw`` or an ``(n_channels, n_times)`` array, read by
  :func:`~neurofm.read_eeg` (which takes the keyword arguments: ``sfreq=``,
  ``ch_names=``, ``units=`` ...) unless it is a Raw ``read_eeg`` returned; prepared in
  chunks by :class:`~neurofm.preprocess.eeg.Stream`. Ids and positions come from the
  Raw's :class:`~neurofm.channels.ChannelTable`. An ``mne.Epochs`` gives one window per
  epoch (see "Event-locked windows").
- **fMRI**: the (time, parcel) DataArray :func:`~neurofm.read_fmri` returns, at the
  recipe's TR, or anything ``read_fmri`` reads (keyword arguments: ``atlas=``, ``t_r=``,
  ``confounds=`` ...). Parcels get the ``UNK`` id and their centroid (``space='coords'``)
  or their atlas's vocabulary ids (``space='atlas'``).

Both are then cut the same way, here and only here: windows of ``recipe.window_len``
samples every ``recipe.stride_len``, each split into ``recipe.window_patches`` patches
of ``recipe.patch_len`` (:func:`~neurofm.tokens.patchify`). A token is masked where its
samples are not finite (EEG with ``on_nan='mask'``, fMRI's empty parcels) and, for EEG,
where it is flat.

Event-locked windows
--------------------
``events=`` (with ``tmin``/``tmax`` in seconds) replaces the regular windows by one window
per event; ``Tokens.t`` holds each patch's time in the recording, so a window starts at
``t[:, 0]``. Events are

- an MNE events array ``(n, 3)`` (sample, previous value, event code; the sample counts
  from the acquisition start, as MNE's do: ``raw.first_samp`` is subtracted), whose codes
  ``event_id`` (``{"left": 2}``, a code or a list of codes) may select and name;
- onsets in seconds from the recording's first sample (a 1-D sequence; EEG and fMRI);
- ``"annotations"``, or no ``events`` but ``event_id=``: the recording's annotations
  whose description ``event_id`` names (a string, a list, or ``{description: code}``;
  default: all but ``BAD``/``EDGE`` ones).

The recording is prepared once, as without events (filtered whole, in chunks), and the
windows are cut at ``onset + tmin``, rounded to the nearest sample. A window is
``tmax - tmin`` rounded to whole patches (0.5 rounds up; at least one patch), so windows
stay on the model's patch grid; a length that had to be rounded is said in a
``NeurofmWarning``. An event whose window does not lie wholly inside the recording
(too close to its start or end) is dropped, with a ``SignalWarning`` naming it; no
window is padded. Windows come in time order (:class:`WindowPlan` ``.event`` gives each
one's index in ``events``). ``tmin`` defaults to 0, ``tmax`` to ``tmin`` plus the
recipe's window.

An ``mne.Epochs`` holds its own cut: each epoch is prepared on its own (its data as the
Epochs hold them, baseline correction included) and gives one window of its length
rounded down to whole patches. A filter cannot see past an epoch's edges: a 0.1 Hz
high-pass (33 s of impulse response) on a 4 s epoch removes much less drift than on the
whole recording, so windows cut from the recording (``events=``) and epochs of the same
events differ by that much (``tests/test_encode.py`` measures it on eegmmidb). Pass the
recording with ``events=`` where it is available.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .channels import UNK, ChannelTable
from .errors import (
    ChannelError,
    NeurofmError,
    NeurofmWarning,
    SignalError,
    SignalWarning,
    check_finite,
    check_option,
    did_you_mean,
    validate_type,
    warn,
)
from .preprocess.recipe import (
    MODALITIES,
    EEGRecipe,
    FMRIRecipe,
    _modality,
    as_recipe,
    check_tr,
)
from .tokens import Tokens, collate, patchify

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: ``events="annotations"``: every annotation but these (MNE's events_from_annotations default)
ANNOTATIONS = "annotations"


@dataclass
class _Grid:
    """A prepared recording, as windowing needs it."""

    names: tuple[str, ...]
    space: np.ndarray  # (S,) vocabulary ids
    pos: np.ndarray  # (S, 3) MNI mm
    blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]  # consecutive (S, n) chunks, taint
    n_samples: int
    flat_units: float | None = None  # a patch whose std is at most this is masked
    normalize: bool = False  # z-score each unit within each window
    stream: object | None = None  # EEG: the Stream (rates, filter), for reports
    raw: object | None = None  # EEG: the canonical Raw (annotations, first_samp)
    series: object | None = None  # fMRI: the prepared series (attrs), for reports
    #: (start, window (S, W), taint) in time order, when windows are not cut from blocks
    windows: Callable[[], Iterator[tuple[int, np.ndarray, np.ndarray]]] | None = None


@dataclass
class WindowPlan:
    """Where the windows of a recording are, before any is cut: what :func:`iter_tokens`
    yields, with each window's time and, for event-locked windows, its event.

    Attributes
    ----------
    recipe : Recipe | FMRIRecipe
        The recipe the windows are cut with (for events: the window ``tmax - tmin``).
    names : tuple of str
        The space units (channels or parcels), in token order.
    starts : ndarray (n_windows,) int
        First sample (EEG, at ``recipe.sfreq``) or TR (fMRI) of each window.
    event, onset, label
        Event-locked only (else None): each window's index in the ``events`` given (for
        Epochs, ``epochs.selection``), the event's time (s) and its label (the
        ``event_id`` name, the annotation's description, or the code as text).
    dropped : ndarray int
        Indices of events dropped because their window leaves the recording.
    tmin : float | None
        Event-locked: where a window starts relative to its event (s).
    epochs : bool
        Whether the windows are an ``mne.Epochs``' epochs, each prepared on its own.
    """

    recipe: EEGRecipe | FMRIRecipe
    grid: _Grid = field(repr=False)
    starts: np.ndarray
    event: np.ndarray | None = None
    onset: np.ndarray | None = None
    label: list[str] | None = None
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    tmin: float | None = None
    epochs: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return self.grid.names

    @property
    def n_windows(self) -> int:
        return len(self.starts)

    @property
    def seconds(self) -> np.ndarray:
        """(n_windows,) start of each window in seconds (``Tokens.t[:, 0]``)."""
        return np.asarray(self.recipe.seconds(self.starts), dtype=float)

    def windows(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(start, window (S, W), taint (S, W)), in time order."""
        if self.grid.windows is not None:
            return self.grid.windows()
        return _windows(self.grid.blocks, self.recipe.window_len, self.starts)

    def batches(self, batch_size: int = 64, progress: bool = False,
                desc: str = "tokenize") -> Iterator[Tokens]:  # fmt: skip
        """The windows as :class:`Tokens` of up to ``batch_size``; a recording is read once
        (``progress``: a tqdm bar named ``desc``)."""
        validate_type(batch_size, int, "batch_size", "a whole number of windows")
        check_finite(batch_size, "batch_size", low=1)
        grid, recipe = self.grid, self.recipe
        ever_real = np.zeros(len(grid.names), bool)
        from tqdm.auto import tqdm

        with tqdm(total=self.n_windows, unit="win", desc=desc, disable=not progress) as bar:
            for pending in _batched(self.windows(), batch_size):
                bar.update(len(pending))
                tokens = _tokens(pending, grid, recipe)
                ever_real |= tokens.mask.numpy().any(axis=(0, 2))
                yield tokens
        flat = [n for n, r in zip(grid.names, ever_real, strict=True) if not r]
        if flat and grid.flat_units is not None:
            warn(f"channels {flat} are flat (std < {recipe.flat_threshold:g} V) in every window "
                 "and are masked out: check the electrodes or drop them", SignalWarning,
                 stacklevel=3)  # fmt: skip


def iter_tokens(source, recipe: EEGRecipe | FMRIRecipe | dict | None = None, *,
                batch_size: int = 64, picks=None, chunk_seconds: float = 120.0,
                progress: bool = False, events=None, event_id=None, tmin: float | None = None,
                tmax: float | None = None, **read_kwargs) -> Iterator[Tokens]:  # fmt: skip
    """Stream a recording as batches of :class:`Tokens`, in constant memory (EEG).

    Parameters
    ----------
    source : path | mne.io.Raw | mne.Epochs | ndarray | xarray.DataArray | nibabel image
        See the module docstring; paths and Raws not from ``read_eeg`` go through it.
    recipe : Recipe | FMRIRecipe | dict | None
        Default: the modality's defaults (``Recipe()``: LaBraM's conventions, 10 s
        windows of 1 s patches; ``FMRIRecipe(t_r=<the series' TR>)``). A dict is
        validated into the recipe its ``modality`` names (absent: EEG).
    batch_size : int
        Windows per yielded batch.
    picks, chunk_seconds
        EEG: the channels to keep, and the seconds the stream prepares at a time.
    events, event_id, tmin, tmax
        One window per event instead of regular windows: see "Event-locked windows" in
        the module docstring (:func:`plan_windows` gives each window's event).
    **read_kwargs
        Passed to the reader (``read_eeg`` or ``read_fmri``).
    """
    validate_type(batch_size, int, "batch_size", "a whole number of windows")
    check_finite(batch_size, "batch_size", low=1)
    plan = plan_windows(source, recipe, picks=picks, chunk_seconds=chunk_seconds, events=events,
                        event_id=event_id, tmin=tmin, tmax=tmax, **read_kwargs)  # fmt: skip
    yield from plan.batches(batch_size, progress)


def tokenize(source, recipe: EEGRecipe | FMRIRecipe | dict | None = None, **kwargs) -> Tokens:
    """All windows of a recording as one :class:`Tokens` (B = number of windows).

    Takes what :func:`iter_tokens` takes (``events=``, ``tmin``/``tmax`` for one window
    per event; an ``mne.Epochs`` for one per epoch). For long EEG recordings prefer
    :func:`iter_tokens`, whose memory stays constant.
    """
    return collate(list(iter_tokens(source, recipe, **kwargs)))


def tokenize_fmri(series, recipe: FMRIRecipe | None = None) -> Tokens:
    """Windows of parcel patches (B windows, S parcels, N, P TRs): :func:`tokenize` for the
    (time, parcel) DataArray of :func:`~neurofm.read_fmri` alone (kept for its callers).

    ``space`` holds ``UNK`` (parcels placed by centroid, ``space='coords'``) or the atlas's
    vocabulary ids (``2 + parcel index``, ``space='atlas'``); empty parcels are masked.
    """
    import xarray as xr

    validate_type(recipe, (FMRIRecipe, None), "recipe", "an FMRIRecipe or None")
    if not isinstance(series, xr.DataArray):
        _not_a_series(series)
    return tokenize(series, recipe)


def plan_windows(source, recipe: EEGRecipe | FMRIRecipe | dict | None = None, *, picks=None,
                 chunk_seconds: float = 120.0, events=None, event_id=None,
                 tmin: float | None = None, tmax: float | None = None,
                 **read_kwargs) -> WindowPlan:  # fmt: skip
    """Read and set up a recording's preparation, and say where its windows will be.

    Takes what :func:`iter_tokens` takes; nothing is filtered until
    :meth:`WindowPlan.batches` runs. Use it for each window's time and event.
    """
    locked = events is not None or event_id is not None
    if _is_epochs(source):
        if locked or tmin is not None or tmax is not None:
            raise NeurofmError(
                "an mne.Epochs is already cut around its events: drop events=/event_id=/tmin/"
                "tmax (epochs.crop(tmin, tmax) changes the cut), or pass the recording with "
                "events= instead"
            )
        recipe = as_recipe(recipe, "eeg") if not _is_fmri_recipe(recipe) else None
        if recipe is None:
            raise NeurofmError("an mne.Epochs is EEG: tokenize it with a neurofm.Recipe")
        return _epochs_plan(source, recipe, picks, read_kwargs)
    if not locked and (tmin is not None or tmax is not None):
        raise NeurofmError(
            "tmin/tmax place windows around events: give events= (an MNE events array, "
            "onsets in seconds, or 'annotations' with event_id=), or set the regular windows "
            "with the recipe's window_seconds"
        )
    adjust = (lambda r: _event_recipe(r, tmin, tmax)) if locked else None  # noqa: E731
    grid, recipe = _prepare(source, recipe, picks, chunk_seconds, read_kwargs, adjust)
    W, n = recipe.window_len, grid.n_samples
    if not locked:
        return WindowPlan(recipe, grid, np.arange(0, n - W + 1, recipe.stride_len))
    tmin = 0.0 if tmin is None else float(tmin)
    onsets, index, labels = _event_onsets(events, event_id, grid)
    starts = np.rint((onsets + tmin) / recipe.seconds(1)).astype(np.int64)
    inside = (starts >= 0) & (starts + W <= n)
    if not inside.all():
        out = np.flatnonzero(~inside)
        shown = ", ".join(f"{index[i]} at {onsets[i]:.3f} s" for i in out[:6])
        more = f" and {len(out) - 6} more" if len(out) > 6 else ""
        span = f"{tmin:g} to {tmin + recipe.window_seconds:g} s"
        total = recipe.seconds(n)
        msg = (f"{len(out)} of {len(onsets)} events have no whole window ({span} around the "
               f"event) inside the recording (0 to {total:.3f} s): event {shown}{more}")  # fmt: skip
        if not inside.any():
            raise SignalError(f"{msg}. Use tmin/tmax that fit, or check that the events are "
                              "in seconds (or MNE samples) from this recording's start")  # fmt: skip
        warn(f"{msg}; dropped", SignalWarning, stacklevel=3)
    order = np.flatnonzero(inside)[np.argsort(starts[inside], kind="stable")]
    return WindowPlan(
        recipe, grid, starts[order], event=index[order], onset=onsets[order],
        label=None if labels is None else [labels[i] for i in order],
        dropped=np.sort(index[~inside]), tmin=tmin,
    )  # fmt: skip


# ---------------------------------------------------------------------- events
def _is_epochs(source) -> bool:
    import mne

    return isinstance(source, mne.BaseEpochs)


def _is_fmri_recipe(recipe) -> bool:
    return isinstance(recipe, dict | EEGRecipe | FMRIRecipe) and _modality(recipe) == "fmri"


def _n_patches(seconds: float, patch_seconds: float) -> int:
    """``seconds`` as whole patches: 0.5 rounds up (not to even, as ``round`` would)."""
    return int(math.floor(seconds / patch_seconds + 0.5 + 1e-9))


def _event_recipe(recipe, tmin, tmax):
    """The recipe whose one window spans ``tmax - tmin`` rounded to whole patches."""
    tmin = 0.0 if tmin is None else check_finite(tmin, "tmin")
    tmax = tmin + recipe.window_seconds if tmax is None else check_finite(tmax, "tmax")
    if tmax <= tmin:
        raise NeurofmError(f"tmax={tmax:g} must be after tmin={tmin:g} (seconds from the event)")
    ps = recipe.patch_seconds
    n = _n_patches(tmax - tmin, ps)
    if n < 1:
        raise NeurofmError(
            f"tmin={tmin:g} to tmax={tmax:g} s is less than half a patch ({ps:g} s): windows "
            f"are whole patches; use tmax >= tmin + {ps / 2:g}"
        )
    if abs(n * ps - (tmax - tmin)) > 0.5 * recipe.seconds(1):
        warn(f"tmin={tmin:g} to tmax={tmax:g} s is {(tmax - tmin) / ps:g} patches of {ps:g} s; "
             f"windows are whole patches, so each spans {tmin:g} to {tmin + n * ps:g} s around "
             "its event", NeurofmWarning, stacklevel=5)  # fmt: skip
    if recipe.modality == "fmri":
        return recipe.replace(window_patches=n, stride_patches=None)
    return recipe.replace(window_seconds=n * ps, stride_seconds=None)


def _event_onsets(events, event_id, grid: _Grid):
    """(onsets in seconds from the first sample, index in ``events``, labels or None)."""
    raw = grid.raw
    if events is None or (isinstance(events, str) and events == ANNOTATIONS):
        if raw is None:
            raise NeurofmError(
                "events from annotations need an EEG recording with annotations; give the "
                "onsets instead: events=[12.5, 40.0, ...] (seconds from the run's start)"
            )
        return _annotation_onsets(raw, event_id)
    if isinstance(events, str):
        raise NeurofmError(
            f"events={events!r}: give an MNE events array (n, 3), onsets in seconds, or "
            f"'{ANNOTATIONS}' (with event_id= naming descriptions)"
        )
    try:
        ev = np.asarray(events, dtype=float)
    except (TypeError, ValueError):
        raise NeurofmError(
            f"events must be an MNE events array (n, 3) or onsets in seconds, got "
            f"{type(events).__name__}"
        ) from None
    if ev.ndim == 1:
        if event_id is not None:
            raise NeurofmError(
                "event_id selects events by code or annotation: onsets in seconds carry "
                "neither; select the onsets yourself, or give an MNE events array (n, 3)"
            )
        if not np.isfinite(ev).all():
            raise NeurofmError("events (onsets in seconds) hold NaN or inf")
        return ev, np.arange(len(ev)), None
    if ev.ndim != 2 or ev.shape[1] != 3:
        raise NeurofmError(
            f"events has shape {ev.shape}: give an MNE events array (n, 3): sample, previous "
            "value, code (mne.find_events, mne.events_from_annotations), or a 1-D sequence "
            "of onsets in seconds"
        )
    if raw is None:
        raise NeurofmError(
            "an MNE events array counts EEG samples; for an fMRI run give the onsets in "
            "seconds: events=[12.5, 40.0, ...]"
        )
    if not np.isfinite(ev).all() or (ev != np.round(ev)).any():
        raise NeurofmError("an MNE events array holds whole numbers (sample, previous, code)")
    ev = ev.astype(np.int64)
    codes, keep, names = ev[:, 2], np.ones(len(ev), bool), {}
    if event_id is not None:
        if isinstance(event_id, dict):
            names = {int(v): str(k) for k, v in event_id.items()}
            wanted = set(names)
        else:
            wanted = {int(c) for c in np.atleast_1d(event_id)}
        keep = np.isin(codes, sorted(wanted))
        if not keep.any():
            raise NeurofmError(
                f"no event has a code in event_id={event_id!r}; the events' codes are "
                f"{sorted(set(codes.tolist()))}"
            )
    index = np.flatnonzero(keep)
    onsets = (ev[index, 0] - raw.first_samp) / raw.info["sfreq"]
    labels = [names.get(int(c), str(int(c))) for c in codes[index]]
    return onsets, index, labels


def _annotation_onsets(raw, event_id):
    """Onsets (s), indices among the matching annotations, and their descriptions."""
    import mne

    descriptions = sorted(set(raw.annotations.description))
    if isinstance(event_id, str):
        event_id = [event_id]
    if isinstance(event_id, dict):
        wanted = {str(k): int(v) for k, v in event_id.items()}
    elif event_id is not None:
        wanted = {str(d): i + 1 for i, d in enumerate(event_id)}
    else:
        wanted = None
    for name in wanted or ():
        if name not in descriptions:
            raise NeurofmError(
                f"event_id names {name!r}, which no annotation of this recording has"
                f"{did_you_mean(name, descriptions)}; its annotations: {descriptions[:12]}"
            )
    if not descriptions:
        raise NeurofmError("the recording has no annotations: give events= (MNE events or "
                           "onsets in seconds)")  # fmt: skip
    ev, ids = mne.events_from_annotations(raw, event_id=wanted or "auto", verbose="error")
    if not len(ev):
        raise NeurofmError(f"no annotation is an event (all are BAD/EDGE): {descriptions[:12]}")
    names = {v: k for k, v in ids.items()}
    onsets = (ev[:, 0] - raw.first_samp) / raw.info["sfreq"]
    return onsets, np.arange(len(ev)), [names[int(c)] for c in ev[:, 2]]


def _epochs_plan(epochs, recipe: EEGRecipe, picks, read_kwargs) -> WindowPlan:
    """One window per epoch, each epoch prepared on its own (see the module docstring)."""
    import mne
    from einops import rearrange

    from .io.eeg import read_eeg
    from .preprocess.eeg import Stream, detect_line_noise

    epochs = epochs if epochs.preload else epochs.copy().load_data()
    data = epochs.get_data(copy=False)  # (E, C, T) volts
    E, _, T = data.shape
    if E == 0:
        raise SignalError("the Epochs hold no epoch (all dropped?): nothing to encode")
    sfreq = epochs.info["sfreq"]
    whole = mne.io.RawArray(rearrange(data, "e c t -> c (e t)"), epochs.info.copy(),
                            verbose="error")  # fmt: skip
    table = ChannelTable.of(epochs)
    if table is None or read_kwargs:
        whole = read_eeg(whole, **read_kwargs)
    else:
        table.attach(whole)
    probe = Stream(whole, recipe.replace(notch=None, window_seconds=recipe.patch_seconds),
                   picks=picks)  # fmt: skip
    names = probe.ch_names
    if recipe.notch == "auto":  # once for all epochs, as a recording's first 120 s decide
        line = detect_line_noise(whole.get_data(picks=names, stop=int(120 * sfreq)), sfreq)
        recipe = recipe.replace(notch=line)
    n_out = round(T * probe.up / probe.down)
    dur = epochs.times[-1] - epochs.times[0]
    n = min(_n_patches(dur, recipe.patch_seconds), n_out // recipe.patch_len)
    if n < 1:
        raise SignalError(
            f"epochs of {dur:.3g} s are shorter than one patch ({recipe.patch_seconds:g} s): "
            "cut longer epochs"
        )
    recipe = recipe.replace(window_seconds=n * recipe.patch_seconds, stride_seconds=None)
    probe = Stream(whole, recipe, picks=names)  # the set-up every epoch gets (for reports)
    table = ChannelTable.of(whole).select(names)
    onset = epochs.events[:, 0] / sfreq
    starts = np.rint((onset + epochs.times[0]) * recipe.sfreq).astype(np.int64)

    def windows():
        W = recipe.window_len
        for e in range(E):
            part = mne.io.RawArray(data[e], whole.info, verbose="error")
            table.attach(part)
            stream = Stream(part, recipe, picks=names, chunk_seconds=max(1.0, T / sfreq + 1))
            y, taint = stream.block(0, W)
            yield int(starts[e]), y, np.zeros(y.shape, bool) if taint is None else taint

    grid = _Grid(
        names=table.names, space=table.ids(), pos=table.positions(whole), blocks=(),
        n_samples=n_out, flat_units=recipe.flat_threshold / recipe.unit_scale,
        normalize=recipe.normalize == "channel", stream=probe, raw=whole, windows=windows,
    )  # fmt: skip
    inverse = {v: k for k, v in epochs.event_id.items()}
    labels = [inverse.get(int(c), str(int(c))) for c in epochs.events[:, 2]]
    return WindowPlan(recipe, grid, starts, event=np.asarray(epochs.selection), onset=onset,
                      label=labels, tmin=float(epochs.times[0]), epochs=True)  # fmt: skip


# ---------------------------------------------------------------------- windowing
def _windows(blocks, W: int, starts) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start, window (S, W), taint (S, W)) at ``starts`` (ascending samples) from
    consecutive (S, n) blocks; blocks after the last window are not read."""
    starts = iter(starts)
    nxt = next(starts, None)
    buf = taint = None
    buf_start = 0
    for y, tnt in blocks:
        if nxt is None:
            return
        tnt = np.zeros(y.shape, bool) if tnt is None else tnt
        buf = y if buf is None else np.concatenate([buf, y], axis=1)
        taint = tnt if taint is None else np.concatenate([taint, tnt], axis=1)
        while nxt is not None and nxt + W <= buf_start + buf.shape[1]:
            i = int(nxt) - buf_start
            yield int(nxt), buf[:, i : i + W], taint[:, i : i + W]
            nxt = next(starts, None)
        upto = buf_start + buf.shape[1] if nxt is None else int(nxt)
        drop = min(upto - buf_start, buf.shape[1])
        buf, taint, buf_start = buf[:, drop:], taint[:, drop:], buf_start + drop


def _tokens(pending, grid: _Grid, recipe) -> Tokens:
    """One batch of windows as Tokens."""
    P, N, B = recipe.patch_len, recipe.window_patches, len(pending)
    starts = np.array([s for s, _, _ in pending])
    x = patchify(np.stack([w for _, w, _ in pending]), P)  # (B, S, N, P)
    mask = ~patchify(np.stack([t for _, _, t in pending]), P).any(axis=-1)
    if grid.flat_units is not None:
        mask &= x.std(axis=-1) > grid.flat_units
    if grid.normalize:
        mu = x.mean(axis=(2, 3), keepdims=True)
        sd = x.std(axis=(2, 3), keepdims=True)
        x = (x - mu) / np.maximum(sd, 1e-6)
    t = recipe.seconds(starts[:, None] + np.arange(N)[None, :] * P)
    return Tokens(
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        space=torch.as_tensor(grid.space, dtype=torch.long).expand(B, -1).clone(),
        pos=torch.as_tensor(grid.pos, dtype=torch.float32).expand(B, -1, -1).clone(),
        t=torch.as_tensor(t, dtype=torch.float32),
        mask=torch.from_numpy(mask),
        names=[grid.names] * B,
    )


def _batched(items, n: int):
    """Lists of up to n consecutive items (itertools.batched, Python 3.12)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------- sources
def _prepare(source, recipe, picks, chunk_seconds, read_kwargs, adjust=None):
    """The grid of a source and the recipe it is cut with, by the recipe's modality.

    ``adjust(recipe) -> recipe`` (event-locked windows) runs before the grid checks that
    the recording holds a window.
    """
    adjust = adjust or (lambda r: r)
    if recipe is None:
        modality = "fmri" if _looks_fmri(source) else "eeg"
    else:
        modality = _modality(recipe) if isinstance(recipe, dict | EEGRecipe | FMRIRecipe) else "eeg"
        check_option("recipe modality", modality, MODALITIES)
    if modality == "eeg":
        recipe = adjust(as_recipe(recipe, "eeg"))
        return _eeg_grid(source, recipe, picks, chunk_seconds, read_kwargs), recipe
    if picks is not None:
        raise NeurofmError(
            "picks= selects EEG channels; select parcels on the series instead "
            "(series.isel(parcel=...): each keeps its atlas_index, so space='atlas' ids hold)"
        )
    recipe = None if recipe is None else as_recipe(recipe, "fmri")
    return _fmri_grid(source, recipe, read_kwargs, adjust)


def _looks_fmri(source) -> bool:
    if isinstance(source, str | Path):
        return str(source).lower().endswith(NIFTI_SUFFIXES)
    return type(source).__module__.split(".")[0] in ("xarray", "nibabel")


def _eeg_grid(source, recipe: EEGRecipe, picks, chunk_seconds, read_kwargs) -> _Grid:
    import mne

    from .io.eeg import read_eeg
    from .preprocess.eeg import Stream

    if _looks_fmri(source):
        raise NeurofmError(
            f"{Path(source).name if isinstance(source, str | Path) else type(source).__name__} "
            "looks like fMRI (a parcel series or a NIfTI run) but the recipe is an EEG one: "
            "tokenize it with a neurofm.FMRIRecipe"
        )
    canonical = isinstance(source, mne.io.BaseRaw) and ChannelTable.of(source) is not None
    raw = source if canonical and not read_kwargs else read_eeg(source, **read_kwargs)
    stream = Stream(raw, recipe, picks=picks, chunk_seconds=chunk_seconds)
    table = (ChannelTable.of(raw) or ChannelTable((), ())).select(stream.ch_names)
    space, pos = table.ids(), table.positions(raw)
    _check_placeable(raw, table.names, space, pos)
    return _Grid(
        names=table.names,
        space=space,
        pos=pos,
        blocks=((y, taint) for _, y, taint in stream.blocks()),
        n_samples=stream.n_out,
        flat_units=recipe.flat_threshold / recipe.unit_scale,
        normalize=recipe.normalize == "channel",
        stream=stream,
        raw=raw,
    )


def _check_placeable(raw, names, space, pos) -> None:
    """Refuse a recording none of whose channels a model can place (no known name, no
    position): ``read_eeg`` reads it, to look at; tokenizing it needs places."""
    from .channels import UNK, map_channels

    unplaced = (np.asarray(space) == UNK) & np.isnan(np.asarray(pos, dtype=float)).any(-1)
    if len(names) and unplaced.all():
        files = raw.filenames
        label = Path(files[0]).name if files and files[0] else "the recording"
        raise ChannelError(
            f"{label}: none of the {len(names)} EEG channel names is a 10-05 electrode or a "
            f"bipolar pair of them (e.g. {list(names[:4])}), and the file has no positions, so "
            f"the model cannot place them. Fix: {map_channels(list(names)).hint}"
        )


def _fmri_grid(source, recipe: FMRIRecipe | None, read_kwargs,
               adjust=None) -> tuple[_Grid, FMRIRecipe]:  # fmt: skip
    import xarray as xr

    from .preprocess.fmri import parcel_coords

    if not isinstance(source, xr.DataArray):
        if type(source).__module__.split(".")[0] == "mne":
            _not_a_series(source, " (an FMRIRecipe tokenizes fMRI; EEG takes a neurofm.Recipe)")
        from .io.fmri import read_fmri

        source = read_fmri(source, recipe=recipe, **read_kwargs)
    elif read_kwargs:
        raise NeurofmError(f"{sorted(read_kwargs)} are read_fmri's options; the series is read")
    series = source
    if set(series.dims) != {"time", "parcel"}:
        _not_a_series(series)
    recipe = _series_recipe(series, recipe)
    recipe = recipe if adjust is None else adjust(recipe)
    if series.dtype.kind not in "fiu":
        raise NeurofmError(f"the series holds {series.dtype} values, not numbers")
    x = np.asarray(series.transpose("time", "parcel").values, dtype=np.float32).T  # (S, T)
    S, T = x.shape
    if not S:
        raise SignalError("the series has no parcel")
    W, P = recipe.window_len, recipe.patch_len
    if T < W:
        raise SignalError(
            f"the run has {T} TRs ({T * recipe.t_r:g} s) but a window needs {W} "
            f"({W * recipe.t_r:g} s): use window_patches={max(T // P, 1)} or a longer run"
        )
    taint = ~np.isfinite(x)
    grid = _Grid(
        names=tuple(str(n) for n in series["parcel"].values),
        space=np.full(S, UNK) if recipe.space == "coords" else _atlas_ids(series),
        pos=parcel_coords(series),
        blocks=[(np.where(taint, np.float32(0), x), taint)],
        n_samples=T,
        series=series,
    )
    return grid, recipe


def _atlas_ids(series) -> np.ndarray:
    """``space='atlas'`` ids: 2 + each parcel's index in its atlas (kept through selections)."""
    if "atlas_index" not in series.coords:
        raise NeurofmError(
            "space='atlas' needs each parcel's index in its atlas (the 'atlas_index' "
            "coordinate read_fmri writes when it reads with an atlas): read the run with "
            "atlas=, or use space='coords'"
        )
    return np.asarray(series["atlas_index"].values, dtype=np.int64) + 2


def _series_recipe(series, recipe: FMRIRecipe | None) -> FMRIRecipe:
    """The recipe a series is cut with; refused when the series was prepared otherwise."""
    if "t_r" in series.attrs:
        series_tr = check_tr(series.attrs["t_r"], "the series' attrs['t_r']")
    elif recipe is None:
        raise NeurofmError(
            "the series carries no attrs['t_r']: read it with read_fmri, or pass the recipe "
            "whose TR it has"
        )
    else:
        series_tr = recipe.t_r
    recipe = recipe or FMRIRecipe(t_r=series_tr)
    if abs(series_tr - recipe.t_r) > 1e-6:
        raise NeurofmError(
            f"the series is at TR {series_tr} s but the recipe's is {recipe.t_r} s: "
            "read it with read_fmri(..., recipe=recipe), which resamples"
        )
    atlas = series.attrs.get("atlas")
    ids = " (space='atlas': its ids are that atlas's parcels)" if recipe.space == "atlas" else ""
    if recipe.atlas and atlas != recipe.atlas and (atlas is not None or ids):
        raise NeurofmError(
            f"the series uses atlas {atlas!r} but the recipe was trained on {recipe.atlas!r}"
            f"{ids}: extract with that atlas, or use space='coords'"
        )
    return recipe


def _not_a_series(source, hint: str = "") -> None:
    import xarray as xr

    got = (f"a DataArray with dims {source.dims}" if isinstance(source, xr.DataArray)
           else f"{type(source).__name__} {getattr(source, 'shape', '')}")  # fmt: skip
    raise NeurofmError(
        f"tokenize_fmri (and tokenize with an FMRIRecipe) takes the (time, parcel) DataArray "
        f"that read_fmri returns, got {got}{hint}: for an array of parcel series, "
        "tokenize_fmri(read_fmri(array, t_r=...), recipe)"
    )
