"""bench/encode.py --quick: the script runs at eeg-tiny sizes, the two models it compares
give the same features on the same window, and it reports both parts with their ratios
(no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_encode_bench_runs(tmp_path):
    pytest.importorskip("braindecode")
    script = Path(__file__).resolve().parents[1] / "bench" / "encode.py"
    out = tmp_path / "bench_encode.json"
    res = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    for said in ("torch", "ok", "1. latency", "2. throughput", "ratio", "preprocessing"):
        assert said in res.stdout, res.stdout
    data = json.loads(out.read_text())
    assert data["parity"]["ok"] and data["parity"]["max_abs_diff"] <= 1e-4
    (lat,) = data["latency"]
    assert lat["threads"] == 1 and lat["hops"] == 5 and lat["context_seconds"] >= 33
    for side in ("neurofm", "reference"):
        assert 0 < lat[side]["preprocess_p50"] <= lat[side]["total_p50"]
        assert lat[side]["model_p50"] > 0
    assert lat["ratio_p50"] > 0 and 0 < lat["preprocess_share"] < 1
    thr = data["throughput"]
    assert thr["windows"]["neurofm"] == thr["windows"]["reference"] == 15  # 1 min / 4 s
    assert thr["ratio"] > 0 and thr["cosine_median"] > 0.9  # offline: both zero-phase
