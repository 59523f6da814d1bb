"""A streaming EDF writer: recordings of any length, written chunk by chunk.

MNE's export (through edfio) needs the whole recording in memory; corpora fixtures,
benchmarks and converted datasets need hours of signal written in constant memory.
Plain EDF (or EDF+C with ``edf_plus=True``), 16-bit, one record per ``record_seconds``.
The file appears under its name only when complete (written beside it, then renamed).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np

from ..utils import NeurofmError


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
        ns = len(self.ch_names)
        s = self.start
        head = b"".join([
            _field("0", 8), _field(self.patient, 80), _field(self.recording, 80),
            _field(s.strftime("%d.%m.%y"), 8), _field(s.strftime("%H.%M.%S"), 8),
            _field(256 * (ns + 1), 8), _field("EDF+C" if self.edf_plus else "", 44),
            _field(n_records, 8), _field(_num(self.record_seconds), 8), _field(ns, 4),
        ])  # fmt: skip
        cols = [
            [_field(n, 16) for n in self.ch_names],
            [_field("AgAgCl electrode", 80)] * ns,
            [_field(self.unit, 8)] * ns,
            [_field(_num(-self.phys), 8)] * ns,
            [_field(_num(self.phys), 8)] * ns,
            [_field(-32768, 8)] * ns,
            [_field(32767, 8)] * ns,
            [_field("HP:0.1Hz LP:75Hz", 80)] * ns,
            [_field(self.spr, 8)] * ns,
            [_field("", 32)] * ns,
        ]
        return head + b"".join(b"".join(c) for c in cols)

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
