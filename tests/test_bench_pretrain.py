"""bench/pretrain.py --quick: the script runs at tiny sizes, prints its ratios, and the two
training steps it compares compute the same loss (no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_pretrain_bench_runs(tmp_path):
    pytest.importorskip("braindecode")
    script = Path(__file__).resolve().parents[1] / "bench" / "pretrain.py"
    out = tmp_path / "bench.json"
    # parts 1 and 2, and part 3's code as a dry run on the CPU (its CUDA calls guarded)
    res = subprocess.run([sys.executable, str(script), "--quick", "--parts", "1", "2", "3",
                          "--gpu-dry-run", "--peak-tflops", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    for said in ("ratio", "loss check: ok", "headroom", "largest batch that fits", "FSDP2"):
        assert said in res.stdout, res.stdout
    data = json.loads(out.read_text())
    (step,) = data["step"]
    assert step["loss"]["ok"] and step["ratio"] > 0
    assert data["loader"]["rows"][0]["headroom"] > 0
    assert data["gpu"]["sizes"]["eeg-tiny"]["largest_batch"] == 2
