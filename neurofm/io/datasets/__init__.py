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
``eegmat``     ``SubjectNN_{1,2}.edf`` (rest, mental arithmetic) + ``subject-info.csv``
``folder``     every recording under a folder, in any format ``read_eeg`` reads
               (``include``/``exclude`` patterns, ``subject`` regex, ``readers`` for
               known datasets in subfolders): a pretraining corpus of mixed files
``manifest``   a CSV with ``path`` and any of subject, session, label, onset, ...;
               EEG recordings, or fMRI runs (NIfTI images or parcel tables)
=============  ==============================================================

The corpus's recipe says which modality is read (``read_dataset(..., modality="fmri")``):
EEG recordings load through :func:`~neurofm.read_eeg`, fMRI runs through
:func:`~neurofm.read_fmri` (an image with ``atlas=``, a table with its ``t_r``).
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
    """One recording (or one trial, or one fMRI run) of a corpus, with who, when and what.

    A file-backed recording has ``path``; a trial stored inside a container (SEED's and
    DEAP's ``.mat``) has ``array`` (a loader returning ``(channels, samples)``), ``sfreq``
    and ``ch_names``. ``units`` is what the numbers are in (``read_eeg``'s ``units=``).
    ``label`` is the class of the whole recording (a manifest row's ``label``, TUAB's
    normal/abnormal, a SEED trial's emotion): windows that overlap no event get it.
    ``modality`` ``"fmri"``: a run read by ``read_fmri`` (``t_r`` for a table's TR);
    ``reader`` holds the reader's keyword arguments (``read_eeg``'s or ``read_fmri``'s).
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
    reader: dict = field(default_factory=dict)  # extra read_eeg / read_fmri keyword arguments
    id: str = ""
    label: str | None = None
    modality: str = "eeg"
    t_r: float | None = None

    def load(self, recipe=None, **kwargs):
        """EEG: a canonical ``mne.io.Raw`` with the events as annotations. fMRI: the
        (time, parcel) series ``read_fmri`` gives, prepared with ``recipe``."""
        options = {**self.reader, **kwargs}
        if self.modality == "fmri":
            from ..fmri import read_fmri

            if self.t_r is not None:
                options.setdefault("t_r", self.t_r)
            source = self.path if self.array is None else self.array()
            return read_fmri(source, recipe=recipe, **options)
        return self._load_eeg(options)

    def _load_eeg(self, options: dict):
        import mne

        from ..eeg import read_eeg

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
    "eegmat": "physionet:read_eegmat",
    "folder": "folder:read_folder",
    "manifest": "manifest:read_manifest",
}
DATASETS = tuple(READERS)
MODALITIES = ("eeg", "fmri")
#: readers of fMRI runs as well as EEG (they take ``modality=``); the others read EEG
FMRI_DATASETS = ("manifest",)


def _reader(name: str) -> Callable:
    import importlib

    check_option("dataset", name, DATASETS)
    module, function = READERS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def _parameters(*functions) -> frozenset[str]:
    """Keyword parameters of ``functions`` (their ``**kwargs`` left out)."""
    import inspect

    return frozenset(
        name for f in functions for name, p in inspect.signature(f).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )  # fmt: skip


@functools.cache
def read_eeg_options() -> frozenset[str]:
    """Keyword arguments ``read_eeg`` takes: its own and those of MNE's ``read_raw_*``."""
    import mne

    from ..eeg import read_eeg

    readers = [getattr(mne.io, f) for f in dir(mne.io) if f.startswith("read_raw_")]
    names = _parameters(read_eeg, *readers)
    return names - {"source", "input_fname", "fname", "return_report", "verbose"}


@functools.cache
def read_fmri_options() -> frozenset[str]:
    """Keyword arguments ``read_fmri`` takes (with those it passes on to read the run)."""
    from .. import fmri

    functions = [getattr(fmri, f) for f in ("read_fmri", "read_parcels") if hasattr(fmri, f)]
    return _parameters(*functions) - {"source", "recipe"}


def _file_reader(modality: str) -> tuple[str, frozenset[str], str]:
    """(reader name, its options, examples) of one modality's files."""
    if modality == "fmri":
        return "read_fmri", read_fmri_options(), "atlas, t_r, confounds, labels, coords, layout"
    return ("read_eeg", read_eeg_options(),
            "units, rename, montage, positions, format, or an MNE reader's, e.g. data_format")  # fmt: skip


def check_modality(name: str, modality: str) -> None:
    """Refuse a modality that dataset ``name`` does not hold."""
    check_option("modality", modality, MODALITIES)
    if modality == "fmri" and name not in FMRI_DATASETS:
        raise ConfigError(
            f"dataset {name!r} holds EEG, but the recipe is fMRI (modality: fmri): list fMRI "
            "runs (NIfTI images or parcel tables) in a manifest CSV and use dataset: manifest"
        )


def split_reader_options(name: str, options: dict, modality: str = "eeg") -> tuple[dict, dict]:
    """``reader:`` options as (the dataset reader's own, the file reader's for every file:
    ``read_eeg``'s, or ``read_fmri``'s for ``modality="fmri"``).

    Raises a ``ConfigError`` naming every unknown key with the closest known one.
    """
    import inspect

    check_modality(name, modality)
    params = inspect.signature(_reader(name)).parameters
    own_names = [p for p in params if p not in ("root", "modality")]
    reader, file_names, examples = _file_reader(modality)
    validate_type(options, dict, "reader options", "a mapping such as {positions: {X: Cz}}")
    unknown = [k for k in options if k not in own_names and k not in file_names]
    if unknown:
        takes = f"{name}'s reader takes {', '.join(own_names)}; " if own_names else ""
        raise ConfigError("\n".join(
            f"unknown reader option {k!r}{did_you_mean(k, [*own_names, *file_names])}: {takes}"
            f"other options go to {reader} ({examples})"
            for k in unknown
        ))  # fmt: skip
    own = {k: v for k, v in options.items() if k in own_names}
    return own, {k: v for k, v in options.items() if k not in own}


def _with_read_options(rec: Recording, options: dict) -> Recording:
    """Add the config's file-reader options to a recording's own, which are more specific
    and win: a value the recording has (a manifest row's ``t_r``, ``units``,
    ``confounds``; a dataset's known units) is kept, and mappings (``positions``,
    ``rename``) merge with the recording's entries winning."""
    merged = dict(rec.reader)
    for key, value in options.items():
        mine = rec.reader.get(key, {"t_r": rec.t_r, "units": rec.units}.get(key))
        if mine is None:
            merged[key] = value
        elif isinstance(mine, dict) and isinstance(value, dict):
            merged[key] = {**value, **mine}
    rec.reader = merged
    return rec


def read_dataset(name: str, root, *, modality: str = "eeg", **options) -> Iterable[Recording]:
    """Recordings of dataset ``name`` under ``root`` (a folder, or the manifest CSV).

    ``options`` are the reader's own (e.g. chbmit's ``subjects``) and the file reader's
    options applied to every recording: ``read_eeg``'s (``positions``, ``units``,
    ``data_format`` ...), or for ``modality="fmri"`` ``read_fmri``'s (``atlas``, ``t_r``,
    ``confounds`` ...). They are defaults: a recording's own value (a manifest row's
    ``t_r`` or ``units``, a dataset's known units) wins, and a mapping such as
    ``positions`` merges with the row's, the row's entries winning. A path option
    starting with ``~`` is expanded.
    """
    own, read_options = split_reader_options(name, options, modality)
    root = Path(root).expanduser()
    if not root.exists():
        raise NeurofmError(f"{root} does not exist: give the folder where {name} was unpacked")
    if name in FMRI_DATASETS:
        own["modality"] = modality
    read_options = {k: str(Path(v).expanduser()) if isinstance(v, str) and v.startswith("~")
                    else v for k, v in read_options.items()}  # fmt: skip
    recordings = _reader(name)(root, **own)
    return (_with_read_options(r, read_options) for r in recordings) if read_options else recordings


def require(found: list, root: Path, pattern: str, dataset: str) -> list:
    if not found:
        raise NeurofmError(
            f"no {pattern} under {root}: is this the {dataset} folder? (see data_cards/)"
        )
    return found


__all__ = ["DATASETS", "FMRI_DATASETS", "Event", "Recording", "read_dataset"]
