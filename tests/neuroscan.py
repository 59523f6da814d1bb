"""Write Neuroscan SCAN 4.x continuous ``.cnt`` files for tests (SEED-V's raw format).

Layout (Neuroscan's SETUP/ELECTLOC/TEEG structures, as documented by P. Bourke and read by
``mne.io.read_raw_cnt``): a 900-byte SETUP header, one 75-byte ELECTLOC record per
channel, multiplexed little-endian integer samples, then the event table (TEEG + EVENT2
records whose ``Offset`` is a byte position in the data).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SETUP, ELECTLOC, EVENT2 = 900, 75, "<HBclhhfccc"


def write_cnt(path, data, sfreq: int, ch_names, *, events=(), dtype="int32", resolution=0.1,
              date="08/04/18", time="10:00:00", xy=None) -> Path:  # fmt: skip
    """``data`` in volts (channels, samples); ``events`` as (sample, stim code) pairs.

    ``resolution`` is microvolts per count (ELECTLOC ``calib``; ``sensitivity`` 204.8 so
    that Neuroscan's ``calib * sensitivity / 204.8`` scale is ``calib``).
    """
    data = np.asarray(data, dtype=float)
    n_ch, n_samples = data.shape
    n_bytes = np.dtype(dtype).itemsize
    counts = np.round(data / (resolution * 1e-6))
    info = np.iinfo(dtype)
    if counts.min() < info.min or counts.max() > info.max:
        raise ValueError(f"data overflow {dtype} at {resolution} uV per count")
    if xy is None:  # a disc layout, as Scan stores 2-D positions
        angle = np.linspace(0, 2 * np.pi, n_ch, endpoint=False)
        radius = np.linspace(20, 100, n_ch)
        xy = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    data_at = SETUP + ELECTLOC * n_ch
    events_at = data_at + n_samples * n_ch * n_bytes

    head = bytearray(SETUP)

    def put(offset, fmt, *values):
        struct.pack_into(fmt, head, offset, *values)

    put(0, "12s", b"Version 3.0")
    put(205, "20s", b"seed-v fixture")
    put(225, "10s", date.encode())
    put(235, "12s", time.encode())
    put(370, "<H", n_ch)
    put(376, "<H", int(sfreq))
    put(864, "<i", n_samples)
    put(886, "<i", events_at)
    put(890, "<f", n_samples / sfreq)
    put(894, "<i", n_bytes)  # ChannelOffset: one sample per channel per block (multiplexed)
    electrodes = bytearray(ELECTLOC * n_ch)
    for i, name in enumerate(ch_names):
        base = ELECTLOC * i
        struct.pack_into("10s", electrodes, base, name.encode())
        struct.pack_into("<ff", electrodes, base + 19, *map(float, xy[i]))
        struct.pack_into("<h", electrodes, base + 47, 0)  # baseline
        struct.pack_into("<f", electrodes, base + 59, 204.8)  # sensitivity
        struct.pack_into("<f", electrodes, base + 71, resolution)  # calib
    table = b"".join(
        struct.pack(EVENT2, code, 0, b"\x00", data_at + (sample + 1) * n_ch * n_bytes,
                    0, 0, 0.0, b"\x00", b"\x00", b"\x00")
        for sample, code in events
    )  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.write(electrodes)
        fh.write(counts.T.astype(np.dtype(dtype).newbyteorder("<")).tobytes())
        fh.write(struct.pack("<Bll", 2, len(table), 0) + table)
    return path
