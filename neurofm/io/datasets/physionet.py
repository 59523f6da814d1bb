"""PhysioNet: EEG Motor Movement/Imagery (eegmmidb) and Sleep-EDF (expanded).

eegmmidb: ``SXXX/SXXXRYY.edf`` with EDF+ annotations ``T0`` (rest), ``T1``, ``T2`` whose
meaning depends on the run. Sleep-EDF: ``SC4ssNE0-PSG.edf`` with its hypnogram
``SC4ssNxx-Hypnogram.edf`` (same first 6 characters; ``ST7ssN`` for the telemetry study);
stages R&K, mapped to AASM (stages 3 and 4 -> N3).
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import NeurofmError, check_option, logger
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
