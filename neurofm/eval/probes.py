"""Linear probes of frozen features: does pretraining help on labels it never saw?

::

    data = load_eegmat("../shared/data/eeg", model.recipe)      # windows, labels, subjects
    pretrained = run_probe(data, model, seeds=range(5))           # frozen features + LR
    scratch = run_probe(data, random_init_features(model), seeds=range(5))
    baseline = run_probe(data, "bandpower", seeds=range(5))       # log band power + LR
    print(pretrained.summary())

or in one call per protocol: ``eegmat_probe(model, root)``, ``eegmmidb_eyes_probe(...)``.

The pieces, each usable alone:

- :func:`frozen_features`: one vector per window from a frozen encoder (eval mode, no
  autograd, batched): the mean of the final-norm token features over the window's real
  tokens (``pooling='mean'``), or the model's own ``pooled`` output.
- :func:`bandpower_features`: log power per channel in the delta ... gamma bands
  (Welch over the window's real patches), channels in a fixed order by name.
- :func:`linear_probe`: balanced accuracy and AUROC of a standardised logistic
  regression under group-wise cross-validation (no group is ever in both the training
  and the test side of a fold: checked), per seed, with mean and sd over seeds.
- protocols: :func:`load_eegmat` (EEGMAT rest vs mental arithmetic, groups = subjects)
  and :func:`load_eegmmidb_eyes` (eegmmidb eyes open vs closed, one subject, groups =
  contiguous time blocks); :func:`run_probe` scores any feature source on them.

A seed fixes the cross-validation split (which groups are tested together) and, for a
feature source that depends on it (a random initialisation), the features too; the
same seed gives the same numbers.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..errors import NeurofmError, check_option, validate_type
from ..tokens import Tokens, collate

__all__ = [
    "BANDS",
    "EEGMAT_CHANNELS",
    "ProbeData",
    "ProbeResult",
    "bandpower_features",
    "bandpower_names",
    "eegmat_probe",
    "eegmmidb_eyes_probe",
    "frozen_features",
    "group_folds",
    "linear_probe",
    "load_eegmat",
    "load_eegmmidb_eyes",
    "random_init_features",
    "reinitialised",
    "run_probe",
]

#: EEG bands (Hz, [low, high)): the classic clinical bands, gamma kept below 50 Hz mains
BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}

#: EEGMAT's 19 scalp electrodes (10-20, canonical names). Its files also hold ``EEG A2-A1``
#: (read as ``A2``: an ear-to-ear derivation, not a scalp signal at A2's position) and an
#: ECG (which read_eeg drops); the probe keeps the scalp channels only.
EEGMAT_CHANNELS = ("Fp1", "Fp2", "F3", "F4", "F7", "F8", "T7", "T8", "C3", "C4",
                   "P7", "P8", "P3", "P4", "O1", "O2", "Fz", "Cz", "Pz")  # fmt: skip

POOLINGS = ("mean", "pooled")


# ---------------------------------------------------------------------- features
def frozen_features(model: torch.nn.Module, tokens: Tokens, *, pooling: str = "mean",
                    batch_size: int = 64) -> np.ndarray:  # fmt: skip
    """One feature vector per window from a frozen encoder: (windows, dim) float32.

    The model runs in eval mode under ``torch.inference_mode`` (its training flag is
    restored afterwards), ``batch_size`` windows at a time on the model's device.

    Parameters
    ----------
    pooling : 'mean' | 'pooled'
        ``'mean'`` (default): the mean of ``out.tokens`` (the per-token features after the
        final norm) over the window's real tokens (``Tokens.mask``): defined the same way
        for every checkpoint, whatever its ``pooling`` config ([CLS] or mean). ``'pooled'``:
        the model's own ``out.pooled`` (its configured pooling, normed).
    """
    check_option("pooling", pooling, POOLINGS)
    validate_type(tokens, Tokens, "tokens", "neurofm.Tokens (neurofm.tokenize(...))")
    validate_type(batch_size, int, "batch_size", "a whole number of windows")
    if batch_size < 1:
        raise NeurofmError(f"batch_size must be at least 1, got {batch_size}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.inference_mode():
            for i in range(0, len(tokens), batch_size):
                batch = tokens[i : i + batch_size].to(device)
                out = model(batch)
                if pooling == "pooled":
                    feats = out.pooled
                else:
                    w = batch.mask[..., None].to(out.tokens.dtype)
                    feats = (out.tokens * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1)
                parts.append(feats.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not parts:
        return np.zeros((0, getattr(model, "dim", 0)), np.float32)
    return np.concatenate(parts)


def reinitialised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The same architecture, config and recipe as ``model``, at a random initialisation
    drawn from ``seed`` (``torch.manual_seed(seed)``), on the same device."""
    validate_type(seed, int, "seed", "an integer")
    param = next(model.parameters(), None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config, recipe=model.recipe)
    return fresh.to(param.device) if param is not None else fresh


def random_init_features(model: torch.nn.Module, *, pooling: str = "mean",
                         batch_size: int = 64) -> Callable[[Tokens, int], np.ndarray]:  # fmt: skip
    """A feature source for :func:`run_probe`: ``fn(tokens, seed)`` encodes with
    :func:`reinitialised` ``(model, seed)``: the random-initialisation arm."""
    check_option("pooling", pooling, POOLINGS)

    def features(tokens: Tokens, seed: int) -> np.ndarray:
        fresh = reinitialised(model, seed)
        return frozen_features(fresh, tokens, pooling=pooling, batch_size=batch_size)

    return features


def bandpower_names(channels: Sequence[str], bands: dict = BANDS) -> list[str]:
    """Column names of :func:`bandpower_features`: ``'<channel>:<band>'``, channel-major."""
    return [f"{ch}:{band}" for ch in channels for band in bands]


def bandpower_features(tokens: Tokens, sfreq: float, *, channels: Sequence[str] | None = None,
                       bands: dict = BANDS, segment_seconds: float = 2.0,
                       batch_size: int = 64) -> np.ndarray:  # fmt: skip
    """Log10 band power per channel and band: (windows, channels x bands), channel-major.

    The power spectrum is Welch's: Hann-windowed, mean-removed segments of whole patches
    (``segment_seconds`` rounded to patches, at most the window), one patch apart, averaged
    over the segments whose patches are all real (``Tokens.mask``). Band power is the
    spectrum summed over ``[low, high)`` times the bin width; units are the tokens' model
    units squared (a constant offset after the log, which standardising removes).

    Parameters
    ----------
    sfreq : float
        Samples per second of ``tokens.x`` (the recipe's ``sfreq``).
    channels : sequence of str | None
        The columns, by name: window ``b``'s unit named ``c`` fills channel ``c``'s
        columns, so windows of mixed montages line up. A channel a window lacks, or whose
        patches are all masked, is NaN (:func:`linear_probe` imputes the training mean).
        None: the names in ``tokens.names`` in order of first appearance (units by index
        when the tokens carry no names).
    """
    validate_type(tokens, Tokens, "tokens", "neurofm.Tokens (neurofm.tokenize(...))")
    validate_type(sfreq, "numeric", "sfreq")
    if not 0 < sfreq < math.inf:
        raise NeurofmError(f"sfreq must be a positive rate in Hz, got {sfreq}")
    B, S, N, P = tokens.shape
    nyquist = sfreq / 2
    for band, (lo, hi) in bands.items():
        if not 0 <= lo < hi <= nyquist:
            raise NeurofmError(
                f"band {band!r} ({lo}-{hi} Hz) must lie in 0-{nyquist:g} Hz (sfreq/2) with "
                "low < high: drop it or tokenize at a higher rate"
            )
    k = min(N, max(1, round(segment_seconds * sfreq / P)))  # patches per segment
    L = k * P
    freqs = np.fft.rfftfreq(L, 1 / sfreq)
    taper = np.hanning(L + 1)[:-1]  # periodic Hann
    scale = 1.0 / (sfreq * (taper**2).sum())
    in_band = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in bands.values()])  # (K, F)
    if not in_band.any(axis=1).all():
        empty = [b for b, hit in zip(bands, in_band.any(axis=1), strict=True) if not hit]
        raise NeurofmError(
            f"bands {empty} hold no frequency bin at {sfreq / L:g} Hz resolution: raise "
            "segment_seconds or widen the bands"
        )
    names, columns = _columns(tokens, channels)
    out = np.full((B, len(names), len(bands)), np.nan)
    for a in range(0, B, batch_size):
        x = tokens.x[a : a + batch_size].double().numpy()
        mask = tokens.mask[a : a + batch_size].numpy()
        # segments of k consecutive patches, one patch apart: (b, s, j, L)
        segs = np.stack([rearrange(x[:, :, j : j + k], "b s k p -> b s (k p)")
                         for j in range(N - k + 1)], axis=2)  # fmt: skip
        valid = np.stack([mask[:, :, j : j + k].all(-1) for j in range(N - k + 1)], axis=2)
        segs = (segs - segs.mean(-1, keepdims=True)) * taper
        psd = np.abs(np.fft.rfft(segs, axis=-1)) ** 2 * scale
        psd[..., 1 : (L + 1) // 2] *= 2  # one-sided (not DC, not Nyquist)
        count = valid.sum(-1)  # (b, s)
        psd = (psd * valid[..., None]).sum(2) / np.maximum(count, 1)[..., None]  # (b, s, F)
        power = psd @ in_band.T.astype(float) * (sfreq / L)  # (b, s, K)
        with np.errstate(divide="ignore"):
            logp = np.where(count[..., None] > 0, np.log10(power), np.nan)
        for i in range(logp.shape[0]):
            for s, col in enumerate(columns[a + i]):
                if col >= 0:
                    out[a + i, col] = logp[i, s]
    return out.reshape(B, -1)


def _columns(tokens: Tokens, channels) -> tuple[list[str], list[list[int]]]:
    """The channel names of the columns, and for each window its units' columns (-1: none)."""
    B, S = tokens.shape[:2]
    if tokens.names is None:
        if channels is not None:
            raise NeurofmError(
                "channels= orders columns by name but these Tokens carry no names: build them "
                "with neurofm.tokenize, or leave channels=None (units by index)"
            )
        return [f"unit{s}" for s in range(S)], [list(range(S))] * B
    if channels is None:
        channels = list(dict.fromkeys(n for names in tokens.names for n in names))
    channels = list(channels)
    if len(set(channels)) != len(channels):
        raise NeurofmError(f"channels= names a channel twice: {channels}")
    index = {c: i for i, c in enumerate(channels)}
    pad = [-1] * S
    cols = [([index.get(n, -1) for n in names] + pad)[:S] for names in tokens.names]
    return channels, cols


# ---------------------------------------------------------------------- the probe
@dataclass
class ProbeResult:
    """Scores of one feature source on one probe, per seed and over seeds.

    ``per_seed``: one dict per seed (``seed``, ``balanced_accuracy``, ``auroc``, and
    ``seconds``: feature extraction + cross-validation). Scores are of the pooled
    out-of-fold predictions: every window is predicted once per seed, by the fold model
    that never saw its group.
    """

    per_seed: list[dict]
    n_windows: int
    n_groups: int
    n_splits: int
    n_features: int
    classes: tuple[str, ...] = ("0", "1")
    chance: float = 0.5  # balanced accuracy of any constant or label-blind guess

    @property
    def seeds(self) -> list[int]:
        return [r["seed"] for r in self.per_seed]

    def scores(self, metric: str = "balanced_accuracy") -> np.ndarray:
        return np.array([r[metric] for r in self.per_seed], float)

    def mean(self, metric: str = "balanced_accuracy") -> float:
        return float(self.scores(metric).mean())

    def sd(self, metric: str = "balanced_accuracy") -> float:
        """Sample standard deviation over seeds (0 for one seed)."""
        s = self.scores(metric)
        return float(s.std(ddof=1)) if len(s) > 1 else 0.0

    def summary(self, metric: str = "balanced_accuracy") -> str:
        return f"{self.mean(metric):.3f} ± {self.sd(metric):.3f}"

    def to_dict(self) -> dict:
        return {
            "balanced_accuracy": {"mean": self.mean(), "sd": self.sd()},
            "auroc": {"mean": self.mean("auroc"), "sd": self.sd("auroc")},
            "chance": self.chance,
            "per_seed": self.per_seed,
            "n_windows": self.n_windows,
            "n_groups": self.n_groups,
            "n_splits": self.n_splits,
            "n_features": self.n_features,
            "classes": list(self.classes),
        }


def group_folds(labels, groups, *, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of a shuffled ``StratifiedGroupKFold``: every group is
    tested exactly once, never on both sides of a fold (checked); the classes are spread
    across folds as evenly as the groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = np.asarray(labels), np.asarray(groups)
    n_groups = len(np.unique(groups))
    if not 2 <= n_splits <= n_groups:
        raise NeurofmError(
            f"n_splits={n_splits} needs 2 to {n_groups} (the number of groups): each fold "
            "tests whole groups"
        )
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = list(cv.split(np.zeros(len(labels)), labels, groups))
    for train, test in folds:
        shared = set(groups[train].tolist()) & set(groups[test].tolist())
        if shared:  # an explicit raise: the check must survive python -O
            raise AssertionError(f"groups {sorted(shared)[:5]} are on both sides of a fold")
    return folds


def _score(features, labels, groups, *, n_splits: int, seed: int, C: float) -> dict:
    """One seed: out-of-fold predictions of a standardised logistic regression."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = np.unique(labels)
    pred = np.empty(len(labels), labels.dtype)
    score = np.empty((len(labels), len(classes)))
    for train, test in group_folds(labels, groups, n_splits=n_splits, seed=seed):
        if len(np.unique(labels[train])) < len(classes):
            raise NeurofmError(
                f"a training fold lacks a class (seed {seed}): too few groups per class for "
                f"n_splits={n_splits}; lower n_splits"
            )
        clf = make_pipeline(
            SimpleImputer(keep_empty_features=True),  # NaN: a channel a window lacks
            StandardScaler(),
            LogisticRegression(C=C, max_iter=5000, random_state=seed),
        )
        clf.fit(features[train], labels[train])
        pred[test] = clf.predict(features[test])
        score[test] = clf.predict_proba(features[test])
    if len(classes) == 2:
        auroc = roc_auc_score(labels, score[:, 1])
    else:
        auroc = roc_auc_score(labels, score, multi_class="ovr", labels=classes)
    return {"seed": seed, "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
            "auroc": float(auroc)}  # fmt: skip


def _check_xy(features, labels, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    labels, groups = np.asarray(labels), np.asarray(groups)
    if features.ndim != 2:
        raise NeurofmError(f"features must be (windows, dim), got shape {features.shape}")
    if not len(features) == len(labels) == len(groups):
        raise NeurofmError(
            f"{len(features)} feature rows, {len(labels)} labels and {len(groups)} groups: "
            "one of each per window"
        )
    if len(np.unique(labels)) < 2:
        raise NeurofmError("the labels hold one class: a probe needs two or more")
    if np.isinf(features).any():
        raise NeurofmError("features hold inf (NaN is allowed: imputed with the training mean)")
    return features, labels, groups


def _seeds(seeds) -> list[int]:
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise NeurofmError("give at least one seed")
    for s in seeds:
        validate_type(s, int, "each seed", "an integer")
    return seeds


def linear_probe(features, labels, groups, *, seeds: Iterable[int] | int = (0,),
                 n_splits: int = 5, C: float = 1.0) -> ProbeResult:  # fmt: skip
    """Balanced accuracy and AUROC of a linear read-out, under group-wise cross-validation.

    The read-out is scikit-learn's logistic regression (L2, ``C``) on features
    standardised on each training fold (NaN features imputed with the training mean).
    Folds are a shuffled :class:`~sklearn.model_selection.StratifiedGroupKFold`: whole
    groups (subjects, time blocks) are held out, and no group is ever in both the
    training and test side of a fold (checked, an ``AssertionError`` otherwise). Each
    seed reshuffles which groups are tested together; given the seed, the result is
    deterministic.

    Parameters
    ----------
    features : (windows, dim) array
    labels : (windows,) array of class labels
    groups : (windows,) array of group ids (any hashable values)
    seeds : int | iterable of int
    n_splits : int
        Folds (2 .. number of groups).
    C : float
        Inverse L2 strength of the logistic regression.
    """
    features, labels, groups = _check_xy(features, labels, groups)
    per_seed = []
    for seed in _seeds(seeds):
        start = time.perf_counter()
        row = _score(features, labels, groups, n_splits=n_splits, seed=seed, C=C)
        per_seed.append({**row, "seconds": round(time.perf_counter() - start, 3)})
    return ProbeResult(
        per_seed=per_seed,
        n_windows=len(labels),
        n_groups=len(np.unique(groups)),
        n_splits=n_splits,
        n_features=features.shape[1],
        classes=tuple(str(c) for c in np.unique(labels)),
        chance=1.0 / len(np.unique(labels)),
    )


# ---------------------------------------------------------------------- protocols
@dataclass
class ProbeData:
    """The windows of a probe, tokenized once, with their labels and groups.

    ``labels`` index ``classes``; ``groups`` name the unit of leave-out
    (``group_kind``). ``note`` says how the groups were made, for reports.
    """

    name: str
    tokens: Tokens
    labels: np.ndarray
    groups: np.ndarray
    classes: tuple[str, ...]
    group_kind: str
    n_subjects: int
    sfreq: float
    channels: tuple[str, ...]
    note: str = ""
    seconds: float = 0.0  # reading + tokenizing
    dropped: int = 0  # windows left out (straddling two time blocks)
    info: dict = field(default_factory=dict)

    @property
    def n_windows(self) -> int:
        return len(self.labels)

    @property
    def n_groups(self) -> int:
        return len(np.unique(self.groups))

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def describe(self) -> dict:
        return {
            "probe": self.name,
            "classes": list(self.classes),
            "windows": self.n_windows,
            "windows_per_class": self.counts(),
            "subjects": self.n_subjects,
            "groups": self.n_groups,
            "group_kind": self.group_kind,
            "channels": len(self.channels),
            "note": self.note,
            "dropped_windows": self.dropped,
            "seconds": round(self.seconds, 2),
            **self.info,
        }


def _folder(root, name: str) -> Path:
    validate_type(root, "path-like", "root", "a folder (path-like)")
    root = Path(root)
    folder = root / name if (root / name).is_dir() else root
    if not folder.is_dir():
        raise NeurofmError(f"{root} is not a folder holding {name}/ (nor {name} itself)")
    return folder


def _recipe(recipe):
    from ..preprocess.recipe import as_recipe

    return as_recipe(recipe, "eeg")


def load_eegmat(root, recipe=None, *, subjects: Iterable[int] | None = None,
                picks: Sequence[str] | None = EEGMAT_CHANNELS) -> ProbeData:  # fmt: skip
    """EEGMAT (PhysioNet "EEG during mental arithmetic"): rest vs mental arithmetic.

    ``SubjectNN_1.edf`` (rest, about 180 s) is class ``rest``, ``SubjectNN_2.edf``
    (serial subtraction, 60 s) class ``arithmetic``; every window of ``recipe`` is a
    sample and its subject its group, so folds leave subjects out. The classes are
    unbalanced (about 3 rest windows per arithmetic window): score balanced accuracy.

    Parameters
    ----------
    root : path-like
        The folder holding ``eegmat/`` (or ``eegmat/`` itself).
    recipe : Recipe | dict | None
        How the windows are made: the model's recipe (``model.recipe``).
    subjects : iterable of int | None
        Subject numbers (``0`` for Subject00); None: every subject with both files.
    picks : sequence of str | None
        Channels kept (canonical names); default the 19 scalp electrodes
        (:data:`EEGMAT_CHANNELS`); None: every EEG channel read_eeg keeps (``A2``, the
        A2-A1 derivation, included).
    """
    from ..windows import tokenize

    recipe = _recipe(recipe)
    folder = _folder(root, "eegmat")
    found = {}
    for path in folder.glob("Subject*_[12].edf"):
        m = re.fullmatch(r"Subject(\d+)_([12])\.edf", path.name)
        if m:
            found.setdefault(int(m[1]), {})[int(m[2])] = path
    complete = sorted(s for s, runs in found.items() if set(runs) == {1, 2})
    if subjects is None:
        chosen = complete
    else:
        chosen = [int(s) for s in subjects]
        missing = [s for s in chosen if s not in complete]
        if missing:
            raise NeurofmError(f"{folder} lacks SubjectNN_1/_2.edf for subjects {missing}")
    if len(chosen) < 2:
        raise NeurofmError(f"{folder} holds {len(chosen)} complete subjects; a probe needs 2+")
    start = time.perf_counter()
    parts, labels, groups = [], [], []
    for subject in chosen:
        for run, label in ((1, 0), (2, 1)):
            tokens = tokenize(found[subject][run], recipe,
                              picks=list(picks) if picks is not None else None)  # fmt: skip
            parts.append(tokens)
            labels += [label] * len(tokens)
            groups += [f"Subject{subject:02d}"] * len(tokens)
    tokens = collate(parts)
    return ProbeData(
        name="eegmat",
        tokens=tokens,
        labels=np.array(labels),
        groups=np.array(groups),
        classes=("rest", "arithmetic"),
        group_kind="subject",
        n_subjects=len(chosen),
        sfreq=recipe.sfreq,
        channels=tuple(dict.fromkeys(n for names in tokens.names for n in names)),
        note="groups = subjects: each fold tests subjects no training window came from",
        seconds=time.perf_counter() - start,
    )


def load_eegmmidb_eyes(root, recipe=None, *, subject: int = 1, n_blocks: int = 6) -> ProbeData:
    """eegmmidb (PhysioNet EEG Motor Movement/Imagery) baselines: eyes open (run 1) vs
    eyes closed (run 2), one subject.

    With one subject, groups are contiguous time blocks: each run's windows are cut into
    ``n_blocks`` consecutive blocks, so folds test whole stretches of time and a test
    window's neighbours are not in training. When windows overlap (a recipe stride below
    the window), a window that overlaps the previous block's last window is dropped
    (``ProbeData.dropped``), so no test sample shares a signal sample with a training one.
    The probe then measures within-subject separability of the two states, not
    generalisation across people.

    Parameters
    ----------
    root : path-like
        The folder holding ``eegmmidb/`` (or ``eegmmidb/`` itself), with
        ``S<subject:03d>R01.edf`` and ``...R02.edf``.
    n_blocks : int
        Blocks per run (at most its number of windows).
    """
    from ..io import read_eeg
    from ..windows import tokenize

    recipe = _recipe(recipe)
    validate_type(n_blocks, int, "n_blocks", "a whole number of blocks per run")
    folder = _folder(root, "eegmmidb")
    start = time.perf_counter()
    parts, labels, groups, dropped = [], [], [], 0
    for run, label in ((1, 0), (2, 1)):
        path = folder / f"S{subject:03d}R{run:02d}.edf"
        if not path.is_file():
            raise NeurofmError(f"{path} is absent (eegmmidb run {run} of subject {subject})")
        tokens = tokenize(read_eeg(path), recipe)
        if not 1 <= n_blocks <= len(tokens):
            raise NeurofmError(
                f"n_blocks={n_blocks} must be 1 to {len(tokens)} (the windows of {path.name})"
            )
        block = np.zeros(len(tokens), int)
        for b, rows in enumerate(np.array_split(np.arange(len(tokens)), n_blocks)):
            block[rows] = b
        begin = tokens.t[:, 0].double().numpy()
        end = begin + recipe.window_seconds
        keep = np.ones(len(tokens), bool)
        for b in range(1, n_blocks):
            previous = np.flatnonzero((block == b - 1) & keep)
            if len(previous):
                keep &= ~((block == b) & (begin < end[previous].max() - 1e-9))
        dropped += int((~keep).sum())
        rows = np.flatnonzero(keep)
        parts.append(tokens[rows])
        labels += [label] * len(rows)
        groups += [f"R{run:02d}/block{b}" for b in block[rows]]
    tokens = collate(parts)
    return ProbeData(
        name="eegmmidb_eyes",
        tokens=tokens,
        labels=np.array(labels),
        groups=np.array(groups),
        classes=("eyes open", "eyes closed"),
        group_kind="time block",
        n_subjects=1,
        sfreq=recipe.sfreq,
        channels=tuple(dict.fromkeys(n for names in tokens.names for n in names)),
        note=(
            f"one subject: groups = {n_blocks} contiguous time blocks per run, so folds "
            "test whole stretches of time (within-subject, not across people)"
        ),
        seconds=time.perf_counter() - start,
        dropped=dropped,
        info={"blocks_per_run": n_blocks},
    )


FeatureSource = torch.nn.Module | Callable[[Tokens, int], np.ndarray] | str


def run_probe(data: ProbeData, source: FeatureSource, *, seeds: Iterable[int] | int = (0,),
              n_splits: int = 5, C: float = 1.0, pooling: str = "mean",
              batch_size: int = 64) -> ProbeResult:  # fmt: skip
    """Score a feature source on a probe's windows with :func:`linear_probe`.

    ``source``:

    - an encoder (``nn.Module``): its :func:`frozen_features` (``pooling``), computed
      once; only the split changes with the seed;
    - ``'bandpower'``: :func:`bandpower_features` at ``data.sfreq`` over
      ``data.channels``, computed once;
    - a callable ``fn(tokens, seed) -> (windows, dim)``, called once per seed (e.g.
      :func:`random_init_features`: a fresh initialisation per seed).

    ``per_seed[i]['seconds']`` includes the feature extraction that seed needed (the
    first seed carries a once-computed source's).
    """
    validate_type(data, ProbeData, "data", "a ProbeData (load_eegmat, load_eegmmidb_eyes)")
    seeds = _seeds(seeds)
    once = not callable(source) or isinstance(source, torch.nn.Module)
    if isinstance(source, str):
        check_option("feature source", source, ("bandpower",))
    elif not callable(source):
        raise NeurofmError(
            f"source must be an encoder, 'bandpower' or fn(tokens, seed), got "
            f"{type(source).__name__}"
        )

    def extract(seed: int) -> np.ndarray:
        if isinstance(source, str):
            return bandpower_features(data.tokens, data.sfreq, channels=data.channels)
        if isinstance(source, torch.nn.Module):
            return frozen_features(source, data.tokens, pooling=pooling, batch_size=batch_size)
        return source(data.tokens, seed)

    per_seed, features = [], None
    for seed in seeds:
        start = time.perf_counter()
        if features is None or not once:
            features = extract(seed)
        result = linear_probe(features, data.labels, data.groups, seeds=seed,
                              n_splits=n_splits, C=C)  # fmt: skip
        row = result.per_seed[0]
        per_seed.append({**row, "seconds": round(time.perf_counter() - start, 3)})
    return ProbeResult(
        per_seed=per_seed,
        n_windows=data.n_windows,
        n_groups=data.n_groups,
        n_splits=n_splits,
        n_features=int(np.shape(features)[1]),
        classes=data.classes,
        chance=1.0 / len(data.classes),
    )


def eegmat_probe(source: FeatureSource, root, *, seeds: Iterable[int] | int = (0, 1, 2),
                 n_splits: int = 5, recipe=None, subjects=None, data: ProbeData | None = None,
                 **kwargs) -> ProbeResult:  # fmt: skip
    """EEGMAT rest vs mental arithmetic, leave-subjects-out (:func:`load_eegmat` +
    :func:`run_probe`). ``recipe`` defaults to the encoder's (``source.recipe``); pass
    ``data`` to reuse windows already loaded. ``kwargs`` go to :func:`run_probe`."""
    if data is None:
        data = load_eegmat(root, recipe or getattr(source, "recipe", None), subjects=subjects)
    return run_probe(data, source, seeds=seeds, n_splits=n_splits, **kwargs)


def eegmmidb_eyes_probe(source: FeatureSource, root, *, seeds: Iterable[int] | int = (0, 1, 2),
                        n_splits: int = 6, n_blocks: int = 6, recipe=None, subject: int = 1,
                        data: ProbeData | None = None, **kwargs) -> ProbeResult:  # fmt: skip
    """eegmmidb eyes open vs closed, one subject, time blocks held out
    (:func:`load_eegmmidb_eyes` + :func:`run_probe`); see :func:`eegmat_probe`."""
    if data is None:
        data = load_eegmmidb_eyes(root, recipe or getattr(source, "recipe", None),
                                  subject=subject, n_blocks=n_blocks)  # fmt: skip
    return run_probe(data, source, seeds=seeds, n_splits=n_splits, **kwargs)
