"""A manifest for any user's own data: a CSV with ``path`` and optional columns.

Columns: ``path`` (relative to the CSV's folder, or absolute), and any of ``subject``,
``session``, ``label``, ``onset``, ``duration``, ``split``, and per modality:

- EEG: ``sfreq``, ``ch_names`` (separated by ``;`` or spaces), ``units``, ``positions``.
  Signals in any format ``read_eeg`` reads, or ``.npy``/``.txt``/``.csv`` numeric arrays
  (channels x samples, or samples x channels) with ``sfreq`` and ``ch_names``.
  ``positions`` places channels outside the 10-05 vocabulary (intracranial contacts, a
  cap's own electrodes): ``NAME=TARGET`` pairs separated by ``;``, TARGET a 10-05
  electrode (``LFP1=Cz``) or MNI millimetres (``D1=-30 -10 20``); see
  ``read_eeg(positions=)``.
- fMRI (a corpus whose recipe has ``modality: fmri``): 4-D NIfTI runs (the atlas is a
  reader option, ``reader: {atlas: ...}``) or parcel tables (CSV/TSV, ``.1D``, ``.npy``,
  ``.mat``) that ``read_fmri`` reads; ``t_r`` (seconds; a table's TR, an image's
  overrides its header) and ``confounds`` (a file of regressors for that run, relative
  to the CSV's folder).

A row with ``onset`` is an event of that file (``label`` its name, times in seconds); a
row without is the recording itself: its ``label`` labels every window that overlaps no
event. Several rows of one file must agree on its recording-level columns.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from pathlib import Path

import numpy as np

from ...errors import NeurofmError, check_finite, check_option
from . import Event, Recording

COMMON = ("path", "subject", "session", "label", "onset", "duration", "split")
COLUMNS = {"eeg": (*COMMON, "sfreq", "ch_names", "units", "positions"),
           "fmri": (*COMMON, "t_r", "confounds")}  # fmt: skip
ARRAY_SUFFIXES = (".npy", ".txt", ".csv")
NAMES = {"eeg": "EEG", "fmri": "fMRI"}


def _load_array(path: Path, n_channels: int) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        else:
            x = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    except (OSError, ValueError, EOFError) as err:
        raise NeurofmError(f"{path.name} is not a readable numeric array ({err})") from None
    if x.ndim != 2:
        raise NeurofmError(f"{path.name} holds a {x.ndim}-D array: expected channels x samples")
    if x.shape[0] != n_channels and x.shape[1] == n_channels:
        x = x.T
    if x.shape[0] != n_channels:
        raise NeurofmError(f"{path.name} is {x.shape} but the manifest names {n_channels} channels")
    return x


def _value(row, key, default=None):
    v = row.get(key, default)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else v


def _number(row, key, where: str, *, positive=False):
    value = _value(row, key)
    if value is None:
        return None
    try:
        return check_finite(float(value), key, low=0, low_open=positive)
    except (TypeError, ValueError):
        raise NeurofmError(
            f"{where}: {key} {value!r} is not a finite number {'>' if positive else '>='} 0"
        ) from None


def parse_positions(text: str, where: str = "positions") -> dict:
    """``"LFP1=Cz; D1=-30 -10 20"`` -> ``{"LFP1": "Cz", "D1": (-30.0, -10.0, 20.0)}``."""
    out = {}
    for entry in filter(str.strip, str(text).split(";")):
        name, sep, target = (s.strip() for s in entry.partition("="))
        parts = target.replace(",", " ").split()
        try:
            place = tuple(check_finite(float(p), "coordinate") for p in parts)
        except (ValueError, NeurofmError):
            place = parts[0] if len(parts) == 1 else None
        if not sep or not name or not (isinstance(place, str) or len(place or ()) == 3):
            raise NeurofmError(
                f"{where}: {entry.strip()!r} is not NAME=TARGET with TARGET a 10-05 electrode "
                "or three MNI coordinates in mm (e.g. 'LFP1=Cz; D1=-30 -10 20')"
            )
        out[name] = place
    return out


def _recording_fields(row, where: str, csv: Path) -> dict:
    """The columns that describe the whole recording, as given on this row."""
    fields = {k: str(_value(row, k)) for k in ("subject", "session", "split", "units")
              if _value(row, k) is not None}  # fmt: skip
    if "units" in fields:  # a name ('uV') or a factor to volts ('1e-6')
        try:
            fields["units"] = float(fields["units"])
        except ValueError:
            pass
    for key in ("sfreq", "t_r"):
        if _value(row, key) is not None:
            fields[key] = _number(row, key, where, positive=True)
    if _value(row, "ch_names") is not None:
        fields["ch_names"] = tuple(str(_value(row, "ch_names")).replace(";", " ").split())
    if _value(row, "positions") is not None:
        fields["positions"] = parse_positions(_value(row, "positions"), f"{where}: positions")
    if _value(row, "confounds") is not None:
        fields["confounds"] = str(_file(row, csv, f"{where}: confounds", "confounds"))
    if _value(row, "onset") is None and _value(row, "label") is not None:
        fields["label"] = str(_value(row, "label"))
    return fields


def _read_table(path: Path, modality: str):
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as err:  # pandas' parser and decoding errors are ValueErrors
        raise NeurofmError(f"{path.name} is not a readable CSV table ({err})") from None
    other = "fmri" if modality == "eeg" else "eeg"
    for column in table.columns:
        if column in COLUMNS[other] and column not in COLUMNS[modality]:
            raise NeurofmError(
                f"{path.name}: column {column!r} describes {NAMES[other]} recordings, but the "
                f"recipe is {NAMES[modality]} (modality: {modality}): its columns are "
                f"{', '.join(COLUMNS[modality])}"
            )
        check_option(f"{path.name} column", column, COLUMNS[modality])
    if "path" not in table.columns:
        raise NeurofmError(f"{path.name} needs a 'path' column")
    return table


def _file(row, csv: Path, where: str, column: str = "path") -> Path:
    name = _value(row, column)
    file = Path(str(name)) if name is not None else None
    if file is not None and not file.is_absolute():
        file = csv.parent / file
    try:
        exists = file is not None and file.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        exists = False
    if not exists:
        raise NeurofmError(f"{where}: {'no ' + column if name is None else repr(name)} is not "
                           "a file: paths are relative to the manifest's folder, or absolute")  # fmt: skip
    return file


def read_manifest(path: Path, *, modality: str = "eeg") -> list[Recording]:
    """Recordings (``modality="fmri"``: runs) described by a manifest CSV (module docstring)."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.csv"))
        if len(candidates) != 1:
            raise NeurofmError(f"give the manifest CSV itself; {path} holds {len(candidates)}")
        path = candidates[0]
    files: dict[Path, dict] = {}  # file -> recording-level fields, events, first line
    for i, row in enumerate(_read_table(path, modality).to_dict("records"), start=2):  # lines
        where = f"{path.name} line {i}"
        file = _file(row, path, where)
        group = files.setdefault(file, {"fields": {}, "events": [], "where": where})
        for key, value in _recording_fields(row, where, path).items():
            if group["fields"].setdefault(key, value) != value:
                raise NeurofmError(
                    f"{where}: {key} {value!r} contradicts {group['fields'][key]!r} given for "
                    f"{file.name} on {group['where']}: one recording has one {key}"
                )
        onset = _number(row, "onset", where)
        if onset is not None:
            label = _value(row, "label")
            duration = _number(row, "duration", where) or 0.0
            group["events"].append(Event(onset, duration, "event" if label is None else str(label)))
    stems = Counter(map(_stem, files))
    return [
        _recording(file, g, path, stems[_stem(file)] > 1, modality) for file, g in files.items()
    ]


def _stem(file: Path) -> str:
    """The name without its suffix: ``run.nii.gz`` -> ``run``."""
    return file.name.removesuffix(".gz").rsplit(".", 1)[0]


def _recording(file: Path, group: dict, csv: Path, clash: bool, modality: str) -> Recording:
    f = group["fields"]
    array = None
    if modality == "eeg" and file.suffix.lower() in ARRAY_SUFFIXES:
        if "sfreq" not in f or "ch_names" not in f:
            raise NeurofmError(f"{group['where']}: {file.name} is a bare array; give its sfreq "
                               "and ch_names columns")  # fmt: skip
        array = functools.partial(_load_array, file, len(f["ch_names"]))
    reader = {k: f[k] for k in ("positions", "confounds") if k in f}
    # files of one name in several folders: the path relative to the manifest tells them apart
    rel = file.relative_to(csv.parent) if file.is_relative_to(csv.parent) else file
    stem = _stem(file)
    return Recording(
        dataset="manifest", subject=f.get("subject", stem), session=f.get("session", ""),
        path=None if array else file, split=f.get("split"), array=array,
        ch_names=list(f["ch_names"]) if array else None, sfreq=f.get("sfreq") if array else None,
        units=f.get("units"), events=group["events"],
        labels={"label": f["label"]} if "label" in f else {}, label=f.get("label"),
        reader=reader, id=str(rel.parent / stem) if clash else stem, modality=modality,
        t_r=f.get("t_r"),
    )  # fmt: skip
