"""Linear probes of frozen features (neurofm.eval.probes): synthetic data with a known
answer, the group-wise split, and a small real-data run (skipped without ../shared)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EEG_DIR, shared

from neurofm import collate, eeg_vocabulary
from neurofm.errors import NeurofmError
from neurofm.eval import (
    BANDS,
    EEGMAT_CHANNELS,
    bandpower_features,
    bandpower_names,
    eegmmidb_eyes_probe,
    frozen_features,
    group_folds,
    linear_probe,
    load_eegmat,
    load_eegmmidb_eyes,
    random_init_features,
    reinitialised,
    run_probe,
)
from neurofm.eval.probes import ProbeData
from neurofm.models import create_model
from neurofm.tokens import Tokens

SFREQ, P, N = 200.0, 200, 10  # the default Recipe: 1 s patches at 200 Hz, 10 s windows
NAMES = ("Fp1", "Fp2", "C3", "C4", "O1", "O2")


def make_tokens(x: np.ndarray, names=NAMES, mask=None) -> Tokens:
    """Tokens from (B, S, T) signals in model units, cut into 1 s patches."""
    B, S, T = x.shape
    ids = torch.as_tensor(eeg_vocabulary().ids(list(names)), dtype=torch.long)
    mask = torch.ones(B, S, T // P, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
    return Tokens(
        x=torch.as_tensor(x.reshape(B, S, T // P, P), dtype=torch.float32),
        space=ids.expand(B, -1).clone(),
        pos=torch.full((B, S, 3), float("nan")),
        t=torch.arange(T // P, dtype=torch.float32).expand(B, -1).clone(),
        mask=mask,
        names=[tuple(names)] * B,
    )


def alpha_windows(n_groups=10, per_class=8, amp=0.6, seed=0):
    """Windows of pink-ish noise; class 1 has a 10 Hz rhythm; each group its own gain."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(N * P)) / SFREQ
    xs, labels, groups = [], [], []
    for g in range(n_groups):
        gain = rng.uniform(0.5, 2.0)
        for label in (0, 1):
            for _ in range(per_class):
                x = np.cumsum(rng.standard_normal((len(NAMES), len(t))), axis=1) * 0.05
                x = x - x.mean(axis=1, keepdims=True) + rng.standard_normal(x.shape) * 0.3
                if label:
                    phase = rng.uniform(0, 2 * np.pi, (len(NAMES), 1))
                    x = x + amp * np.sin(2 * np.pi * 10.0 * t + phase)
                xs.append(gain * x)
                labels.append(label)
                groups.append(f"g{g}")
    return make_tokens(np.stack(xs)), np.array(labels), np.array(groups)


# ---------------------------------------------------------------------- band power
def test_bandpower_is_welch():
    """Fully real windows: exactly scipy's Welch (Hann, 2 s segments, 1 s apart)."""
    from scipy.signal import welch

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, int(N * P)))
    feats = bandpower_features(make_tokens(x, NAMES[:2]), SFREQ)
    freqs, psd = welch(x, fs=SFREQ, window="hann", nperseg=400, noverlap=200)
    df = freqs[1] - freqs[0]
    power = [psd[..., (freqs >= lo) & (freqs < hi)].sum(-1) * df for lo, hi in BANDS.values()]
    expected = np.log10(np.stack(power, axis=-1)).reshape(3, -1)
    np.testing.assert_allclose(feats, expected, rtol=1e-5)
    assert feats.shape == (3, 2 * len(BANDS))
    assert bandpower_names(NAMES[:2])[:2] == ["Fp1:delta", "Fp1:theta"]


def test_bandpower_ignores_masked_patches_and_lines_up_montages():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, int(N * P)))
    mask = np.ones((1, 2, N), bool)
    mask[0, 0, 4:6] = False
    spoiled = x.copy()
    spoiled[0, 0, 4 * P : 6 * P] = 1e3 * np.sin(np.arange(2 * P))  # garbage under the mask
    a = bandpower_features(make_tokens(x, NAMES[:2], mask), SFREQ)
    b = bandpower_features(make_tokens(spoiled, NAMES[:2], mask), SFREQ)
    np.testing.assert_allclose(a, b)
    full = bandpower_features(make_tokens(x, NAMES[:2]), SFREQ)
    assert not np.allclose(a[0, :5], full[0, :5])  # fewer segments for channel 0
    np.testing.assert_allclose(a[0, 5:], full[0, 5:])  # channel 1 untouched

    # windows of other montages line up by name; a channel a window lacks is NaN
    swapped = make_tokens(x[:, ::-1].copy(), NAMES[1::-1])
    third = make_tokens(rng.standard_normal((1, 3, int(N * P))), ("O1", "Fp2", "Fp1"))
    mixed = collate([make_tokens(x, NAMES[:2]), swapped, third])
    feats = bandpower_features(mixed, SFREQ, channels=["Fp1", "Fp2", "O1"])
    np.testing.assert_allclose(feats[0, :10], feats[1, :10], rtol=1e-6)
    np.testing.assert_allclose(feats[0, :10], full[0], rtol=1e-6)
    assert np.isnan(feats[:2, 10:]).all() and np.isfinite(feats[2]).all()

    # a channel with no real patch is NaN
    dead = np.ones((1, 2, N), bool)
    dead[0, 1] = False
    assert np.isnan(bandpower_features(make_tokens(x, NAMES[:2], dead), SFREQ)[0, 5:]).all()


def test_bandpower_refuses_bands_above_nyquist():
    x = np.random.default_rng(0).standard_normal((1, 1, int(N * P)))
    with pytest.raises(NeurofmError, match="sfreq/2"):
        bandpower_features(make_tokens(x, NAMES[:1]), SFREQ, bands={"high": (90.0, 120.0)})


# ---------------------------------------------------------------------- the probe
def test_alpha_power_is_found_and_noise_labels_are_not():
    tokens, labels, groups = alpha_windows()
    feats = bandpower_features(tokens, SFREQ)
    result = linear_probe(feats, labels, groups, seeds=[0, 1, 2], n_splits=5)
    assert result.scores().min() >= 0.9, result.per_seed
    assert result.scores("auroc").min() >= 0.95
    assert result.n_groups == 10 and result.n_windows == 160 and result.chance == 0.5

    rng = np.random.default_rng(3)
    shuffled = rng.permutation(labels)
    noise = linear_probe(feats, shuffled, groups, seeds=range(5), n_splits=5)
    assert abs(noise.mean() - 0.5) < 0.1, noise.per_seed
    pure = linear_probe(rng.standard_normal((400, 12)), rng.integers(0, 2, 400),
                        np.repeat(np.arange(20), 20), seeds=range(5), n_splits=5)  # fmt: skip
    assert abs(pure.mean() - 0.5) < 0.08 and abs(pure.mean("auroc") - 0.5) < 0.08


def test_folds_keep_groups_whole_and_follow_the_seed():
    rng = np.random.default_rng(4)
    groups = np.repeat([f"s{i}" for i in range(20)], 12)
    labels = np.tile(np.r_[np.zeros(9), np.ones(3)], 20)
    folds = group_folds(labels, groups, n_splits=5, seed=0)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(labels)))  # each window tested once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert len(set(groups[test])) == 4  # 5 folds of 4 subjects
    again = group_folds(labels, groups, n_splits=5, seed=0)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    other = group_folds(labels, groups, n_splits=5, seed=1)
    assert {frozenset(groups[t]) for _, t in folds} != {frozenset(groups[t]) for _, t in other}

    feats = rng.standard_normal((len(labels), 4))
    a = linear_probe(feats, labels, groups, seeds=[0, 1])
    b = linear_probe(feats, labels, groups, seeds=[0, 1])
    assert (a.scores() == b.scores()).all() and (a.scores("auroc") == b.scores("auroc")).all()


def test_a_split_that_leaks_groups_is_refused(monkeypatch):
    """group_folds checks the splitter's output: a leaky one raises, it is not trusted."""
    import sklearn.model_selection as ms

    class Leaky(ms.KFold):
        def __init__(self, n_splits, shuffle, random_state):
            super().__init__(n_splits, shuffle=shuffle, random_state=random_state)

        def split(self, X, y=None, groups=None):
            return super().split(X)

    monkeypatch.setattr(ms, "StratifiedGroupKFold", Leaky)
    groups = np.repeat(np.arange(10), 6)
    labels = np.tile([0, 1], 30)
    with pytest.raises(AssertionError, match="both sides"):
        linear_probe(np.zeros((60, 2)), labels, groups, n_splits=5)


def test_probe_input_errors():
    feats, labels, groups = np.zeros((10, 3)), np.tile([0, 1], 5), np.arange(10)
    with pytest.raises(NeurofmError, match="one of each per window"):
        linear_probe(feats[:9], labels, groups)
    with pytest.raises(NeurofmError, match="one class"):
        linear_probe(feats, np.zeros(10), groups)
    with pytest.raises(NeurofmError, match="n_splits=11"):
        linear_probe(feats, labels, groups, n_splits=11)
    with pytest.raises(NeurofmError, match="seed"):
        linear_probe(feats, labels, groups, seeds=[0.5])


# ---------------------------------------------------------------------- model features
@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return create_model("eeg-tiny")


def test_frozen_features_mean_real_tokens(tiny):
    rng = np.random.default_rng(5)
    six = make_tokens(rng.standard_normal((3, 6, int(N * P))) * 0.2)
    three = make_tokens(rng.standard_normal((2, 3, int(N * P))) * 0.2, NAMES[:3])
    batch = collate([six, three])  # padded units in the last two windows
    tiny.train()
    feats = frozen_features(tiny, batch, batch_size=2)
    assert tiny.training  # restored
    assert feats.shape == (5, tiny.dim) and feats.dtype == np.float32
    with torch.no_grad():
        out = tiny.eval()(batch)
        w = batch.mask[..., None].float()
        expected = ((out.tokens * w).sum((1, 2)) / w.sum((1, 2))).numpy()
        alone = frozen_features(tiny, three)  # padding changes nothing
    np.testing.assert_allclose(feats, expected, atol=1e-5)
    np.testing.assert_allclose(feats[3:], alone, atol=1e-5)
    np.testing.assert_allclose(frozen_features(tiny, batch, pooling="pooled"),
                               out.pooled.numpy(), atol=1e-5)  # fmt: skip
    with pytest.raises(NeurofmError, match="pooling"):
        frozen_features(tiny, batch, pooling="max")


def test_random_init_follows_the_seed(tiny):
    state = torch.random.get_rng_state()
    a, b, c = reinitialised(tiny, 1), reinitialised(tiny, 1), reinitialised(tiny, 2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    assert a.config == tiny.config and a.recipe == tiny.recipe and type(a) is type(tiny)
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), k
    differ = [k for k, v in c.state_dict().items() if not torch.equal(v, a.state_dict()[k])]
    assert "blocks.0.attn.qkv.weight" in differ

    tokens, labels, groups = alpha_windows(n_groups=4, per_class=2)
    data = ProbeData("synthetic", tokens, labels, groups, ("no alpha", "alpha"), "group", 4,
                     SFREQ, NAMES)  # fmt: skip
    calls = []
    source = random_init_features(tiny)

    def counted(tok, seed):
        calls.append(seed)
        return source(tok, seed)

    r1 = run_probe(data, counted, seeds=[3, 4], n_splits=2)
    r2 = run_probe(data, counted, seeds=[3, 4], n_splits=2)
    assert calls == [3, 4, 3, 4] and r1.per_seed[0]["auroc"] == r2.per_seed[0]["auroc"]
    assert run_probe(data, "bandpower", seeds=0, n_splits=2).n_features == 6 * len(BANDS)
    with pytest.raises(NeurofmError, match="feature source"):
        run_probe(data, "bandpowr", n_splits=2)


# ---------------------------------------------------------------------- real data
def test_eegmat_probe_on_real_subjects(tiny, tmp_path):
    """EEGMAT, 4 subjects, eeg-tiny at random weights, through bench/probes.py."""
    shared("eeg/eegmat/Subject03_2.edf")
    shared("eeg/eegmmidb/S001R02.edf")
    data = load_eegmat(EEG_DIR, tiny.recipe, subjects=range(4))
    assert data.channels == EEGMAT_CHANNELS  # A2 (the A2-A1 derivation) and ECG left out
    assert data.n_subjects == data.n_groups == 4
    counts = data.counts()
    assert 2.5 < counts["rest"] / counts["arithmetic"] < 3.5  # 180 s vs 60 s
    for subject in np.unique(data.groups):
        assert set(data.labels[data.groups == subject]) == {0, 1}

    ckpt = tiny.save_pretrained(tmp_path / "ckpt")
    script = Path(__file__).resolve().parents[1] / "bench" / "probes.py"
    spec = importlib.util.spec_from_file_location("bench_probes", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "probes.json"
    bench.main(["--model", str(ckpt), "--data", str(EEG_DIR), "--out", str(out), "--seeds",
                "0", "1", "--subjects", "4", "--folds-eegmat", "2", "--folds-eegmmidb", "3"])  # fmt: skip
    report = json.loads(out.read_text())
    eegmat = report["probes"]["eegmat"]
    assert eegmat["data"]["windows"] == data.n_windows and eegmat["data"]["subjects"] == 4
    for arm in ("pretrained", "random init", "band power + LR"):
        result = eegmat["arms"][arm]
        assert [r["seed"] for r in result["per_seed"]] == [0, 1]
        assert 0 <= result["balanced_accuracy"]["mean"] <= 1
    eyes = report["probes"]["eegmmidb_eyes"]["data"]
    assert eyes["windows"] == 12 and eyes["groups"] == 12 and eyes["subjects"] == 1


@pytest.mark.filterwarnings("ignore:.*annotation")
def test_eegmmidb_blocks_do_not_overlap():
    """Overlapping windows: those straddling two time blocks are dropped."""
    shared("eeg/eegmmidb/S001R02.edf")
    from neurofm import Recipe

    recipe = Recipe(stride_seconds=2.0)
    data = load_eegmmidb_eyes(EEG_DIR, recipe, n_blocks=3)
    assert data.dropped > 0 and data.n_groups == 6
    start = data.tokens.t[:, 0].numpy()
    for label in (0, 1):
        run = data.labels == label
        s, g = start[run], data.groups[run]
        for i in range(len(s)):
            for j in range(len(s)):
                if g[i] != g[j]:
                    assert abs(s[i] - s[j]) >= recipe.window_seconds, (g[i], g[j])

    # eyes closed raise occipital alpha: band power separates the two runs
    result = eegmmidb_eyes_probe("bandpower", EEG_DIR, seeds=[0, 1], n_splits=6)
    assert result.n_windows == 12 and result.mean() >= 0.9, result.per_seed
