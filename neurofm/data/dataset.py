"""Streaming windows from shards: memory-mapped, shuffled, split evenly across ranks and workers.

::

    ds = ShardDataset("out/chbmit", split="train", seed=0, batch_size=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for tokens, labels in loader: ...            # Tokens batches, mixed montages padded

**Every rank gets the same number of batches** (``len(ds)``), so a DDP epoch ends on
every rank at the same step. Each epoch lays the corpus out as one sequence of windows:
shards in a seeded order (``seed`` + ``set_epoch``; index order with ``shuffle=False``),
each shard's windows in a row. Rank ``r`` of ``W`` takes the ``r``-th of ``W`` equal
contiguous blocks of that sequence, and its DataLoader workers split the block into runs
of whole batches, so a reader touches few shards (I/O locality) and only the last batch
of a rank may be short. The ranks are ``torchrun``'s (``RANK``, ``WORLD_SIZE``), or an
initialised ``torch.distributed`` process group's; ``rank=``/``world_size=`` override.

**The remainder** (corpus windows not divisible by the world size) is padded by
repetition by default (``remainder="pad"``, as ``DistributedSampler`` does): the
sequence wraps around, so at most ``world_size - 1`` windows from its start are read a
second time, and no window is lost to training or evaluation. Their labels carry
``repeat: True`` so that a metric can leave them out. ``remainder="drop"`` instead leaves
out the last windows of the epoch's order (different ones each epoch when shuffled).

Inside a worker's run, windows are shuffled in a buffer that mixes ``mix`` shards at a
time; ``bucket=True`` sorts each buffer by montage (batches hold one montage except where
the montage changes inside a batch, which ``collate`` pads).

**Checksums.** ``index.csv`` is checked against ``stats.json`` when the dataset is made
(a mismatch raises ``ShardError``). Each shard is verified completely (``meta.json``'s own
checksum, then the size and SHA-256 of every file) once per state of its files, not once
per process or epoch: see :class:`ShardDataset`. ``verify=False`` checks ``meta.json`` only.

**Damaged shards** are skipped with a :class:`~neurofm.data.ShardWarning` naming the
shard and the damage, once per process; their windows are replaced by repeats of windows
the same reader has read (``repeat: True``), so the batch count stays that of every other
rank. When more than ``max_damaged`` shards (default 1% of the corpus, at least 1) are
damaged in one reading process, iteration raises ``ShardError`` instead. To repair,
delete ``shards/<id>`` and rerun ``neurofm preprocess``.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import NeurofmError, ShardError, check_option, warn
from ..preprocess.recipe import EEGRecipe, FMRIRecipe, recipe_from_dict
from ..tokens import Tokens, collate
from ..utils import atomic_write
from .shards import (
    DATA_FILES,
    INDEX,
    SHARDS,
    STATS,
    ShardWarning,
    _differences,
    file_sha256,
    read_meta,
    verify_shard,
)

REMAINDERS = ("pad", "drop")

#: shards verified in this process, with the state of their files then
_VERIFIED: set[tuple] = set()
MARKER = ".verified"  # in a shard's folder: the state of its files when last verified


def _file_stats(shard: Path) -> list:
    """(size, mtime, ctime) in ns of ``meta.json`` and every data file (None: missing)."""
    stats = []
    for name in ("meta.json", *DATA_FILES):
        try:
            st = (shard / name).stat()
            stats.append([st.st_size, st.st_mtime_ns, st.st_ctime_ns])
        except OSError:
            stats.append(None)
    return stats


def _marked(shard: Path, stats: list) -> bool:
    try:
        return json.loads((shard / MARKER).read_text()) == stats
    except (OSError, ValueError):
        return False


@contextmanager
def _locked(folder: Path):
    """An exclusive lock on ``folder`` (POSIX ``flock``); none where it cannot be taken."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def verify_once(shard: Path, meta: dict) -> None:
    """``verify_shard`` unless the shard was verified with its files as they are now
    (in this process, or by any process that left its marker)."""
    stats = _file_stats(shard)
    key = (str(shard), json.dumps(stats))
    if key in _VERIFIED or _marked(shard, stats):
        return
    with _locked(shard):
        if not _marked(shard, stats):  # another reader may have verified it meanwhile
            verify_shard(shard, meta)
            try:
                atomic_write(shard / MARKER, lambda p: p.write_text(json.dumps(stats)))
            except OSError:  # a read-only corpus: verified once per process
                pass
    _VERIFIED.add(key)


def rank_world() -> tuple[int, int]:
    """(rank, world size): an initialised process group's, else ``RANK``/``WORLD_SIZE``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise NeurofmError(f"RANK={os.environ.get('RANK')!r} and WORLD_SIZE="
                           f"{os.environ.get('WORLD_SIZE')!r} must be whole numbers") from None  # fmt: skip


def _runs(order: list[str], counts: list[int], start: int, stop: int):
    """``(shard, first window, stop window, repeat)`` covering positions ``[start, stop)``
    of the epoch's window sequence, which wraps around after its last window."""
    offsets = np.cumsum([0, *counts])
    total, pos = int(offsets[-1]), start
    while pos < stop:
        p = pos % total
        i = int(np.searchsorted(offsets, p, side="right")) - 1
        n = min(int(offsets[i + 1]) - p, stop - pos)
        yield order[i], p - int(offsets[i]), p - int(offsets[i]) + n, pos >= total
        pos += n


class ShardDataset(IterableDataset):
    """Windows of a sharded corpus as ``(Tokens, labels)`` batches.

    ``labels`` holds one dict per window: ``shard``, ``window``, ``label`` and ``repeat``
    (True for a padding repeat, module docstring). ``len(ds)`` is the number of batches
    each rank yields per epoch (what ``len(DataLoader(ds, batch_size=None))`` says).

    Parameters
    ----------
    root : path
        The ``out`` folder of ``neurofm preprocess``.
    split : str | None
        Keep shards whose split (from the reader, or from :func:`~neurofm.data.make_splits`'s
        ``splits.json``) is this.
    shuffle, seed : seeded shuffling of shards and of windows within a buffer.
    batch_size : int
        Windows per yielded batch (the last one of a rank may be smaller).
    mix : int
        Shards whose windows are shuffled together.
    bucket : bool
        Sort each buffer by montage, so that batches rarely mix montages (less padding).
    rank, world_size : override the distributed set-up (default: from the environment).
    remainder : "pad" | "drop"
        How windows beyond an equal share per rank are handled (module docstring).
    verify : bool
        Check every file's SHA-256 (module docstring). The reader that first opens a
        shard verifies it and leaves a ``.verified`` marker in its folder holding the
        size, mtime and ctime of its files; while they are unchanged, no process or epoch
        (DataLoader workers are new processes every epoch) hashes it again, and a reader
        that finds another one verifying the shard waits for it. A changed file (a new
        ``meta.json`` too) invalidates the marker. In a read-only corpus the marker
        cannot be written: each process then verifies a shard once.
    max_damaged : int | None
        Damaged shards skipped with a warning before iteration raises ``ShardError``
        (default: 1% of the shards, at least 1).
    recipe : Recipe | FMRIRecipe | dict | None
        A model's recipe: shards prepared otherwise are refused, naming every field that
        differs (``ds.recipe`` is the shards' own).
    """

    def __init__(self, root, *, split: str | None = None, shuffle: bool = True, seed: int = 0,
                 batch_size: int = 64, mix: int = 4, bucket: bool = False,
                 rank: int | None = None, world_size: int | None = None,
                 remainder: str = "pad", verify: bool = True,
                 max_damaged: int | None = None, recipe=None):  # fmt: skip
        check_option("remainder", remainder, REMAINDERS)
        for name, value in (("batch_size", batch_size), ("mix", mix)):
            if not isinstance(value, int) or value < 1:
                raise NeurofmError(f"{name} must be a whole number >= 1, got {value!r}")
        self.root = Path(root)
        index, self._stats = _read_index(self.root)
        if split is not None:
            index = index[index["split"] == split]
            if index.empty:
                raise NeurofmError(f"no shards in split {split!r} under {self.root}")
        self.index = index.reset_index(drop=True)
        self._n_windows = dict(zip(self.index.id, self.index.n_windows, strict=True))
        self.shuffle, self.seed, self.epoch, self.start = shuffle, seed, 0, 0
        self.batch_size, self.mix, self.bucket = batch_size, mix, bucket
        self._rank, self._world = rank, world_size
        self.remainder, self.verify = remainder, verify
        self.max_damaged = max(1, len(index) // 100) if max_damaged is None else max_damaged
        self._damaged: dict[str, str] = {}  # shard -> why, in this process
        self._check_one_recipe(self._stats.get("recipes") or [])
        if recipe is not None:
            self.check_recipe(recipe)

    def _check_one_recipe(self, recipes: list) -> None:
        if len(recipes) > 1:
            raise ShardError(f"the shards under {self.root} were made with {len(recipes)} "
                             "different recipes: rerun `neurofm preprocess` into a new out")  # fmt: skip

    @property
    def recipe(self) -> EEGRecipe | FMRIRecipe:
        """The recipe the shards were made with (from ``stats.json``)."""
        recipes = self._stats.get("recipes")
        if recipes is None:  # a corpus indexed before stats.json listed its recipes
            first = self.root / SHARDS / str(self.index.id[0])
            recipes = [read_meta(first)["made_with"]["recipe"]]
        self._check_one_recipe(recipes)
        return recipe_from_dict(recipes[0])

    def check_recipe(self, recipe) -> None:
        """Refuse shards prepared otherwise than ``recipe`` (a model's), naming what differs."""
        have, want = self.recipe, recipe_from_dict(recipe)
        if have.modality != want.modality:
            raise NeurofmError(f"the shards under {self.root} hold {have.modality} windows; the "
                               f"model takes {want.modality}")  # fmt: skip
        diffs = _differences({"recipe": have.model_dump(mode="json")},
                             {"recipe": want.model_dump(mode="json")})  # fmt: skip
        if diffs:
            raise NeurofmError(
                f"the shards under {self.root} were prepared with another recipe than the "
                f"model's ({'; '.join(diffs[:4])}: the shards' value -> the model's): run "
                "`neurofm preprocess` again with the model's recipe (model.recipe), into a new out"
            )

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` next, from its batch ``start`` (resuming a run).

        ``start`` counts batches as a ``DataLoader(ds, batch_size=None, num_workers=w)``
        yields them (its workers in turn). The first ``start`` items of the iteration are
        then ``None``: each reader yields a placeholder for its share of them instead of
        reading their windows, so the workers' turns, and hence every later batch, are
        exactly those of an uninterrupted iteration. The caller drops the placeholders.
        Later epochs start at batch 0.
        """
        if not isinstance(start, int) or start < 0:
            raise NeurofmError(f"start must be a batch count >= 0, got {start!r}")
        self.epoch, self.start = epoch, start

    @property
    def n_windows(self) -> int:
        """Windows in the whole corpus (all ranks)."""
        return int(self.index.n_windows.sum())

    def rank_world(self) -> tuple[int, int]:
        """This reader's (rank, world size): the overrides, else :func:`rank_world`."""
        rank, world = rank_world()
        rank = rank if self._rank is None else self._rank
        world = world if self._world is None else self._world
        if not 0 <= rank < world:
            raise NeurofmError(f"rank {rank} is not in 0..{world - 1} (world size {world})")
        return rank, world

    def windows_per_rank(self) -> int:
        """Windows each rank reads per epoch, padding repeats included."""
        world = self.rank_world()[1]
        per_rank = (math.ceil if self.remainder == "pad" else math.floor)(self.n_windows / world)
        if per_rank == 0:
            raise NeurofmError(f"{self.n_windows} windows for {world} ranks: with remainder="
                               "'drop' every rank needs one; use remainder='pad'")  # fmt: skip
        return per_rank

    def __len__(self) -> int:
        """Batches each rank yields per epoch."""
        return math.ceil(self.windows_per_rank() / self.batch_size)

    def __getstate__(self) -> dict:
        """Pickled for DataLoader workers that are spawned (no process group there):
        the rank and world size travel with the dataset."""
        state = dict(self.__dict__)
        state["_rank"], state["_world"] = self.rank_world()
        return state

    def _order(self) -> list[str]:
        """This epoch's shard order: the same on every rank and worker."""
        ids = list(self.index.id)
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(ids)
        return ids

    def _slot(self) -> tuple[int, int, int]:
        """(first, stop) positions of this reader's windows in the epoch's sequence, and
        a number naming the reader (rank x workers + worker) for its shuffling."""
        rank, _ = self.rank_world()
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        per_rank = self.windows_per_rank()
        batches = math.ceil(per_rank / self.batch_size)
        first, last = (batches * k // n_workers for k in (worker, worker + 1))
        start = rank * per_rank
        return (start + min(first * self.batch_size, per_rank),
                start + min(last * self.batch_size, per_rank), rank * n_workers + worker)  # fmt: skip

    def _open(self, shard: str, n_windows: int):
        """(meta, memory-mapped arrays, static arrays), verified; raises ``ShardError``."""
        d = self.root / SHARDS / shard
        meta = read_meta(d)
        if self.verify:
            verify_once(d, meta)
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

    def _windows(self, shard: str, start: int, stop: int, repeat: bool) -> list[tuple]:
        """Items ``(shard, window, arrays, static, label, repeat)``; none if damaged."""
        if shard in self._damaged:
            return []
        try:
            meta, arrays, static = self._open(shard, self._n_windows[shard])
        except ShardError as err:
            self._damage(shard, err)
            return []
        return [(shard, w, arrays, static, meta["window_labels"][w], repeat)
                for w in range(start, stop)]  # fmt: skip

    def _items(self):
        """This reader's windows, a buffer of ``mix`` shards at a time, then the repeats
        that stand in for windows of damaged shards."""
        order = self._order()
        start, stop, reader = self._slot()
        rng = np.random.default_rng([self.seed, self.epoch, reader])
        runs = list(_runs(order, [self._n_windows[s] for s in order], start, stop))
        missing, spare = 0, []
        for g in range(0, len(runs), self.mix):
            group = runs[g : g + self.mix]
            items = [item for run in group for item in self._windows(*run)]
            missing += sum(stop - start for _, start, stop, _ in group) - len(items)
            if self.shuffle:
                items = [items[i] for i in rng.permutation(len(items))]
            if self.bucket:  # a stable sort keeps the shuffle within a montage
                items.sort(key=lambda item: item[3]["names"])
            spare = items or spare
            yield from items
        if missing:
            spare = spare or self._any_readable(order)
            yield from ((*spare[i % len(spare)][:5], True) for i in range(missing))

    def _any_readable(self, order: list[str]) -> list[tuple]:
        """Windows of the first readable shard of the epoch: repeats for a reader whose
        every shard was damaged."""
        for shard in order:
            if items := self._windows(shard, 0, self._n_windows[shard], True):
                return items
        raise ShardError(
            f"no readable shard under {self.root}: {'; '.join(self._damaged.values())}"
        )

    def _skip(self) -> int:
        """Batches this reader leaves out: its share of the first ``start`` batches of the
        DataLoader's order (its workers in turn, each until it runs out)."""
        if not self.start:
            return 0
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        batches = math.ceil(self.windows_per_rank() / self.batch_size)
        counts = [
            batches * (k + 1) // n_workers - batches * k // n_workers for k in range(n_workers)
        ]
        turns = [(r, k) for r in range(max(counts)) for k in range(n_workers) if r < counts[k]]
        return sum(1 for _, k in turns[: self.start] if k == worker)

    def __iter__(self):
        batch, skip = [], self._skip() * self.batch_size
        for item in self._items():
            if skip:  # resuming: these windows were trained on before (set_epoch's start)
                skip -= 1
                if skip % self.batch_size == 0:
                    yield None
                continue
            batch.append(item)
            if len(batch) == self.batch_size:
                yield self._batch(batch)
                batch = []
        if batch:
            yield self._batch(batch)

    @staticmethod
    def _batch(items) -> tuple[Tokens, list[dict]]:
        singles, labels = [], []
        for shard, w, arrays, static, label, repeat in items:
            singles.append(Tokens(
                x=torch.from_numpy(np.array(arrays["x"][w : w + 1], dtype=np.float32)),
                space=torch.from_numpy(static["space"][None]),
                pos=torch.from_numpy(static["pos"][None]),
                t=torch.from_numpy(np.array(arrays["t"][w : w + 1])),
                mask=torch.from_numpy(np.array(arrays["mask"][w : w + 1])),
                names=[static["names"]],
            ))  # fmt: skip
            labels.append({"shard": shard, "window": w, "label": label, "repeat": repeat})
        return collate(singles), labels


def _read_index(root: Path):
    """``index.csv`` checked against ``stats.json``, with ``splits.json`` applied; and the
    statistics."""
    import pandas as pd

    index_path = root / INDEX
    if not index_path.exists():
        raise NeurofmError(f"{root} has no {INDEX}: run `neurofm preprocess` first")
    fix = "rerun `neurofm preprocess` (it keeps finished shards) to rebuild it"
    try:
        stats = json.loads((root / STATS).read_text())
        want = stats["index_sha256"]
    except KeyError:  # written before stats.json held the index's checksum
        raise ShardError(f"{root} was made by an older neurofm ({STATS} has no index checksum): "
                         "rebuild it with `neurofm preprocess CONFIG.yaml --overwrite`") from None  # fmt: skip
    except (OSError, ValueError, TypeError) as err:
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
    return index, stats
