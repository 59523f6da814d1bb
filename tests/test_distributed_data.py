"""ShardDataset under DDP: equal batch counts on every rank, every window once per epoch.

Two processes on the gloo backend read a corpus of shards of unequal length with 0 and 2
DataLoader workers; each batch is followed by an all-reduce, as a DDP step would be, so
unequal batch counts would hang (here: time out) instead of passing.
"""

from __future__ import annotations

import functools
import json
import socket
from collections import Counter
from pathlib import Path

import pytest
import torch

from neurofm.data import ShardDataset, write_shard
from neurofm.data.shards import write_index
from neurofm.io.datasets import Recording
from neurofm.preprocess import Recipe
from neurofm.synthetic import eeg

SFREQ = 100.0
WINDOWS = {"a": 7, "b": 2, "c": 5, "d": 1, "e": 6}  # 21: odd, so two ranks need a repeat
BATCH = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "out"
    recipe = Recipe(sfreq=SFREQ, h_freq=40.0, window_seconds=2.0, patch_seconds=1.0, notch=None)
    for i, (name, n) in enumerate(WINDOWS.items()):
        signal = functools.partial(eeg, 3, int(n * 2 * SFREQ), SFREQ, seed=i, line=None)
        rec = Recording(dataset="manifest", subject=name, id=name, array=signal, sfreq=SFREQ,
                        ch_names=["Fp1", "Cz", "O2"], units="V")  # fmt: skip
        write_shard(rec, recipe, out)
    write_index(out)
    return out


def _read(ds, loader_kwargs=None, step=None) -> dict:
    """One epoch: batch count, ``len``, and (shard, window, repeat) of every window."""
    loader = torch.utils.data.DataLoader(ds, batch_size=None, **(loader_kwargs or {}))
    seen, n = [], 0
    for _, labels in loader:
        n += 1
        if step:
            step()
        seen += [(lbl["shard"], lbl["window"], lbl["repeat"]) for lbl in labels]
    return {"batches": n, "len": len(loader), "seen": seen}


def _check_epoch(per_rank: list[dict], world: int) -> None:
    """Equal batches; every window once across ranks, plus the documented repeats."""
    total = sum(WINDOWS.values())
    assert len({r["batches"] for r in per_rank}) == 1, [r["batches"] for r in per_rank]
    assert all(r["batches"] == r["len"] for r in per_rank)
    real = [(s, w) for r in per_rank for s, w, repeat in r["seen"] if not repeat]
    repeats = [(s, w) for r in per_rank for s, w, repeat in r["seen"] if repeat]
    assert Counter(real) == Counter((s, w) for s, n in WINDOWS.items() for w in range(n))
    assert len(repeats) == -total % world and set(repeats) <= set(real)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str, results: str) -> None:
    """One DDP rank: the process group (not RANK/WORLD_SIZE) tells the dataset who it is."""
    import datetime
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))  # fmt: skip
    try:
        step = functools.partial(dist.all_reduce, torch.ones(1))  # a DDP step's collective
        record = {}
        for name, kwargs in {"0": {}, "2": {"num_workers": 2},
                             "2-spawn": {"num_workers": 2, "multiprocessing_context": "spawn"}
                             }.items():  # fmt: skip
            ds = ShardDataset(out, batch_size=BATCH, seed=3)
            assert ds.rank_world() == (rank, world)
            record[name] = _read(ds, kwargs, step)
        Path(results, f"{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_get_equal_batches_and_every_window_once(corpus, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, _free_port(), str(corpus), str(tmp_path)), nprocs=2)
    records = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    for name in ("0", "2", "2-spawn"):
        per_rank = [rec[name] for rec in records]
        _check_epoch(per_rank, world=2)
        assert per_rank[0]["batches"] == 3  # 11 windows each (21 + 1 repeat) in batches of 4
    # workers change who reads a window, not which windows a rank reads
    assert Counter(map(tuple, records[0]["0"]["seen"])) == Counter(
        map(tuple, records[0]["2"]["seen"])
    )


def test_rank_and_world_size_from_the_environment(corpus, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ds = ShardDataset(corpus, batch_size=BATCH)
    assert ds.rank_world() == (1, 3) and len(ds) == 2  # 7 windows a rank
    assert (
        _read(ds)["seen"]
        == _read(ShardDataset(corpus, batch_size=BATCH, rank=1, world_size=3))["seen"]
    )
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="rank 3 is not in 0..2"):
        len(ShardDataset(corpus))


@pytest.mark.parametrize("world", [2, 3, 4, 8])
@pytest.mark.parametrize("workers", [0, 2])
def test_pad_and_drop_for_any_world_size(corpus, world, workers):
    kwargs = {"num_workers": workers}
    padded = [_read(ShardDataset(corpus, batch_size=BATCH, rank=r, world_size=world), kwargs)
              for r in range(world)]  # fmt: skip
    _check_epoch(padded, world)
    dropped = [_read(ShardDataset(corpus, batch_size=BATCH, rank=r, world_size=world,
                                  remainder="drop"), kwargs) for r in range(world)]  # fmt: skip
    assert len({r["batches"] for r in dropped}) == 1
    seen = [(s, w) for r in dropped for s, w, repeat in r["seen"]]
    assert not any(repeat for r in dropped for *_, repeat in r["seen"])
    assert len(seen) == len(set(seen)) == sum(WINDOWS.values()) // world * world


def test_epochs_reshuffle_and_stay_a_partition(corpus):
    epochs = []
    for epoch in (0, 1):
        per_rank = []
        for r in (0, 1):
            ds = ShardDataset(corpus, batch_size=BATCH, rank=r, world_size=2)
            ds.set_epoch(epoch)
            per_rank.append(_read(ds))
        _check_epoch(per_rank, 2)
        epochs.append([tuple(x) for r in per_rank for x in r["seen"]])
    assert epochs[0] != epochs[1]


def test_a_damaged_shard_keeps_the_batch_count(corpus, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(corpus, out)
    x = out / "shards" / "a" / "x.npy"
    x.write_bytes(x.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="shard a: x.npy is"):
        per_rank = [_read(ShardDataset(out, batch_size=BATCH, rank=r, world_size=2))
                    for r in (0, 1)]  # fmt: skip
    assert [r["batches"] for r in per_rank] == [3, 3]
    real = [(s, w) for r in per_rank for s, w, repeat in r["seen"] if not repeat]
    assert len(real) == len(set(real)) == sum(WINDOWS.values()) - WINDOWS["a"]
    assert sum(len(r["seen"]) for r in per_rank) == 22
