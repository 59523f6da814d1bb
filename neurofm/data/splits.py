"""Subject-wise splits stored next to the shards, and the pretraining-overlap check.

Windows of one subject are strongly correlated; splitting by window (or by recording)
inflates test scores, and so does evaluating on subjects a foundation model saw during
pretraining. :func:`make_splits` writes ``splits.json`` (subject -> split) beside a
corpus; :func:`check_no_overlap` refuses an evaluation set whose subjects appear in a
pretraining corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..utils import NeurofmError, atomic_write
from .shards import INDEX


def _index(root):
    import pandas as pd

    path = Path(root)
    path = path / INDEX if path.is_dir() else path
    if not path.exists():
        raise NeurofmError(f"no {INDEX} at {root}: run `neurofm preprocess` first")
    return pd.read_csv(path, dtype={"subject": str, "split": str})


def make_splits(root, fractions: dict | None = None, *, seed: int = 0,
                keep_existing: bool = True) -> dict[str, str]:  # fmt: skip
    """Assign every subject to one split; writes ``root/splits.json``; returns the map.

    Subjects whose recordings already carry a split from the dataset (TUH's train/eval)
    keep it when ``keep_existing``; the others are shuffled (seeded) and cut by
    ``fractions`` (default train 0.8, val 0.1, test 0.1).
    """
    fractions = fractions or {"train": 0.8, "val": 0.1, "test": 0.1}
    if abs(sum(fractions.values()) - 1) > 1e-6:
        raise NeurofmError(f"split fractions {fractions} must sum to 1")
    index = _index(root)
    given = {}
    if keep_existing and "split" in index:
        for subject, splits in index.dropna(subset=["split"]).groupby("subject")["split"]:
            if splits.nunique() > 1:
                raise NeurofmError(f"subject {subject} is in several splits: {sorted(set(splits))}")
            given[subject] = splits.iloc[0]
    free = sorted(set(index.subject) - set(given))
    np.random.default_rng(seed).shuffle(free)
    bounds = np.cumsum([0, *fractions.values()]) * len(free)
    assigned = dict(given)
    for name, lo, hi in zip(fractions, bounds[:-1], bounds[1:], strict=False):
        for subject in free[int(round(lo)) : int(round(hi))]:
            assigned[subject] = name
    text = json.dumps({"seed": seed, "fractions": fractions, "subjects": assigned}, indent=1,
                      sort_keys=True)  # fmt: skip
    atomic_write(Path(root) / "splits.json", lambda p: p.write_text(text))
    return assigned


def check_no_overlap(evaluation, pretraining, *, split: str | None = "test") -> None:
    """Raise if subjects of ``evaluation`` (its ``split``) appear in ``pretraining``.

    Both are corpus folders (or ``index.csv`` files); subjects are compared per dataset,
    so CHB-MIT's ``chb01`` and another corpus's ``chb01`` are different people.
    """
    ev = _index(evaluation)
    splits_file = Path(evaluation) / "splits.json"
    if splits_file.exists():
        ev["split"] = ev.subject.map(json.loads(splits_file.read_text())["subjects"])
    if split is not None:
        ev = ev[ev["split"] == split]
    pre = _index(pretraining)
    seen = set(zip(pre.dataset, pre.subject, strict=True))
    overlap = sorted(
        {(d, s) for d, s in zip(ev.dataset, ev.subject, strict=True) if (d, s) in seen}
    )
    if overlap:
        raise NeurofmError(
            f"{len(overlap)} {split or 'evaluation'} subjects were in the pretraining corpus "
            f"{pretraining}: {overlap[:10]}. Results on them would be inflated; drop them from "
            "pretraining or from evaluation"
        )
