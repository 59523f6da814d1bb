"""Dataset readers: each walks a corpus's real on-disk layout and yields :class:`Recording`.

::

    for rec in neurofm.io.datasets.read_dataset("chbmit", "/data/chb-mit"):
        raw = rec.load()                     # mne Raw via read_eeg, events as annotations
        rec.subject, rec.session, rec.events # seizure onsets/durations in seconds

=============  ==============================================================
name           layout read
=============  ==============================================================
``chbmit``     ``chbNN/chbNN_MM.edf`` + ``chbNN-summary.txt`` (+ WFDB ``.seizures``)
``tusz``       ``edf/{split}/{subject}/{session}/{montage}/*.edf`` + ``.csv_bi``/``.csv``
``tuab``       ``edf/{train,eval}/{normal,abnormal}/{montage}/*.edf``
``tuev``       ``edf/{train,eval}/{subject}/*.edf`` + ``.rec`` event files
``seed``       SEED ``Preprocessed_EEG/*.mat`` (``djc_eeg1`` ...) + ``label.mat``
``seed-iv``    ``eeg_raw_data/{1,2,3}/*.mat`` (``cz_eeg1`` ...), labels per session
``seed-v``     ``EEG_raw/{subject}_{session}_{date}.cnt`` (Neuroscan), clips as events
``deap``       ``data_preprocessed_matlab/sXX.mat`` (the pickle only on opt-in)
``dreamer``    ``DREAMER.mat``
``eegmmidb``   ``SXXX/SXXXRYY.edf`` with EDF+ annotations T0/T1/T2
``sleep-edf``  ``*-PSG.edf`` + ``*-Hypnogram.edf`` pairs
``manifest``   a CSV with ``path`` and any of subject, session, label, onset, ...
=============  ==============================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import (
    ConfigError,
    NeurofmError,
    check_option,
    did_you_mean,
    logger,
    validate_type,
)


@dataclass(frozen=True)
class Event:
    """Something at a time in a recording (seconds); ``channel`` '' means all channels."""

    onset: float
    duration: float
    label: str
    channel: str = ""


@dataclass
class Recording:
    """One recording (or one trial) of a corpus, with who, when and what happened.

    A file-backed recording has ``path``; a trial stored inside a container (SEED's and
    DEAP's ``.mat``) has ``array`` (a loader returning ``(channels, samples)``), ``sfreq``
    and ``ch_names``. ``units`` is what the numbers are in (``read_eeg``'s ``units=``).
    ``label`` is the class of the whole recording (a manifest row's ``label``, TUAB's
    normal/abnormal, a SEED trial's emotion): windows that overlap no event get it.
    """

    dataset: str
    subject: str
    session: str = ""
    path: Path | None = None
    events: list[Event] = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    split: str | None = None
    array: Callable[[], np.ndarray] | None = None
    sfreq: float | None = None
    ch_names: list[str] | None = None
    units: str | float | None = None
    reader: dict = field(default_factory=dict)  # extra read_eeg keyword arguments
    id: str = ""
    label: str | None = None

    def load(self, **kwargs):
        """The recording as a canonical ``mne.io.Raw`` with its events as annotations."""
        import mne

        from ..eeg import read_eeg

        options = {**self.reader, **kwargs}
        replace = options.pop("annotations", "add") == "replace"  # events came from the file
        if self.units is not None:
            options.setdefault("units", self.units)
        if self.array is not None:
            raw = read_eeg(self.array(), sfreq=self.sfreq, ch_names=self.ch_names, **options)
        else:
            raw = read_eeg(self.path, **options)
        if self.events:
            end = raw.times[-1] + 1 / raw.info["sfreq"]
            late = [e for e in self.events if e.onset + e.duration > end + 1e-6]
            if late:
                logger.warning(
                    "%s: %d of %d events end after the recording (%.1f s), first %s at %.1f s: "
                    "is the file truncated, or the annotation from another file?",
                    self.id or self.path, len(late), len(self.events), end, late[0].label,
                    late[0].onset,
                )  # fmt: skip
            annotations = raw.annotations.copy() if not replace else mne.Annotations(
                [], [], [], orig_time=raw.annotations.orig_time)  # fmt: skip
            for e in self.events:
                annotations.append(e.onset, e.duration, e.label,
                                   ch_names=[[e.channel]] if e.channel in raw.ch_names else None)  # fmt: skip
            raw.set_annotations(annotations, verbose="error")  # overruns warned above
        return raw

    def label_at(self, start: float, stop: float, default: str = "") -> str:
        """The event label overlapping [start, stop) most, else the recording's ``label``,
        else ``default``."""
        best, overlap = default if self.label is None else self.label, 0.0
        for e in self.events:
            o = min(stop, e.onset + e.duration) - max(start, e.onset)
            if o > overlap:
                best, overlap = e.label, o
        return best


#: dataset name -> "module:function" of its reader (modules load on first use)
READERS = {
    "chbmit": "chbmit:read_chbmit",
    "tusz": "tuh:read_tusz",
    "tuab": "tuh:read_tuab",
    "tuev": "tuh:read_tuev",
    "seed": "emotion:read_seed",
    "seed-iv": "emotion:read_seed_iv",
    "seed-v": "emotion:read_seed_v",
    "deap": "emotion:read_deap",
    "dreamer": "emotion:read_dreamer",
    "eegmmidb": "physionet:read_eegmmidb",
    "sleep-edf": "physionet:read_sleep_edf",
    "manifest": "manifest:read_manifest",
}
DATASETS = tuple(READERS)


def _reader(name: str) -> Callable:
    import importlib

    check_option("dataset", name, DATASETS)
    module, function = READERS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


@functools.cache
def read_eeg_options() -> frozenset[str]:
    """Keyword arguments ``read_eeg`` takes: its own and those of MNE's ``read_raw_*``."""
    import inspect

    import mne

    from ..eeg import read_eeg

    readers = [getattr(mne.io, f) for f in dir(mne.io) if f.startswith("read_raw_")]
    names = {p for f in (read_eeg, *readers) for p in inspect.signature(f).parameters}
    return frozenset(names - {"source", "input_fname", "fname", "return_report", "verbose"})


def split_reader_options(name: str, options: dict) -> tuple[dict, dict]:
    """``reader:`` options as (the dataset reader's own, ``read_eeg``'s for every file).

    Raises a ``ConfigError`` naming every unknown key with the closest known one.
    """
    import inspect

    params = inspect.signature(_reader(name)).parameters
    own_names = [p for p in params if p != "root"]
    eeg_names = read_eeg_options()
    validate_type(options, dict, "reader options", "a mapping such as {positions: {X: Cz}}")
    unknown = [k for k in options if k not in own_names and k not in eeg_names]
    if unknown:
        takes = f"{name}'s reader takes {', '.join(own_names)}; " if own_names else ""
        raise ConfigError("\n".join(
            f"unknown reader option {k!r}{did_you_mean(k, [*own_names, *eeg_names])}: {takes}"
            "other options go to read_eeg (units, rename, montage, positions, format, "
            "or an MNE reader's, e.g. data_format)"
            for k in unknown
        ))  # fmt: skip
    own = {k: v for k, v in options.items() if k in own_names}
    return own, {k: v for k, v in options.items() if k not in own}


def _with_read_options(rec: Recording, options: dict) -> Recording:
    """Add read_eeg options to a recording's own; mappings (positions, rename) merge."""
    merged = dict(rec.reader)
    for key, value in options.items():
        old = merged.get(key)
        merged[key] = (
            {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
        )
    rec.reader = merged
    return rec


def read_dataset(name: str, root, **options) -> Iterable[Recording]:
    """Recordings of dataset ``name`` under ``root`` (a folder, or the manifest CSV).

    ``options`` are the reader's own (e.g. chbmit's ``subjects``) and ``read_eeg``
    options applied to every recording (``positions``, ``units``, ``data_format`` ...).
    """
    own, read_options = split_reader_options(name, options)
    root = Path(root).expanduser()
    if not root.exists():
        raise NeurofmError(f"{root} does not exist: give the folder where {name} was unpacked")
    recordings = _reader(name)(root, **own)
    return (_with_read_options(r, read_options) for r in recordings) if read_options else recordings


def require(found: list, root: Path, pattern: str, dataset: str) -> list:
    if not found:
        raise NeurofmError(
            f"no {pattern} under {root}: is this the {dataset} folder? (see data_cards/)"
        )
    return found


__all__ = ["DATASETS", "Event", "Recording", "read_dataset"]
