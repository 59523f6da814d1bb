"""EDF/BDF headers (read and checked), and a streaming EDF writer.

:func:`read_header` parses the fixed header fields of an EDF or BDF file and
:func:`check_header` refuses the impossible ones (a record duration of 0, physical
minimum == maximum, digital minimum >= maximum ...) with the field, the channel and the
fix, before MNE reads them as if they were valid.

The writer: MNE's export (through edfio) needs the whole recording in memory; corpora
fixtures, benchmarks and converted datasets need hours of signal written in constant
memory. Plain EDF (or EDF+C with ``edf_plus=True``), 16-bit, one record per
``record_seconds``. The file appears under its name only when complete (written beside
it, then renamed). :func:`header_bytes` writes any header, valid or not (tests use it).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EEGReadError, NeurofmError

# per-signal header fields, in file order: (name, width in bytes)
SIGNAL_FIELDS = (
    ("label", 16), ("transducer", 80), ("unit", 8), ("physical_min", 8), ("physical_max", 8),
    ("digital_min", 8), ("digital_max", 8), ("prefilter", 80), ("samples_per_record", 8),
    ("reserved", 32),
)  # fmt: skip
ANNOTATIONS = ("EDF Annotations", "BDF Annotations")
SAMPLE_BYTES = {"edf": 2, "bdf": 3}


def _field(value, width: int) -> bytes:
    text = str(value)
    if len(text) > width:  # numbers: drop precision rather than corrupt the header
        text = text[:width]
    return text.ljust(width).encode("ascii")


def _num(value: float, width: int = 8) -> str:
    for fmt in ("{:.0f}", "{:.6g}", "{:.4g}", "{:.2g}"):
        text = fmt.format(value)
        if len(text) <= width and (fmt != "{:.0f}" or float(text) == value):
            return text
    raise NeurofmError(f"{value} does not fit an EDF header field of {width} characters")


class EDFWriter:
    """Write an EDF file chunk by chunk.

    Parameters
    ----------
    path : path-like
    ch_names : list of str
        Labels as they should appear in the file (``'EEG FP1-REF'``, ``'FP1-F7'`` ...).
    sfreq : float
        Samples per second; ``sfreq * record_seconds`` must be a whole number.
    phys_range : float
        Physical range +/- in ``unit`` (default 3200 uV, TUH and CHB-MIT use similar).
    unit : str
        Physical dimension written in the header (``'uV'``); data are given in volts.
    """

    def __init__(self, path, ch_names, sfreq, *, phys_range=3200.0, unit="uV", record_seconds=1.0,
                 start: dt.datetime | None = None, patient="X X X X", recording="Startdate X X X X",
                 edf_plus=False):  # fmt: skip
        self.path = Path(path)
        self.ch_names = list(ch_names)
        spr = sfreq * record_seconds
        if abs(spr - round(spr)) > 1e-9:
            raise NeurofmError(
                f"sfreq * record_seconds = {spr} must be whole: change record_seconds"
            )
        self.spr, self.sfreq, self.record_seconds = round(spr), sfreq, record_seconds
        self.scale = {"V": 1.0, "mV": 1e3, "uV": 1e6, "nV": 1e9}[unit]
        self.phys = float(phys_range)
        self.unit, self.start = unit, start or dt.datetime(2000, 1, 1)
        self.patient, self.recording, self.edf_plus = patient, recording, edf_plus
        self._tmp = self.path.with_name(self.path.name + ".part")
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 (closed in close())
        self._pending = np.zeros((len(self.ch_names), 0), np.int16)
        self.n_records = 0
        self._fh.write(self._header(-1))

    def _header(self, n_records: int) -> bytes:
        return header_bytes(
            self.ch_names, n_records, self.record_seconds, unit=self.unit,
            physical_min=-self.phys, physical_max=self.phys, samples_per_record=self.spr,
            start=self.start, patient=self.patient, recording=self.recording,
            reserved="EDF+C" if self.edf_plus else "",
        )  # fmt: skip

    def write(self, volts: np.ndarray) -> None:
        """Append samples, shape (n_channels, n): volts, clipped to the physical range."""
        volts = np.asarray(volts)
        if volts.ndim != 2 or volts.shape[0] != len(self.ch_names):
            raise NeurofmError(f"expected ({len(self.ch_names)}, n) samples, got {volts.shape}")
        digital = np.clip(np.round(volts * self.scale / self.phys * 32767.5 - 0.5), -32768, 32767)
        data = np.concatenate([self._pending, digital.astype(np.int16)], axis=1)
        n_full = data.shape[1] // self.spr
        if n_full:
            block = data[:, : n_full * self.spr].reshape(len(self.ch_names), n_full, self.spr)
            self._fh.write(np.ascontiguousarray(block.transpose(1, 0, 2)).astype("<i2").tobytes())
            self.n_records += n_full
        self._pending = data[:, n_full * self.spr :]

    def close(self) -> Path:
        """Pad the last record with zeros, fix the record count, move into place."""
        if self._fh.closed:
            return self.path
        if self._pending.shape[1]:
            pad = self.spr - self._pending.shape[1]
            self.write(np.zeros((len(self.ch_names), pad)))
        self._fh.seek(0)
        self._fh.write(self._header(self.n_records))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:  # never leave a half-written file under the real name
            self._fh.close()
            self._tmp.unlink(missing_ok=True)


def write_edf(path, data, sfreq, ch_names, **kwargs) -> Path:
    """Write an (n_channels, n_times) array in volts to an EDF file."""
    with EDFWriter(path, ch_names, sfreq, **kwargs) as w:
        w.write(data)
    return Path(path)


def header_bytes(labels, n_records: int, duration: float, *, unit="uV", physical_min=-3200.0,
                 physical_max=3200.0, digital_min=-32768, digital_max=32767,
                 samples_per_record=256, prefilter="HP:0.1Hz LP:75Hz", start=None,
                 patient="X X X X", recording="Startdate X X X X", reserved="") -> bytes:  # fmt: skip
    """An EDF header as written, valid or not. Per-signal fields: one value or one per label."""
    ns = len(labels)
    s = start or dt.datetime(2000, 1, 1)

    def num(v):
        return v if isinstance(v, str) else _num(v)

    head = b"".join([
        _field("0", 8), _field(patient, 80), _field(recording, 80),
        _field(s.strftime("%d.%m.%y"), 8), _field(s.strftime("%H.%M.%S"), 8),
        _field(256 * (ns + 1), 8), _field(reserved, 44),
        _field(n_records, 8), _field(num(duration), 8), _field(ns, 4),
    ])  # fmt: skip
    given = dict(label=labels, transducer="AgAgCl electrode", unit=unit, physical_min=physical_min,
                 physical_max=physical_max, digital_min=digital_min, digital_max=digital_max,
                 prefilter=prefilter, samples_per_record=samples_per_record, reserved="")  # fmt: skip
    cols = []
    for name, width in SIGNAL_FIELDS:
        value = given[name]
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value] * ns
        numeric = name.startswith(("physical", "digital"))
        cols += [_field(num(v) if numeric else v, width) for v in values]
    return head + b"".join(cols)


@dataclass
class EDFHeader:
    """The fixed header fields of an EDF or BDF file (one array entry per signal)."""

    n_bytes: int
    n_records: int
    duration: float
    labels: list
    units: list
    physical_min: np.ndarray
    physical_max: np.ndarray
    digital_min: np.ndarray
    digital_max: np.ndarray
    samples_per_record: np.ndarray

    @property
    def signals(self) -> np.ndarray:
        """True for data signals, False for EDF+/BDF+ annotation channels."""
        return np.array([label not in ANNOTATIONS for label in self.labels], bool)

    @property
    def sfreqs(self) -> np.ndarray:
        """Sampling rate of each signal (Hz)."""
        return self.samples_per_record / self.duration


def read_header(path) -> EDFHeader:
    """Parse an EDF/BDF header; an unreadable field raises ``EEGReadError`` naming it."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(256)
        ns = _parse(head, 252, 4, int, path, "number of signals")
        n_bytes = _parse(head, 184, 8, int, path, "header size")
        if not 0 < ns <= 10000 or n_bytes != 256 * (ns + 1):
            raise EEGReadError(
                f"{path.name}: the header size field (bytes 184-192) says {n_bytes} bytes, but "
                f"{ns} signals (bytes 252-256) need {256 * (ns + 1)}: the header is damaged. "
                "Re-export the file"
            )
        block = fh.read(256 * ns)
    fields, offset = {}, 0
    for name, width in SIGNAL_FIELDS:
        text = [block[offset + i * width : offset + (i + 1) * width] for i in range(ns)]
        fields[name] = [t.decode("latin-1").strip() for t in text]
        offset += width * ns
    labels = fields["label"]

    def column(name, kind):
        values = []
        for i, text in enumerate(fields[name]):
            try:
                values.append(kind(text))
            except ValueError:
                raise EEGReadError(
                    f"{path.name}: channel {labels[i]!r}: the header's {name.replace('_', ' ')} "
                    f"is {text!r}, not a number: the header is damaged. Re-export the file"
                ) from None
        return np.array(values)

    return EDFHeader(
        n_bytes=n_bytes,
        n_records=_parse(head, 236, 8, int, path, "number of data records"),
        duration=_parse(head, 244, 8, float, path, "record duration"),
        labels=labels,
        units=fields["unit"],
        physical_min=column("physical_min", float),
        physical_max=column("physical_max", float),
        digital_min=column("digital_min", float),
        digital_max=column("digital_max", float),
        samples_per_record=column("samples_per_record", int),
    )


def _parse(head: bytes, start: int, width: int, kind, path: Path, what: str):
    text = head[start : start + width].decode("latin-1").strip()
    try:
        return kind(text)
    except ValueError:
        raise EEGReadError(
            f"{path.name}: the header's {what} (bytes {start}-{start + width}) is {text!r}, not "
            "a number: the file is damaged or not EDF/BDF. Re-export it"
        ) from None


def check_header(h: EDFHeader, name: str, fmt: str = "edf", skip=()) -> None:
    """Refuse header fields that would make the data silently wrong (EDF spec section 2.1).

    Signals named in ``skip`` (excluded by the caller) and annotation signals are not
    checked. Physical minimum > maximum is allowed: the spec uses it for inverted polarity.
    """
    fix = "\n  fix: correct the header, or skip the channel with read_eeg(..., exclude=[{!r}])"
    checked = [i for i in np.flatnonzero(h.signals) if h.labels[i] not in skip]
    if checked and not (math.isfinite(h.duration) and h.duration > 0):
        raise EEGReadError(
            f"{name}: the header's record duration (bytes 244-252) is {h.duration:g} s, so the "
            "sampling rates (samples per record / duration) are unknown.\n  fix: write the "
            "duration of one data record in seconds there (often 1), or re-export the file"
        )
    for i in checked:
        label, unit = h.labels[i], h.units[i] or "(no unit)"
        pmin, pmax, dmin, dmax = (h.physical_min[i], h.physical_max[i], h.digital_min[i],
                                  h.digital_max[i])  # fmt: skip
        if h.samples_per_record[i] <= 0:
            why = f"samples per record is {h.samples_per_record[i]}: it holds no samples"
        elif not dmin < dmax:
            why = (
                f"digital minimum ({dmin:g}) {'equals' if dmin == dmax else 'is above'} its "
                f"digital maximum ({dmax:g}): EDF requires minimum < maximum, "
                + ("so its samples cannot be scaled to volts" if dmin == dmax
                   else "and read as they are its polarity would be inverted")
            )  # fmt: skip
        elif pmin == pmax:
            why = (
                f"physical minimum == physical maximum ({pmin:g} {unit}): its samples cannot be "
                "scaled to volts (they would read as a constant)"
            )
        else:
            continue
        raise EEGReadError(f"{name}: channel {label!r}: the header's {why}" + fix.format(label))
