import json
import math
import warnings

import numpy as np
import pytest
from fuzz import time_limit

import neurofm
from neurofm.errors import ConfigError, EEGReadError, SignalWarning
from neurofm.preprocess import (
    Recipe,
    Stream,
    design_fir,
    detect_line_noise,
    notch_frequencies,
    resample_ratio,
)
from neurofm.synthetic import eeg
from neurofm.utils import SignalError


def _run(raw, recipe, chunk_seconds=120.0):
    stream = Stream(raw, recipe, chunk_seconds=chunk_seconds)
    return np.concatenate([y for _, y, _ in stream.blocks()], axis=1), stream


@pytest.mark.parametrize("sfreq", [160, 173.61, 256, 500, 5000])
def test_resampling_counts_and_keeps_10hz(sine, sfreq):

    x = sine(10, sfreq, 30.3)
    raw = neurofm.read_eeg(x, sfreq=sfreq, ch_names=["Cz", "Pz"])
    y, stream = _run(raw, Recipe(notch=None), chunk_seconds=7.3)
    assert y.shape[1] == int(round(x.shape[1] * 200 / sfreq))
    assert y.shape[1] == raw.copy().load_data().resample(200, verbose="error").n_times  # MNE agrees
    spectrum = np.abs(np.fft.rfft(y[0] * np.hanning(y.shape[1])))
    assert np.fft.rfftfreq(y.shape[1], 1 / 200)[spectrum.argmax()] == pytest.approx(10, abs=0.05)
    ideal = 0.5 * np.sin(2 * np.pi * 10 * np.arange(y.shape[1]) / 200)  # 50 uV in units of 100 uV
    inner = slice(1000, -1000)
    np.testing.assert_allclose(y[0, inner], ideal[inner], atol=0.005)  # within 1% of amplitude


def test_exact_ratio():
    assert resample_ratio(173.61, 200) == (20000, 17361)
    assert resample_ratio(256, 200) == (25, 32)


def test_chunks_are_seamless():
    x = eeg(4, 256 * 95, 256, line=60.0)
    raw = neurofm.read_eeg(x, sfreq=256, ch_names=["Fp1", "Fp2", "C3", "C4"])
    whole, _ = _run(raw, Recipe(), chunk_seconds=1000)
    for chunk in (3.7, 10, 33.3):
        parts, _ = _run(raw, Recipe(), chunk_seconds=chunk)
        np.testing.assert_allclose(parts, whole, atol=1e-4)  # float32 rounding only


def test_agrees_with_mne_pipeline():
    """Same recipe through MNE's filter, notch_filter and resample: the same signal."""
    x = eeg(3, 256 * 120, 256, line=60.0)
    raw = neurofm.read_eeg(x, sfreq=256, ch_names=["Fp1", "Cz", "O1"])
    ours, _ = _run(raw, Recipe(notch=60.0))
    ref = raw.copy().load_data().filter(0.1, 75.0, verbose="error")
    ref = ref.notch_filter(60.0, verbose="error").resample(200, verbose="error").get_data() / 1e-4
    inner = slice(2000, -2000)
    # above the 0.1 Hz transition band, where the two designs may differ, they agree
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, 1.0, "highpass", fs=200, output="sos")
    a, b = sosfiltfilt(sos, ours)[:, inner], sosfiltfilt(sos, ref)[:, inner]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_notch_removes_line_noise_and_auto_detects():
    for line in (50.0, 60.0):
        x = eeg(4, 256 * 60, 256, line=line)
        raw = neurofm.read_eeg(x, sfreq=256, ch_names=["Fp1", "Fp2", "C3", "C4"])
        y, stream = _run(raw, Recipe())
        assert stream.line_freq == line and stream.notch_freqs == (line,)
        kept, _ = _run(raw, Recipe(notch=None))
        f = np.fft.rfftfreq(y.shape[1], 1 / 200)
        at_line = np.abs(f - line) < 0.1

        def power(sig, band=at_line):
            return (np.abs(np.fft.rfft(sig * np.hanning(sig.shape[1]), axis=1)) ** 2)[:, band].sum()

        assert power(y) < 1e-3 * power(kept)  # more than 30 dB down
    clean = eeg(4, 256 * 60, 256, line=None)
    assert detect_line_noise(clean, 256) is None


def test_filter_design_follows_mne_rules():
    fir = design_fir(200.0, 0.1, 75.0, (50.0,), 1.0)
    assert len(fir) == 6601  # 3.3 / 0.1 Hz * 200 Hz, odd
    np.testing.assert_allclose(fir, fir[::-1], atol=1e-12)  # linear phase: zero-phase once centred
    from scipy.signal import freqz

    w, h = freqz(fir, worN=2**16, fs=200)
    gain = lambda f: np.abs(h[np.argmin(np.abs(w - f))])  # noqa: E731
    assert abs(gain(10) - 1) < 0.01 and gain(50) < 0.01 and gain(95) < 0.01 and gain(0.01) < 0.2


def test_recipe_validation_and_serialisation():
    r = Recipe(sfreq=250, h_freq=100, window_seconds=4)
    assert Recipe.model_validate_json(r.model_dump_json()) == r
    assert json.loads(r.model_dump_json())["sfreq"] == 250
    assert (r.patch_len, r.window_len, r.n_patches) == (250, 1000, 4)
    with pytest.raises(ConfigError, match="did you mean 'sfreq'"):
        Recipe(sfrq=200)
    with pytest.raises(ConfigError, match="below sfreq/2"):
        Recipe(h_freq=120)
    with pytest.raises(ConfigError, match="multiple of patch_seconds"):
        Recipe(window_seconds=2.5)
    with pytest.raises(ConfigError, match="whole number of samples"):
        Recipe(sfreq=200, patch_seconds=0.0025 * 1.5)
    assert r.replace(clip=5.0).clip == 5.0


def test_recipes_share_patch_geometry_and_round_trip_by_modality():
    from pydantic import TypeAdapter

    from neurofm.preprocess.recipe import AnyRecipe, EEGRecipe, FMRIRecipe, recipe_from_dict

    eeg, fmri = Recipe(sfreq=250, window_seconds=4), FMRIRecipe(t_r=2.0, patch_trs=10)
    assert Recipe is EEGRecipe and neurofm.FMRIRecipe is FMRIRecipe
    assert neurofm.io.fmri.FMRIRecipe is FMRIRecipe
    geometry = ("patch_len", "patch_seconds", "window_patches", "window_len", "stride_len",
                "window_seconds")  # fmt: skip
    assert [getattr(eeg, k) for k in geometry] == [250, 1.0, 4, 1000, 1000, 4.0]
    assert [getattr(fmri, k) for k in geometry] == [10, 20.0, 10, 100, 100, 200.0]
    assert (eeg.seconds(500), fmri.seconds(5)) == (2.0, 10.0)
    for recipe in (eeg, fmri):
        data = json.loads(recipe.model_dump_json())
        assert recipe_from_dict(data) == recipe
        assert TypeAdapter(AnyRecipe).validate_python(data) == recipe
    old = {k: v for k, v in json.loads(eeg.model_dump_json()).items() if k != "modality"}
    assert recipe_from_dict(old) == eeg  # checkpoints from before fMRI: EEG
    assert TypeAdapter(AnyRecipe).validate_python(old) == eeg
    with pytest.raises(neurofm.errors.NeurofmError, match="did you mean 'fmri'"):
        recipe_from_dict({"modality": "fmr"})
    with pytest.raises(ConfigError, match="did you mean 'patch_trs'"):
        recipe_from_dict({"modality": "fmri", "patch_tr": 10})


def test_too_short_recording(sine):
    raw = neurofm.read_eeg(sine(10, 200, 4.5), sfreq=200, ch_names=["Cz", "Pz"])
    with pytest.raises(SignalError, match="window_seconds <= 4"):
        neurofm.tokenize(raw)


def test_nan_raise_and_mask():
    x = eeg(3, 200 * 60, 200, line=None)
    x[1, 200 * 30 : 200 * 31] = np.nan
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "C3", "C4"], check_units=False)
    with pytest.raises(
        SignalError, match=r"non-finite samples .* in channels \['C3'\] from 30.00 s.*on_nan='mask'"
    ):
        neurofm.tokenize(raw, Recipe(notch=None))
    tokens = neurofm.tokenize(raw, Recipe(notch=None, on_nan="mask", window_seconds=60))
    mask = tokens.mask[0].numpy()
    assert mask[0].all() and mask[2].all()  # other channels untouched
    assert not mask[1, 30] and mask[1, :10].all() and mask[1, -10:].all()
    assert np.isfinite(tokens.x.numpy()).all()


def test_flat_channel_is_masked_and_reported():
    from neurofm.errors import SignalWarning

    x = eeg(3, 200 * 30, 200, line=None)
    x[2] = 0.0
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "C3", "C4"])
    with pytest.warns(SignalWarning, match=r"\['C4'\] are flat"):  # a named warning
        tokens = neurofm.tokenize(raw, Recipe(notch=None))
    assert tokens.mask[:, :2].all() and not tokens.mask[:, 2].any()


def test_average_reference_and_clip():
    x = eeg(3, 200 * 30, 200, line=None) + 80e-6  # common offset: average reference removes it
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "C3", "C4"])
    y, _ = _run(raw, Recipe(notch=None, reference="average"))
    np.testing.assert_allclose(y.sum(0), 0, atol=1e-3)
    clipped, _ = _run(raw, Recipe(notch=None, clip=0.2))
    assert np.abs(clipped).max() <= 0.2 + 1e-6 and np.abs(y).max() > 0.2


def test_preprocess_returns_raw():
    x = eeg(3, 256 * 30, 256, line=50.0)
    raw = neurofm.read_eeg(x, sfreq=256, ch_names=["Cz", "C3", "C4"])
    out = neurofm.preprocess(raw, Recipe())
    assert out.info["sfreq"] == 200 and out.n_times == 6000 and out.ch_names == ["Cz", "C3", "C4"]
    assert 1e-6 < out.get_data().std() < 1e-4  # volts again


# --------------------------------------------------------------------- issue 12 hardening
@pytest.mark.parametrize("notch", [0, -50, 1e-9, 0.5, math.nan, math.inf, "x", [50, 0], True])
def test_bad_notch_is_refused_at_once(notch):
    # issue 12, item 2: notch=0 / -50 looped forever in notch_frequencies
    with time_limit(5), pytest.raises(ConfigError, match="notch"):
        Recipe(notch=notch)


def test_notch_harmonics_are_few_and_inside_the_band():
    # issue 12, item 2: every valid recipe's notch list is finite and below the band edge
    for notch in (50.0, 60.0, (50.0, 60.0), 3.5):
        r = Recipe(notch=notch, h_freq=90, l_freq=None)
        with time_limit(2):
            freqs = notch_frequencies(r, 1000.0, r.notch)
        assert freqs and max(freqs) < 90 and min(freqs) == min(np.atleast_1d(notch))
    with pytest.raises(ConfigError, match="notch=150 Hz"):  # above Nyquist (100 Hz)
        Recipe(notch=150)


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f in ("sfreq", "l_freq", "h_freq", "notch_width", "unit_scale", "clip",
                      "patch_seconds", "window_seconds", "stride_seconds", "flat_threshold")
     for v in (math.nan, math.inf, -math.inf, -1.0, 1e300)],
)  # fmt: skip
def test_every_numeric_recipe_field_is_validated(field, value):
    # issue 12, items 2, 12 and 16: no NaN, inf, negative or absurd value gets through
    with time_limit(5), pytest.raises(ConfigError, match=field):
        Recipe(**{field: value})


@pytest.mark.parametrize("unit_scale", [0, math.inf, math.nan, -1e-4, 1e-300])
def test_unit_scale_must_be_a_finite_positive_scale(unit_scale):
    # issue 12, item 12: unit_scale=inf masked everything, 0 divided by zero
    with pytest.raises(ConfigError, match="unit_scale"):
        Recipe(unit_scale=unit_scale)


@pytest.mark.parametrize("sfreq", [math.nan, math.inf, 1e9, 0, -200, 1.0])
def test_implausible_sampling_rates(sfreq, sine):
    # issue 12, item 16: sfreq NaN, inf or 1e9 (a 256 GiB MemoryError)
    with time_limit(5), pytest.raises(ConfigError, match="plausible sampling rate"):
        Recipe(sfreq=sfreq)
    with time_limit(5), pytest.raises(EEGReadError, match="plausible sampling rate"):
        neurofm.read_eeg(sine(10, 200, 20), sfreq=sfreq, ch_names=["Cz", "Pz"])


def test_implausible_rate_of_a_raw_not_read_by_read_eeg(sine):
    # issue 12, item 16: preprocess/tokenize on an mne Raw with an absurd rate
    import mne

    raw = mne.io.RawArray(sine(10, 200, 20), mne.create_info(["Cz", "Pz"], 1e6, "eeg"),
                          verbose="error")  # fmt: skip
    with time_limit(5), pytest.raises(SignalError, match="plausible sampling rate"):
        neurofm.preprocess(raw, Recipe(notch=None))


@pytest.mark.parametrize("sfreq", [100, 128, 160, 200, 250, 256, 500, 1000])
def test_low_pass_edge_over_the_whole_range(sfreq):
    # issue 12, item 14: h_freq >= 0.4 sfreq crashed in SciPy ("fs/2 must not be repeated")
    from scipy.signal import freqz

    nyq = sfreq / 2
    for h in np.linspace(0.05, 0.99, 20) * nyq:
        fir = design_fir(float(sfreq), None, float(h))
        w, resp = freqz(fir, worN=4096, fs=sfreq)
        gain = np.abs(resp)
        stop = h + min(max(0.25 * h, 2.0), nyq - h)  # MNE's transition, clipped to Nyquist
        assert abs(gain[np.argmin(np.abs(w - h / 2))] - 1) < 0.01  # passband kept
        assert gain[w >= min(stop, w[-1])].max() < 0.2  # stop band from the edge on
        Recipe(sfreq=sfreq, h_freq=h, l_freq=None, notch=None, patch_seconds=1, window_seconds=1)
    for h in (nyq, nyq + 1, 10 * nyq):
        with pytest.raises(ConfigError, match="below sfreq/2"):
            Recipe(sfreq=sfreq, h_freq=h)


@pytest.mark.parametrize("kw", [dict(sfreq=250, h_freq=100), dict(sfreq=100, h_freq=45)])
def test_issue_recipes_near_nyquist_run(kw):
    # issue 12, item 14: the two recipes of the report, end to end
    x = eeg(2, 256 * 30, 256, line=50.0)
    raw = neurofm.read_eeg(x, sfreq=256, ch_names=["Cz", "Pz"])
    y, stream = _run(raw, Recipe(**kw, window_seconds=10))
    assert y.shape == (2, 30 * kw["sfreq"]) and np.isfinite(y).all()


def test_filter_too_long_is_refused_with_the_fix():
    # issue 12, item 14: h_freq a hair below Nyquist asked for a 66-million-tap filter
    with time_limit(5), pytest.raises(ConfigError, match="keep h_freq further below Nyquist"):
        Recipe(h_freq=99.99999)
    with time_limit(5), pytest.raises(ConfigError, match="Raise l_freq"):
        Recipe(l_freq=1e-9)


@pytest.mark.parametrize("on_nan", ["raise", "mask"])
def test_inf_is_treated_like_nan(on_nan):
    # issue 12, item 9: one inf sample masked its whole channel as "flat"
    x = eeg(3, 200 * 60, 200, line=None)
    x[1, 200 * 30] = np.inf
    x[2, 200 * 40] = -1e300  # beyond float32: the same
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "C3", "C4"])
    recipe = Recipe(notch=None, on_nan=on_nan, window_seconds=60, reference="average")
    if on_nan == "raise":
        with pytest.raises(SignalError, match=r"non-finite .*\['C3', 'C4'\] from 30.00 s"):
            neurofm.tokenize(raw, recipe)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "flat" or any other warning
        tokens = neurofm.tokenize(raw, recipe)
    mask = tokens.mask[0].numpy()
    assert mask[0].all()  # the average reference did not spread the bad samples
    # a bad sample taints the patches within the 33 s FIR's reach, not the whole channel
    assert not mask[1, 30] and mask[1, :10].all() and mask[1, -10:].all()
    assert not mask[2, 40] and mask[2, :20].all()
    assert np.isfinite(tokens.x.numpy()).all()


def test_awkward_rate_ratio_is_approximated_with_a_warning():
    # found by fuzzing sampling rates: 99999.999 Hz -> 200 Hz asked for a 2e9-tap filter
    with pytest.warns(SignalWarning, match="ppm"):
        up, down = resample_ratio(99999.999, 200)
    assert max(up, down) <= 2**16 and abs(up / down * 99999.999 / 200 - 1) < 1e-6


def test_stream_refuses_what_is_not_a_recipe(sine):
    raw = neurofm.read_eeg(sine(10, 200, 20), sfreq=200, ch_names=["Cz", "Pz"])
    with pytest.raises(neurofm.utils.NeurofmError, match="recipe must be a neurofm.Recipe"):
        Stream(raw, {"sfreq": 200})
    with pytest.raises(neurofm.utils.NeurofmError, match="recipe must be a neurofm.Recipe"):
        neurofm.preprocess(raw, "eeg")
    out = neurofm.preprocess(raw, {"notch": None, "window_seconds": 5})  # a dict, as tokenize
    assert out.info["sfreq"] == 200
    with pytest.raises(ConfigError, match="notch"):
        neurofm.preprocess(raw, {"notch": 0})
    with pytest.raises(neurofm.utils.NeurofmError, match="chunk_seconds"):
        neurofm.preprocess(raw, Recipe(notch=None), chunk_seconds=0)
