"""``neurofm.encode``: a recording in, embeddings out, prepared by the model's own recipe.

::

    feats = neurofm.encode("rec.edf")                                # (window, feature)
    feats = neurofm.encode(raw, "eeg-tiny.sample", pooling="channel")  # (window, channel, feature)
    feats = neurofm.encode(array, ch_names=names, sfreq=160.0)      # volts, channels x samples
    feats = neurofm.encode(raw, event_id=["T1", "T2"], tmin=0, tmax=4)  # one window per event
    feats = neurofm.encode(epochs)                                    # one window per epoch
    feats = neurofm.encode(series, "runs/fmri-model", pooling="region")  # fMRI networks
    print(feats.attrs["report"])  # "resampled 160 -> 200 Hz; 64 channels: 64 renamed; ..."

The model's recipe (in every checkpoint) says how data are prepared: resampling,
filtering, units and channel mapping are applied here, and what was done is said in
``attrs["report"]``. Windows come from :mod:`neurofm.windows` (the same path as
:func:`neurofm.tokenize`), batch by batch, so a long recording is never loaded whole.

Pooling
-------
Features are read at the output of one block (``layer``; default the last) and go through
the encoder's final norm, as the encoder's own outputs do (timm's
``forward_intermediates(norm=True)``), so ``layer=-1`` is the default. Averages are taken
before the norm, as the encoder's mean pooling does, and over real tokens only (padding,
flat and non-finite patches are left out); a group with no real token is NaN.

=========  ===========================================  ===================================
pooling    dims                                         what
=========  ===========================================  ===================================
mean       (window, feature)                            every real token of the window
cls        (window, feature)                            the [CLS] token (models with one)
channel    (window, channel, feature)                   per channel, over its time patches
region     (window, region, feature)                    per scalp region / fMRI network
none       (window, channel, patch, feature)            every token (NaN where not real)
=========  ===========================================  ===================================

(fMRI: ``parcel`` instead of ``channel``.) Mean pooling over all channels erases
left-right differences by construction; ``channel`` and ``region`` keep them.

**Scalp regions** (:func:`scalp_region`) come from a 10-20 name's letters and number:
the letters give the lobe, the number the side (odd: left, even: right, ``z``: midline),
e.g. ``C3`` -> ``central-left``, ``POz`` -> ``occipital-midline``:

- frontal: ``Fp``, ``AF``, ``F``;  central: ``FC``, ``C``, ``CP``;
- temporal: ``FT``, ``T``, ``TP``;  parietal: ``P``;  occipital: ``PO``, ``O``, ``I``.

10-05 names between rows (``FFC1h``, ``CPP5h``, ``AFp3``) take the row their letters end
with (``FC``, ``P``, ``Fp``). A bipolar pair (``Fp1-F7``) belongs where its first
electrode does. Names that are no 10-05 electrode (unknown channels, ``A1``/``M1``
ear and mastoid, ``Nz``) form the region ``other``.

**fMRI networks** come from Schaefer-style parcel names (``7Networks_LH_Vis_1`` ->
``Vis``); other atlases' names carry no network, and ``region`` pooling says so.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from einops import einsum, rearrange

from .errors import (
    CheckpointError,
    NeurofmError,
    SignalError,
    check_option,
    logger,
    validate_type,
)

POOLINGS = ("mean", "cls", "channel", "region", "none")
OUTPUTS = ("xarray", "numpy", "torch")
DEFAULT_MODEL = "eeg-tiny.sample"

#: 10-20 letters -> lobe (see the module docstring)
LOBES = {"FP": "frontal", "AF": "frontal", "F": "frontal", "FC": "central", "C": "central",
         "CP": "central", "FT": "temporal", "T": "temporal", "TP": "temporal",
         "P": "parietal", "PO": "occipital", "O": "occipital", "I": "occipital"}  # fmt: skip
_LOBE_ORDER = ("frontal", "central", "temporal", "parietal", "occipital")
_SIDE_ORDER = ("left", "midline", "right")
_ELECTRODE = re.compile(r"^([A-Za-z]+?)(\d+|z|Z)h?$")
_SCHAEFER = re.compile(r"^\d+Networks_(LH|RH)_([A-Za-z]+)_")
_EEG_SUFFIXES = (".edf", ".bdf", ".gdf", ".vhdr", ".set", ".fif", ".fif.gz", ".cnt", ".eeg",
                 ".lay", ".mff", ".cdt", ".data", ".nxe", ".nedf", ".rec")  # fmt: skip


# ---------------------------------------------------------------------- regions
def scalp_region(name: str) -> str:
    """The scalp region of a 10-20/10-05 channel name: ``'C3'`` -> ``'central-left'``.

    See the module docstring for the rule; names it cannot place give ``'other'``.
    """
    first = str(name).split("-")[0].strip()
    m = _ELECTRODE.match(first)
    if not m:
        return "other"
    letters, number = m.group(1).upper(), m.group(2)
    while letters and letters not in LOBES:
        letters = letters[1:]  # 'FFC' -> 'FC', 'CPP' -> 'PP' -> 'P', 'AFP' -> 'FP'
    if not letters:
        return "other"
    side = "midline" if number in "zZ" else ("left" if int(number) % 2 else "right")
    return f"{LOBES[letters]}-{side}"


def _region_order(region: str) -> tuple:
    if region == "other" or "-" not in region:
        return (len(_LOBE_ORDER), 0, region)
    lobe, side = region.split("-", 1)
    return (_LOBE_ORDER.index(lobe), _SIDE_ORDER.index(side), region)


def regions_of(names, modality: str = "eeg") -> dict[str, list[int]]:
    """Region -> indices of ``names`` in it: scalp regions (EEG) or networks (fMRI)."""
    groups: dict[str, list[int]] = {}
    if modality == "fmri":
        hits = [_SCHAEFER.match(str(n)) for n in names]
        if not any(hits):
            raise NeurofmError(
                f"pooling='region' groups parcels by network, read from Schaefer-style names "
                f"('7Networks_LH_Vis_1'); these parcels' names carry none (e.g. "
                f"{[str(n) for n in names[:3]]}): use an atlas with networks (atlas="
                "'schaefer2018-400'), or pooling='channel' (one vector per parcel) and group "
                "them yourself"
            )
        for i, hit in enumerate(hits):
            groups.setdefault(hit.group(2) if hit else "other", []).append(i)
        return dict(sorted(groups.items(), key=lambda kv: (kv[0] == "other", kv[0])))
    for i, name in enumerate(names):
        groups.setdefault(scalp_region(name), []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: _region_order(kv[0])))


# ---------------------------------------------------------------------- model
def _load(model, random_init: bool):
    """(encoder, its name for the report)."""
    from torch import nn

    from .models import Encoder, create_model, load_model
    from .models.registry import MODELS, WEIGHTS

    if isinstance(model, nn.Module):
        if random_init:
            raise NeurofmError("random_init=True builds a model from a name; a model object "
                               "keeps its own weights")  # fmt: skip
        net, name = model, f"{getattr(getattr(model, 'config', None), 'name', 'model')} (given)"
    else:
        validate_type(model, "path-like", "model",
                      "a loaded model, a checkpoint folder or a weights name")  # fmt: skip
        text = str(model)
        if random_init:
            arch = WEIGHTS[text].model if text in WEIGHTS else text
            if arch not in MODELS:
                raise NeurofmError(
                    f"random_init=True builds a registered model by name; {text!r} is none "
                    f"(neurofm.models.list_models(): {', '.join(sorted(MODELS))})"
                )
            net, name = create_model(arch), f"{arch} (random weights)"
        else:
            try:
                net = load_model(model)
            except CheckpointError as err:
                if text in WEIGHTS or text in MODELS:
                    raise CheckpointError(
                        f"{err}\nencode never falls back to random weights; for a random-"
                        f"weights baseline ask for it: encode(..., model={text!r}, "
                        "random_init=True)"
                    ) from None
                raise
            name = text
    if not isinstance(net, Encoder):
        raise NeurofmError(
            f"encode takes an encoder (neurofm.models.Encoder), got {type(net).__name__}: load "
            "an encoder checkpoint, or pass its encoder"
        )
    return net, name


def _modality_of(data) -> str | None:
    """'eeg', 'fmri', or None when the data could be either (arrays, tables)."""
    import mne

    if isinstance(data, mne.io.BaseRaw | mne.BaseEpochs):
        return "eeg"
    module = type(data).__module__.split(".")[0]
    if module in ("xarray", "nibabel"):
        return "fmri"
    if isinstance(data, str | Path):
        name = str(data).lower()
        if name.endswith((".nii", ".nii.gz")):
            return "fmri"
        if name.endswith(_EEG_SUFFIXES):
            return "eeg"
    return None


def _what(data) -> str:
    if isinstance(data, str | Path):
        return Path(data).name
    return f"a {type(data).__module__.split('.')[0]}.{type(data).__name__}"


def _device(device) -> torch.device:
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise NeurofmError(f"device={device!r} is not a torch device ({err}): use 'auto', "
                           "'cpu', 'cuda', 'cuda:1' or 'mps'") from None  # fmt: skip


def _dtype(dtype) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), dtype)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise NeurofmError(f"dtype={dtype!r}: use torch.float32 (default), torch.bfloat16 or "
                           "torch.float16 (GPU)")  # fmt: skip
    return dtype


def _layer(layer, depth: int) -> int:
    if layer is None:
        return depth - 1
    validate_type(layer, int, "layer", "an int (a block index; negative counts from the end)")
    if not -depth <= layer < depth:
        raise NeurofmError(
            f"layer={layer} is out of range: this model has {depth} blocks, so layer is "
            f"0..{depth - 1} (or -{depth}..-1 from the end; default: the last, -1)"
        )
    return layer % depth


def _windowed(recipe, window_seconds, stride_seconds):
    """The model's recipe with the window and stride asked for."""
    if window_seconds is None and stride_seconds is None:
        return recipe
    if recipe.modality == "eeg":
        changes = {}
        if window_seconds is not None:
            changes["window_seconds"] = window_seconds
        if stride_seconds is not None:
            changes["stride_seconds"] = stride_seconds
        return recipe.replace(**changes)
    changes, ps = {}, recipe.patch_seconds
    for key, value in (("window_patches", window_seconds), ("stride_patches", stride_seconds)):
        if value is None:
            continue
        n = value / ps
        if abs(n - round(n)) > 1e-6 or round(n) < 1:
            raise NeurofmError(f"{key.split('_')[0]}_seconds={value:g} is not a whole number "
                               f"of patches ({ps:g} s = {recipe.patch_trs} TRs)")  # fmt: skip
        changes[key] = round(n)
    return recipe.replace(**changes)


# ---------------------------------------------------------------------- reading
def _read(data, recipe, ch_names, sfreq, read_kwargs):
    """EEG: (canonical Raw or Epochs, channel report text or None). fMRI: (series, notes)."""
    import mne

    if recipe.modality == "eeg":
        from .channels import ChannelTable
        from .io.eeg import read_eeg

        is_array = isinstance(data, np.ndarray) or (
            hasattr(data, "__array__") and not isinstance(data, mne.io.BaseRaw | mne.BaseEpochs)
        )
        if is_array:
            shape = np.shape(data)
            if sfreq is None:
                raise NeurofmError(
                    f"an array {shape} carries no sampling rate: pass sfreq= (Hz), e.g. "
                    "encode(array, ch_names=[...], sfreq=160.0)"
                )
            if ch_names is None:
                raise NeurofmError(
                    f"an array {shape} carries no channel names: pass ch_names= (one per row, "
                    "10-20 names such as 'C3' let the model place them)"
                )
            return _report_read(read_eeg(data, sfreq=sfreq, ch_names=ch_names,
                                         return_report=True, **read_kwargs))  # fmt: skip
        if ch_names is not None or sfreq is not None:
            raise NeurofmError(
                f"ch_names= and sfreq= describe a NumPy array; {_what(data)} carries its own "
                "(rename channels with rename={old: new})"
            )
        if isinstance(data, mne.BaseEpochs):
            return data, None
        canonical = isinstance(data, mne.io.BaseRaw) and ChannelTable.of(data) is not None
        if canonical and not read_kwargs:
            return data, None  # read by read_eeg already
        return _report_read(read_eeg(data, return_report=True, **read_kwargs))
    import xarray as xr

    if ch_names is not None or sfreq is not None:
        raise NeurofmError("ch_names= and sfreq= are for EEG arrays; an fMRI table takes "
                           "t_r= (and atlas=, labels=, coords=)")  # fmt: skip
    if isinstance(data, xr.DataArray):
        if read_kwargs:
            raise NeurofmError(f"{sorted(read_kwargs)} are read_fmri's options; the series "
                               "is read already")  # fmt: skip
        if "source_t_r" in data.attrs:  # from read_fmri: prepared (tokenize checks the TR)
            return data, None
        from .preprocess.fmri import preprocess_fmri

        return preprocess_fmri(data, recipe), "prepared with the model's recipe"
    from .io.fmri import read_fmri

    image = _modality_of(data) == "fmri"
    if image and read_kwargs.get("atlas") is None and recipe.atlas is None:
        raise NeurofmError(
            f"{_what(data)} is an fMRI image: name the atlas to extract parcels with, "
            "encode(..., atlas='schaefer2018-400') (the model's recipe names none)"
        )
    kwargs = {"atlas": recipe.atlas, **read_kwargs} if image else read_kwargs
    return read_fmri(data, recipe=recipe, **kwargs), "read and prepared with the model's recipe"


def _report_read(result):
    raw, report = result
    counts = {s: 0 for s in ("kept", "renamed", "unknown", "dropped")}
    for c in report.channels:
        counts[c.status] += 1
    n = len(report.channels) - counts["dropped"]
    parts = [f"{counts['renamed']} renamed"] if counts["renamed"] else []
    if counts["dropped"]:
        parts.append(f"{counts['dropped']} dropped ({', '.join(list(report.dropped)[:4])}"
                     f"{' ...' if counts['dropped'] > 4 else ''})")  # fmt: skip
    return raw, f"{n} channels" + (": " + ", ".join(parts) if parts else "")


# ---------------------------------------------------------------------- report
def _report(plan, channels: str | None, name: str, layer: int, depth: int, pooling: str) -> str:
    recipe, grid = plan.recipe, plan.grid
    parts = []
    if recipe.modality == "eeg":
        stream = grid.stream
        if abs(stream.sfreq_in - recipe.sfreq) > 1e-9:
            parts.append(f"resampled {stream.sfreq_in:g} -> {recipe.sfreq:g} Hz")
        else:
            parts.append(f"{recipe.sfreq:g} Hz as recorded")
        band = f"filtered {recipe.l_freq or 0:g}-{recipe.h_freq or recipe.sfreq / 2:g} Hz"
        notch = stream.notch_freqs
        band += f", notch {', '.join(f'{f:g}' for f in notch)} Hz" if notch else ", no notch"
        parts.append(band)
        parts.append(f"units: 1 = {recipe.unit_scale * 1e6:g} uV")
        unknown = int((grid.space == 1).sum())
        if channels is None:
            channels = f"{len(grid.names)} channels"
        if unknown:  # the UNK id: placed by their positions, or by nothing
            placed = int(np.isfinite(grid.pos[grid.space == 1]).all(1).sum())
            how = ("encoded by position" if placed == unknown else
                   f"{placed} encoded by position, {unknown - placed} with no position")  # fmt: skip
            channels += f"{', ' if ':' in channels else ': '}{unknown} unknown, {how}"
        parts.append(channels)
    else:
        series = grid.series
        src = series.attrs.get("source_t_r") if series is not None else None
        if src is not None and abs(src - recipe.t_r) > 1e-9:
            parts.append(f"resampled TR {src:g} -> {recipe.t_r:g} s")
        else:
            parts.append(f"TR {recipe.t_r:g} s")
        if channels:
            parts.append(channels)
        empty = int((~np.isfinite(series.values)).all(0).sum()) if series is not None else 0
        atlas = series.attrs.get("atlas") if series is not None else None
        parts.append(f"{len(grid.names)} parcels" + (f" of {atlas}" if atlas else "")
                     + (f" ({empty} empty, masked)" if empty else ""))  # fmt: skip
    W = recipe.window_seconds
    if plan.epochs:
        parts.append(f"{plan.n_windows} epochs, one window of {W:g} s each (each epoch "
                     "filtered on its own)")  # fmt: skip
    elif plan.event is not None:
        dropped = f", {len(plan.dropped)} dropped at the edges" if len(plan.dropped) else ""
        parts.append(f"{plan.n_windows} windows at events, {plan.tmin:g} to "
                     f"{plan.tmin + W:g} s{dropped}")  # fmt: skip
    else:
        stride = recipe.seconds(recipe.stride_len)
        rest = recipe.seconds(grid.n_samples) - (plan.seconds[-1] + W)
        parts.append(f"{plan.n_windows} windows of {W:g} s every {stride:g} s"
                     + (f" (last {rest:.3g} s unused)" if rest > 1e-9 else ""))  # fmt: skip
    which = "last block" if layer == depth - 1 else f"block {layer} of {depth}"
    parts.append(f"{name}: {which}, pooling {pooling}")
    return "; ".join(parts)


# ---------------------------------------------------------------------- encode
def encode(data, model=DEFAULT_MODEL, *, pooling: str = "mean", layer: int | None = None,
           events=None, event_id=None, tmin: float | None = None, tmax: float | None = None,
           window_seconds: float | None = None, stride_seconds: float | None = None,
           ch_names=None, sfreq: float | None = None, picks=None, device="auto",
           batch_size: int = 32, dtype=None, output: str = "xarray", random_init: bool = False,
           progress: bool | None = None, verbose: bool = False, **read_kwargs):  # fmt: skip
    """Embeddings of a recording, prepared with the model's own recipe.

    Parameters
    ----------
    data : path | mne.io.Raw | mne.Epochs | ndarray | xarray.DataArray | nibabel image
        EEG: a file in any format :func:`~neurofm.read_eeg` reads, a Raw, an Epochs (one
        window per epoch), or an ``(n_channels, n_times)`` array in volts with
        ``ch_names`` and ``sfreq``. fMRI: a NIfTI path or image (``atlas=``, default the
        recipe's), a parcel table (``t_r=``), or the (time, parcel) DataArray of
        :func:`~neurofm.read_fmri` / :func:`~neurofm.io.read_parcels` (prepared here if
        it was only read).
    model : str | Path | Encoder
        A weights name (default ``"eeg-tiny.sample"``, shipped: works offline), a
        checkpoint folder, ``"hf://owner/repo"``, or a loaded encoder (moved to
        ``device`` in place; its train/eval mode is restored afterwards). Weights that
        are not there raise :class:`~neurofm.errors.CheckpointError` naming how to get
        them, never random features.
    pooling : {"mean", "cls", "channel", "region", "none"}
        See the module docstring.
    layer : int | None
        The block whose output is read (negative: from the end); None: the last.
    events, event_id, tmin, tmax
        One window per event (an MNE events array, onsets in seconds, or annotations
        with ``event_id``), from ``tmin`` to ``tmax`` seconds around it: see
        :mod:`neurofm.windows`.
    window_seconds, stride_seconds : float | None
        Regular windows; default the recipe's (EEG: whole patches; fMRI: whole patches
        of ``patch_trs`` TRs).
    ch_names, sfreq
        For an array: one name per row, and the sampling rate in Hz.
    picks : list of str | None
        EEG channels to encode (canonical names); default all.
    device : "auto" | str | torch.device
        ``"auto"``: CUDA, else MPS, else the CPU.
    batch_size : int
        Windows per forward pass.
    dtype : torch.dtype | str | None
        Compute type under autocast (``torch.bfloat16`` on a GPU); None: float32.
        Features are returned as float32.
    output : {"xarray", "numpy", "torch"}
    random_init : bool
        Encode with a registered model's random initialisation (``model="eeg-base"``):
        a baseline, asked for explicitly.
    progress : bool | None
        A progress bar over windows; None: when stderr is a terminal.
    verbose : bool
        Print the report (it is always logged at INFO level on the ``neurofm`` logger).
    **read_kwargs
        Passed to the reader: ``read_eeg`` (``units=``, ``rename=``, ``montage=`` ...)
        or ``read_fmri`` (``atlas=``, ``t_r=``, ``confounds=`` ...).

    Returns
    -------
    xarray.DataArray | ndarray | torch.Tensor
        float32 features. The DataArray's dims follow ``pooling`` (module docstring);
        coordinates ``start`` (window start, s), for event-locked windows ``event``
        (index in ``events``; for Epochs ``epochs.selection``), ``onset`` (s) and
        ``label``; ``channel`` (or ``parcel``) names with ``x``/``y``/``z`` (MNI mm);
        ``region``; ``patch`` (patch start from the window start, s); ``real`` (tokens or
        channels that hold signal). ``attrs``: ``model``, ``recipe`` (JSON), ``report``,
        ``pooling``, ``layer``, ``modality``.

    Raises
    ------
    NeurofmError
        Bad input, each with its fix: an array without ``sfreq`` or with a channel count
        that does not match ``ch_names``, a recording shorter than one window, a model of
        the other modality, ``layer`` out of range, an unknown ``pooling``.
    CheckpointError
        Weights that are not there (offline, or never imported).
    """
    check_option("pooling", pooling, POOLINGS)
    check_option("output", output, OUTPUTS)
    validate_type(batch_size, int, "batch_size", "a whole number of windows")
    if batch_size < 1:
        raise NeurofmError(f"batch_size={batch_size} must be at least 1")
    dev, dt = _device(device), _dtype(dtype)
    net, name = _load(model, random_init)
    modality, given = net.config.modality, _modality_of(data)
    if given is not None and given != modality:
        words = {"eeg": "EEG", "fmri": "fMRI"}
        fix = ("an fMRI checkpoint (an fmri-* model, e.g. one pretrained with "
               "configs/pretrain/fmri_tiny_mae.yaml)" if given == "fmri"
               else f"an EEG model (e.g. {DEFAULT_MODEL!r}, shipped)")  # fmt: skip
        raise NeurofmError(
            f"{_what(data)} is {words[given]} data but model {name!r} is an "
            f"{words[modality]} model: use {fix}"
        )
    depth = len(net.blocks)
    k = _layer(layer, depth)
    if pooling == "cls" and net.cls_token is None:
        raise NeurofmError(
            f"pooling='cls' needs a [CLS] token; model {name!r} has none (cls_token=False): "
            "use pooling='mean'"
        )
    recipe = _windowed(net.recipe, window_seconds, stride_seconds)
    source, channels = _read(data, recipe, ch_names, sfreq, read_kwargs)
    from .windows import plan_windows

    try:
        plan = plan_windows(source, recipe, picks=picks, events=events, event_id=event_id,
                            tmin=tmin, tmax=tmax)  # fmt: skip
    except SignalError as err:
        if "shorter than one window" not in str(err):
            raise
        raise SignalError(f"{err} (here: encode(..., window_seconds=...))") from None
    groups = regions_of(plan.names, modality) if pooling == "region" else None
    report = _report(plan, channels, name, k, depth, pooling)
    logger.info("encode: %s", report)
    if verbose:
        print(report)
    progress = sys.stderr.isatty() if progress is None else bool(progress)
    feats, real = _run(net, plan, k, pooling, groups, dev, dt, batch_size, progress)
    if output == "numpy":
        return feats
    if output == "torch":
        return torch.from_numpy(feats)
    return _to_xarray(feats, real, plan, groups, pooling, k, name, report, modality)


def _run(net, plan, k, pooling, groups, dev, dt, batch_size, progress):
    """Features (float32 ndarray) and the real-token mask the pooling keeps, batch by batch."""
    S, N, D = len(plan.names), plan.recipe.window_patches, net.config.dim
    R = len(groups or ())
    shape = {"mean": (D,), "cls": (D,), "channel": (S, D), "region": (R, D), "none": (S, N, D)}
    feats = np.full((plan.n_windows, *shape[pooling]), np.nan, np.float32)
    real = np.zeros((plan.n_windows, S, N), bool)
    member = None
    if groups is not None:
        member = torch.zeros(R, S)
        for r, idx in enumerate(groups.values()):
            member[r, idx] = 1.0
        member = member.to(dev)
    captured: list[torch.Tensor] = []
    handle = net.blocks[k].register_forward_hook(lambda m, a, out: captured.append(out))
    was_training = net.training
    net.to(dev).eval()
    autocast = (torch.autocast(dev.type, dtype=dt) if dt not in (None, torch.float32)
                else contextlib.nullcontext())  # fmt: skip
    start = 0
    try:
        with torch.inference_mode(), autocast:
            for tokens in plan.batches(batch_size, progress=progress, desc="encode"):
                captured.clear()
                tokens = tokens.to(dev)
                net(tokens)
                h = torch.cat(captured)  # one per group of a CPU batch, in order
                out = _pool(net, h, tokens.mask, pooling, member)
                B = len(tokens)
                feats[start : start + B] = out.float().cpu().numpy()
                real[start : start + B] = tokens.mask.cpu().numpy()
                start += B
    finally:
        handle.remove()
        net.train(was_training)
    return feats, real


def _pool(net, h: torch.Tensor, mask: torch.Tensor, pooling: str, member) -> torch.Tensor:
    """Block output ``h`` (grid (B, S, N, D), or sequence ([CLS] +) S N) pooled, normed."""
    B, S, N = mask.shape
    cls = None
    if h.ndim == 3:
        if net.cls_token is not None:
            cls, h = h[:, 0], h[:, 1:]
        h = rearrange(h, "b (s n) d -> b s n d", s=S, n=N)
    norm = net.norm
    if pooling == "cls":
        return norm(cls)
    w = mask.to(h.dtype)[..., None]
    nan = torch.tensor(float("nan"), dtype=h.dtype, device=h.device)
    if pooling == "none":
        return torch.where(mask[..., None], norm(h), nan)
    if pooling == "mean":
        count = w.sum((1, 2))
        return torch.where(count > 0, norm((h * w).sum((1, 2)) / count.clamp(min=1)), nan)
    sums, count = (h * w).sum(2), w.sum(2)  # (B, S, D), (B, S, 1)
    if pooling == "region":
        member = member.to(h.dtype)
        sums = einsum(sums, member, "b s d, r s -> b r d")
        count = einsum(count, member, "b s o, r s -> b r o")
    return torch.where(count > 0, norm(sums / count.clamp(min=1)), nan)


def _to_xarray(feats, real, plan, groups, pooling, layer, name, report, modality):
    import xarray as xr

    from . import __version__

    recipe, grid = plan.recipe, plan.grid
    unit = "parcel" if modality == "fmri" else "channel"
    coords = {"start": ("window", plan.seconds)}
    if plan.event is not None:
        coords["event"] = ("window", np.asarray(plan.event, dtype=np.int64))
        coords["onset"] = ("window", np.asarray(plan.onset, dtype=float))
        if plan.label is not None:
            coords["label"] = ("window", np.asarray(plan.label, dtype=str))
    names = np.asarray(plan.names, dtype=str)
    xyz = {a: (unit, grid.pos[:, i]) for i, a in enumerate("xyz")}
    if pooling in ("mean", "cls"):
        dims = ("window", "feature")
    elif pooling == "channel":
        dims = ("window", unit, "feature")
        coords.update({unit: names, **xyz, "real": (("window", unit), real.any(-1))})
    elif pooling == "region":
        dims = ("window", "region", "feature")
        coords["region"] = np.asarray(list(groups), dtype=str)
        coords["size"] = ("region", np.array([len(v) for v in groups.values()], np.int32))
    else:
        dims = ("window", unit, "patch", "feature")
        coords.update({unit: names, **xyz, "real": (("window", unit, "patch"), real)})
        coords["patch"] = np.arange(recipe.window_patches) * recipe.patch_seconds
    attrs = {
        "model": name,
        "modality": modality,
        "pooling": pooling,
        "layer": int(layer),
        "recipe": recipe.model_dump_json(),
        "report": report,
        "neurofm_version": __version__,
    }
    if groups is not None:
        attrs["regions"] = json.dumps({r: [plan.names[i] for i in v] for r, v in groups.items()})
    if plan.tmin is not None:
        attrs["tmin"] = float(plan.tmin)
    out = xr.DataArray(feats, dims=dims, coords=coords, name="features", attrs=attrs)
    out["start"].attrs["units"] = "s"
    if "patch" in out.coords:
        out["patch"].attrs["units"] = "s from the window's start"
    return out


def save_features(features, path) -> Path:
    """Write features: netCDF (``.nc``, through xarray's scipy or netCDF4 backend) or
    ``.npy`` (the array alone). Returns the path written."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        np.save(path, np.asarray(getattr(features, "values", features)))
        return path
    if path.suffix.lower() not in (".nc", ".nc4", ".cdf"):
        raise NeurofmError(f"{path.name}: save features as .nc (netCDF) or .npy")
    features = features.copy()
    for name, coord in features.coords.items():
        if coord.dtype == bool:  # netCDF3 has no booleans
            features = features.assign_coords({name: coord.astype(np.int8)})
    features.to_netcdf(path)
    return path
