"""Streaming windows from shards: memory-mapped, shuffled, split across ranks and workers.

::

    ds = ShardDataset("out/chbmit", split="train", seed=0, batch_size=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for tokens, labels in loader: ...            # Tokens batches, mixed montages padded

Every shard goes to exactly one (rank, worker) slot: ``torchrun`` ranks (``RANK``,
``WORLD_SIZE``, or ``torch.distributed``) and DataLoader workers see disjoint windows
whose union is the corpus. Shuffling is seeded (``seed`` + ``set_epoch``): shard order,
then windows inside a buffer that mixes ``mix`` shards at a time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..tokens import Tokens, collate
from ..utils import NeurofmError
from .shards import INDEX, SHARDS


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
    """

    def __init__(self, root, *, split: str | None = None, shuffle: bool = True, seed: int = 0,
                 batch_size: int = 64, mix: int = 4, bucket: bool = False,
                 rank: int | None = None, world_size: int | None = None):  # fmt: skip
        import pandas as pd

        self.root = Path(root)
        index_path = self.root / INDEX
        if not index_path.exists():
            raise NeurofmError(f"{self.root} has no {INDEX}: run `neurofm preprocess` first")
        index = pd.read_csv(index_path, dtype={"subject": str, "session": str, "split": str})
        splits_file = self.root / "splits.json"
        if splits_file.exists():
            by_subject = json.loads(splits_file.read_text())["subjects"]
            index["split"] = index.subject.map(by_subject).fillna(index["split"])
        if split is not None:
            index = index[index["split"] == split]
            if index.empty:
                raise NeurofmError(f"no shards in split {split!r} under {self.root}")
        self.index = index.reset_index(drop=True)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.batch_size, self.mix, self.bucket = batch_size, mix, bucket
        self._rank, self._world = rank, world_size

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

    def _windows(self, shard: str):
        d = self.root / SHARDS / shard
        meta = json.loads((d / "meta.json").read_text())
        arrays = {k: np.load(d / f"{k}.npy", mmap_mode="r") for k in ("x", "mask", "t")}
        static = {"space": np.load(d / "space.npy"), "pos": np.load(d / "pos.npy"),
                  "names": tuple(meta["channels"])}  # fmt: skip
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
                x=torch.from_numpy(np.asarray(arrays["x"][w : w + 1], dtype=np.float32)),
                space=torch.from_numpy(static["space"][None]),
                pos=torch.from_numpy(static["pos"][None]),
                t=torch.from_numpy(np.array(arrays["t"][w : w + 1])),
                mask=torch.from_numpy(np.array(arrays["mask"][w : w + 1])),
                names=[static["names"]],
            ))  # fmt: skip
            labels.append({"shard": shard, "window": w, "label": label})
        return collate(singles), labels
