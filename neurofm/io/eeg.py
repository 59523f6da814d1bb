"""Read any EEG recording MNE can read, with canonical channel names and positions."""

from __future__ import annotations

import inspect
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..channels import (
    EEG_TYPES,
    SIGNAL_TYPES,
    ChannelReport,
    ChannelTable,
    map_channels,
    template_head_t,
    unknown_hint,
)
from ..channels import positions as template_positions
from ..errors import (
    ChannelError,
    ChannelWarning,
    EEGReadError,
    FileFormatWarning,
    NeurofmWarning,
    UnitsError,
    check_option,
    did_you_mean,
    logger,
    validate_type,
    warn,
)
from ..preprocess.recipe import SFREQ_RANGE, check_sfreq
from .edf import SAMPLE_BYTES, check_header, read_header

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
UNITS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "nV": 1e-9}
# The median channel std of EEG (scalp or intracranial, DC-coupled or not) lies in this
# range (V); data outside it has the wrong units. A factor 1000 off lands outside it.
STD_RANGE_V = (5e-7, 1e-2)
_TYPICAL_STD_V = 3e-5
# a power-of-1000 scale error: the exponent of the factor that fixes it -> its usual cause
_SCALE_CAUSES = {
    -9: "nanovolts stored as volts",
    -6: "microvolts stored as volts",
    -3: "millivolts stored as volts, or microvolts labelled millivolts",
    3: "millivolts labelled microvolts, or volts labelled millivolts",
    6: "volts labelled microvolts, or a gain applied twice",
}
# defaults given to a reader only where its signature accepts them
READER_DEFAULTS = {"infer_types": False}  # map_channels types channels by name
# reader warnings that neurofm's own checks already give, in clearer words
_SAID_BEFORE = ("Number of records from the header does not match the file size",)
EDF_VOLT_UNITS = ("V", "mV", "uV", "\u00b5V", "\u03bcV")  # the units MNE's EDF reader knows


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


class TruncatedFileWarning(FileFormatWarning):
    """A file holds less data than its header announces."""


def _named(labels, exclude) -> list[str]:
    """The labels an MNE ``exclude`` (list of names or a regex) names."""
    if isinstance(exclude, str):
        return [lab for lab in labels if re.match(exclude, lab)]
    return [lab for lab in labels if lab in set(exclude or ())]


def _check_edf(path: Path, fmt: str, reader_kwargs: dict) -> None:
    """Check an EDF/BDF header before MNE reads it as if it were valid.

    Impossible fields raise (``edf.check_header``); a record count that differs from the
    file size is said (:func:`_check_edf_size`). EEG-named channels sampled slower than
    most EEG channels of the file (a 1 Hz 'Cz' among 256 Hz channels: a sensor under an
    EEG name) would be upsampled and kept as EEG: they are dropped (through the reader's
    ``exclude``) with a ``FileFormatWarning`` naming them. EEG channels in a unit the
    reader does not know (it reads them as volts) are named too.
    """
    h = read_header(path)
    excluded = _named(h.labels, reader_kwargs.get("exclude", ()))
    check_header(h, path.name, fmt, skip=excluded)
    _check_edf_size(path, h, fmt)
    types = [c.type for c in map_channels(h.labels, include=()).channels]
    eeg = [i for i in np.flatnonzero(h.signals) if types[i] == "eeg" and h.labels[i] not in excluded]  # fmt: skip
    if not eeg:
        return
    rates, counts = np.unique(h.sfreqs[eeg], return_counts=True)
    main = rates[counts == counts.max()].max()  # the rate most EEG channels have
    # far slower than the file's EEG (below a quarter of its rate, or 10 Hz): a sensor under
    # an EEG name (a 1 Hz 'Cz' among 256 Hz EEG), not EEG at another rate (200 among 256)
    slow = [i for i in eeg if h.sfreqs[i] < max(SFREQ_RANGE[0], main / 4)]
    if slow:
        named = ", ".join(f"{h.labels[i]!r} ({h.sfreqs[i]:g} Hz)" for i in slow[:8])
        warn(
            f"{path.name}: {len(slow)} channels with EEG names are sampled far slower than "
            f"the file's EEG ({main:g} Hz): {named}{' ...' if len(slow) > 8 else ''}. EEG is "
            "not recorded that way (a sensor under an EEG name?), and they would be "
            "upsampled: dropped. Read them with MNE if you need them",
            FileFormatWarning,
            stacklevel=5,
        )
        reader_kwargs["exclude"] = excluded + [h.labels[i] for i in slow]
    odd = [f"{h.labels[i]!r} ({h.units[i]!r})" for i in eeg if i not in slow
           and h.units[i] not in EDF_VOLT_UNITS]  # fmt: skip
    if odd:
        warn(f"{path.name}: EEG channels in a unit the reader does not know, read as volts: "
             f"{', '.join(odd[:8])}. If they are not volts, pass units= (e.g. units='nV')",
             FileFormatWarning, stacklevel=5)  # fmt: skip


def _check_edf_size(path: Path, h, fmt: str) -> None:
    """Refuse a file without one whole record; say when it holds other than its header says."""
    record = int(h.samples_per_record.sum()) * SAMPLE_BYTES[fmt]
    have = (path.stat().st_size - h.n_bytes) / max(record, 1)
    held = f"{int(have)} complete records ({int(have) * h.duration:g} s)"
    if have < 1:
        raise EEGReadError(
            f"{path.name} is truncated: its header announces {h.n_records} records of "
            f"{h.duration:g} s but the file holds {max(have, 0):.2f} of a record. Re-copy or "
            "re-export the file"
        )
    if h.n_records <= 0:
        warn(f"{path.name}: the header does not say how many records it holds ({h.n_records}: "
             f"a recording not closed properly?); reading the {held} the file holds",
             FileFormatWarning, stacklevel=6)  # fmt: skip
    elif have < h.n_records:
        warn(f"{path.name} is truncated: its header announces {h.n_records} records "
             f"({h.n_records * h.duration:g} s) but the file holds {have:.2f}; reading the "
             f"{held}. Re-copy the file for the rest", TruncatedFileWarning, stacklevel=6)  # fmt: skip
    elif int(have) > h.n_records:
        warn(f"{path.name}: the file holds {held}, more than the {h.n_records} its header "
             "announces; reading them all. If the rest is not signal, re-export the file",
             FileFormatWarning, stacklevel=6)  # fmt: skip


def _reader_kwargs(path: Path, fmt: str, reader, given: dict) -> dict:
    """``given`` options checked against the reader's signature, plus the defaults it takes."""
    accepted = set(inspect.signature(reader).parameters) - {"preload", "verbose"}
    for key in given:
        if key not in accepted:
            options = sorted(accepted - {next(iter(inspect.signature(reader).parameters))})
            raise EEGReadError(
                f"{path.name}: the {fmt} reader ({FORMATS[fmt][0]}) has no option "
                f"{key!r}{did_you_mean(key, options)}; its options: {', '.join(options)}"
            )
    return {**{k: v for k, v in READER_DEFAULTS.items() if k in accepted}, **given}


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
    kwargs = _reader_kwargs(path, fmt, reader, reader_kwargs)
    if fmt in ("edf", "bdf"):
        _check_edf(path, fmt, kwargs)
    try:  # "warning", not "error": MNE's warnings about the file reach the user, named
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = reader(path, preload=preload, verbose="warning", **kwargs)
    except Exception as err:  # MNE raises many types for damaged files
        hint = _HINTS.get(fmt, "check that the file is complete and of the format its name says")
        lines = [s.strip() for s in str(err).splitlines() if s.strip()]
        lines = [s for s in lines if not s.startswith(("WARNING", "File ", "mne.io"))]
        why = " ".join(lines[-2:]) if lines else ""
        raise EEGReadError(
            f"could not read {path.name} as {fmt}: {type(err).__name__}: {why}\n  fix: {hint}"
        ) from err
    for w in caught:  # the reader's own warnings reach the user, naming the file
        said = str(w.message).startswith(_SAID_BEFORE)
        if not said and not issubclass(w.category, (DeprecationWarning, FutureWarning)):
            category = w.category if issubclass(w.category, NeurofmWarning) else FileFormatWarning
            warn(f"{path.name}: {w.message}", category, stacklevel=4)
    return raw, fmt


# options of tokenize/iter_tokens that travel with read_eeg's (for did-you-mean only)
_TOKENIZE_OPTIONS = ("recipe", "batch_size", "picks", "chunk_seconds", "progress")


def _as_raw(source, sfreq, ch_names, ch_types, format, preload, reader_kwargs):
    import inspect

    import mne

    in_memory = isinstance(source, mne.io.BaseRaw | np.ndarray) or hasattr(source, "__array__")
    if in_memory and reader_kwargs:  # file-reader options: a typo here would vanish silently
        known = [*inspect.signature(read_eeg).parameters, *_TOKENIZE_OPTIONS]
        key = next(iter(reader_kwargs))
        raise EEGReadError(
            f"unknown option {key!r}{did_you_mean(key, known)} for "
            f"{'an mne.io.Raw' if isinstance(source, mne.io.BaseRaw) else 'an array'}: "
            f"reader options ({', '.join(map(repr, reader_kwargs))}) apply to files only"
        )
    if isinstance(source, mne.io.BaseRaw):
        return source.copy(), "raw"
    if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
        try:
            data = np.asarray(source, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise EEGReadError(f"an array of EEG must hold numbers ({err})") from None
        if data.ndim != 2:
            raise EEGReadError(f"an array must be (n_channels, n_times); got shape {data.shape}")
        if sfreq is None or ch_names is None:
            raise EEGReadError("an array needs sfreq= and ch_names= (one name per row)")
        sfreq = check_sfreq(sfreq, "sfreq", EEGReadError)
        ch_names = [ch_names] if isinstance(ch_names, str) else list(ch_names)
        if len(ch_names) != data.shape[0]:
            hint = " (is the array transposed?)" if len(ch_names) == data.shape[1] else ""
            raise EEGReadError(
                f"{len(ch_names)} ch_names for an array with {data.shape[0]} rows{hint}"
            )
        bad = [n for n in ch_names if not isinstance(n, str) or not n.strip()]
        twice = sorted({n for n in ch_names if ch_names.count(n) > 1})
        if bad or twice:
            raise EEGReadError(f"ch_names must be distinct, non-empty strings: "
                               f"{'not names: ' + repr(bad[:4]) if bad else 'repeated: ' + repr(twice[:4])}")  # fmt: skip
        try:
            info = mne.create_info(ch_names, sfreq, ch_types or "eeg", verbose="error")
        except (KeyError, TypeError, ValueError) as err:
            raise EEGReadError(f"ch_types={ch_types!r}: {err}") from None
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
    """Refuse data whose median channel std lies outside ``STD_RANGE_V``, naming the units= fix."""
    n = min(raw.n_times, int(30 * raw.info["sfreq"]))
    data = raw.get_data(picks=picks, start=0, stop=n)
    data[~np.isfinite(data)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows, overflow: dropped below
        std = np.nanstd(data, axis=1)
    std = std[np.isfinite(std) & (std > 0)]
    if std.size == 0:
        return
    level = float(np.median(std))  # robust to a few dead or artefact-ridden channels
    lo, hi = STD_RANGE_V
    if lo <= level <= hi:
        return
    exp = 3 * round(np.log10(_TYPICAL_STD_V / level) / 3)  # the factor that fixes it: 10**exp
    fix = {-9: "'nV'", -6: "'uV'", -3: "'mV'"}.get(exp, f"1e{exp}")
    cause = _SCALE_CAUSES.get(exp, f"a scale off by about 1e{-exp}")
    raise UnitsError(
        f"median channel amplitude (std) is {level:.3g} V, but EEG lies between {lo:g} and "
        f"{hi:g} V, so this looks like {cause}. Fix: read_eeg(..., units={fix}) scales the "
        f"data by 1e{exp}; check_units=False skips this check"
        + (" (units= was given)" if units_given else "")
    )


def _set_positions(raw, report: ChannelReport, montage, extra: dict | None = None):
    """Template positions for known names, then ``extra`` (name -> MNI mm, from
    :func:`_check_positions`); file positions kept for the remaining unknown ones."""
    import mne

    if montage is not None:
        if isinstance(montage, str):
            montage = mne.channels.make_standard_montage(montage)
        raw.set_montage(montage, on_missing="warn", verbose="error")
        return
    mri_head, fid = template_head_t()
    known = [c.name if c.kind in ("electrode", "bipolar") else "" for c in report.kept]
    mni = template_positions(known) / 1000.0  # template positions for known names only
    for i, c in enumerate(report.kept):
        if c.name in (extra or {}):
            mni[i] = extra[c.name] / 1000.0
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
    try:
        xyz = np.asarray(where, dtype=float)
    except (TypeError, ValueError):
        xyz = np.full(0, np.nan)
    if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
        raise ChannelError(f"positions[{name!r}] must be (x, y, z) in MNI mm or an electrode "
                           f"name, got {where!r}")  # fmt: skip
    return xyz


def _units_factor(units) -> float:
    """Volts per unit of the numbers: a name in ``UNITS`` or a factor in [1e-12, 1e9]."""
    if isinstance(units, str):
        check_option("units", units, list(UNITS))
        return UNITS[units]
    validate_type(units, "numeric", "units", "'uV', 'mV', 'nV', 'V' or a factor to volts")
    if not 1e-12 <= float(units) <= 1e9:  # NaN fails too
        raise UnitsError(
            f"units={units!r} is not a scale: give the units the numbers are in ('uV', 'mV', "
            "'nV', 'V') or the factor from them to volts, between 1e-12 and 1e9 (1e-6 for "
            "microvolts)"
        )
    return float(units)


def _check_positions(positions, report: ChannelReport, label: str) -> dict:
    """``positions`` as (x, y, z) MNI mm by kept channel name, for channels without one.

    Accepts what YAML gives: ``{name: 'I1'}`` (a 10-05 electrode's template position) or
    ``{name: [x, y, z]}``, by original or canonical name. A name that is no channel of the
    recording, or a 10-05 name (it keeps its template position), is ignored with a warning.
    """
    if positions is None:
        return {}
    validate_type(positions, Mapping, "positions",
                  "a mapping {channel: electrode name or [x, y, z] in MNI mm}")  # fmt: skip
    by_name = {n: c for c in report.channels for n in (c.original, c.name)}
    out = {}
    for key, where in positions.items():
        xyz = _extra_position(str(key), where)
        c = by_name.get(key)
        if c is None:
            warn(f"{label}: positions[{key!r}] names no channel of this recording"
                 f"{did_you_mean(key, by_name)}: ignored", ChannelWarning, stacklevel=3)  # fmt: skip
        elif c.kind in ("electrode", "bipolar"):
            warn(f"{label}: positions[{key!r}] ignored: {c.name!r} is a 10-05 name and keeps its "
                 "template position (rename= it if it is another electrode)", ChannelWarning,
                 stacklevel=3)  # fmt: skip
        elif c.status != "dropped":
            out[c.name] = xyz
    return out


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
        Sampling rates outside 10 Hz - 100 kHz are refused (``EEGReadError``).
    sfreq, ch_names, ch_types
        For arrays only: a rate in Hz, distinct names, MNE channel types.
    format : str | None
        Force a reader (``'edf'``, ``'cnt'``, ``'ant'`` ...) instead of the extension's.
    units : str | float | None
        The units the numbers are really in when the file (or array) says volts but
        holds something else: ``'uV'``, ``'mV'``, ``'nV'`` or a factor to volts
        (between 1e-12 and 1e9).
    include : tuple of str
        Channel types to keep; others (EOG, ECG, EMG, stim, misc) are dropped and
        listed in the report. Intracranial recordings: ``include=('seeg',)`` (or
        ``'ecog'``, ``'dbs'``); their contacts are placed with ``positions``.
    rename : dict | None
        Names no rule can know (``{'EEG 000': 'Fp1'}``), applied before the aliases.
    montage : str | mne.channels.DigMontage | None
        Positions for channels whose names are not 10-05 names (``'biosemi128'``).
    positions : dict | None
        Where a cap's own electrodes sit, for names outside the vocabulary:
        ``{'CB1': 'I1'}`` (at that 10-05 electrode's template position) or
        ``{'CB1': (x, y, z)}`` in MNI mm (a YAML list is fine), by the file's name or
        the canonical one. They keep the unknown-name id (no learned row is borrowed);
        the model places them by these coordinates. A name that is no channel, or a
        10-05 name (it keeps its template position), is ignored with a warning.
    check_units : bool
        Refuse data whose median channel std lies outside 0.5 uV - 10 mV: the units
        are wrong (the error names the ``units=`` that fixes it).
    preload : bool
        Load the data into memory. Off by default: long recordings are read in chunks.
    return_report : bool
        Also return the :class:`~neurofm.channels.ChannelReport`.
    **reader_kwargs
        Passed to the MNE reader (e.g. ``data_format='int16'`` for a Neuroscan CNT,
        ``exclude=['X']``); an option the format's reader does not take is refused.

    Notes
    -----
    EDF/BDF headers are checked before MNE reads them: a record duration <= 0,
    physical minimum == maximum, digital minimum >= maximum or a signal without samples
    raise ``EEGReadError`` naming the field, the channel and the fix (physical minimum >
    maximum is the spec's inverted polarity and is read as such). A file holding other
    than the records its header announces is read as far as it goes, with a
    ``FileFormatWarning`` (``TruncatedFileWarning`` when short). EEG-named channels
    sampled slower than most EEG channels of the file (a 1 Hz 'Cz' among 256 Hz ones)
    are dropped with a ``FileFormatWarning``: MNE would upsample them and they would
    pass as EEG. The reader's own warnings reach you as ``FileFormatWarning``.

    Returns
    -------
    raw : mne.io.Raw
        Canonical names (``Fc5.`` -> ``FC5``, ``EEG T3-REF`` -> ``T7``), montage set, and
        a :class:`~neurofm.channels.ChannelTable` attached (``ChannelTable.of(raw)``): which
        names are unknown, so that tokens give them the ``UNK`` id whatever they look like.
    report : ChannelReport
        Only with ``return_report=True``.
    """
    factor = None if units is None else _units_factor(units)
    if montage is not None and positions:
        raise ChannelError("give montage= (a whole cap) or positions= (channels outside the "
                           "10-05 vocabulary), not both")  # fmt: skip
    raw, origin = _as_raw(source, sfreq, ch_names, ch_types, format, preload, reader_kwargs)
    label = Path(source).name if origin not in ("raw", "array") else origin
    if raw.n_times == 0 or len(raw.ch_names) == 0:
        raise EEGReadError(
            f"{label} holds no signal (annotations only, e.g. a hypnogram): "
            "read its recording and attach these annotations with raw.set_annotations"
        )
    check_sfreq(raw.info["sfreq"], f"{label}: the sampling rate", EEGReadError,
                "the file's header (or raw.info['sfreq']) is wrong: correct it or re-export")  # fmt: skip
    report = map_channels(raw.ch_names, raw.get_channel_types(), include=include, rename=rename)
    keep = [c for c in report.channels if c.status != "dropped"]
    if not [c for c in keep if c.type in SIGNAL_TYPES]:
        raise ChannelError(f"{label}: no EEG channel left.\n{report}")
    placed = _check_positions(positions, report, label)
    raw.pick([c.original for c in keep])
    raw.rename_channels({c.original: c.name for c in keep if c.name != c.original})
    types = {c.name: c.type for c in keep}
    if any(t != "eeg" for t in types.values()):
        raw.set_channel_types(types, on_unit_change="ignore", verbose="error")
    _set_positions(raw, report, montage, placed)

    # what each name is (a BioSemi 'A1' is no ear electrode): kept with the Raw, see ChannelTable
    ChannelTable.from_report(report).attach(raw)
    eeg = [c.name for c in keep if c.type in SIGNAL_TYPES]
    located = [n for n in eeg if np.isfinite(raw.info["chs"][raw.ch_names.index(n)]["loc"][0])]
    unplaced = [c.original for c in report.channels if c.status == "unknown"
                and c.name not in located]  # fmt: skip
    if montage is not None or not report.hint.startswith("names look like a BioSemi"):
        report.hint = unknown_hint(unplaced)  # only the channels still without a position
    if not located:  # readable (to look at, plot, fix); tokenize and encode refuse it
        warn(f"{label}: none of the {len(eeg)} EEG channel names is a 10-05 electrode or a "
             f"bipolar pair of them (e.g. {eeg[:4]}), and the file has no positions: it reads, "
             f"but a model cannot place its channels until you say where they are. Fix: "
             f"{report.hint}", ChannelWarning, stacklevel=2)  # fmt: skip
    elif unplaced:
        warn(f"{label}: {len(unplaced)} channel names are not 10-05 electrodes and have no "
             f"position: {unplaced[:8]}; the model sees them without a place. Fix: "
             f"{report.hint}", ChannelWarning, stacklevel=2)  # fmt: skip
    if factor is not None:
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
