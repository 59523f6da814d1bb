"""CHB-MIT Scalp EEG (PhysioNet): ``chbNN/chbNN_MM.edf`` and ``chbNN-summary.txt``.

The summary lists every file with its seizures ("Seizure Start Time: 2996 seconds", or
"Seizure 1 Start Time: ..." in later cases) and the channel list, which changes between
files ("Channels changed:"). PhysioNet also ships WFDB annotation files
``chbNN_MM.edf.seizures``; they are read when the summary does not cover a file, and a
disagreement between the two is reported.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import NeurofmError, check_option, logger
from . import Event, Recording, require

_SEIZURE = re.compile(r"Seizure(?:\s+\d+)?\s+(Start|End)\s+Time\s*:\s*([\d.]+)\s*sec", re.I)


def parse_summary(path: Path) -> dict[str, dict]:
    """``{file name: {"seizures": [(start, end)], "channels": [...], "sfreq": f}}``."""
    files: dict[str, dict] = {}
    channels: list[str] = []
    sfreq = None
    current = None
    in_channels = False
    for line in Path(path).read_text(errors="replace").splitlines():
        text = line.strip()
        if m := re.match(r"Data Sampling Rate:\s*([\d.]+)", text):
            sfreq = float(m.group(1))
        elif text.lower().startswith(("channels in edf files", "channels changed")):
            channels, in_channels = [], True
        elif m := re.match(r"Channel\s+\d+\s*:\s*(.+)", text):
            if in_channels:
                channels.append(m.group(1).strip())
        elif m := re.match(r"File Name:\s*(\S+)", text):
            in_channels = False
            current = files.setdefault(m.group(1), {"seizures": [], "channels": list(channels),
                                                    "sfreq": sfreq, "starts": []})  # fmt: skip
        elif (m := _SEIZURE.search(text)) and current is not None:
            if m.group(1).lower() == "start":
                current["starts"].append(float(m.group(2)))
            else:
                current["seizures"].append((current["starts"].pop(0), float(m.group(2))))
    return files


def read_wfdb_annotations(path: Path) -> list[tuple[int, int]]:
    """(annotation code, sample) pairs from a WFDB (MIT format) annotation file."""
    words = np.fromfile(path, dtype="<u2")
    out, t, i = [], 0, 0
    while i < len(words):
        code, delta = int(words[i]) >> 10, int(words[i]) & 0x3FF
        if code == 0 and delta == 0:
            break
        if code == 59:  # SKIP: a 32-bit interval follows, high word first (PDP-11 order)
            interval = (int(words[i + 1]) << 16) | int(words[i + 2])
            t += interval - (1 << 32) if interval >= 1 << 31 else interval
            i += 3
        elif code in (60, 61, 62):  # NUM, SUB, CHN modify the previous annotation
            i += 1
        elif code == 63:  # AUX: a string of `delta` bytes, padded to whole words
            i += 1 + (delta + 1) // 2
        else:
            t += delta
            out.append((code, t))
            i += 1
    return out


SEIZURE_ON, SEIZURE_OFF, NOTE = 32, 33, 22  # CHB-MIT's '[' and ']' codes; NOTE holds text


def _wfdb_seizures(path: Path, sfreq: float) -> list[tuple[float, float]]:
    """Seizure (start, end) seconds: '[' ... ']' pairs (checked on PhysioNet's chb06_04)."""
    ann = read_wfdb_annotations(path)
    starts = [t / sfreq for c, t in ann if c == SEIZURE_ON]
    ends = [t / sfreq for c, t in ann if c == SEIZURE_OFF]
    if not starts:  # other writers: consecutive pairs of whatever marks they used
        times = [t / sfreq for c, t in ann if c not in (0, NOTE)]
        starts, ends = times[0::2], times[1::2]
    if len(starts) != len(ends):
        raise NeurofmError(f"{path.name}: {len(starts)} seizure starts but {len(ends)} ends")
    return list(zip(starts, ends, strict=True))


def read_chbmit(root: Path, *, subjects=None) -> list[Recording]:
    """Every EDF of CHB-MIT under ``root`` with its seizures as ``Event(label='seizure')``."""
    edfs = require(sorted(Path(root).rglob("chb*_*.edf")), root, "chbNN_MM.edf files", "CHB-MIT")
    summaries = {}
    for path in Path(root).rglob("chb*-summary.txt"):
        summaries.update(parse_summary(path))
    if subjects is not None:
        found = sorted({re.match(r"(chb\d+)", edf.name).group(1) for edf in edfs})
        subjects = [subjects] if isinstance(subjects, str) else subjects
        for subject in subjects:
            check_option("CHB-MIT subject", subject, found)
    recordings = []
    for edf in edfs:
        subject = re.match(r"(chb\d+)", edf.name).group(1)
        if subjects is not None and subject not in subjects:
            continue
        info = summaries.get(edf.name)
        wfdb = edf.with_name(edf.name + ".seizures")
        seizures = info["seizures"] if info else None
        if wfdb.exists():
            from_wfdb = _wfdb_seizures(wfdb, (info or {}).get("sfreq") or 256.0)
            if seizures is None:
                seizures = from_wfdb
            elif not np.allclose(sorted(seizures), sorted(from_wfdb), atol=1.0) or len(
                seizures) != len(from_wfdb):  # fmt: skip
                logger.warning("%s: summary seizures %s differ from %s %s; using the summary",
                               edf.name, seizures, wfdb.name, from_wfdb)  # fmt: skip
        if seizures is None:
            logger.warning("%s is not in any chbNN-summary.txt and has no .seizures file: "
                           "assumed seizure-free", edf.name)  # fmt: skip
            seizures = []
        recordings.append(Recording(
            dataset="chbmit", subject=subject, session=edf.stem.split("_", 1)[1], path=edf,
            events=[Event(s, e - s, "seizure") for s, e in seizures],
            labels={"n_seizures": len(seizures),
                    "montage": tuple(info["channels"]) if info else ()},
            id=edf.stem,
        ))  # fmt: skip
    return recordings
