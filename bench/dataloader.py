"""Windows per second into batches: from shards vs re-reading the EDFs every epoch.

    python bench/dataloader.py                 # 8 CHB-MIT-like hours (8 files x 1 h)
    python bench/dataloader.py --hours 0.2     # seconds (used by the tests)

Both paths produce Tokens batches of 64 windows (10 s at 200 Hz, 23 or 18 channels):
``ShardDataset`` memory-maps shards written once by ``neurofm preprocess``; the baseline
runs ``neurofm.iter_tokens`` on every EDF each epoch (read, filter, resample, cut), which
is what training without a preprocessed corpus costs. Each path runs in its own process
(peak RSS is its own). Mixed-montage collation and montage bucketing are both timed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def make_corpus(folder: Path, hours: float, files: int) -> Path:
    """CHB-MIT layout at 256 Hz with a summary; odd files have 23 channels, even ones 18
    (a montage change, as inside real CHB-MIT cases), so batches mix two montages."""
    from preprocess import CHB_MIT, make_edf

    root = folder / "chb"
    (root / "chb01").mkdir(parents=True)
    lines = ["Data Sampling Rate: 256 Hz"]
    for f in range(1, files + 1):
        name = f"chb01_{f:02d}.edf"
        make_edf(root / "chb01" / name, hours / files, names=CHB_MIT if f % 2 else CHB_MIT[:18])
        lines += ["", f"File Name: {name}", "Number of Seizures in File: 0"]
    (root / "chb01" / "chb01-summary.txt").write_text("\n".join(lines) + "\n")
    return root


def worker(kind: str, root: str, out: str, batch: int) -> None:
    import torch

    import neurofm
    from neurofm.data import ShardDataset
    from neurofm.utils import peak_rss_mib

    start = time.perf_counter()
    n = 0
    if kind == "edf":
        recipe = neurofm.Recipe(notch=60.0)
        for edf in sorted(Path(root).rglob("*.edf")):
            for tokens in neurofm.iter_tokens(edf, recipe, batch_size=batch):
                n += len(tokens)
    else:
        ds = ShardDataset(out, batch_size=batch, bucket=kind == "shards-bucketed")
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        for tokens, _ in loader:
            n += len(tokens)
    seconds = time.perf_counter() - start
    print(json.dumps({"windows": n, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=8.0)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.batch)
        return
    from neurofm.data import CorpusConfig, preprocess_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_corpus(tmp, args.hours, args.files)
        out = tmp / "out"
        start = time.perf_counter()
        stats = preprocess_corpus(CorpusConfig(dataset="chbmit", root=str(root), out=str(out),
                                               recipe={"notch": 60.0}, workers=2),
                                  progress=False)  # fmt: skip
        once = time.perf_counter() - start
        disk = sum(f.stat().st_size for f in out.rglob("*.npy")) / 2**20
        print(f"{args.hours:g} h in {args.files} files: sharded once in {once:.1f} s "
              f"(2 processes), {stats['windows']} windows, {disk:.0f} MiB on disk (float16)")  # fmt: skip
        rows = {}
        for kind in ("edf", "shards", "shards-bucketed"):
            cmd = [sys.executable, __file__, "--batch", str(args.batch), "--worker", kind,
                   str(root), str(out)]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows[kind] = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"{'one epoch from':<28} {'windows':>8} {'seconds':>8} {'windows/s':>10} {'peak RSS':>9}"
        )
        labels = {"edf": "EDFs (iter_tokens)", "shards": "shards (mixed, 2 workers)",
                  "shards-bucketed": "shards (bucketed, 2 workers)"}  # fmt: skip
        for kind, r in rows.items():
            print(f"{labels[kind]:<28} {r['windows']:>8} {r['seconds']:>8.2f} "
                  f"{r['windows'] / r['seconds']:>10.0f} {r['peak_rss_mib']:>8.0f}M")  # fmt: skip
        ratio = rows["edf"]["seconds"] / rows["shards"]["seconds"]
        print(f"ratio shards / EDFs: {ratio:.1f}x windows per second")


if __name__ == "__main__":
    main()
