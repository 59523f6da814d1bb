"""PhysioNet: EEG Motor Movement/Imagery (eegmmidb), Sleep-EDF (expanded) and EEG During
Mental Arithmetic Tasks (eegmat).

eegmmidb: ``SXXX/SXXXRYY.edf`` with EDF+ annotations ``T0`` (rest), ``T1``, ``T2`` whose
meaning depends on the run. Sleep-EDF: ``SC4ssNE0-PSG.edf`` with its hypnogram
``SC4ssNxx-Hypnogram.edf`` (same first 6 characters; ``ST7ssN`` for the telemetry study);
stages R&K, mapped to AASM (stages 3 and 4 -> N3). eegmat: ``SubjectNN_1.edf`` (rest,
about 180 s) and ``SubjectNN_2.edf`` (mental serial subtraction, 60 s), 19 scalp channels
``EEG Fp1`` ... ``EEG Pz`` (old 10-20 names T3-T6) referenced to linked ears, plus ``EEG
A2-A1`` (the ear-to-ear reference check) and ``ECG ECG`` at 500 Hz; ``subject-info.csv``
beside them gives age, gender, recording year, the number of subtractions and the count
quality (0 bad, 1 good).
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import NeurofmError, check_option, logger, validate_type
from . import Event, Recording, require

#: run -> (T1, T2) meaning; T0 is rest in every task run
EEGMMIDB_TASKS = {
    **{r: ("left_fist", "right_fist") for r in (3, 7, 11)},
    **{r: ("imagine_left_fist", "imagine_right_fist") for r in (4, 8, 12)},
    **{r: ("both_fists", "both_feet") for r in (5, 9, 13)},
    **{r: ("imagine_both_fists", "imagine_both_feet") for r in (6, 10, 14)},
}
EEGMMIDB_BASELINE = {1: "eyes_open", 2: "eyes_closed"}
SLEEP_STAGES = {
    "Sleep stage W": "W", "Sleep stage 1": "N1", "Sleep stage 2": "N2", "Sleep stage 3": "N3",
    "Sleep stage 4": "N3", "Sleep stage R": "R", "Sleep stage ?": "?", "Movement time": "movement",
}  # fmt: skip


def _annotations(path: Path):
    import mne

    try:
        return mne.read_annotations(path)
    except Exception as err:
        raise NeurofmError(f"could not read the annotations of {path.name} ({err})") from err


def read_eegmmidb(root: Path, *, runs=None):
    """eegmmidb runs with T0/T1/T2 mapped to what they mean in that run."""
    files = require(sorted(Path(root).rglob("S[0-9][0-9][0-9]R[0-9][0-9].edf")), root,
                    "SXXXRYY.edf files", "eegmmidb")  # fmt: skip
    for run in [] if runs is None else runs:
        check_option("eegmmidb run", run, range(1, 15))
    for edf in files:
        subject, run = re.match(r"(S\d{3})R(\d{2})", edf.stem).groups()
        run = int(run)
        if runs is not None and run not in runs:
            continue
        meaning = {"T0": "rest"}
        if run in EEGMMIDB_TASKS:
            meaning.update(T1=EEGMMIDB_TASKS[run][0], T2=EEGMMIDB_TASKS[run][1])
        events = [Event(float(a["onset"]), float(a["duration"]), meaning.get(a["description"], a["description"]))
                  for a in _annotations(edf)]  # fmt: skip
        yield Recording(
            dataset="eegmmidb", subject=subject, session=f"R{run:02d}", path=edf,
            events=events, labels={"run": run, "task": EEGMMIDB_BASELINE.get(
                run, "/".join(EEGMMIDB_TASKS.get(run, ("", ""))))},
            reader={"annotations": "replace"}, id=edf.stem,
        )  # fmt: skip


def read_sleep_edf(root: Path):
    """Sleep-EDF PSG files paired with their hypnograms; events are 30 s stages (AASM)."""
    psgs = require(sorted(Path(root).rglob("*-PSG.edf")), root, "*-PSG.edf files", "Sleep-EDF")
    hypnograms = {p.name[:6]: p for p in Path(root).rglob("*-Hypnogram.edf")}
    for psg in psgs:
        key = psg.name[:6]
        hyp = hypnograms.get(key)
        if hyp is None:
            logger.warning("%s has no hypnogram (%s*-Hypnogram.edf): skipped", psg.name, key)
            continue
        events = [Event(float(a["onset"]), float(a["duration"]), SLEEP_STAGES.get(a["description"], a["description"]))
                  for a in _annotations(hyp)]  # fmt: skip
        m = re.match(r"S([CT])\d(\d\d)(\d)", psg.name)
        study, subject, night = m.groups() if m else ("", key, "")
        yield Recording(
            dataset="sleep-edf", subject=f"S{study}{subject}", session=night, path=psg,
            events=events, labels={"study": {"C": "cassette", "T": "telemetry"}.get(study, ""),
                                   "hypnogram": hyp.name},
            reader={"annotations": "replace"}, id=psg.stem,
        )  # fmt: skip


#: eegmat: file number -> the recording's label (its session is the number)
EEGMAT_TASKS = {1: "rest", 2: "arithmetic"}
#: subject-info.csv column -> (labels key, type)
EEGMAT_INFO = {
    "Age": ("age", int), "Gender": ("gender", str), "Recording year": ("recording_year", int),
    "Number of subtractions": ("subtractions", float), "Count quality": ("count_quality", int),
}  # fmt: skip
#: not scalp EEG: the ear-to-ear reference check would otherwise read as electrode 'A2'
#: (A2 referenced to A1), a channel none of the others is referenced like; ECG is
#: dropped by read_eeg's channel types anyway
EEGMAT_EXCLUDE = ("EEG A2-A1",)


def _eegmat_info(root: Path) -> dict[str, dict]:
    """``subject-info.csv`` as ``{subject: labels}``; {} (with a warning) when absent."""
    import csv

    found = sorted(Path(root).rglob("subject-info.csv"))
    if not found:
        logger.warning("eegmat: no subject-info.csv under %s: recordings carry no age, gender, "
                       "subtractions or count quality", root)  # fmt: skip
        return {}
    info = {}
    try:
        with open(found[0], newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise NeurofmError(f"{found[0]} is not a readable CSV table ({err})") from None
    for line, row in enumerate(rows, start=2):
        subject = (row.get("Subject") or "").strip()
        labels = {}
        for column, (key, kind) in EEGMAT_INFO.items():
            text = (row.get(column) or "").strip()
            if not text:
                continue
            try:
                labels[key] = kind(float(text)) if kind is int else kind(text)
            except ValueError:
                raise NeurofmError(f"{found[0].name} line {line}: {column} {text!r} is not a "
                                   "number (is this EEGMAT's subject-info.csv?)") from None  # fmt: skip
        if subject:
            info[subject] = labels
    return info


def read_eegmat(root: Path, *, subjects=None) -> list[Recording]:
    """EEGMAT recordings: label ``rest`` (``_1``) or ``arithmetic`` (``_2``), session the
    file's number, subject-info.csv's fields in ``labels`` (``count_quality`` 1 good, 0
    bad); ``subjects`` (``Subject00`` ..., or numbers) keeps only those. The ``EEG A2-A1``
    channel is excluded (module docstring)."""
    files = require(sorted(Path(root).rglob("Subject[0-9][0-9]_[12].edf")), root,
                    "SubjectNN_1.edf / SubjectNN_2.edf files", "EEGMAT")  # fmt: skip
    found = sorted({f.stem.split("_")[0] for f in files})
    if subjects is not None:
        subjects = [subjects] if isinstance(subjects, str | int) else subjects
        validate_type(subjects, (list, tuple), "eegmat subjects", "a list such as [Subject00, 3]")
        subjects = [f"Subject{s:02d}" if isinstance(s, int) else str(s) for s in subjects]
        for subject in subjects:
            check_option("EEGMAT subject", subject, found)
    info, recordings = _eegmat_info(root), []
    for edf in files:
        subject, number = edf.stem.split("_")
        if subjects is not None and subject not in subjects:
            continue
        task = EEGMAT_TASKS[int(number)]
        recordings.append(Recording(
            dataset="eegmat", subject=subject, session=number, path=edf,
            labels={"task": task, **info.get(subject, {})}, label=task,
            reader={"exclude": list(EEGMAT_EXCLUDE)}, id=edf.stem,
        ))  # fmt: skip
    return recordings
