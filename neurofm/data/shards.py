"""Corpora on disk: one shard per recording, written once, read memory-mapped.

::

    out/
      shards/<id>/x.npy       (windows, channels, patches, samples) float16 or float32
                 /mask.npy    (windows, channels, patches) bool: real tokens
                 /t.npy       (windows, patches) float32: patch start (s) in the recording
                 /space.npy   (channels,) vocabulary ids      /pos.npy (channels, 3) MNI mm
                 /meta.json   subject, session, split, labels, per-window labels, channel
                              names, provenance (source, size, mtime), recipe, statistics
      index.csv               one row per shard (what the streaming Dataset reads)
      stats.json              hours, windows, channels and montages seen, failures
      failures.jsonl          one line per file that could not be read, with the reason

A shard is written into ``<id>.partial/`` and renamed when complete, so after a crash
(even ``kill -9``) finished recordings are skipped and half-written ones are redone.
``x.npy`` is streamed window batch by window batch: memory does not grow with the
recording.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..config import StrictConfig
from ..preprocess import Recipe
from ..utils import NeurofmError, atomic_write, logger

SHARDS, INDEX, STATS, FAILURES = "shards", "index.csv", "stats.json", "failures.jsonl"
PARTIAL = ".partial"


class CorpusConfig(StrictConfig):
    """``neurofm preprocess CONFIG.yaml``: which corpus, how to cut it, where to put it."""

    dataset: str = Field(description="a name from neurofm.io.datasets.DATASETS")
    root: str = Field(description="where the dataset was unpacked (or the manifest CSV)")
    out: str = Field(description="output folder for shards, index and statistics")
    reader: dict = Field(default_factory=dict, description="reader options (e.g. subjects)")
    recipe: Recipe = Field(default_factory=Recipe)
    workers: int = Field(2, ge=1, description="processes; one recording each at a time")
    dtype: Literal["float16", "float32"] = "float16"
    background: str = Field("bckg", description="label of windows that overlap no event")
    max_files: int | None = Field(None, gt=0, description="stop after this many (trials)")


def load_config(path) -> CorpusConfig:
    """Read a YAML config (OmegaConf syntax, ``${...}`` interpolation) and validate it."""
    from omegaconf import OmegaConf
    from pydantic import ValidationError

    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as err:
        raise NeurofmError(f"{path} is not readable YAML ({err})") from err
    try:
        return CorpusConfig(**(data or {}))
    except ValidationError as err:
        raise NeurofmError(f"{path}: {err}") from err


# ---------------------------------------------------------------------- npy streaming
_HEADER = 256  # bytes reserved for the .npy header, rewritten with the final shape


def _npy_header(shape, dtype) -> bytes:
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
         "shape": tuple(shape)}  # fmt: skip
    text = repr(d).encode("latin1")
    pad = _HEADER - 10 - len(text) - 1
    if pad < 0:
        raise NeurofmError(f"shape {shape} too large for the shard header")
    return b"\x93NUMPY\x01\x00" + (_HEADER - 10).to_bytes(2, "little") + text + b" " * pad + b"\n"


class NpyAppender:
    """Append along axis 0 to a ``.npy`` file whose first dimension grows."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.rows, self.tail = Path(path), np.dtype(dtype), 0, None
        self.fh = open(self.path, "wb")
        self.fh.write(b"\0" * _HEADER)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if self.tail is None:
            self.tail = block.shape[1:]
        elif block.shape[1:] != self.tail:
            raise NeurofmError(f"shard block {block.shape} does not match {self.tail}")
        self.fh.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self.fh.seek(0)
        self.fh.write(_npy_header((self.rows, *(self.tail or ())), self.dtype))
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


# ---------------------------------------------------------------------- one recording
def safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "recording"


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=1, default=str) + "\n"))


def write_shard(rec, recipe: Recipe, out: Path, *, dtype="float16", background="bckg") -> dict:
    """Tokenize one :class:`~neurofm.io.datasets.Recording` into ``out/shards/<id>/``."""
    shard_id = safe_id(rec.id or f"{rec.subject}_{rec.session}")
    final = out / SHARDS / shard_id
    if (final / "meta.json").exists():
        return {"id": shard_id, "status": "done before"}
    work = out / SHARDS / (shard_id + PARTIAL)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        return _fill_shard(rec, recipe, work, final, shard_id, dtype, background)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _fill_shard(rec, recipe, work: Path, final: Path, shard_id: str, dtype, background) -> dict:
    from .. import __version__
    from ..tokens import iter_tokens

    raw = rec.load()
    writers = {name: NpyAppender(work / f"{name}.npy", dt) for name, dt in
               (("x", dtype), ("mask", bool), ("t", np.float32))}  # fmt: skip
    window_labels, names, space, pos = [], None, None, None
    sample_sum = None
    for batch in iter_tokens(raw, recipe, batch_size=64):
        writers["x"].append(batch.x.numpy())
        writers["mask"].append(batch.mask.numpy())
        writers["t"].append(batch.t.numpy())
        if names is None:
            names, space, pos = batch.names[0], batch.space[0].numpy(), batch.pos[0].numpy()
        for t0 in batch.t[:, 0].tolist():
            window_labels.append(rec.label_at(t0, t0 + recipe.window_seconds, background))
        # amplitude statistics from the first window of every batch (cheap, spread out)
        sample = np.abs(batch.x[0].numpy()).reshape(len(names), -1)
        sample_sum = sample if sample_sum is None else np.concatenate([sample_sum, sample], 1)
    for w in writers.values():
        w.close()
    if names is None:
        raise NeurofmError(f"{rec.id}: shorter than one window ({recipe.window_seconds} s)")
    np.save(work / "space.npy", space)
    np.save(work / "pos.npy", pos)
    source = rec.path
    meta = {
        "id": shard_id, "dataset": rec.dataset, "subject": rec.subject, "session": rec.session,
        "split": rec.split, "labels": rec.labels, "n_windows": len(window_labels),
        "window_labels": window_labels, "channels": list(names),
        "source": str(source) if source else rec.id,
        "source_size": source.stat().st_size if source else None,
        "source_mtime": source.stat().st_mtime if source else None,
        "recipe": recipe.model_dump(mode="json"), "dtype": dtype, "neurofm_version": __version__,
        "amplitude_percentiles": {
            "q": [1, 50, 99],
            "values": np.percentile(sample_sum, [1, 50, 99], axis=1).T.round(4).tolist()},
    }  # fmt: skip
    _write_json(work / "meta.json", meta)
    os.replace(work, final)  # the shard appears whole, or not at all
    return {"id": shard_id, "status": "written", "windows": len(window_labels)}


# ---------------------------------------------------------------------- the corpus
def _work(args) -> dict:
    rec, recipe, out, dtype, background = args
    import torch

    torch.set_num_threads(1)  # one process per core
    try:
        return write_shard(rec, recipe, out, dtype=dtype, background=background)
    except Exception as err:  # a bad file is reported, never fatal for the corpus
        return {"id": rec.id, "status": "failed", "error": f"{type(err).__name__}: {err}",
                "source": str(rec.path or rec.id)}  # fmt: skip


def preprocess_corpus(config: CorpusConfig, *, progress: bool = True) -> dict:
    """Read, tokenize and shard a corpus; resumable; returns the summary (``stats.json``)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from ..io.datasets import read_dataset

    out = Path(config.out).expanduser()
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    for partial in (out / SHARDS).glob("*" + PARTIAL):  # left by a crash: redone below
        shutil.rmtree(partial, ignore_errors=True)
    recordings = list(read_dataset(config.dataset, config.root, **config.reader))
    if config.max_files:
        recordings = recordings[: config.max_files]
    ids = [safe_id(r.id or f"{r.subject}_{r.session}") for r in recordings]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise NeurofmError(f"recordings share shard ids {dupes[:5]}: give them distinct ids")
    todo = [r for r, i in zip(recordings, ids) if not (out / SHARDS / i / "meta.json").exists()]
    logger.info("%d recordings, %d already sharded", len(recordings), len(recordings) - len(todo))
    results = []
    jobs = [(r, config.recipe, out, config.dtype, config.background) for r in todo]
    bar = tqdm(total=len(jobs), unit="file", desc=f"preprocess {config.dataset}",
               disable=not progress)  # fmt: skip
    if config.workers == 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(_work(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=config.workers) as pool:
            for future in as_completed([pool.submit(_work, job) for job in jobs]):
                results.append(future.result())
                bar.update()
    bar.close()
    failures = [r for r in results if r["status"] == "failed"]
    for f in failures:
        logger.warning("skipped %s: %s", f["source"], f["error"])
    with open(out / FAILURES, "w") as fh:
        fh.writelines(json.dumps(f) + "\n" for f in failures)
    return write_index(out, failures=failures, recipe=config.recipe)


def write_index(out: Path, *, failures=(), recipe: Recipe | None = None) -> dict:
    """``index.csv`` and ``stats.json`` from every complete shard under ``out``."""
    import pandas as pd

    metas = [json.loads(p.read_text()) for p in sorted((Path(out) / SHARDS).glob("*/meta.json"))]
    rows = [{k: m[k] for k in ("id", "dataset", "subject", "session", "split", "n_windows")}
            | {"n_channels": len(m["channels"]), "montage": "|".join(m["channels"])}
            for m in metas]  # fmt: skip
    table = pd.DataFrame(rows, columns=["id", "dataset", "subject", "session", "split",
                                        "n_windows", "n_channels", "montage"])  # fmt: skip
    atomic_write(Path(out) / INDEX, lambda p: table.to_csv(p, index=False))
    window_s = (
        recipe.window_seconds if recipe else metas[0]["recipe"]["window_seconds"] if metas else 0
    )
    stride_s = (recipe.stride_seconds or window_s) if recipe else window_s
    channels = Counter(c for m in metas for c in m["channels"])
    stats = {
        "recordings": len(metas), "windows": int(table.n_windows.sum()),
        "hours": round(float(table.n_windows.sum()) * stride_s / 3600, 3),
        "subjects": int(table.subject.nunique()),
        "window_labels": dict(Counter(lbl for m in metas for lbl in m["window_labels"])),
        "channels_seen": dict(channels.most_common()),
        "montages": dict(Counter(table.montage).most_common(20)),
        "failures": len(failures),
    }  # fmt: skip
    _write_json(Path(out) / STATS, stats)
    return stats
