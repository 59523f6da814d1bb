"""Streaming windows from shards: memory-mapped, shuffled, split across ranks and workers.

::

    ds = ShardDataset("out/chbmit", split="train", seed=0, batch_size=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for tokens, labels in loader: ...            # Tokens batches, mixed montages padded

Every shard goes to exactly one (rank, worker) slot: ``torchrun`` ranks (``RANK``,
``WORLD_SIZE``, or ``torch.distributed``) and DataLoader workers see disjoint windows
whose union is the corpus. Shuffling is seeded (``seed`` + ``set_epoch``): shard order,
then windows inside a buffer that mixes ``mix`` shards at a time.

**Checksums.** ``index.csv`` is checked against ``stats.json`` when the dataset is made
(a mismatch raises ``ShardError``). Each shard is verified completely (``meta.json``'s own
checksum, then the size and SHA-256 of every file) the first time a process opens it; a
process that reads a shard reads all of it anyway, so this at most doubles the first
read. ``verify=False`` checks ``meta.json`` only.

**Damaged shards** are skipped with a :class:`~neurofm.data.ShardWarning` naming the
shard and the damage, once per process; when more than ``max_damaged`` shards (default
1% of the corpus, at least 1) are damaged in one reading process, iteration raises
``ShardError`` instead. To repair, delete ``shards/<id>`` and rerun ``neurofm preprocess``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import NeurofmError, ShardError, warn
from ..tokens import Tokens, collate
from .shards import (
    DATA_FILES,
    INDEX,
    SHARDS,
    STATS,
    ShardWarning,
    file_sha256,
    read_meta,
    verify_shard,
)

#: shards verified in this process, with the size and mtime of their files then
_VERIFIED: set[tuple] = set()


def _file_stats(shard: Path) -> tuple:
    stats = []
    for name in ("meta.json", *DATA_FILES):
        try:
            st = (shard / name).stat()
            stats.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append(None)
    return (str(shard), *stats)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ShardDataset(IterableDataset):
    """Windows of a sharded corpus as ``(Tokens, labels)`` batches.

    Parameters
    ----------
    root : path
        The ``out`` folder of ``neurofm preprocess``.
    split : str | None
        Keep shards whose split (from the reader, or from :func:`~neurofm.data.make_splits`'s
        ``splits.json``) is this.
    shuffle, seed : seeded shuffling of shards and of windows within a buffer.
    batch_size : int
        Windows per yielded batch (the last one may be smaller).
    bucket : bool
        Batch windows of one montage together (no padding) instead of mixing shards.
    rank, world_size : override the distributed set-up (default: from the environment).
    verify : bool
        Check every file's SHA-256 when a process first opens a shard (module docstring).
    max_damaged : int | None
        Damaged shards skipped with a warning before iteration raises ``ShardError``
        (default: 1% of the shards, at least 1).
    """

    def __init__(self, root, *, split: str | None = None, shuffle: bool = True, seed: int = 0,
                 batch_size: int = 64, mix: int = 4, bucket: bool = False,
                 rank: int | None = None, world_size: int | None = None, verify: bool = True,
                 max_damaged: int | None = None):  # fmt: skip
        self.root = Path(root)
        index = _read_index(self.root)
        if split is not None:
            index = index[index["split"] == split]
            if index.empty:
                raise NeurofmError(f"no shards in split {split!r} under {self.root}")
        self.index = index.reset_index(drop=True)
        self._n_windows = dict(zip(self.index.id, self.index.n_windows, strict=True))
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.batch_size, self.mix, self.bucket = batch_size, mix, bucket
        self._rank, self._world = rank, world_size
        self.verify = verify
        self.max_damaged = max(1, len(index) // 100) if max_damaged is None else max_damaged
        self._damaged: dict[str, str] = {}  # shard -> why, in this process

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Windows in the whole corpus (all ranks)."""
        return int(self.index.n_windows.sum())

    def _slot(self) -> tuple[int, int]:
        """(this reader's slot, number of slots) over ranks x DataLoader workers."""
        rank, world = _rank_world()
        rank = self._rank if self._rank is not None else rank
        world = self._world if self._world is not None else world
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        return rank * n_workers + worker, world * n_workers

    def _my_shards(self) -> list[str]:
        ids = list(self.index.id)
        if self.shuffle:  # the same order on every rank and worker: a partition, not samples
            np.random.default_rng([self.seed, self.epoch]).shuffle(ids)
        slot, slots = self._slot()
        return ids[slot::slots]

    def _open(self, shard: str, n_windows: int):
        """(meta, memory-mapped arrays, static arrays), verified; raises ``ShardError``."""
        d = self.root / SHARDS / shard
        meta = read_meta(d)
        if self.verify and (key := _file_stats(d)) not in _VERIFIED:
            verify_shard(d, meta)
            _VERIFIED.add(key)
        if meta["n_windows"] != n_windows:
            raise ShardError(f"shard {shard}: {INDEX} says {n_windows} windows, meta.json "
                             f"{meta['n_windows']}: rerun `neurofm preprocess` to rebuild the index")  # fmt: skip
        try:
            arrays = {k: np.load(d / f"{k}.npy", mmap_mode="r") for k in ("x", "mask", "t")}
            static = {"space": np.load(d / "space.npy"), "pos": np.load(d / "pos.npy"),
                      "names": tuple(meta["channels"])}  # fmt: skip
        except (OSError, ValueError, EOFError) as err:  # verify=False: NumPy's own complaint
            raise ShardError(f"shard {shard}: {err}") from None
        if arrays["x"].shape[0] != meta["n_windows"]:
            raise ShardError(f"shard {shard}: x.npy holds {arrays['x'].shape[0]} windows, "
                             f"meta.json {meta['n_windows']}")  # fmt: skip
        return meta, arrays, static

    def _damage(self, shard: str, err: ShardError) -> None:
        """Skip a damaged shard with a warning, or raise past ``max_damaged``."""
        if shard in self._damaged:
            return
        self._damaged[shard] = str(err)
        if len(self._damaged) > self.max_damaged:
            raise ShardError(
                f"{len(self._damaged)} damaged shards under {self.root} (more than max_damaged="
                f"{self.max_damaged}): {'; '.join(self._damaged.values())}. Delete them and "
                "rerun `neurofm preprocess` to redo them"
            )
        warn(f"skipped damaged {err} ({len(self._damaged)} of at most {self.max_damaged}); "
             f"delete {SHARDS}/{shard} and rerun `neurofm preprocess` to redo it", ShardWarning)  # fmt: skip

    def _windows(self, shard: str):
        if shard in self._damaged:
            return
        try:
            meta, arrays, static = self._open(shard, self._n_windows[shard])
        except ShardError as err:
            self._damage(shard, err)
            return
        for w in range(meta["n_windows"]):
            yield shard, w, arrays, static, meta["window_labels"][w]

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, *self._slot()])
        shards = self._my_shards()
        for start in range(0, len(shards), self.mix):
            group = shards[start : start + self.mix]
            items = [item for s in group for item in self._windows(s)]
            if self.shuffle:
                order = rng.permutation(len(items))
                items = [items[i] for i in order]
            if self.bucket:  # one montage per batch: stable sort by shard keeps the shuffle
                items.sort(key=lambda it: group.index(it[0]))
            for b in range(0, len(items), self.batch_size):
                yield self._batch(items[b : b + self.batch_size])

    @staticmethod
    def _batch(items) -> tuple[Tokens, list[dict]]:
        singles, labels = [], []
        for shard, w, arrays, static, label in items:
            singles.append(Tokens(
                x=torch.from_numpy(np.array(arrays["x"][w : w + 1], dtype=np.float32)),
                space=torch.from_numpy(static["space"][None]),
                pos=torch.from_numpy(static["pos"][None]),
                t=torch.from_numpy(np.array(arrays["t"][w : w + 1])),
                mask=torch.from_numpy(np.array(arrays["mask"][w : w + 1])),
                names=[static["names"]],
            ))  # fmt: skip
            labels.append({"shard": shard, "window": w, "label": label})
        return collate(singles), labels


def _read_index(root: Path):
    """``index.csv`` checked against ``stats.json``, with ``splits.json`` applied."""
    import pandas as pd

    index_path = root / INDEX
    if not index_path.exists():
        raise NeurofmError(f"{root} has no {INDEX}: run `neurofm preprocess` first")
    fix = "rerun `neurofm preprocess` (it keeps finished shards) to rebuild it"
    try:
        want = json.loads((root / STATS).read_text())["index_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ShardError(f"{root / STATS} is missing or damaged ({err!r}): {fix}") from None
    if file_sha256(index_path) != want:
        raise ShardError(f"{index_path} does not match its checksum in {STATS} (edited or "
                         f"damaged): {fix}")  # fmt: skip
    index = pd.read_csv(index_path, dtype={"id": str, "subject": str, "session": str,
                                           "split": str})  # fmt: skip
    splits_file = root / "splits.json"
    if splits_file.exists():
        try:
            by_subject = json.loads(splits_file.read_text())["subjects"]
            index["split"] = index.subject.map(by_subject).fillna(index["split"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ShardError(f"{splits_file} is damaged ({err!r}): rerun make_splits") from None
    return index
