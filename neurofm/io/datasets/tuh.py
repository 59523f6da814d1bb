"""Temple University Hospital corpora: TUSZ (seizures), TUAB (abnormal), TUEV (events).

File names are ``{subject}_{session}_t{token}.edf`` (v2+: ``aaaaaaac_s001_t000.edf``);
sessions sit in folders ``s001_2002`` and montage folders ``01_tcp_ar``, ``02_tcp_le``,
``03_tcp_ar_a``. TUSZ labels: ``.csv_bi`` (``TERM`` rows, ``seiz``/``bckg``) and ``.csv``
(per bipolar channel, seizure types ``fnsz``, ``gnsz``, ``cpsz`` ...), both with ``#``
header lines then ``channel,start_time,stop_time,label,confidence``. TUEV: ``.rec`` rows
``channel_index,start,stop,code`` with codes 1 spsw, 2 gped, 3 pled, 4 eyem, 5 artf,
6 bckg over the 22-channel TCP montage.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from . import Event, Recording, require

_NAME = re.compile(r"^([a-z]{8})_(s\d{3})_(t\d{3})$")
BACKGROUND = ("bckg", "null")
TUEV_CODES = {1: "spsw", 2: "gped", 3: "pled", 4: "eyem", 5: "artf", 6: "bckg"}
TCP_MONTAGE = (
    "FP1-F7 F7-T3 T3-T5 T5-O1 FP2-F8 F8-T4 T4-T6 T6-O2 A1-T3 T3-C3 C3-CZ CZ-C4 C4-T4 "
    "T4-A2 FP1-F3 F3-C3 C3-P3 P3-O1 FP2-F4 F4-C4 C4-P4 P4-O2"
).split()


def _parts(edf: Path) -> tuple[str, str, str]:
    m = _NAME.match(edf.stem)
    if m:
        return m.groups()
    subject = edf.stem.split("_")[0]
    return subject, "", edf.stem


def _montage(edf: Path) -> str:
    return next((p for p in edf.parts if re.match(r"\d\d_tcp_", p)), "")


def _split(edf: Path, root: Path) -> str | None:
    rel = edf.relative_to(root).parts
    return next((p for p in rel if p in ("train", "dev", "eval")), None)


def read_tuh_csv(path: Path, *, keep_background: bool = False) -> list[Event]:
    """Events of a TUSZ ``.csv``/``.csv_bi`` file (``TERM`` rows apply to all channels)."""
    rows = [
        ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    events = []
    for row in csv.DictReader(rows):
        label = row["label"].strip()
        if label in BACKGROUND and not keep_background:
            continue
        start, stop = float(row["start_time"]), float(row["stop_time"])
        channel = "" if row["channel"].strip().upper() == "TERM" else row["channel"].strip()
        events.append(Event(start, stop - start, label, channel))
    return events


def read_tusz(root: Path, *, per_channel: bool = False, keep_background: bool = False):
    """TUSZ recordings; events from ``.csv_bi`` (or per-channel ``.csv`` if asked)."""
    edfs = require(sorted(Path(root).rglob("*.edf")), root, "*.edf files", "TUSZ")
    for edf in edfs:
        subject, session, token = _parts(edf)
        label_file = edf.with_suffix(".csv" if per_channel else ".csv_bi")
        if not label_file.exists():  # older releases: only one of the two
            label_file = edf.with_suffix(".csv_bi" if per_channel else ".csv")
        events = (
            read_tuh_csv(label_file, keep_background=keep_background) if label_file.exists() else []
        )
        if not per_channel and label_file.suffix == ".csv":  # collapse channels to terms
            events = [Event(e.onset, e.duration, e.label) for e in events]
        yield Recording(
            dataset="tusz", subject=subject, session=session, path=edf, events=events,
            labels={"montage": _montage(edf), "seizure": any(e.label not in BACKGROUND
                                                           for e in events)},
            split=_split(edf, Path(root)), id=edf.stem,
        )  # fmt: skip


def read_tuab(root: Path):
    """TUAB recordings labelled ``abnormal`` 0/1 from their folder."""
    edfs = require(sorted(Path(root).rglob("*.edf")), root, "*.edf files", "TUAB")
    for edf in edfs:
        parts = edf.relative_to(root).parts
        if "abnormal" in parts:
            abnormal = 1
        elif "normal" in parts:
            abnormal = 0
        else:
            continue
        subject, session, _ = _parts(edf)
        yield Recording(dataset="tuab", subject=subject, session=session, path=edf,
                        labels={"abnormal": abnormal, "montage": _montage(edf)},
                        label="abnormal" if abnormal else "normal",
                        split=_split(edf, Path(root)), id=edf.stem)  # fmt: skip


def read_tuev(root: Path):
    """TUEV recordings with ``.rec`` events on TCP channels (labels spsw ... bckg)."""
    edfs = require(sorted(Path(root).rglob("*.edf")), root, "*.edf files", "TUEV")
    for edf in edfs:
        rec = edf.with_suffix(".rec")
        events = []
        if rec.exists():
            for row in csv.reader(ln for ln in rec.read_text().splitlines() if ln.strip()):
                ch, start, stop, code = (
                    int(row[0]),
                    float(row[1]),
                    float(row[2]),
                    int(float(row[3])),
                )
                events.append(Event(start, stop - start, TUEV_CODES.get(code, str(code)),
                                    TCP_MONTAGE[ch] if ch < len(TCP_MONTAGE) else str(ch)))  # fmt: skip
        subject = edf.parent.name if _split(edf, Path(root)) else _parts(edf)[0]
        yield Recording(dataset="tuev", subject=subject, session=_parts(edf)[1], path=edf,
                        events=events, split=_split(edf, Path(root)), id=edf.stem)  # fmt: skip
