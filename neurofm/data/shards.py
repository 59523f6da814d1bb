"""Corpora on disk: one shard per recording, written once, read memory-mapped.

::

    out/
      shards/<id>/x.npy       (windows, channels, patches, samples) float16 or float32
                 /mask.npy    (windows, channels, patches) bool: real tokens
                 /t.npy       (windows, patches) float32: patch start (s) in the recording
                 /space.npy   (channels,) vocabulary ids      /pos.npy (channels, 3) MNI mm
                 /meta.json   subject, session, split, labels, per-window labels, channel
                              names, seconds read/covered/dropped, statistics, ``made_with``
                              (its fingerprint), the size and SHA-256 of every file above,
                              and its own checksum
      index.csv               one row per shard (what the streaming Dataset reads)
      stats.json              hours, windows, dropped seconds, channels and montages seen,
                              failures, and index.csv's checksum
      failures.jsonl          one line per file that could not be read, with the reason

A shard is written into ``<id>.partial/`` and renamed when complete, so after a crash
(even ``kill -9``) finished recordings are skipped and half-written ones are redone.
``x.npy`` is streamed window batch by window batch: memory does not grow with the
recording. Pool workers die with the process that started them.

**Resuming.** A shard is "done" only when its ``made_with`` equals what this run would
write: the resolved recipe, the reader options (paths inside the corpus folder relative
to it), the source file's identity (name, size, modification time; a file whose size
matches but whose time differs, as after a copy, is compared by a digest of its first
and last MiB), the labels (events, recording label, background) and the dtype. A
shard made differently is refused, naming what changed, unless ``overwrite: true``
(``--overwrite``) redoes it; a damaged shard is always redone. What describes the
recording without changing its windows (subject, session, split, the ``labels`` mapping)
is taken from the current listing on every run: a finished shard whose listing changed
gets a new ``meta.json``, not new windows. ``stats.json`` is computed from the shards
really in ``out``.

**Damage.** ``meta.json`` carries its own checksum and the size and SHA-256 of every data
file; :class:`~neurofm.data.ShardDataset` verifies a shard completely when a process
first opens it (see its docstring for the skip-or-refuse rule).

**Parts** (corpora beyond one machine). ``neurofm preprocess CONFIG --part i/n`` (``part:
i/n``) shards only part ``i`` of ``n``, numbered from 1. The split
(:func:`split_parts`) gives parts of about equal source bytes: the largest recording
first, each to the part with the fewest bytes so far, ties by shard id; every machine
that lists the same files makes the same split (a part warns when another part's record
shows another listing). Equal counts would not do: sorted EEGMAT ids alternate 180 s and
60 s files, so every other id would give one part three times the work. Parts share
``out`` (a shared file system) and never touch each other's shards (a crash's leftovers
are cleaned per part); each writes ``parts/part-i-of-n.json`` (its recordings, failures,
host, command, times; ``running`` until it ends) and no ``index.csv``/``stats.json``. In
a SLURM array (``sbatch --array=1-N``): ``--part $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``.
Then ``neurofm preprocess CONFIG --merge`` reads no recording: it checks every listed
recording's shard with the resume rules above, takes the failures from the part records,
and writes ``index.csv``, ``stats.json`` and ``failures.jsonl`` as one run would have;
if a recording has no finished shard and no recorded failure it writes nothing and names
each part to (re)run, with its command. A rerun of a part resumes like any run. (A plain
``neurofm preprocess CONFIG`` also finishes a split corpus, but does the missing parts'
work itself, on the machine it runs on: ``--merge`` is for the login node.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..channels import UNK
from ..config import StrictConfig
from ..errors import (
    ChannelWarning,
    ConfigError,
    NeurofmError,
    ShardError,
    ShardWarning,
    check_option,
    logger,
    warn,
)
from ..preprocess import AnyRecipe, EEGRecipe, FMRIRecipe, Recipe
from ..utils import atomic_write, file_sha256

SHARDS, INDEX, STATS, FAILURES = "shards", "index.csv", "stats.json", "failures.jsonl"
PARTS = "parts"  # out/parts/part-<i>-of-<n>.json: one record per part run
PARTIAL, STALE = ".partial", ".stale"
DATA_FILES = ("x.npy", "mask.npy", "t.npy", "space.npy", "pos.npy")
FAIL_FAST = 3  # identical failures of the first recordings, with no success: stop


def parse_part(value) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``, 1 <= i <= n; a ``ValueError`` naming the fix otherwise."""
    text = str(value).strip() if isinstance(value, str | int) else None
    if text is None or isinstance(value, bool):
        raise ValueError(f"{value!r} is not i/n: give the part and the number of parts, e.g. 1/4")
    if "$" in text:
        raise ValueError(f"{text!r} holds a shell variable that was not expanded: write --part "
                         "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT on the command line of "
                         "the job (without single quotes), not in the YAML file")  # fmt: skip
    m = re.fullmatch(r"(\d*)\s*/\s*(\d*)", text)
    if m and not (m[1] and m[2]):
        raise ValueError(f"{text!r} lacks a number: $SLURM_ARRAY_TASK_ID and "
                         "$SLURM_ARRAY_TASK_COUNT are set only inside a SLURM array job; "
                         "elsewhere give the numbers, e.g. --part 1/4")  # fmt: skip
    if not m:
        raise ValueError(f"{text!r} is not i/n with whole numbers: e.g. --part 1/4 (part 1 of 4)")
    i, n = int(m[1]), int(m[2])
    if n < 1:
        raise ValueError(f"{text!r} splits into {n} parts: n must be at least 1, e.g. --part 1/4")
    if i < 1:
        raise ValueError(f"{text!r}: parts are numbered from 1 (1/{n} ... {n}/{n}); in a SLURM "
                         f"array submit --array=1-{n} so that $SLURM_ARRAY_TASK_ID counts from 1")  # fmt: skip
    if i > n:
        raise ValueError(f"{text!r}: there are only {n} parts, 1/{n} ... {n}/{n}")
    return i, n


def split_parts(sizes: dict[str, int], parts: int) -> list[list[str]]:
    """Shard ids in ``parts`` lists of about equal source bytes (each sorted): the largest
    recording first, each to the part with the fewest bytes so far (ties: the lower part;
    equal sizes: in id order). The same sizes give the same split on every machine."""
    import heapq

    loads, out = [(0, k) for k in range(parts)], [[] for _ in range(parts)]
    for i in sorted(sizes, key=lambda i: (-sizes[i], i)):
        load, k = heapq.heappop(loads)
        out[k].append(i)
        heapq.heappush(loads, (load + max(sizes[i], 1), k))
    return [sorted(ids) for ids in out]


def part_ids(sizes: dict[str, int], part: int, parts: int) -> list[str]:
    """The shard ids of part ``part`` of ``parts`` (from 1): :func:`split_parts`."""
    return split_parts(sizes, parts)[part - 1]


class EventWindows(StrictConfig):
    """One window per event of the reader (BCI trials: motor imagery cues, stimuli)."""

    event_id: list[str] = Field(min_length=1, description="labels of the events to lock "
                                                          "windows to, e.g. [T1, T2]")  # fmt: skip
    tmin: float = Field(0.0, description="window start relative to the event (s)")
    tmax: float = Field(description="window end relative to the event (s); the window is "
                                    "tmax - tmin, rounded to whole patches")  # fmt: skip

    @model_validator(mode="after")
    def _check(self):
        if self.tmax <= self.tmin:
            raise ValueError(f"tmax={self.tmax} must be after tmin={self.tmin}")
        return self


class CorpusConfig(StrictConfig):
    """``neurofm preprocess CONFIG.yaml``: which corpus, how to cut it, where to put it."""

    dataset: str = Field(description="a name from neurofm.io.datasets.DATASETS")
    root: str = Field(description="where the dataset was unpacked (or the manifest CSV)")
    out: str = Field(description="output folder for shards, index and statistics")
    reader: dict = Field(default_factory=dict,
                         description="the dataset reader's options (e.g. subjects), and "
                                     "read_eeg's (positions, units ...) or read_fmri's "
                                     "(atlas, t_r ...) for every file")  # fmt: skip
    recipe: AnyRecipe = Field(default_factory=Recipe,
                              description="EEG (Recipe) or fMRI (modality: fmri, FMRIRecipe)")  # fmt: skip
    workers: int = Field(2, ge=1, description="processes; one recording each at a time")
    dtype: Literal["float16", "float32"] = "float16"
    background: str = Field("bckg", description="label of windows that overlap no event")
    events: EventWindows | None = Field(None, description="one window per event (label = the "
                                                          "event's) instead of regular windows")  # fmt: skip
    max_files: int | None = Field(None, gt=0, description="stop after this many (trials)")
    overwrite: bool = Field(False, description="redo shards made with another recipe, reader "
                                               "option, source file or labels (default: refuse)")  # fmt: skip
    part: str | None = Field(None, description="i/n: shard only part i of n (from 1; e.g. "
                                               "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT "
                                               "with --array=1-n); no index until --merge")  # fmt: skip
    merge: bool = Field(False, description="after the parts: index all parts' shards (reads no "
                                           "recording) or name the parts still to run")  # fmt: skip

    @field_validator("part", mode="before")
    @classmethod
    def _part(cls, value):
        if value is None:
            return None
        i, n = parse_part(value)
        return f"{i}/{n}"

    @model_validator(mode="after")
    def _part_or_merge(self):
        if self.part is not None and self.merge:
            raise ValueError("part and merge: give --part i/n to shard one part, or --merge to "
                             "index every part's shards, not both")  # fmt: skip
        if self.merge and self.overwrite:
            raise ValueError("merge and overwrite: --merge writes no shard; rerun the parts "
                             "with --overwrite, then --merge")  # fmt: skip
        return self

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from ..io.datasets import DATASETS

        check_option("dataset", name, DATASETS)  # beside the other fields' problems
        return name

    @model_validator(mode="after")
    def _check_reader(self):
        from ..io.datasets import split_reader_options

        # an option unknown to the reader, or a dataset without the recipe's modality: now
        split_reader_options(self.dataset, self.reader, self.recipe.modality)
        return self


# ---------------------------------------------------------------------- checksums
def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def read_meta(shard: Path) -> dict:
    """A shard's ``meta.json``, checked against its own checksum (``ShardError`` if not)."""
    try:
        meta = json.loads((shard / "meta.json").read_text())
    except FileNotFoundError:
        raise ShardError(f"shard {shard.name}: meta.json is missing") from None
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
        raise ShardError(f"shard {shard.name}: meta.json is unreadable ({err})") from None
    if not isinstance(meta, dict) or "checksum" not in meta:
        raise ShardError(f"shard {shard.name}: meta.json has no checksum (damaged, or made by "
                         "an older neurofm)")  # fmt: skip
    if _digest({k: v for k, v in meta.items() if k != "checksum"}) != meta["checksum"]:
        raise ShardError(f"shard {shard.name}: meta.json does not match its checksum (edited "
                         "or damaged)")  # fmt: skip
    return meta


def verify_shard(shard: Path, meta: dict) -> None:
    """Every data file's size and SHA-256 against ``meta.json``: ``ShardError`` if not, or
    if a file cannot be read (missing, permissions, I/O error)."""
    for name, want in meta["files"].items():
        try:
            size = (shard / name).stat().st_size
            if size != want["bytes"]:
                raise ShardError(f"shard {shard.name}: {name} is {size} bytes, {want['bytes']} "
                                 "when written (truncated or overwritten)")  # fmt: skip
            if file_sha256(shard / name) != want["sha256"]:
                raise ShardError(f"shard {shard.name}: {name} does not match its SHA-256 "
                                 "(damaged on disk)")  # fmt: skip
        except ShardError:
            raise
        except FileNotFoundError:
            raise ShardError(f"shard {shard.name}: {name} is missing") from None
        except OSError as err:  # permissions, an I/O error: the damaged-shard rule applies
            raise ShardError(f"shard {shard.name}: {name} is unreadable "
                             f"({err.strerror or err})") from None  # fmt: skip


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


def shard_id(rec) -> str:
    return safe_id(rec.id or f"{rec.subject}_{rec.session}")


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=1, default=str) + "\n"))


def _source_files(rec) -> list[Path]:
    """The files a recording is read from, and those its reader options name."""
    files = [rec.path] if rec.path else [a for a in getattr(rec.array, "args", ())
                                         if isinstance(a, str | Path)]  # fmt: skip
    files += [v for v in rec.reader.values() if isinstance(v, str | Path)]
    return [Path(f) for f in files if Path(f).is_file()]


def _source_identity(rec) -> dict:
    """What the shard was read from: file names, sizes and mtimes (not folders: a moved
    corpus is the same corpus) of the recording and of files its reader options name (an
    atlas image, confounds), and for arrays in containers their sfreq, names, units; for
    an fMRI run its TR as given."""
    stats = [(f.name, f.stat()) for f in _source_files(rec)]
    fmri = {"t_r": rec.t_r} if rec.modality == "fmri" else {}
    return {"id": rec.id, "files": [[n, s.st_size, int(s.st_mtime)] for n, s in stats],
            "sfreq": rec.sfreq, "ch_names": rec.ch_names, "units": rec.units, **fmri}  # fmt: skip


def _content_digest(path: Path) -> str:
    """Size and SHA-256 of the first and last MiB: a file's identity when a copy did not
    keep its modification time."""
    size, mib = path.stat().st_size, 1 << 20
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(mib))
        fh.seek(max(size - mib, mib))
        h.update(fh.read())
    return h.hexdigest()


def _relative(options: dict, root: Path | None) -> dict:
    """Reader options with absolute paths inside the corpus ``root`` made relative to it:
    a study folder that moves keeps its shards."""

    def rel(value):
        path = Path(value) if isinstance(value, str | Path) else None
        if root is None or path is None or not path.is_absolute() or not path.is_relative_to(root):
            return value
        return path.relative_to(root).as_posix()

    return {k: rel(v) for k, v in (options or {}).items()}


def corpus_folder(root) -> Path:
    """The folder of a corpus's ``root`` (a manifest CSV's folder)."""
    root = Path(root).expanduser().absolute()
    return root.parent if root.is_file() else root


def _seconds(loaded) -> float:
    """The length of a loaded recording: an EEG Raw, or an fMRI (time, parcel) series."""
    if hasattr(loaded, "n_times"):
        return loaded.n_times / loaded.info["sfreq"]
    return loaded.sizes["time"] * loaded.attrs["t_r"]


def made_with(rec, recipe: EEGRecipe | FMRIRecipe, dtype: str, background: str,
              root: Path | None = None, events: EventWindows | None = None) -> dict:  # fmt: skip
    """Everything a shard's contents depend on, in JSON form (compared on resume); paths
    of reader options inside the corpus folder ``root`` relative to it."""
    made = {
        "recipe": recipe.model_dump(mode="json"), "reader": _relative(rec.reader, root),
        "dtype": dtype,
        "source": _source_identity(rec),
        "labels": {"events": [[e.onset, e.duration, e.label, e.channel] for e in rec.events],
                   "label": rec.label, "background": background},
    }  # fmt: skip
    if events is not None:  # absent otherwise: regular corpora keep their fingerprints
        made["events"] = events.model_dump(mode="json")
    return json.loads(json.dumps(made, default=str))


#: what describes a recording without changing its windows: from the current listing
RECORD = ("subject", "session", "split", "labels")


def _record(rec) -> dict:
    return json.loads(json.dumps({k: getattr(rec, k) for k in RECORD}, default=str))


def _sealed(meta: dict) -> dict:
    """``meta`` in its JSON form, with its own checksum."""
    meta = json.loads(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, default=str))
    return meta | {"checksum": _digest(meta)}


def refresh_meta(shard: Path, rec, made: dict) -> bool:
    """Give a finished shard the listing's subject, session, split and labels and this
    run's ``made_with``; True when ``meta.json`` was rewritten (atomically)."""
    meta = read_meta(shard)
    new = _sealed(meta | _record(rec) | {"made_with": made, "fingerprint": _digest(made)[:16]})
    if new == meta:
        return False
    _write_json(shard / "meta.json", new)
    return True


def _differences(old: dict, new: dict) -> list[str]:
    """What differs, one level deep: ``recipe.notch 60.0 -> 50.0``, ``source``."""
    out = []
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        if isinstance(before, dict) and isinstance(value, dict):
            out += [f"{key}.{k} {before.get(k)!r} -> {value.get(k)!r}"
                    for k in sorted({*before, *value}) if before.get(k) != value.get(k)]  # fmt: skip
        else:
            out.append(key if before is not None else f"{key} (not recorded)")
    return out


def _file_entries(files) -> bool:
    """A source identity's ``files``: ``[name, size, mtime]`` entries."""
    return isinstance(files, list) and all(isinstance(f, list) and len(f) == 3 for f in files)


def _as_now(meta: dict, expected: dict, rec, root: Path | None) -> dict:
    """The shard's ``made_with`` as this run would write it if its sources are unchanged:
    absolute reader paths inside ``root`` made relative (shards of an older neurofm), and
    a source file's mtime taken from now where its size and content digest are those the
    shard was made from (a copy that lost its timestamps)."""
    old = dict(meta.get("made_with") or {})
    old["reader"] = _relative(old.get("reader"), root)
    digests, paths = meta.get("source_digests") or {}, {f.name: f for f in _source_files(rec)}
    now = {f[0]: f for f in expected["source"]["files"]}

    def same(entry):
        name, size, mtime = entry
        unchanged = (name in now and now[name][1] == size and now[name][2] != mtime
                     and name in digests and _content_digest(paths[name]) == digests[name])  # fmt: skip
        return now[name] if unchanged else entry

    if isinstance(old.get("source"), dict) and _file_entries(old["source"].get("files")):
        old["source"] = {**old["source"], "files": [same(f) for f in old["source"]["files"]]}
    return old


def shard_state(shard: Path, expected: dict, rec=None, root: Path | None = None) -> tuple[str, str]:
    """("new" | "done" | "stale" | "damaged", why) of a shard folder against ``made_with``
    (with ``rec``, of the recording: sources compared as in :func:`_as_now`)."""
    if not shard.exists():
        return "new", ""
    try:
        meta = read_meta(shard)
    except ShardError as err:
        return "damaged", str(err)
    old = _as_now(meta, expected, rec, root) if rec is not None else meta.get("made_with") or {}
    diffs = _differences(old, expected)
    return ("stale", "; ".join(diffs[:3])) if diffs else ("done", "")


def write_shard(rec, recipe: EEGRecipe | FMRIRecipe, out: Path, *, dtype="float16", background="bckg",
                overwrite: bool = False, root=None, events: EventWindows | None = None) -> dict:  # fmt: skip
    """Tokenize one :class:`~neurofm.io.datasets.Recording` into ``out/shards/<id>/``.

    A shard made the same way is kept; one made differently raises ``ShardError``
    unless ``overwrite``; a damaged one is redone. ``root``: the corpus folder, that
    reader paths inside it are recorded relative to.
    """
    sid = shard_id(rec)
    final = Path(out) / SHARDS / sid
    made = made_with(rec, recipe, dtype, background, root, events)
    state, why = shard_state(final, made, rec, root)
    if state == "done":
        refresh_meta(final, rec, made)
        return {"id": sid, "status": "done before"}
    if state == "stale" and not overwrite:
        raise ShardError(f"shard {sid} was made differently ({why}): use another out, or "
                         "overwrite=True to redo it")  # fmt: skip
    work = final.with_name(sid + PARTIAL)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        return _fill_shard(rec, recipe, work, final, made, dtype, background)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _fill_shard(rec, recipe, work: Path, final: Path, made: dict, dtype, background) -> dict:
    from .. import __version__
    from ..windows import iter_tokens, plan_windows

    loaded = rec.load(recipe)  # an EEG Raw, or an fMRI series prepared at the recipe's TR
    locked, event_labels = made.get("events"), None
    if locked:  # one window per event of the chosen labels, labelled with it
        chosen = [e for e in rec.events if e.label in locked["event_id"]]
        if not chosen:
            known = sorted({e.label for e in rec.events})
            raise NeurofmError(f"{rec.id}: no event labelled {locked['event_id']} (its events: "
                               f"{known or 'none'}): fix events.event_id")  # fmt: skip
        plan = plan_windows(loaded, recipe, events=np.array([e.onset for e in chosen]),
                            tmin=locked["tmin"], tmax=locked["tmax"])  # fmt: skip
        event_labels = [chosen[i].label for i in plan.event]
        batches = plan.batches(64)
    else:
        batches = iter_tokens(loaded, recipe, batch_size=64)
    writers = {name: NpyAppender(work / f"{name}.npy", dt) for name, dt in
               (("x", dtype), ("mask", bool), ("t", np.float32))}  # fmt: skip
    window_labels, names, space, pos, last_start = [], None, None, None, 0.0
    sample_sum, unplaced = None, None
    for batch in batches:
        if names is None:
            names, space, pos = batch.names[0], batch.space[0].numpy(), batch.pos[0].numpy()
            # a unit with no name in the vocabulary and no position can be placed by no
            # model: its tokens are kept as padding (mask False), named in meta.json
            unplaced = (space == UNK) & np.isnan(pos).any(-1)
            if unplaced.any():
                lost = [n for n, u in zip(names, unplaced, strict=True) if u]
                warn(f"{rec.id}: channel(s) {', '.join(lost)} have no known name and no "
                     "position: no model can place them, so their tokens are masked out; give "
                     "positions in the reader options (positions: {name: electrode or [x, y, z]}) "
                     "to keep them", ChannelWarning)  # fmt: skip
        writers["x"].append(batch.x.numpy())
        writers["mask"].append(batch.mask.numpy() & ~unplaced[None, :, None])
        writers["t"].append(batch.t.numpy())
        for t0 in batch.t[:, 0].tolist():
            if event_labels is not None:
                window_labels.append(event_labels[len(window_labels)])
            else:
                window_labels.append(rec.label_at(t0, t0 + recipe.window_seconds, background))
            last_start = t0
        # amplitude statistics from the first window of every batch (cheap, spread out)
        sample = np.abs(batch.x[0].numpy()).reshape(len(names), -1)
        sample_sum = sample if sample_sum is None else np.concatenate([sample_sum, sample], 1)
    for w in writers.values():
        w.close()
    if names is None:
        raise NeurofmError(f"{rec.id}: shorter than one window ({recipe.window_seconds} s)")
    np.save(work / "space.npy", space)
    np.save(work / "pos.npy", pos)
    seconds = _seconds(loaded)
    # event-locked windows cover the trials, not the recording: nothing counts as dropped
    covered = seconds if locked else last_start + recipe.window_seconds
    meta = {
        "id": final.name, "dataset": rec.dataset, **_record(rec), "label": rec.label,
        "n_windows": len(window_labels), "window_labels": window_labels,
        "channels": list(names), "source": str(rec.path or rec.id),
        "unplaced_channels": [n for n, u in zip(names, unplaced, strict=True) if u],
        "seconds": round(seconds, 3), "covered_seconds": round(covered, 3),
        "dropped_seconds": round(max(0.0, seconds - covered), 3),
        "dtype": dtype, "neurofm_version": __version__,
        "amplitude_percentiles": {
            "q": [1, 50, 99],
            "values": np.percentile(sample_sum, [1, 50, 99], axis=1).T.round(4).tolist()},
        "made_with": made, "fingerprint": _digest(made)[:16],
        "source_digests": {f.name: _content_digest(f) for f in _source_files(rec)},
        "files": {n: {"bytes": (work / n).stat().st_size, "sha256": file_sha256(work / n)}
                  for n in DATA_FILES},
    }  # fmt: skip
    _write_json(work / "meta.json", _sealed(meta))  # the checksum covers what is read back
    stale = final.with_name(final.name + STALE)
    if final.exists():  # redoing a shard: the old one leaves, the new one arrives whole
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(final, stale)
    os.replace(work, final)
    shutil.rmtree(stale, ignore_errors=True)
    return {"id": final.name, "status": "written", "windows": len(window_labels)}


# ---------------------------------------------------------------------- the corpus
def _work(args) -> dict:
    rec, config, out = args
    import torch

    torch.set_num_threads(1)  # one process per core
    try:
        return write_shard(rec, config.recipe, out, dtype=config.dtype, root=corpus_folder(config.root),
                           background=config.background, overwrite=config.overwrite,
                           events=config.events)  # fmt: skip
    except Exception as err:  # a bad file is reported, never fatal for the corpus
        return {"id": rec.id, "shard": shard_id(rec), "status": "failed",
                "error": f"{type(err).__name__}: {err}", "source": str(rec.path or rec.id)}  # fmt: skip


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: end this worker as soon as ``parent`` ends (``kill -9``).

    Linux delivers SIGKILL on the parent's death (``PR_SET_PDEATHSIG``); elsewhere, and
    for a parent that died before the call, a thread polls the parent's pid.
    """
    import signal
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="neurofm-parent-watch", daemon=True).start()


def _results(jobs, workers: int):
    """Results of ``_work`` as they finish, in this process or in a pool of workers."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_work, jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn: the workers are children of this process (forkserver's are not), and no
    # thread state of the parent (torch, OpenMP) is copied into them
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_die_with_parent, initargs=(os.getpid(),))  # fmt: skip
    try:
        for future in as_completed([pool.submit(_work, job) for job in jobs]):
            yield future.result()
    except BrokenProcessPool:
        raise NeurofmError("a preprocessing worker died (out of memory?): rerun with fewer "
                           "workers; finished shards are kept") from None  # fmt: skip
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _signature(result: dict) -> str:
    """A failure's error without what is particular to its file (names, numbers)."""
    text = result["error"]
    source = Path(result["source"])
    for part in (str(source), source.name, source.stem, str(result["id"])):
        text = text.replace(part, "<file>") if part else text
    return re.sub(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", "#", text)


def _report_failures(failures: list[dict]) -> None:
    """One log line per distinct error, naming how many files and the first few."""
    groups: dict[str, list[dict]] = {}
    for f in failures:
        groups.setdefault(_signature(f), []).append(f)
    for group in groups.values():
        names = ", ".join(Path(f["source"]).name for f in group[:3])
        more = f" and {len(group) - 3} more" if len(group) > 3 else ""
        logger.warning("skipped %d file(s) (%s%s): %s", len(group), names, more, group[0]["error"])


def _writable(folder: str) -> Path:
    import tempfile

    out = Path(folder).expanduser()
    try:
        (out / SHARDS).mkdir(parents=True, exist_ok=True)
        # a name of its own: parts on other machines probe the same folder at once
        with tempfile.NamedTemporaryFile(dir=out, prefix=".neurofm-write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"out={folder!r} is not a writable folder ({err.strerror or err}): "
                          "give a folder you can create and write to") from None  # fmt: skip
    return out


def _check_existing(
    out: Path, listed: dict, expected: dict[str, dict], config: CorpusConfig
) -> dict:
    """States of the listed recordings' shards in ``out`` (``shard_state``); refuses those
    made differently from this run unless ``overwrite``. Shards of recordings no longer
    listed are left alone (and out of the index)."""
    root = corpus_folder(config.root)
    states = {name: shard_state(out / SHARDS / name, want, listed[name], root)
              for name, want in expected.items()}  # fmt: skip
    stale = {name: why for name, (state, why) in states.items() if state == "stale"}
    if stale and not config.overwrite:
        first = "; ".join(f"{k}: {v}" for k, v in list(stale.items())[:2])
        raise ShardError(
            f"{len(stale)} shard(s) in {out} were made differently from this config ({first}): "
            "they would mix with the new ones. Give another out, or set overwrite: true "
            "(--overwrite) to redo them"
        )
    return states


def _fail_fast(results: list, failures: list, n_todo: int) -> None:
    """Raise when the first ``FAIL_FAST`` recordings all failed with one error."""
    if len(failures) == len(results) == FAIL_FAST < n_todo:
        if len({_signature(f) for f in failures}) == 1:
            names = ", ".join(Path(f["source"]).name for f in failures)
            raise NeurofmError(
                f"the first {FAIL_FAST} recordings ({names}) all failed the same way, so the "
                f"other {n_todo - FAIL_FAST} were not tried: a setting is wrong, not a file. "
                f"Fix it and rerun. The error: {failures[0]['error']}"
            )


def _listing(config: CorpusConfig) -> tuple[list, list[str]]:
    """The corpus's recordings (``max_files`` applied) and their shard ids, all distinct."""
    from ..io.datasets import read_dataset

    recordings = list(read_dataset(config.dataset, config.root, modality=config.recipe.modality,
                                   **config.reader))  # fmt: skip
    if config.max_files:
        recordings = recordings[: config.max_files]
    ids = [shard_id(r) for r in recordings]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise NeurofmError(f"recordings share shard ids {dupes[:5]}: give them distinct ids")
    return recordings, ids


def _expected(config: CorpusConfig, listed: dict) -> dict[str, dict]:
    root = corpus_folder(config.root)
    return {i: made_with(r, config.recipe, config.dtype, config.background, root, config.events)
            for i, r in listed.items()}  # fmt: skip


def preprocess_corpus(config: CorpusConfig, *, progress: bool = True,
                      command: str | None = None) -> dict:  # fmt: skip
    """Read, tokenize and shard a corpus; resumable; returns the summary (``stats.json``).

    Stops early, with one error, when the first ``FAIL_FAST`` recordings all fail the same
    way (a bad setting, not a bad file); other failures are skipped and listed.

    ``config.part`` (``"i/n"``): shard only that part and return its summary (its record,
    ``parts/part-i-of-n.json``), writing no index; ``config.merge``: :func:`merge_parts`
    (module docstring). ``command``: the command line of this run, kept in a part's record
    so that a merge can name the command that reruns a missing part.
    """
    from tqdm.auto import tqdm

    if config.merge:
        return merge_parts(config, command=command)
    out = _writable(config.out)
    recordings, ids = _listing(config)
    sizes = _sizes(ids, recordings)
    mine = set(ids) if config.part is None else set(part_ids(sizes, *parse_part(config.part)))
    for leftover in [*(out / SHARDS).glob("*" + PARTIAL), *(out / SHARDS).glob("*" + STALE)]:
        if config.part is None or leftover.name.rsplit(".", 1)[0] in mine:  # others' are live
            shutil.rmtree(leftover, ignore_errors=True)  # left by a crash: redone below
    listed = {i: r for i, r in zip(ids, recordings, strict=True) if i in mine}
    expected = _expected(config, listed)
    states = _check_existing(out, listed, expected, config)
    todo = []
    for i, r in listed.items():
        if states.get(i, ("new",))[0] == "done":
            refresh_meta(out / SHARDS / i, r, expected[i])  # a changed split, subject ...
        else:
            todo.append(r)
    what = f"part {config.part}: " if config.part else ""
    logger.info("%s%d recordings, %d already sharded", what, len(listed), len(listed) - len(todo))
    record = _PartRecord(out, config, sizes, sorted(listed), command) if config.part else None
    results, failures = [], []
    bar = tqdm(total=len(todo), unit="file", desc=f"preprocess {config.dataset}"
               + (f" part {config.part}" if config.part else ""), disable=not progress)  # fmt: skip
    try:
        with closing(_results([(r, config, out) for r in todo], config.workers)) as finished:
            for result in finished:
                results.append(result)
                bar.update()
                if result["status"] == "failed":
                    failures.append(result)
                    _fail_fast(results, failures, len(todo))
    except BaseException as err:
        if record is not None:
            record.end(results, failures, error=f"{type(err).__name__}: {err}")
        raise
    finally:
        bar.close()
        if record is None:
            with open(out / FAILURES, "w") as fh:
                fh.writelines(json.dumps(f) + "\n" for f in failures)
    _report_failures(failures)
    if record is not None:
        return record.end(results, failures)
    return write_index(out, failures=failures, ids=ids)


# ---------------------------------------------------------------------- parts
def _part_file(out: Path, part: int, parts: int) -> Path:
    return out / PARTS / f"part-{part}-of-{parts}.json"


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _sizes(ids, recordings) -> dict[str, int]:
    """Shard id -> bytes of its source files (what a part's share is balanced by)."""
    return {i: sum(f.stat().st_size for f in _source_files(r))
            for i, r in zip(ids, recordings, strict=True)}  # fmt: skip


def _listing_digest(sizes: dict[str, int]) -> str:
    """The listing a split was made from: ids and sizes (parts agree when it is equal)."""
    return _digest(sorted(sizes.items()))[:16]


class _PartRecord:
    """``parts/part-i-of-n.json``: what one part run was given and what became of it;
    ``running`` from its start, ``finished`` (or ``stopped``, with the error) at its end."""

    def __init__(self, out: Path, config: CorpusConfig, sizes: dict[str, int], ids: list[str],
                 command: str | None):  # fmt: skip
        import socket

        from .. import __version__

        self.part, self.parts = parse_part(config.part)
        self.path, self.out, self.t0 = _part_file(out, self.part, self.parts), out, time.monotonic()
        self.data = {
            "part": config.part, "status": "running", "ids": ids,
            "listing": {"recordings": len(sizes), "digest": _listing_digest(sizes)},
            "host": socket.gethostname(), "pid": os.getpid(), "command": command,
            "started": _now(),
            "neurofm_version": __version__,
        }  # fmt: skip
        self.path.parent.mkdir(exist_ok=True)
        others = [r for r in _part_records(out) if r["part"] != config.part
                  and r["part"].endswith(f"/{self.parts}")
                  and (r.get("listing") or {}).get("digest") != self.data["listing"]["digest"]]  # fmt: skip
        if others:
            warn(f"part {others[-1]['part']} ran on another listing of the corpus "
                 f"({others[-1]['listing']['recordings']} recordings, now {len(sizes)}; or "
                 "their sizes changed): the parts may overlap or leave recordings out. Rerun "
                 "every part once the files stay as they are", ShardWarning)  # fmt: skip
        _write_json(self.path, self.data)

    def end(self, results: list, failures: list, error: str | None = None) -> dict:
        metas = _metas(self.out, self.data["ids"])
        self.data |= {
            "status": "stopped" if error else "finished", "error": error,
            "ended": _now(),
            "seconds": round(time.monotonic() - self.t0, 1),
            "written": sum(r["status"] == "written" for r in results),
            "done_before": len(metas) - sum(r["status"] == "written" for r in results),
            "recordings": len(metas), "windows": sum(m["n_windows"] for m in metas),
            "hours": round(sum(m["covered_seconds"] for m in metas) / 3600, 3),
            "failures": failures,
        }  # fmt: skip
        _write_json(self.path, self.data)
        return self.data


def _metas(out: Path, ids) -> list[dict]:
    """The sound ``meta.json`` of the shards ``ids`` under ``out`` (others silently left)."""
    metas = []
    for i in ids:
        try:
            metas.append(read_meta(out / SHARDS / i))
        except ShardError:
            pass
    return metas


def _part_records(out: Path) -> list[dict]:
    """Every readable part record under ``out``, oldest start first."""
    records = []
    for path in sorted((out / PARTS).glob("part-*-of-*.json")):
        try:
            record = json.loads(path.read_text())
            parse_part(record["part"])
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("%s is not a readable part record: ignored", path)
            continue
        records.append(record)
    return sorted(records, key=lambda r: str(r.get("started")))


def part_command(command: str | None, part: str | None) -> str:
    """A part run's ``command`` with its part replaced by ``part`` (``None``: by
    ``--merge``); the generic command without one."""
    import shlex

    new = ["--part", part] if part else ["--merge"]
    if not command:
        return shlex.join(["neurofm", "preprocess", "CONFIG", *new])
    words = shlex.split(command)
    for k, word in enumerate(words):
        if word in ("--part", "--merge"):
            return shlex.join([*words[:k], *new, *words[k + 1 + (word == "--part") :]])
        if word.startswith(("--part=", "part=", "merge=")):
            return shlex.join([*words[:k], *new, *words[k + 1 :]])
    return shlex.join([*words, *new])


def merge_parts(config: CorpusConfig, *, command: str | None = None) -> dict:
    """``index.csv``, ``stats.json`` and ``failures.jsonl`` over every part's shards, as one
    run over the whole corpus would write them (returns the statistics); reads no
    recording. Raises ``NeurofmError`` naming each part still to (re)run, with its command,
    when a listed recording has neither a finished shard nor a failure in a part record;
    then nothing is written."""
    out = Path(config.out).expanduser()
    if not (out / SHARDS).is_dir():
        raise NeurofmError(f"{out} holds no shards: run the parts first (neurofm preprocess "
                           "CONFIG --part i/n for each i), then --merge")  # fmt: skip
    recordings, ids = _listing(config)
    listed = dict(zip(ids, recordings, strict=True))
    sizes = _sizes(ids, recordings)
    expected = _expected(config, listed)
    root = corpus_folder(config.root)
    states = {i: shard_state(out / SHARDS / i, want, listed[i], root)
              for i, want in expected.items()}  # fmt: skip
    records = _part_records(out)
    last: dict[str, dict | None] = {}  # shard id -> its failure in the latest part run given it
    for record in records:  # oldest first
        fails = {f.get("shard"): f for f in record.get("failures") or []}
        last |= {i: fails.get(i) for i in record.get("ids") or []}
    failed = {i: f for i, f in last.items() if f is not None}
    failures = [failed[i] for i in ids if i in failed and states[i][0] != "done"]
    missing = [i for i in ids if states[i][0] != "done" and i not in failed]
    if missing:
        raise NeurofmError(_unfinished(out, sizes, missing, states, records, command))
    for i, r in listed.items():
        if states[i][0] == "done":
            refresh_meta(out / SHARDS / i, r, expected[i])  # a changed split, subject ...
    atomic_write(out / FAILURES, lambda p: p.write_text("".join(json.dumps(f) + "\n"
                                                                for f in failures)))  # fmt: skip
    _report_failures(failures)
    return write_index(out, failures=failures, ids=ids)


def _unfinished(out: Path, sizes: dict[str, int], missing, states, records, command) -> str:
    """Why a merge cannot index yet: each part to (re)run, with its state and command."""
    ids = sorted(sizes)
    if not records:
        return (f"{len(missing)} of {len(ids)} recordings have no shard in {out} and no part has "
                f"run there (no {PARTS}/part-i-of-n.json): run `neurofm preprocess CONFIG "
                "--part i/n` for i = 1 ... n, or `neurofm preprocess CONFIG` on one machine; "
                "then --merge")  # fmt: skip
    n = parse_part(records[-1]["part"])[1]  # the split of the latest part run
    latest = {r["part"]: r for r in records}
    # a part's own command line (or this merge's) with the part changed
    template = next((r.get("command") for r in reversed(records) if r.get("command")), command)
    owner = {i: f"{k}/{n}" for k, part in enumerate(split_parts(sizes, n), 1) for i in part}
    owners: dict[str, list[str]] = {}
    for i in missing:
        owners.setdefault(owner[i], []).append(i)
    digest = _listing_digest(sizes)
    lines = [f"cannot merge: {len(missing)} of {len(ids)} recordings have no finished shard "
             f"and no recorded failure; {len(owners)} of {n} parts to (re)run:"]  # fmt: skip
    for part in sorted(owners, key=lambda p: int(p.split("/")[0])):
        names = owners[part]
        record = latest.get(part)
        if record is None:
            status = "never ran (no record)"
        elif record.get("status") == "running":
            status = (f"started {record.get('started')} on {record.get('host')} and never "
                      "ended (still running, or killed)")  # fmt: skip
        elif record.get("status") == "stopped":
            status = f"stopped {record.get('ended')}: {record.get('error')}"
        elif (record.get("listing") or {}).get("digest") != digest:
            status = (f"finished on another listing of the corpus ("
                      f"{record['listing']['recordings']} recordings then, {len(ids)} now)")  # fmt: skip
        else:
            status = "finished"
        shards = []
        for kind, words in (("new", "not made"), ("damaged", "damaged"),
                            ("stale", "made differently from this config")):  # fmt: skip
            some = [i for i in names if states[i][0] == kind]
            if some:
                why = {"new": "", "damaged": f": {states[some[0]][1]}",
                       "stale": f": {some[0]}: {states[some[0]][1]}"}[kind]  # fmt: skip
                shards.append(f"{len(some)} {words} ({', '.join(some[:3])}"
                              f"{' ...' if len(some) > 3 else ''}{why})")  # fmt: skip
        fix = " --overwrite" if any(states[i][0] == "stale" for i in names) else ""
        lines.append(f"part {part}: {status}; shards: {'; '.join(shards)}: run "
                     f"`{part_command(template, part)}{fix}`")  # fmt: skip
    if any(states[i][0] == "stale" for i in missing):
        lines.append("shards made differently: merge with the config and overrides the parts "
                     "ran with, or redo them with --overwrite as above")  # fmt: skip
    lines.append(f"then merge again: `{part_command(template, None)}` (parts resume: finished "
                 "shards are kept)")  # fmt: skip
    return "\n".join(lines)


def _readable_metas(out: Path, ids=None) -> list[dict]:
    """The shards under ``out`` (of ``ids`` only, when given) whose meta.json is sound."""
    folders = sorted(p for p in (out / SHARDS).glob("*")
                     if p.is_dir() and not p.name.endswith((PARTIAL, STALE)))  # fmt: skip
    if ids is not None:
        ids = set(ids)
        others = [p.name for p in folders if p.name not in ids]
        if others:
            warn(f"{len(others)} shard(s) under {out / SHARDS} are of recordings this config "
                 f"does not list ({', '.join(others[:5])}{' ...' if len(others) > 5 else ''}): "
                 f"left out of {INDEX}; their folders are kept", ShardWarning)  # fmt: skip
        folders = [p for p in folders if p.name in ids]
    metas = []
    for folder in folders:
        try:
            metas.append(read_meta(folder))
        except ShardError as err:
            warn(f"{err}: left out of {INDEX}; delete it and rerun `neurofm preprocess`",
                 ShardWarning)  # fmt: skip
    return metas


def write_index(out: Path, *, failures=(), ids=None) -> dict:
    """``index.csv`` and ``stats.json`` from the complete shards really under ``out``: all
    of them, or those of the recordings ``ids`` (a listing; others are named in a
    ``ShardWarning``)."""
    import pandas as pd

    out = Path(out)
    metas = _readable_metas(out, ids)
    rows = [{k: m[k] for k in ("id", "dataset", "subject", "session", "split", "n_windows")}
            | {"n_channels": len(m["channels"]), "montage": "|".join(m["channels"]),
               "dropped_seconds": m["dropped_seconds"], "fingerprint": m["fingerprint"]}
            for m in metas]  # fmt: skip
    table = pd.DataFrame(rows, columns=["id", "dataset", "subject", "session", "split",
                                        "n_windows", "n_channels", "montage",
                                        "dropped_seconds", "fingerprint"])  # fmt: skip
    atomic_write(out / INDEX, lambda p: table.to_csv(p, index=False))
    channels = Counter(c for m in metas for c in m["channels"])
    dropped = {m["id"]: m["dropped_seconds"] for m in metas if m["dropped_seconds"] > 0}
    stats = {
        "recordings": len(metas), "windows": int(table.n_windows.sum()),
        "hours": round(sum(m["covered_seconds"] for m in metas) / 3600, 3),
        "recorded_hours": round(sum(m["seconds"] for m in metas) / 3600, 3),
        "subjects": int(table.subject.nunique()),
        "window_labels": dict(Counter(lbl for m in metas for lbl in m["window_labels"])),
        "dropped": {"seconds": round(sum(dropped.values()), 3), "recordings": len(dropped),
                    "per_recording": dropped},
        "channels_seen": dict(channels.most_common()),
        "montages": dict(Counter(table.montage).most_common(20)),
        "recipes": list({json.dumps(m["made_with"]["recipe"], sort_keys=True): m["made_with"]["recipe"]
                         for m in metas}.values()),
        "failures": len(failures), "index_sha256": file_sha256(out / INDEX),
    }  # fmt: skip
    _write_json(out / STATS, stats)
    return stats
