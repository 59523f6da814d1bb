"""Sharded preprocessing, crash recovery, streaming across ranks and workers, splits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from neurofm.config import load_config
from neurofm.data import (
    CorpusConfig,
    ShardDataset,
    check_no_overlap,
    make_splits,
    preprocess_corpus,
)
from neurofm.io.edf import write_edf
from neurofm.synthetic import eeg
from neurofm.utils import NeurofmError

NAMES = "FP1-F7 F7-T7 T7-P7 P7-O1 FP1-F3 F3-C3 C3-P3 P3-O1 FZ-CZ CZ-PZ".split()


def _chbmit(root: Path, subjects=3, files=2, seconds=30.0, sfreq=256):
    """A CHB-MIT-layout corpus; each file's seizure at 12-17 s (window 2 of 3 at 10 s)."""
    for s in range(1, subjects + 1):
        subject = f"chb{s:02d}"
        folder = root / subject
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["Data Sampling Rate: 256 Hz", "", "Channels in EDF Files:"]
        lines += [f"Channel {i}: {n}" for i, n in enumerate(NAMES, 1)]
        for f in range(1, files + 1):
            name = f"{subject}_{f:02d}.edf"
            write_edf(folder / name, eeg(len(NAMES), int(seconds * sfreq), sfreq, line=None),
                      sfreq, NAMES)  # fmt: skip
            lines += ["", f"File Name: {name}", "Number of Seizures in File: 1",
                      "Seizure Start Time: 12 seconds", "Seizure End Time: 17 seconds"]  # fmt: skip
        (folder / f"{subject}-summary.txt").write_text("\n".join(lines) + "\n")
    return root


def _config(tmp_path, root, **kw) -> CorpusConfig:
    return CorpusConfig(dataset="chbmit", root=str(root), out=str(tmp_path / "out"),
                        recipe={"notch": 60.0}, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    root = _chbmit(tmp / "chb")
    (root / "chb03" / "chb03_03.edf").write_bytes(b"0       garbage header")  # a corrupt file
    stats = preprocess_corpus(_config(tmp, root, workers=2), progress=False)
    return tmp / "out", stats


def test_preprocess_writes_shards_index_and_stats(corpus):
    out, stats = corpus
    assert stats["recordings"] == 6 and stats["windows"] == 18 and stats["subjects"] == 3
    assert stats["failures"] == 1 and stats["window_labels"] == {"bckg": 12, "seizure": 6}
    failure = json.loads((out / "failures.jsonl").read_text().splitlines()[0])
    assert "chb03_03" in failure["source"] and failure["error"]
    assert stats["channels_seen"]["Fp1-F7"] == 6 and stats["hours"] == pytest.approx(0.05)
    meta = json.loads((out / "shards" / "chb01_01" / "meta.json").read_text())
    assert meta["window_labels"] == ["bckg", "seizure", "bckg"]
    assert meta["subject"] == "chb01" and meta["made_with"]["source"]["files"][0][1] > 0
    x = np.load(out / "shards" / "chb01_01" / "x.npy", mmap_mode="r")
    assert x.shape == (3, 10, 10, 200) and x.dtype == np.float16
    assert np.load(out / "shards" / "chb01_01" / "t.npy").tolist()[1][0] == 10.0
    assert len(meta["amplitude_percentiles"]["values"]) == 10
    assert not list((out / "shards").glob("*.partial"))


def test_rerun_skips_finished_files(corpus, tmp_path):
    out, _ = corpus
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*/x.npy")}
    root = Path(
        json.loads((out / "shards" / "chb01_01" / "meta.json").read_text())["source"]
    ).parents[1]
    cfg = CorpusConfig(dataset="chbmit", root=str(root), out=str(out), recipe={"notch": 60.0})
    stats = preprocess_corpus(cfg, progress=False)
    assert stats["windows"] == 18
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*/x.npy")} == before


def test_kill_9_then_rerun_finishes_without_redoing(tmp_path):
    root = _chbmit(tmp_path / "chb", subjects=4, files=2, seconds=300.0)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"dataset: chbmit\nroot: {root}\nout: {tmp_path / 'out'}\n"
                      "workers: 1\nrecipe: {notch: 60.0}\n")  # fmt: skip
    cmd = [sys.executable, "-m", "neurofm", "preprocess", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    shards = tmp_path / "out" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("*/meta.json"))) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in shards.glob("*/x.npy")
            if (p.parent / "meta.json").exists()}  # fmt: skip
    assert 2 <= len(done) < 8, "the kill should land mid-corpus"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    after = {p.parent.name: p.stat().st_mtime_ns for p in shards.glob("*/x.npy")}
    assert len(after) == 8 and all(after[k] == v for k, v in done.items())  # not redone
    index = (tmp_path / "out" / "index.csv").read_text().splitlines()
    assert len(index) == 9 and len(set(index)) == 9  # each recording once
    assert not list(shards.glob("*.partial"))


def _seen(ds) -> list[tuple[str, int]]:
    return [(lbl["shard"], lbl["window"]) for _, labels in ds for lbl in labels]


def test_ranks_see_disjoint_windows_whose_union_is_the_corpus(corpus):
    out, stats = corpus
    ranks = [_seen(ShardDataset(out, rank=r, world_size=2, batch_size=4)) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])
    assert len(ranks[0]) + len(ranks[1]) == len(set(ranks[0]) | set(ranks[1])) == stats["windows"]
    again = _seen(ShardDataset(out, rank=0, world_size=2, batch_size=4))
    assert again == ranks[0]  # deterministic for a seed
    epoch1 = []
    for r in (0, 1):
        ds = ShardDataset(out, rank=r, world_size=2, batch_size=4)
        ds.set_epoch(1)
        epoch1 += _seen(ds)
    assert sorted(epoch1) == sorted(ranks[0] + ranks[1]) and epoch1 != ranks[0] + ranks[1]


def test_dataloader_workers_do_not_duplicate(corpus):
    out, stats = corpus
    ds = ShardDataset(out, batch_size=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    seen = [(lbl["shard"], lbl["window"]) for tokens, labels in loader for lbl in labels]
    assert len(seen) == len(set(seen)) == stats["windows"]


def test_batches_are_tokens_for_the_encoder(corpus):
    out, _ = corpus
    tokens, labels = next(iter(ShardDataset(out, batch_size=5, bucket=True)))
    assert tokens.shape == (5, 10, 10, 200) and tokens.x.dtype == torch.float32
    assert len({n for n in tokens.names}) == 1  # bucketed: one montage
    from neurofm.models import create_model

    with torch.no_grad():
        out_ = create_model("eeg-tiny")(tokens)
    assert out_.pooled.shape == (5, 100)


def test_subject_splits_and_overlap_check(corpus, tmp_path):
    out, _ = corpus
    splits = make_splits(out, {"train": 0.34, "val": 0.33, "test": 0.33}, seed=1)
    assert sorted(splits.values()) == ["test", "train", "val"]
    test_subject = next(s for s, v in splits.items() if v == "test")
    ds = ShardDataset(out, split="test", batch_size=100)
    assert {lbl["shard"].split("_")[0] for _, labels in ds for lbl in labels} == {test_subject}
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "index.csv").write_text(
        "id,dataset,subject,session,split,n_windows,n_channels,montage\n"
        f"x,chbmit,{test_subject},01,,3,10,a\n"
    )
    with pytest.raises(
        NeurofmError, match=f"1 test subjects were in the pretraining.*{test_subject}"
    ):
        check_no_overlap(out, pre)
    (pre / "index.csv").write_text(
        "id,dataset,subject,session,split,n_windows,n_channels,montage\n"
        f"x,tusz,{test_subject},01,,3,10,a\n"  # another dataset's subject of the same name
    )
    check_no_overlap(out, pre)


def test_config_typos_and_missing_index(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: chbmit\nroot: x\nout: y\nworkrs: 2\n")
    with pytest.raises(NeurofmError, match="did you mean 'workers'"):
        load_config(cfg, CorpusConfig)
    cfg.write_text("dataset: chbmit\nroot: x\nout: y\nrecipe: {sfrq: 200}\n")
    with pytest.raises(NeurofmError, match="did you mean 'sfreq'"):
        load_config(cfg, CorpusConfig)
    with pytest.raises(NeurofmError, match="neurofm preprocess"):
        ShardDataset(tmp_path)


def test_dataloader_bench_runs():
    script = Path(__file__).resolve().parents[1] / "bench" / "dataloader.py"
    out = subprocess.run([sys.executable, str(script), "--hours", "0.1", "--files", "2"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ratio shards / EDFs" in out.stdout


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs" / "preprocess").glob("*.yaml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_shipped_configs_are_valid(path):
    """Every example config parses, names a known dataset and builds its Recipe."""
    from neurofm.io.datasets import DATASETS

    config = load_config(path, CorpusConfig)
    assert config.dataset in DATASETS and config.recipe.window_len > 0
