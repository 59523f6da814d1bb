"""A manifest for any user's own data: a CSV with ``path`` and optional columns.

Columns: ``path`` (relative to the CSV's folder, or absolute), and any of ``subject``,
``session``, ``label``, ``onset``, ``duration``, ``split``, ``sfreq``, ``ch_names``
(separated by ``;`` or spaces), ``units``. A row with ``onset`` is an event of that file
(``label`` its name); a row without is the recording itself (``label`` its label).
Signals in any format ``read_eeg`` reads, or ``.npy``/``.txt``/``.csv`` numeric arrays
(channels x samples, or samples x channels) with ``sfreq`` and ``ch_names``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from ...utils import NeurofmError, did_you_mean
from . import Event, Recording

COLUMNS = ("path", "subject", "session", "label", "onset", "duration", "split", "sfreq",
           "ch_names", "units")  # fmt: skip
ARRAY_SUFFIXES = (".npy", ".txt", ".csv")


def _load_array(path: Path, n_channels: int) -> np.ndarray:
    if path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
    else:
        x = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
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


def read_manifest(path: Path) -> list[Recording]:
    """Recordings described by a manifest CSV (see the module docstring)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.csv"))
        if len(candidates) != 1:
            raise NeurofmError(f"give the manifest CSV itself; {path} holds {len(candidates)}")
        path = candidates[0]
    table = pd.read_csv(path, dtype={"subject": str, "session": str, "split": str})
    unknown = [c for c in table.columns if c not in COLUMNS]
    if unknown:
        raise NeurofmError(
            f"{path.name}: unknown column {unknown[0]!r}{did_you_mean(unknown[0], COLUMNS)}; "
            f"allowed: {', '.join(COLUMNS)}"
        )
    if "path" not in table.columns:
        raise NeurofmError(f"{path.name} needs a 'path' column")
    recordings: dict[str, Recording] = {}
    for i, row in enumerate(table.to_dict("records"), start=2):  # line numbers in the CSV
        file = Path(str(row["path"]))
        file = file if file.is_absolute() else path.parent / file
        if not file.exists():
            raise NeurofmError(f"{path.name} line {i}: {file} does not exist")
        rec = recordings.get(str(file))
        if rec is None:
            sfreq, names = _value(row, "sfreq"), _value(row, "ch_names")
            array = None
            ch_names = None
            if file.suffix.lower() in ARRAY_SUFFIXES:
                if sfreq is None or names is None:
                    raise NeurofmError(
                        f"{path.name} line {i}: {file.name} is a bare array; give its sfreq "
                        "and ch_names columns"
                    )
                ch_names = str(names).replace(";", " ").split()
                array = functools.partial(_load_array, file, len(ch_names))
            rec = recordings[str(file)] = Recording(
                dataset="manifest", subject=str(_value(row, "subject", file.stem)),
                session=str(_value(row, "session", "")), path=None if array else file,
                split=_value(row, "split"), array=array, ch_names=ch_names,
                sfreq=float(sfreq) if sfreq is not None else None,
                units=_value(row, "units"), id=file.stem,
            )  # fmt: skip
        onset = _value(row, "onset")
        label = _value(row, "label")
        if onset is not None:
            rec.events.append(Event(float(onset), float(_value(row, "duration", 0.0)),
                                    str(label) if label is not None else "event"))  # fmt: skip
        elif label is not None:
            rec.labels["label"] = label
    return list(recordings.values())
