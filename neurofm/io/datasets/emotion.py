"""Affective EEG: SEED, SEED-IV, SEED-V (BCMI, SJTU), DEAP (QMUL) and DREAMER.

SEED-V ships raw sessions (Neuroscan ``.cnt``, 1000 Hz): one :class:`Recording` per
session, its 15 film clips as events at the ReadMe's start/end seconds. The others yield
one :class:`Recording` per trial (film clip or video), loaded lazily from the container
file: SEED's ``.mat`` holds a session's 15 (SEED) or 24 (SEED-IV) trials under keys
``<initials>_eeg1`` ...; DEAP's ``sXX.mat`` holds 40 trials of 40 channels
(32 EEG first) at 128 Hz; ``DREAMER.mat`` holds 23 subjects x 18 clips from a 14-channel
Emotiv headset. DEAP's Python release is a pickle and is read only with
``allow_pickle=True``.
"""

from __future__ import annotations

import re
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from ...utils import NeurofmError
from . import Event, Recording, require

SEED_CHANNELS = (
    "FP1 FPZ FP2 AF3 AF4 F7 F5 F3 F1 FZ F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6 FT8 T7 C5 "
    "C3 C1 CZ C2 C4 C6 T8 TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 P7 P5 P3 P1 PZ P2 P4 P6 P8 PO7 "
    "PO5 PO3 POZ PO4 PO6 PO8 CB1 O1 OZ O2 CB2"
).split()
SEED_LABELS = {1: "positive", 0: "neutral", -1: "negative"}
#: SEED-IV's ReadMe: the clip emotions of each session (0 neutral, 1 sad, 2 fear, 3 happy)
SEED_IV_SESSION_LABELS = {
    1: [1, 2, 3, 0, 2, 0, 0, 1, 0, 1, 2, 1, 1, 1, 2, 3, 2, 2, 3, 3, 0, 3, 0, 3],
    2: [2, 1, 3, 0, 0, 2, 0, 2, 3, 3, 2, 3, 2, 0, 1, 1, 2, 1, 0, 3, 0, 1, 3, 1],
    3: [1, 2, 2, 1, 3, 3, 3, 1, 1, 2, 1, 0, 2, 3, 3, 0, 2, 3, 0, 0, 2, 0, 1, 0],
}
SEED_IV_NAMES = {0: "neutral", 1: "sad", 2: "fear", 3: "happy"}
#: SEED-V's ReadMe: per session, the clips' (start, end) seconds in the raw .cnt and their
#: emotions (0 disgust, 1 fear, 2 sad, 3 neutral, 4 happy); sessions 2 and 3 share an order
SEED_V_SESSIONS = {
    1: ([30, 132, 287, 555, 773, 982, 1271, 1628, 1730, 2025, 2227, 2435, 2667, 2932, 3204],
        [102, 228, 524, 742, 920, 1240, 1568, 1697, 1994, 2166, 2401, 2607, 2901, 3172, 3359],
        [4, 1, 3, 2, 0, 4, 1, 3, 2, 0, 4, 1, 3, 2, 0]),
    2: ([30, 299, 548, 646, 836, 1000, 1091, 1392, 1657, 1809, 1966, 2186, 2333, 2490, 2741],
        [267, 488, 614, 773, 967, 1059, 1331, 1622, 1777, 1908, 2153, 2302, 2428, 2709, 2817],
        [2, 1, 3, 0, 4, 4, 0, 3, 2, 1, 3, 4, 1, 2, 0]),
    3: ([30, 353, 478, 674, 825, 908, 1200, 1346, 1451, 1711, 2055, 2307, 2457, 2726, 2888],
        [321, 418, 643, 764, 877, 1147, 1284, 1418, 1679, 1996, 2275, 2425, 2664, 2857, 3066],
        [2, 1, 3, 0, 4, 4, 0, 3, 2, 1, 3, 4, 1, 2, 0]),
}  # fmt: skip
SEED_V_NAMES = {0: "disgust", 1: "fear", 2: "sad", 3: "neutral", 4: "happy"}
DEAP_CHANNELS = (
    "Fp1 AF3 F3 F7 FC5 FC1 C3 T7 CP5 CP1 P3 P7 PO3 O1 Oz Pz Fp2 AF4 Fz F4 F8 FC6 FC2 Cz C4 T8 "
    "CP6 CP2 P4 P8 PO4 O2"
).split()
DEAP_RATINGS = ("valence", "arousal", "dominance", "liking")
# CB1/CB2 (Neuroscan's cerebellar electrodes, below O1/O2) are not 10-05 names: they keep
# the unknown-name id and are placed at I1/I2's template positions (approximate)
SEED_POSITIONS = {"CB1": "I1", "CB2": "I2"}


def _mat_array(path: str, key: str) -> np.ndarray:
    return np.asarray(_loadmat(path)[key], dtype=np.float64)


def _deap_trial(path: Path, trial: int) -> np.ndarray:
    return np.asarray(_deap_file(path)[0][trial, :32], dtype=np.float64)


def _dreamer_clip(path: str, subject: int, clip: int) -> np.ndarray:
    data = np.ravel(_loadmat(path)["DREAMER"].Data)[subject]
    return np.asarray(np.ravel(data.EEG.stimuli)[clip], dtype=np.float64).T


@lru_cache(maxsize=2)
def _loadmat(path: str) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as err:
        raise NeurofmError(f"{path} is not a readable MATLAB file ({err})") from err


def _trial_keys(path: Path) -> list[str]:
    """Trial variables of a SEED ``.mat``, listed without loading the arrays."""
    from scipy.io import whosmat

    try:
        names = [name for name, _, _ in whosmat(str(path))]
    except Exception as err:
        raise NeurofmError(f"{path} is not a readable MATLAB file ({err})") from err
    keys = [k for k in names if re.match(r"^[A-Za-z]+_eeg\d+$", k)]
    return sorted(keys, key=lambda k: int(re.search(r"(\d+)$", k).group(1)))


def _seed_like(root: Path, files: list[Path], dataset: str, labels_of, n_trials: int):
    by_subject: dict[str, list[Path]] = {}
    for f in files:
        by_subject.setdefault(f.stem.split("_")[0], []).append(f)
    for f in files:
        subject, date = f.stem.split("_", 1)
        session = _session_of(f, by_subject[subject])
        keys = _trial_keys(f)
        if len(keys) != n_trials:
            raise NeurofmError(
                f"{f.name} holds {len(keys)} trials ({keys[:3]}...), {dataset} sessions hold "
                f"{n_trials}: is this the {dataset} folder?"
            )
        for key in keys:
            trial = int(re.search(r"(\d+)$", key).group(1))
            yield Recording(
                dataset=dataset, subject=subject, session=str(session),
                labels={"emotion": labels_of(session, trial), "trial": trial, "date": date},
                label=labels_of(session, trial),
                array=partial(_mat_array, str(f), key),
                sfreq=200.0, ch_names=list(SEED_CHANNELS), units="uV",
                reader={"positions": SEED_POSITIONS}, id=f"{f.stem}_{key}",
            )  # fmt: skip


def _session_of(path: Path, subject_files: list[Path]) -> int:
    if path.parent.name in ("1", "2", "3"):  # SEED-IV's session folders
        return int(path.parent.name)
    dates = sorted(p.stem.split("_", 1)[1] for p in subject_files)
    return dates.index(path.stem.split("_", 1)[1]) + 1


def read_seed(root: Path):
    """SEED: ``Preprocessed_EEG/{subject}_{date}.mat`` (15 clips) + ``label.mat``."""
    files = require(sorted(p for p in Path(root).rglob("*_*.mat")
                           if re.match(r"^\d+_\d{8}$", p.stem)), root,
                    "{subject}_{date}.mat files", "SEED")  # fmt: skip
    label_files = list(Path(root).rglob("label.mat"))
    if not label_files:
        raise NeurofmError(f"no label.mat under {root}: SEED's clip labels live there")
    clip = np.ravel(_loadmat(str(label_files[0]))["label"]).astype(int)
    yield from _seed_like(root, files, "seed",
                          lambda session, trial: SEED_LABELS[int(clip[trial - 1])], 15)  # fmt: skip


def read_seed_iv(root: Path):
    """SEED-IV: ``eeg_raw_data/{1,2,3}/{subject}_{date}.mat`` (24 clips per session)."""
    files = require(sorted(p for p in Path(root).rglob("*_*.mat")
                           if p.parent.name in ("1", "2", "3")), root,
                    "{session}/{subject}_{date}.mat files", "SEED-IV")  # fmt: skip
    yield from _seed_like(
        root, files, "seed-iv",
        lambda session, trial: SEED_IV_NAMES[SEED_IV_SESSION_LABELS[session][trial - 1]], 24,
    )  # fmt: skip


def read_seed_v(root: Path):
    """SEED-V: ``EEG_raw/{subject}_{session}_{date}.cnt`` (Neuroscan, 62 EEG + M1 M2 VEO HEO).

    One recording per session; each clip is an :class:`Event` labelled with its emotion
    (a window's label comes from :meth:`Recording.label_at`); the time between clips
    (ratings, rest) overlaps no event. ``read_dataset``'s read_eeg options go to every
    session (e.g. ``data_format='int32'`` for a copy whose sample width is not detected).
    """
    files = require(sorted(p for p in Path(root).rglob("*.cnt")
                           if re.match(r"^\d+_[123]_\d{8}$", p.stem)), root,
                    "EEG_raw/{subject}_{session}_{date}.cnt files", "SEED-V")  # fmt: skip
    for f in files:
        subject, session, date = f.stem.split("_")
        starts, ends, emotions = SEED_V_SESSIONS[int(session)]
        events = [Event(float(a), float(b - a), SEED_V_NAMES[e])
                  for a, b, e in zip(starts, ends, emotions, strict=True)]  # fmt: skip
        yield Recording(
            dataset="seed-v", subject=subject, session=session, path=f, events=events,
            labels={"date": date, "clips": len(events)},
            reader={"positions": SEED_POSITIONS}, id=f.stem,
        )  # fmt: skip


def read_deap(root: Path, *, allow_pickle: bool = False, threshold: float = 5.0):
    """DEAP ``data_preprocessed_matlab/sXX.mat``: 40 trials, ratings 1-9 per trial.

    ``labels`` holds the four ratings and ``high_valence``/``high_arousal`` (> threshold).
    The first 3 s of each trial are the pre-trial baseline (an event).
    """
    mats = sorted(Path(root).rglob("s[0-9][0-9].mat"))
    dats = sorted(Path(root).rglob("s[0-9][0-9].dat"))
    if not mats and dats and not allow_pickle:
        raise NeurofmError(
            f"{root} has DEAP's Python release (sXX.dat), which is a pickle: neurofm reads it "
            "only with read_deap(..., allow_pickle=True) and only if you trust the copy. "
            "Prefer data_preprocessed_matlab/sXX.mat"
        )
    files = require(mats or dats, root, "sXX.mat files", "DEAP")
    for f in files:
        subject = f.stem
        ratings = _deap_ratings(f)
        for trial in range(len(ratings)):
            r = dict(zip(DEAP_RATINGS, map(float, ratings[trial]), strict=True))
            r.update(trial=trial + 1, high_valence=int(r["valence"] > threshold),
                     high_arousal=int(r["arousal"] > threshold))  # fmt: skip
            yield Recording(
                dataset="deap", subject=subject, labels=r,
                array=partial(_deap_trial, f, trial),
                sfreq=128.0, ch_names=list(DEAP_CHANNELS), units="uV",
                events=[Event(0.0, 3.0, "baseline")], id=f"{subject}_trial{trial + 1:02d}",
            )  # fmt: skip


def _deap_ratings(path: Path) -> np.ndarray:
    """(trials, 4) ratings; from a ``.mat`` without loading the signals."""
    if path.suffix == ".dat":
        return _deap_file(path)[1]
    from scipy.io import loadmat

    return np.atleast_2d(loadmat(str(path), variable_names=["labels"])["labels"])


@lru_cache(maxsize=2)
def _deap_file(path: Path):
    if path.suffix == ".dat":
        import pickle

        with open(path, "rb") as fh:  # opted in by the caller (allow_pickle=True)
            obj = pickle.load(fh, encoding="latin1")  # noqa: S301
    else:
        obj = _loadmat(str(path))
    data, labels = np.asarray(obj["data"]), np.asarray(obj["labels"])
    if data.ndim != 3 or data.shape[1] < 32 or labels.shape != (data.shape[0], 4):
        raise NeurofmError(f"{path.name}: expected data (trials, 40, samples) and labels "
                           f"(trials, 4), got {data.shape} and {labels.shape}")  # fmt: skip
    return data, labels


def read_dreamer(root: Path):
    """``DREAMER.mat``: 23 subjects x 18 clips, 14 Emotiv channels at 128 Hz, SAM ratings."""
    files = require(sorted(Path(root).rglob("DREAMER.mat")), root, "DREAMER.mat", "DREAMER")
    top = _loadmat(str(files[0]))["DREAMER"]
    sfreq = float(top.EEG_SamplingRate)
    electrodes = [str(e) for e in np.ravel(top.EEG_Electrodes)]
    for s, subject in enumerate(np.ravel(top.Data), start=1):
        stimuli = np.ravel(subject.EEG.stimuli)
        for clip in range(len(stimuli)):
            yield Recording(
                dataset="dreamer", subject=f"S{s:02d}", labels={
                    "valence": int(np.ravel(subject.ScoreValence)[clip]),
                    "arousal": int(np.ravel(subject.ScoreArousal)[clip]),
                    "dominance": int(np.ravel(subject.ScoreDominance)[clip]),
                    "trial": clip + 1, "age": str(subject.Age), "gender": str(subject.Gender)},
                array=partial(_dreamer_clip, str(files[0]), s - 1, clip),
                sfreq=sfreq, ch_names=electrodes, units="uV", id=f"S{s:02d}_clip{clip + 1:02d}",
            )  # fmt: skip
