"""StreamEncoder: chunk-size invariance, carried filter state, offline agreement, bad input.

The must-show (issue 16): the bundled recording encoded offline through the same causal
chain and pushed hop by hop gives the same embeddings (``ATOL``), and a stream started
late agrees after the high-pass's warm-up; the distance to the zero-phase offline path
(``neurofm.tokenize``) is printed (``pytest -s``).
"""

from __future__ import annotations

import warnings
from importlib.resources import files

import numpy as np
import pytest
import torch

import neurofm
from neurofm.errors import ChannelError, NeurofmError, SignalError, UnitsError
from neurofm.stream import (
    CausalChain,
    StreamEncoder,
    causal_preprocess,
    design_chain,
)
from neurofm.tokens import Tokens, patchify

ATOL = 1e-5  # stream vs offline through the same chain: float32 model, batch 1 vs batched
WARM_UP_S = 30.0  # a stream started late agrees (ATOL) after this long: 0.1 Hz high-pass
SAMPLE = files("neurofm") / "sample_data" / "S001R03.edf"
NAMES = ["Fp1", "Fp2", "C3", "Cz", "C4", "O1", "O2", "EOG"]  # the EOG column is dropped


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batched offline forwards at one thread too: steadier on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return neurofm.load_model("eeg-tiny.sample")


@pytest.fixture(scope="module")
def sample():
    """The bundled recording (64 ch, 160 Hz) with its file names, in volts."""
    import mne

    raw = mne.io.read_raw_edf(str(SAMPLE), preload=True, verbose="error")
    return raw.ch_names, raw.info["sfreq"], raw.get_data()


def signal(n_channels, seconds, sfreq, seed=0):
    """(samples, channels) EEG-like volts with a DC offset and 60 Hz line noise."""
    from neurofm.synthetic import eeg

    x = eeg(n_channels, int(seconds * sfreq), sfreq, seed=seed)
    return (x + 2e-3 * np.arange(1, n_channels + 1)[:, None]).T  # offsets up to mV


def push_all(enc, x, chunk):
    out = []
    for i in range(0, len(x), chunk):
        out += enc.push(x[i : i + chunk])
    return out


def stack(results):
    return np.stack([r.embedding for r in results]), np.array([r.time for r in results])


# ---------------------------------------------------------------------- chunking
def test_chunk_size_invariance(model):
    x = signal(len(NAMES), 9.0, 160.0)
    enc = StreamEncoder(model, NAMES, 160.0, hop_seconds=0.5, line_freq=60)
    assert enc.ch_names == NAMES[:-1]  # read_eeg's rules: EOG dropped
    runs = {}
    for chunk in (1, 37, 500):
        enc.reset()
        runs[chunk] = stack(push_all(enc, x, chunk))
    emb, times = runs[1]
    assert len(times) == 11 and times[0] == pytest.approx(4.0) and np.allclose(np.diff(times), 0.5)
    for chunk in (37, 500):
        np.testing.assert_allclose(runs[chunk][0], emb, atol=1e-6)
        np.testing.assert_array_equal(runs[chunk][1], times)
    assert enc.push(np.zeros((0, len(NAMES)))) == []


@pytest.mark.parametrize("sfreq", [160.0, 1000.0, 256.0, 200.0])  # up/down 5/4, 1/5, 25/32, 1
def test_carried_state_equals_one_shot_filtering(model, sfreq):
    """Chunks through CausalChain == the same causal filters over the whole signal at once
    (sosfilt high-pass, upfirdn, sosfilt low-pass + notch, written out here)."""
    from scipy.signal import sosfilt, upfirdn

    recipe = model.recipe
    x = signal(3, 6.0, sfreq, seed=1)
    design = design_chain(recipe, sfreq, 60.0, 1 / recipe.unit_scale)
    z = x / recipe.unit_scale
    z = sosfilt(design.highpass, z - z[0], axis=0)
    if design.fir is not None:
        z = upfirdn(design.fir, z, design.up, design.down, axis=0)
    n_out = design.n_out(len(x))
    expected = sosfilt(design.sos, z[:n_out], axis=0)
    assert n_out == int(np.ceil(len(x) * recipe.sfreq / sfreq - 1e-9))

    chain, rng, parts, i = CausalChain(design, 3), np.random.default_rng(0), [], 0
    while i < len(x):
        n = min(int(rng.choice([0, 1, 2, 7, 64, 333])), len(x) - i)
        y, taint = chain.process(x[i : i + n])
        assert taint is None and len(y) == design.n_out(i + n) - design.n_out(i)
        parts.append(y)
        i += n
    np.testing.assert_allclose(np.concatenate(parts), expected, rtol=0, atol=1e-9)
    whole = causal_preprocess(x.T, sfreq, recipe, line_freq=60)
    np.testing.assert_allclose(whole.T, expected, rtol=0, atol=1e-9)


def test_causal_filters_keep_the_band_and_delay_little(model):
    """Pass band kept, line noise notched, the delay small: the causal chain's promises."""
    sfreq, recipe = 160.0, model.recipe
    t = np.arange(int(20 * sfreq)) / sfreq
    design = design_chain(recipe, sfreq, 60.0)
    gain = {}
    for f in (10.0, 60.0):
        y = causal_preprocess(np.sin(2 * np.pi * f * t)[None], sfreq, recipe, line_freq=60)
        gain[f] = y[0, -400:].std() * np.sqrt(2) * recipe.unit_scale
    assert gain[10.0] == pytest.approx(1.0, abs=0.01) and gain[60.0] < 0.01
    delay = design.group_delay([5.0, 10.0, 20.0, 30.0])
    assert (delay > 0).all() and (delay < 0.02).all()  # s; a linear-phase FIR: 62.5 ms + 16.5 s


# ---------------------------------------------------------------------- the must-show
def test_stream_matches_offline_on_the_sample_recording(model, sample):
    names, sfreq, data = sample
    hop = 0.5
    enc = StreamEncoder(model, names, sfreq, hop_seconds=hop, line_freq=60)
    streamed, times = stack(push_all(enc, data.T, int(hop * sfreq)))  # one hop per push

    # offline: the same causal chain over the whole array, windows ending at the same times
    raw = neurofm.read_eeg(str(SAMPLE))
    zero_phase = neurofm.tokenize(raw, model.recipe)  # the standard offline path
    assert enc.ch_names == list(zero_phase.names[0])  # the same channel mapping
    y = causal_preprocess(data, sfreq, model.recipe, line_freq=60).astype(np.float32)
    W, P, N = model.recipe.window_len, model.recipe.patch_len, model.recipe.window_patches
    ends = np.arange(W, y.shape[1] + 1, round(hop * model.recipe.sfreq))
    np.testing.assert_allclose(times, ends / model.recipe.sfreq)
    x = patchify(np.stack([y[:, e - W : e] for e in ends]), P)
    B, S = x.shape[:2]
    tokens = Tokens(
        x=torch.from_numpy(x),
        space=zero_phase.space[:1].expand(B, -1),
        pos=zero_phase.pos[:1].expand(B, -1, -1),
        t=torch.as_tensor((ends[:, None] - W + np.arange(N) * P) / model.recipe.sfreq),
        mask=torch.ones(B, S, N, dtype=torch.bool),
    )
    with torch.inference_mode():
        offline = model(tokens).pooled.numpy()
    err = np.abs(streamed - offline).max()
    print(f"\nstream vs offline causal, {B} hops: max |diff| {err:.2e} (tolerance {ATOL:g})")
    assert err < ATOL
    np.testing.assert_allclose(stack(enc.encode_offline(data))[0], streamed, atol=ATOL)

    # a stream started 30 s in agrees after the filters' warm-up
    start = int(30 * sfreq)
    late = StreamEncoder(model, names, sfreq, hop_seconds=hop, line_freq=60, start_time=30.0)
    late_emb, late_times = stack(push_all(late, data[:, start:].T, 64))
    j = np.searchsorted(times, late_times[0])
    np.testing.assert_allclose(times[j : j + len(late_times)], late_times)
    diff = np.abs(late_emb - streamed[j : j + len(late_times)]).max(1)
    warm = late_times - 30.0 >= WARM_UP_S
    print(f"late start: max |diff| {diff[0]:.2e} on the first window, {diff[warm].max():.2e} "
          f"after {WARM_UP_S:g} s")  # fmt: skip
    assert diff[0] > 1e-2 and diff[warm].max() < ATOL

    # against the zero-phase offline path: the causal chain's phase delay (~13 ms)
    with torch.inference_mode():
        zp = model(zero_phase).pooled.numpy()
    zp_ends = zero_phase.t[:, 0].numpy() + model.recipe.window_seconds
    idx = [int(np.argmin(np.abs(times - e))) for e in zp_ends]
    cos = cosine(streamed[idx], zp)
    prepared = neurofm.preprocess(raw, model.recipe).get_data() / model.recipe.unit_scale
    shifted, later = {}, zero_phase[1:]  # the first window has nothing before it
    for lag in (1, 3):  # zero-phase windows ending `lag` samples earlier
        win = [prepared[:, e - lag - W : e - lag] for e in ends[idx[1:]]]
        shifted_tokens = Tokens(patchify(torch.from_numpy(np.stack(win).astype(np.float32)), P),
                                later.space, later.pos, later.t - lag / model.recipe.sfreq,
                                later.mask)  # fmt: skip
        with torch.inference_mode():
            shifted[lag] = model(shifted_tokens).pooled.numpy()
    cos3, self1 = cosine(streamed[idx[1:]], shifted[3]), cosine(zp[1:], shifted[1])
    print(f"cosine, causal stream vs zero-phase tokenize ({len(idx)} windows, same end "
          f"times): mean {cos.mean():.3f}, min {cos.min():.3f}; against zero-phase windows "
          f"3 samples (15 ms) earlier: mean {cos3.mean():.3f}, min {cos3.min():.3f}; "
          f"zero-phase vs itself 1 sample later: mean {self1.mean():.3f}")  # fmt: skip
    print(
        f"group delay (ms): { {f: round(float(d) * 1e3, 1) for f, d in enc.group_delay().items()} }"
    )
    assert cos.mean() > 0.8 and cos3.mean() > cos.mean()


def cosine(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# ---------------------------------------------------------------------- API
def test_latency_flush_reset_callback_and_pooling(model):
    x = signal(len(NAMES), 6.0, 160.0)
    seen = []
    enc = StreamEncoder(model, NAMES, 160.0, hop_seconds=1.0, line_freq=50, units="V",
                        callback=seen.append, pooling="channel")  # fmt: skip
    assert np.isnan(enc.latency.total_p50) and enc.latency.hops == 0
    out = push_all(enc, x[:-10], 80)
    assert len(out) == 2 and seen == out
    assert out[0].embedding.shape == (7, model.dim) and out[0].real.all()
    lat = enc.latency
    assert lat.hops == 2 and min(lat.preprocess_p50, lat.model_p50, lat.total_p99) > 0
    assert lat.total_p99 >= lat.total_p50 and "p50/p99" in str(lat)
    (last,) = enc.flush()  # the signal after the last full hop
    assert last.time == pytest.approx(np.ceil((len(x) - 10) * 200 / 160) / 200)
    assert enc.flush() == []
    enc.reset()
    assert enc.n_samples == 0 and push_all(enc, x[:600], 600) == [] and enc.latency.hops == 3

    none = StreamEncoder(model, NAMES, 160.0, pooling="none", line_freq=None, threads=None)
    (o,) = none.push(x[:640])
    assert o.embedding.shape == (7, 4, model.dim)
    microvolts = StreamEncoder(model, NAMES, 160.0, units="uV", line_freq=50, pooling="cls")
    volts = StreamEncoder(model, NAMES, 160.0, units="V", line_freq=50, pooling="cls")
    np.testing.assert_allclose(microvolts.push(x[:640] * 1e6)[0].embedding,
                               volts.push(x[:640])[0].embedding, atol=1e-5)  # fmt: skip


def test_window_seconds_and_hop_grid(model):
    enc = StreamEncoder(model, NAMES, 250.0, hop_seconds=0.25, window_seconds=2.0, line_freq=50)
    out = enc.push(signal(len(NAMES), 3.0, 250.0))
    assert [o.time for o in out] == pytest.approx([2.0, 2.25, 2.5, 2.75, 3.0])
    with pytest.raises(NeurofmError, match="whole number of samples"):
        StreamEncoder(model, NAMES, 250.0, hop_seconds=0.0033, line_freq=50)


# ---------------------------------------------------------------------- bad input
def test_bad_chunks_give_clear_errors(model):
    enc = StreamEncoder(model, NAMES, 160.0, line_freq=60)
    x = signal(len(NAMES), 5.0, 160.0)
    enc.push(x[:100])
    bad = x[100:200].copy()
    bad[5, 2] = np.nan
    with pytest.raises(SignalError, match=r"non-finite .*\['C3'\].*on_nan='mask'"):
        enc.push(bad)
    with pytest.raises(SignalError, match=r"8 channels.*transposed"):
        enc.push(x[:100].T)
    with pytest.raises(SignalError, match=r"shape \(100, 5\) .* 8 channels"):
        enc.push(x[:100, :5])
    with pytest.raises(UnitsError, match="beyond .*units='uV'"):  # uV pushed as V
        StreamEncoder(model, NAMES, 160.0, line_freq=60).push(x[:700] * 1e6)
    with pytest.raises(UnitsError, match=r"is 2.*e-11 V .*units='V'"):  # V pushed as uV
        StreamEncoder(model, NAMES, 160.0, line_freq=60, units="uV").push(x[:700])
    loose = StreamEncoder(model, NAMES, 160.0, line_freq=60, units="uV", check_units=False)
    assert len(loose.push(x[:700])) == 1
    with pytest.raises(NeurofmError, match="line_freq=50"):
        StreamEncoder(model, NAMES, 160.0)  # the recipe says notch='auto'
    with pytest.raises(NeurofmError, match="ch_names="):
        StreamEncoder(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ChannelError, match=r"\['E17'\].*positions=\{'E17'"):
            StreamEncoder(model, [*NAMES, "E17"], 160.0, line_freq=60)
    placed = StreamEncoder(model, [*NAMES, "E17"], 160.0, line_freq=60, positions={"E17": "Pz"})
    assert placed.ch_names[-1] == "E17"
    fmri = neurofm.models.create_model("fmri-tiny")
    with pytest.raises(NeurofmError, match="EEG model"):
        StreamEncoder(fmri, NAMES, 160.0, line_freq=60)


def test_nan_mask_option(model):
    x = signal(len(NAMES), 6.0, 160.0)
    x[int(4.2 * 160) : int(4.3 * 160), 2] = np.nan  # C3, 4.2-4.3 s: taints to ~4.9 s
    enc = StreamEncoder(model, NAMES, 160.0, line_freq=60, on_nan="mask", hop_seconds=1.0)
    out = push_all(enc, x, 50)
    assert [o.time for o in out] == pytest.approx([4.0, 5.0, 6.0])
    assert out[0].real.all()
    masked = ~out[1].real  # window 1-5 s: C3's last patch (4-5 s) is masked, nothing else
    assert masked[2, 3] and masked.sum() == 1 and np.isfinite(out[1].embedding).all()
    assert not out[2].real[2, 2] and out[2].real[2, 3]  # 2-6 s: 4-5 s masked, 5-6 s clean
    np.testing.assert_allclose(stack(enc.encode_offline(x.T))[0], stack(out)[0], atol=ATOL)
