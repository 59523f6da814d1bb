"""Hours of EEG turned into Tokens per second: neurofm against a plain MNE pipeline.

Both do the same recipe on the same EDF (CHB-MIT-like: 23 bipolar channels, 256 Hz):
read, band-pass 0.1-75 Hz, notch 60 Hz, resample to 200 Hz, cut 10 s windows of 1 s
patches in units of 100 uV. MNE: ``read_raw_edf(preload=True)``, ``filter``,
``notch_filter``, ``resample``, ``make_fixed_length_epochs``. Each pipeline runs in a
fresh subprocess so its peak RSS is its own. The outputs are compared (correlation)
so the speed is for the same work.

    python bench/preprocess.py                 # 1 h file, then the 12 h memory case
    python bench/preprocess.py --hours 0.25 --long-hours 0   # quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHB_MIT = ["FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4",
           "F4-C4", "C4-P4", "P4-O2", "FP2-F8", "F8-T8", "T8-P8-0", "P8-O2", "FZ-CZ", "CZ-PZ",
           "P7-T7", "T7-FT9", "FT9-FT10", "FT10-T8", "T8-P8-1"]  # fmt: skip
SFREQ = 256


def make_edf(path: Path, hours: float, names=None) -> Path:
    """A synthetic recording written in 10-minute chunks (constant memory)."""
    from neurofm.io.edf import EDFWriter
    from neurofm.synthetic import eeg

    names = [n.replace("T8-P8-0", "T8-P8").replace("T8-P8-1", "T8-P8") for n in (names or CHB_MIT)]
    n_total, chunk = int(hours * 3600 * SFREQ), 600 * SFREQ
    with EDFWriter(path, names, SFREQ) as w:
        for i, start in enumerate(range(0, n_total, chunk)):
            n = min(chunk, n_total - start)
            w.write(eeg(len(names), n, SFREQ, seed=i, start=start, line=60.0))
    return path


def run_neurofm(path: str, out: str | None):
    import neurofm

    recipe = neurofm.Recipe(notch=60.0)
    t0 = time.perf_counter()
    n, keep = 0, []
    for batch in neurofm.iter_tokens(path, recipe, batch_size=256):
        n += len(batch)
        if out and len(keep) < 2:
            keep.append(batch.x.numpy())
    seconds = time.perf_counter() - t0
    if out:
        np.save(out, np.concatenate(keep)[:64])
    return n, seconds


def run_mne(path: str, out: str | None):
    import mne

    mne.set_log_level("ERROR")
    t0 = time.perf_counter()
    raw = mne.io.read_raw_edf(path, preload=True)
    raw.filter(0.1, 75.0)
    raw.notch_filter(60.0)
    raw.resample(200.0)
    epochs = mne.make_fixed_length_epochs(raw, duration=10.0, preload=True)
    x = epochs.get_data().astype(np.float32) / 1e-4
    x = x.reshape(x.shape[0], x.shape[1], 10, 200)  # (windows, channels, patches, samples)
    seconds = time.perf_counter() - t0
    if out:
        np.save(out, x[:64])
    return x.shape[0], seconds


def worker(kind: str, path: str, out: str | None):
    import mne.io  # imports outside the clock, for both pipelines alike
    import scipy.signal  # noqa: F401

    import neurofm  # noqa: F401
    from neurofm.utils import peak_rss_mib

    mne.io.read_raw_edf(path, verbose="error")
    n, seconds = (run_neurofm if kind == "neurofm" else run_mne)(path, out)
    rss = peak_rss_mib()
    print(json.dumps({"windows": n, "seconds": seconds, "peak_rss_mib": rss}))


def measure(kind: str, path: Path, out: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, str(path)] + ([str(out)] if out else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hours", type=float, default=1.0, help="length of the speed-test file")
    ap.add_argument(
        "--long-hours", type=float, default=12.0, help="length of the memory-test file (0: skip)"
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, path, *out = args.worker
        return worker(kind, path, out[0] if out else None)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        edf = make_edf(tmp / "bench.edf", args.hours)
        results = {}
        for kind in ("mne", "neurofm"):
            runs = [measure(kind, edf, tmp / f"{kind}.npy") for _ in range(args.repeats)]
            results[kind] = min(runs, key=lambda r: r["seconds"])
        a, b = np.load(tmp / "mne.npy"), np.load(tmp / "neurofm.npy")
        n = min(len(a), len(b))  # neurofm drops the duplicate T8-P8 (last): MNE keeps it
        a, b = a[1 : n - 1, : b.shape[1]], b[1 : n - 1]  # away from the recording edges
        corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        print(
            f"\n{args.hours:g} h, {len(CHB_MIT)} channels at {SFREQ} Hz -> 10 s windows of 1 s patches at 200 Hz"
        )
        print(f"{'pipeline':<10}{'windows':>9}{'seconds':>10}{'hours/s':>10}{'peak RSS':>12}")
        for kind, r in results.items():
            print(f"{kind:<10}{r['windows']:>9}{r['seconds']:>10.2f}{args.hours / r['seconds']:>10.2f}"
                  f"{r['peak_rss_mib']:>9.0f} MiB")  # fmt: skip
        ratio = results["mne"]["seconds"] / results["neurofm"]["seconds"]
        print(f"speed ratio neurofm / MNE: {ratio:.2f}x   (same output: correlation {corr:.4f})")
        edf.unlink()
        if args.long_hours:
            long = make_edf(tmp / "long.edf", args.long_hours)
            r = measure("neurofm", long)
            print(f"\n{args.long_hours:g} h file ({long.stat().st_size / 2**20:.0f} MiB EDF): neurofm "
                  f"{r['windows']} windows in {r['seconds']:.1f} s "
                  f"({args.long_hours / r['seconds']:.2f} h/s), peak RSS {r['peak_rss_mib']:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
