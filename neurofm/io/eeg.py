"""Read any EEG recording MNE can read, with canonical channel names and positions."""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..channels import EEG_TYPES, ChannelReport, map_channels
from ..channels import positions as template_positions
from ..utils import ChannelError, EEGReadError, UnitsError, check_option, did_you_mean, logger

# format name -> (MNE reader, extensions)
FORMATS = {
    "edf": ("read_raw_edf", (".edf", ".rec")),
    "bdf": ("read_raw_bdf", (".bdf",)),
    "gdf": ("read_raw_gdf", (".gdf",)),
    "brainvision": ("read_raw_brainvision", (".vhdr", ".ahdr")),
    "eeglab": ("read_raw_eeglab", (".set",)),
    "fif": ("read_raw_fif", (".fif", ".fif.gz")),
    "cnt": ("read_raw_cnt", (".cnt",)),
    "ant": ("read_raw_ant", ()),
    "nihon": ("read_raw_nihon", (".eeg",)),
    "persyst": ("read_raw_persyst", (".lay",)),
    "egi": ("read_raw_egi", (".mff", ".raw")),
    "curry": ("read_raw_curry", (".cdt", ".dap", ".dat", ".rs3", ".cef")),
    "nicolet": ("read_raw_nicolet", (".data",)),
    "eximia": ("read_raw_eximia", (".nxe",)),
    "nedf": ("read_raw_nedf", (".nedf",)),
    "bci2k": ("read_raw_bci2k", (".dat",)),
}
# files that belong to a recording but are not the one to open: suffix -> (header, what)
COMPANIONS = {
    ".vmrk": ((".vhdr",), "a BrainVision marker file"),
    ".eeg": ((".vhdr",), "the binary part of a BrainVision recording"),
    ".fdt": ((".set",), "the data part of an EEGLAB dataset"),
    ".dat": ((".lay",), "the data part of a Persyst recording"),
    ".pnt": ((".eeg",), "a Nihon Kohden patient file"),
    ".21e": ((".eeg",), "a Nihon Kohden electrode table"),
    ".log": ((".eeg",), "a Nihon Kohden log"),
    ".11d": ((".eeg",), "a Nihon Kohden annotation file"),
    ".cmt": ((".eeg",), "a Nihon Kohden comment file"),
    ".cn2": ((".eeg",), "a Nihon Kohden channel file"),
    ".evt": ((".cnt",), "an ANT event file"),
    ".event": ((), "a BCI2000/PhysioNet event file"),
    ".seizures": ((), "a WFDB seizure annotation file (open the EDF it annotates)"),
}
UNKNOWN_KEY = "neurofm_unknown"  # raw.info["temp"] key: names that must get the UNK id
UNITS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "nV": 1e-9}
# Scalp EEG lies between about 0.5 uV and 1 mV; these limits leave room for artefacts.
_MAX_STD_V, _MIN_STD_V = 1e-2, 1e-9


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".fif.gz" if name.endswith(".fif.gz") else path.suffix.lower()


def _guess_format(path: Path) -> str:
    suffix = _suffix(path)
    for companion in (".eeg", ".dat"):  # extensions two formats share
        if suffix == companion:
            header, what = COMPANIONS[suffix]
            if any(p.suffix.lower() in header for p in path.parent.glob(path.stem + ".*")):
                _companion_error(path, header[0], what)
    if suffix == ".cnt" and path.read_bytes()[:4] in (b"RIFF", b"RF64"):
        return "ant"
    for fmt, (_, exts) in FORMATS.items():
        if suffix in exts:
            return fmt
    if suffix in COMPANIONS:
        header, what = COMPANIONS[suffix]
        _companion_error(path, header[0] if header else None, what)
    known = sorted({e for _, exts in FORMATS.values() for e in exts})
    raise EEGReadError(
        f"{path.name}: unknown EEG file type {suffix!r}{did_you_mean(suffix, known)}. "
        f"Readable types: {' '.join(known)}; or pass format= one of {sorted(FORMATS)}"
    )


def _companion_error(path: Path, header: str | None, what: str):
    fix = ""
    if header:
        same = [p.name for p in path.parent.glob(path.stem + ".*") if p.suffix.lower() == header]
        fix = f": open {(same or [path.with_suffix(header).name])[0]!r} instead"
    raise EEGReadError(f"{path.name} is {what}, not a recording to open on its own{fix}")


_HINTS = {
    "cnt": "a Neuroscan CNT may need data_format='int16' or data_format='int32' "
    "(read_eeg(path, data_format='int16')); an ANT Neuro CNT needs format='ant' and "
    "the antio package (pip install antio)",
    "ant": "ANT Neuro eego files need the antio package: pip install antio",
    "edf": "the header may not match the data (truncated copy or hand-edited header): "
    "check the file size against n_records x record size, or re-export it",
    "bdf": "the header may not match the data (truncated copy?): re-export the file",
    "eeglab": "an EEGLAB .set needs its .fdt beside it when the data are not embedded",
    "brainvision": "the .vhdr must sit beside its .vmrk and .eeg, with the names it lists",
}


class TruncatedFileWarning(RuntimeWarning):
    """A file holds less data than its header announces."""


def _check_edf_size(path: Path, fmt: str) -> None:
    """Compare an EDF/BDF file's size with its header; raise or warn on a mismatch."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
            n_bytes, n_records, ns = int(head[184:192]), int(head[236:244]), int(head[252:256])
            duration = float(head[244:252])
            fh.seek(256 + ns * 216)
            spr = [int(fh.read(8)) for _ in range(ns)]
    except (ValueError, OSError):
        return  # an unreadable header: the reader's own error is the clearer one
    if n_records <= 0:
        return
    record = sum(spr) * (3 if fmt == "bdf" else 2)
    have = (path.stat().st_size - n_bytes) / max(record, 1)
    if have < 1:
        raise EEGReadError(
            f"{path.name} is truncated: its header announces {n_records} records of {duration:g} s "
            f"but the file holds {max(have, 0):.2f} of a record. Re-copy or re-export the file"
        )
    if have < n_records:
        warnings.warn(
            f"{path.name} is truncated: its header announces {n_records} records "
            f"({n_records * duration:g} s) but the file holds {have:.2f}; reading the "
            f"{int(have)} complete records ({int(have) * duration:g} s). Re-copy the file for the rest",
            TruncatedFileWarning,
            stacklevel=4,
        )


def _read_file(path, format, preload, reader_kwargs):
    import mne

    path = Path(path)
    if not path.exists():
        siblings = [p.name for p in path.parent.glob("*")] if path.parent.exists() else []
        raise EEGReadError(f"no such file: {str(path)!r}{did_you_mean(path.name, siblings)}")
    if path.is_file() and path.stat().st_size == 0:
        raise EEGReadError(f"{path.name} is empty (0 bytes): the copy is incomplete")
    fmt = format or _guess_format(path)
    check_option("format", fmt, list(FORMATS))
    reader = getattr(mne.io, FORMATS[fmt][0])
    if fmt in ("edf", "bdf", "gdf"):
        reader_kwargs.setdefault("infer_types", False)  # map_channels types by name
    if fmt in ("edf", "bdf"):
        _check_edf_size(path, fmt)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = reader(path, preload=preload, verbose="error", **reader_kwargs)
    except TypeError as err:
        raise EEGReadError(
            f"{path.name}: option not understood by {FORMATS[fmt][0]}: {err}"
        ) from err
    except Exception as err:  # MNE raises many types for damaged files
        hint = _HINTS.get(fmt, "check that the file is complete and of the format its name says")
        lines = [s.strip() for s in str(err).splitlines() if s.strip()]
        lines = [s for s in lines if not s.startswith(("WARNING", "File ", "mne.io"))]
        why = " ".join(lines[-2:]) if lines else ""
        raise EEGReadError(
            f"could not read {path.name} as {fmt}: {type(err).__name__}: {why}\n  fix: {hint}"
        ) from err
    for w in caught:  # the reader's own warnings reach the user, naming the file
        warnings.warn(f"{path.name}: {w.message}", RuntimeWarning, stacklevel=3)
    return raw, fmt


def _as_raw(source, sfreq, ch_names, ch_types, format, preload, reader_kwargs):
    import mne

    if isinstance(source, mne.io.BaseRaw):
        return source.copy(), "raw"
    if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
        data = np.asarray(source, dtype=np.float64)
        if data.ndim != 2:
            raise EEGReadError(f"an array must be (n_channels, n_times); got shape {data.shape}")
        if sfreq is None or ch_names is None:
            raise EEGReadError("an array needs sfreq= and ch_names= (one name per row)")
        if len(ch_names) != data.shape[0]:
            hint = " (is the array transposed?)" if len(ch_names) == data.shape[1] else ""
            raise EEGReadError(
                f"{len(ch_names)} ch_names for an array with {data.shape[0]} rows{hint}"
            )
        info = mne.create_info(list(ch_names), float(sfreq), ch_types or "eeg")
        return mne.io.RawArray(data, info, verbose="error"), "array"
    if isinstance(source, (str, os.PathLike)):
        return _read_file(source, format, preload, reader_kwargs)
    raise EEGReadError(
        f"cannot read EEG from a {type(source).__name__}: pass a file path, an mne.io.Raw, "
        "or an (n_channels, n_times) array with sfreq= and ch_names="
    )


def _scale(raw, factor: float):
    """Multiply every channel by ``factor`` without loading a lazy recording."""
    if raw.preload:
        raw._data *= factor
    else:  # MNE multiplies by these calibrations on every read
        raw._cals = raw._cals * factor
    for ch in raw.info["chs"]:
        ch["cal"] *= factor


def _check_units(raw, picks, units_given: bool):
    n = min(raw.n_times, int(30 * raw.info["sfreq"]))
    data = raw.get_data(picks=picks, start=0, stop=n)
    std = np.std(data, axis=1)
    std = std[np.isfinite(std) & (std > 0)]
    if std.size == 0:
        return
    level = float(np.median(std))
    if _MIN_STD_V <= level <= _MAX_STD_V:
        return
    if level > _MAX_STD_V:
        guess = "microvolts stored as volts" if level > 1 else "millivolts stored as volts"
        fix = "units='uV'" if level > 1 else "units='mV'"
    else:
        guess, fix = "volts stored as microvolts (or a gain applied twice)", "units=1e6"
    raise UnitsError(
        f"median channel amplitude (std) is {level:.3g} V: scalp EEG is 1e-6 to 1e-3 V, "
        f"so this looks like {guess}. Fix: read_eeg(..., {fix}) scales the data; "
        f"check_units=False skips this check{' (units= was given)' if units_given else ''}"
    )


@lru_cache(maxsize=1)
def template_head_t():
    """The Colin27 10-05 template's MRI(=MNI, m) -> head transform, and its fiducials in head."""
    import mne

    template = mne.channels.make_standard_montage("colin27_1005")
    mri_head = mne.channels.compute_native_head_t(template)
    fid = template.get_positions()
    return mri_head, {
        k: mne.transforms.apply_trans(mri_head, fid[k]) for k in ("nasion", "lpa", "rpa")
    }


def _set_positions(raw, report: ChannelReport, montage, extra: dict | None = None):
    """Template positions for known names, then ``extra`` (MNI mm or a vocabulary name)
    for names outside the vocabulary; file positions kept for the remaining unknown ones."""
    import mne

    if montage is not None:
        if isinstance(montage, str):
            montage = mne.channels.make_standard_montage(montage)
        raw.set_montage(montage, on_missing="warn", verbose="error")
        return
    mri_head, fid = template_head_t()
    known = [c.name if c.kind in ("electrode", "bipolar") else "" for c in report.kept]
    mni = template_positions(known) / 1000.0  # template positions for known names only
    extra = extra or {}
    for i, c in enumerate(report.kept):
        where = extra.get(c.name, extra.get(c.original))
        if where is not None and not known[i]:
            mni[i] = _extra_position(c.name, where) / 1000.0
    ch_pos = {}
    for i, ch in enumerate(raw.info["chs"]):
        if np.all(np.isfinite(mni[i])):
            ch_pos[ch["ch_name"]] = mne.transforms.apply_trans(mri_head, mni[i])
        elif np.all(np.isfinite(ch["loc"][:3])) and np.any(ch["loc"][:3] != 0):
            ch_pos[ch["ch_name"]] = ch["loc"][:3].copy()  # already head frame
    dig = mne.channels.make_dig_montage(ch_pos=ch_pos, coord_frame="head", **fid)
    eeg_like = [n for n, t in zip(raw.ch_names, raw.get_channel_types(), strict=True) if t == "eeg"]
    missing = [n for n in eeg_like if n not in ch_pos]
    if missing:
        logger.info("no position for %s", missing)
    raw.set_montage(dig, on_missing="ignore", verbose="error")


def _extra_position(name: str, where) -> np.ndarray:
    if isinstance(where, str):
        xyz = template_positions([where])[0]
        if not np.all(np.isfinite(xyz)):
            raise ChannelError(f"positions={{{name!r}: {where!r}}}: {where!r} is not a 10-05 "
                               "electrode; give one, or (x, y, z) in MNI mm")  # fmt: skip
        return xyz
    xyz = np.asarray(where, dtype=float)
    if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
        raise ChannelError(f"positions[{name!r}] must be (x, y, z) in MNI mm or an electrode "
                           f"name, got {where!r}")  # fmt: skip
    return xyz


def read_eeg(
    source,
    *,
    sfreq: float | None = None,
    ch_names=None,
    ch_types=None,
    format: str | None = None,
    units: str | float | None = None,
    include=EEG_TYPES,
    rename: dict | None = None,
    montage=None,
    positions: dict | None = None,
    check_units: bool = True,
    preload: bool = False,
    return_report: bool = False,
    **reader_kwargs,
):
    """Read an EEG recording with canonical channel names and positions.

    Parameters
    ----------
    source : path-like | mne.io.Raw | ndarray
        A file in any format MNE reads (EDF, BDF, GDF, BrainVision ``.vhdr``, EEGLAB
        ``.set``, FIF, Neuroscan/ANT CNT, Nihon Kohden ``.EEG``, Persyst ``.lay`` ...),
        an existing ``mne.io.Raw`` (copied, never changed), or an
        ``(n_channels, n_times)`` array in volts with ``sfreq`` and ``ch_names``.
    sfreq, ch_names, ch_types
        For arrays only.
    format : str | None
        Force a reader (``'edf'``, ``'cnt'``, ``'ant'`` ...) instead of the extension's.
    units : str | float | None
        The units the numbers are really in when the file (or array) says volts but
        holds something else: ``'uV'``, ``'mV'``, ``'nV'`` or a factor to volts.
    include : tuple of str
        Channel types to keep; others (EOG, ECG, EMG, stim, misc) are dropped and
        listed in the report.
    rename : dict | None
        Names no rule can know (``{'EEG 000': 'Fp1'}``), applied before the aliases.
    montage : str | mne.channels.DigMontage | None
        Positions for channels whose names are not 10-05 names (``'biosemi128'``).
    positions : dict | None
        Where a cap's own electrodes sit, for names outside the vocabulary:
        ``{'CB1': 'I1'}`` (at that 10-05 electrode's template position) or
        ``{'CB1': (x, y, z)}`` in MNI mm. They keep the unknown-name id (no learned
        row is borrowed); the model places them by these coordinates.
    check_units : bool
        Refuse amplitudes that say the units are wrong (see ``units``).
    preload : bool
        Load the data into memory. Off by default: long recordings are read in chunks.
    return_report : bool
        Also return the :class:`~neurofm.channels.ChannelReport`.
    **reader_kwargs
        Passed to the MNE reader (e.g. ``data_format='int16'`` for a Neuroscan CNT).

    Returns
    -------
    raw : mne.io.Raw
        Canonical names (``Fc5.`` -> ``FC5``, ``EEG T3-REF`` -> ``T7``), montage set.
    report : ChannelReport
        Only with ``return_report=True``.
    """
    raw, origin = _as_raw(source, sfreq, ch_names, ch_types, format, preload, reader_kwargs)
    label = Path(source).name if origin not in ("raw", "array") else origin
    if raw.n_times == 0 or len(raw.ch_names) == 0:
        raise EEGReadError(
            f"{label} holds no signal (annotations only, e.g. a hypnogram): "
            "read its recording and attach these annotations with raw.set_annotations"
        )
    report = map_channels(raw.ch_names, raw.get_channel_types(), include=include, rename=rename)
    keep = [c for c in report.channels if c.status != "dropped"]
    if not [c for c in keep if c.type == "eeg"]:
        raise ChannelError(f"{label}: no EEG channel left.\n{report}")
    raw.pick([c.original for c in keep])
    raw.rename_channels({c.original: c.name for c in keep if c.name != c.original})
    types = {c.name: c.type for c in keep}
    if any(t != "eeg" for t in types.values()):
        raw.set_channel_types(types, on_unit_change="ignore", verbose="error")
    _set_positions(raw, report, montage, positions)

    # names that look like vocabulary names but are not (a BioSemi 'A1'): kept with the Raw
    raw.info["temp"] = {**(raw.info.get("temp") or {}), UNKNOWN_KEY: report.unknown_names}
    eeg = [c.name for c in keep if c.type == "eeg"]
    located = [n for n in eeg if np.isfinite(raw.info["chs"][raw.ch_names.index(n)]["loc"][0])]
    if not located:
        raise ChannelError(
            f"{label}: none of the {len(eeg)} EEG channel names is a 10-05 electrode or a "
            f"bipolar pair of them (e.g. {eeg[:4]}), and the file has no positions, so the "
            f"model cannot place them.\n{report}"
        )
    placed = positions or {}
    unplaced = [c.original for c in report.channels if c.status == "unknown"
                and c.original not in placed and c.name not in placed]  # fmt: skip
    if unplaced:
        logger.warning("%s: %d channel names are unknown: %s", label, len(unplaced), unplaced[:8])
    if units is not None:
        factor = UNITS.get(units) if isinstance(units, str) else float(units)
        if factor is None:
            check_option("units", units, list(UNITS))
        _scale(raw, factor)
    if check_units:
        try:
            _check_units(raw, [raw.ch_names.index(n) for n in eeg], units is not None)
        except UnitsError as err:
            if "data_format" in reader_kwargs:  # Neuroscan CNT read with the wrong width
                raise UnitsError(
                    f"{err}; a wrong data_format does this too: try the other one"
                ) from None
            raise
    logger.info("%s: %s", label, report.summary())
    return (raw, report) if return_report else raw
