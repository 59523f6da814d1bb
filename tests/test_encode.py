"""neurofm.encode (issue 16): any input to embeddings through the model's recipe, pooling,
layers, event-locked windows (also in tokenize), bad input, and the `neurofm encode` verb.

Real data: the bundled eegmmidb sample S001R03 (64 ch, 160 Hz, 125 s, annotations T0/T1/T2)
and, where present, ../shared/data.
"""

from __future__ import annotations

import json
import socket
import warnings

import mne
import numpy as np
import pytest
import torch
import xarray as xr
from conftest import shared

import neurofm
from neurofm.cli import main, sample_path
from neurofm.encode import encode, regions_of, save_features, scalp_region
from neurofm.errors import (
    CheckpointError,
    EEGReadError,
    NeurofmError,
    NeurofmWarning,
    SignalError,
    SignalWarning,
)
from neurofm.models import create_model
from neurofm.synthetic import eeg
from neurofm.windows import plan_windows

TEN_TWENTY = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7",
              "P3", "Pz", "P4", "P8", "O1", "O2"]  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return neurofm.load_model("eeg-tiny.sample")


@pytest.fixture(scope="module")
def raw():
    return neurofm.read_eeg(sample_path())


@pytest.fixture(scope="module")
def short(raw):
    """The first 40 s: 10 windows of the model's 4 s."""
    return raw.copy().crop(0, 40, include_tmax=False)


def _cos(a, b) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# ---------------------------------------------------------------------- inputs
def test_raw_path_and_array_of_the_same_data_agree(model, raw):
    path = sample_path()
    plain = mne.io.read_raw_edf(path, preload=True, verbose="error")  # not from read_eeg
    by_path = encode(path, model)
    assert by_path.dims == ("window", "feature") and by_path.shape == (31, 100)
    by_raw = encode(plain, model)
    by_array = encode(plain.get_data(), model, ch_names=plain.ch_names, sfreq=160.0)
    for other in (by_raw, by_array):
        np.testing.assert_allclose(other.values, by_path.values, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(other["start"], np.arange(31) * 4.0)
    report = by_path.attrs["report"]
    assert report.startswith("resampled 160 -> 200 Hz; filtered 0.1-75 Hz, notch 60 Hz;")
    assert "64 channels: 64 renamed" in report and "31 windows of 4 s every 4 s" in report
    assert by_path.attrs["model"] == "eeg-tiny (given)" and by_path.attrs["layer"] == 1
    assert neurofm.Recipe.model_validate_json(by_path.attrs["recipe"]) == model.recipe


def test_offline_fresh_install_uses_the_shipped_checkpoint(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("NEUROFM_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("NEUROFM_OFFLINE", "1")
    out = encode(sample_path(), verbose=True, output="numpy")  # the default weights name
    assert out.shape == (31, 100) and out.dtype == np.float32 and np.isfinite(out).all()
    assert "eeg-tiny.sample: last block, pooling mean" in capsys.readouterr().out
    assert not (tmp_path / "empty").exists()  # nothing downloaded nor cached


def test_outputs_batches_and_dtype(model, short):
    ref = encode(short, model, batch_size=32)
    small = encode(short, model, batch_size=3, output="torch", progress=True)
    assert isinstance(small, torch.Tensor) and small.shape == (10, 100)
    np.testing.assert_allclose(small.numpy(), ref.values, rtol=1e-5, atol=1e-5)
    half = encode(short, model, dtype=torch.bfloat16, output="numpy")  # CPU autocast
    assert half.dtype == np.float32 and _cos(half, ref.values).min() > 0.99
    trained = model.train()
    encode(short, trained, output="numpy")
    assert trained.training  # its mode is restored afterwards
    model.eval()


# ---------------------------------------------------------------------- pooling
def test_pooling_shapes_and_coordinates(model, short):
    S, N, D = 64, 4, 100
    out = {p: encode(short, model, pooling=p) for p in ("mean", "cls", "channel", "region", "none")}
    assert out["mean"].shape == out["cls"].shape == (10, D)
    assert out["channel"].dims == ("window", "channel", "feature")
    assert out["channel"].shape == (10, S, D) and out["channel"]["channel"].values[8] == "C3"
    assert out["region"].dims == ("window", "region", "feature") and out["region"].shape[1] == 14
    assert out["none"].dims == ("window", "channel", "patch", "feature")
    assert out["none"].shape == (10, S, N, D)
    np.testing.assert_array_equal(out["none"]["patch"], [0.0, 1.0, 2.0, 3.0])
    assert out["none"]["real"].values.all() and np.isfinite(out["none"].values).all()
    assert np.isfinite(out["channel"]["x"]).all()  # MNI positions of the channels
    with torch.inference_mode():  # the model's own outputs on neurofm.tokenize
        own = model.eval()(neurofm.tokenize(short, model.recipe))
    np.testing.assert_allclose(out["mean"].values, own.pooled.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["none"].values, own.tokens.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["cls"].values, own.cls.numpy(), rtol=1e-5, atol=1e-5)
    assert _cos(out["cls"].values, out["mean"].values).mean() < 0.99  # not the same vector
    # a region of one channel is that channel's vector (Pz alone is parietal-midline)
    region = out["region"]
    assert region.sel(region="parietal-midline")["size"] == 1
    np.testing.assert_allclose(region.sel(region="parietal-midline").values,
                               out["channel"].sel(channel="Pz").values, rtol=1e-5, atol=1e-5)  # fmt: skip
    groups = regions_of(list(out["channel"]["channel"].values))
    assert groups["central-left"] == [0, 1, 2, 7, 8, 9, 14, 15, 16]  # FC5 FC3 FC1 C5 C3 C1 CP..
    assert sum(map(len, groups.values())) == S


def test_channel_pooling_keeps_left_right_differences(model):
    """A 6 Hz rhythm on the left channels only, or on the right only, over a mirror-
    symmetric background (each right channel carries its left partner's signal)."""
    sf, n = 200.0, 1600  # 8 s: two windows
    bg = eeg(len(TEN_TWENTY), n, sf, line=None, seed=1)
    idx = {name: i for i, name in enumerate(TEN_TWENTY)}
    for name in TEN_TWENTY:
        if name[-1].isdigit() and int(name[-1]) % 2:
            bg[idx[name[:-1] + str(int(name[-1]) + 1)]] = bg[idx[name]]
    rhythm = 40e-6 * np.sin(2 * np.pi * 6 * np.arange(n) / sf)
    left, right = bg.copy(), bg.copy()
    for name, i in idx.items():
        side = scalp_region(name).split("-")[1]
        if side == "left":
            left[i] += rhythm
        elif side == "right":
            right[i] += rhythm

    def run(x, pooling):
        return encode(x, model, ch_names=TEN_TWENTY, sfreq=sf, pooling=pooling)

    sym, a, b = run(bg, "channel"), run(left, "channel"), run(right, "channel")

    def dist(f, c1, g=None, c2=None):
        g, c2 = (f, c2) if g is None else (g, c2 or c1)
        return float(np.linalg.norm(f.sel(channel=c1) - g.sel(channel=c2), axis=-1).mean())

    # measured: C3-C4 6.6 symmetric, 13.7 left-only; C3(left) vs C3(right) 12.1, vs the
    # mirror channel C4(right) 5.7: the vector follows the signal's side
    assert dist(a, "C3", c2="C4") > 1.5 * dist(sym, "C3", c2="C4")
    assert dist(a, "C3", b) > 1.5 * dist(a, "C3", b, "C4")
    # mean pooling nearly erases the side (measured 1.3 between left and right, 8.1 for
    # adding the rhythm at all); the left and right regions keep it
    ma, mb, ms = run(left, "mean").values, run(right, "mean").values, run(bg, "mean").values
    assert np.linalg.norm(ma - mb, axis=-1).mean() < 0.3 * np.linalg.norm(ma - ms, axis=-1).mean()
    ra, rb = run(left, "region"), run(right, "region")
    gap = np.linalg.norm(ra.sel(region="central-left") - rb.sel(region="central-left"), axis=-1)
    assert gap.mean() > 3 * np.linalg.norm(ma - mb, axis=-1).mean()


def test_unknown_channels_are_encoded_by_position_and_said(model):
    names = [*TEN_TWENTY, "CB1"]  # a cap's own electrode, placed with positions=
    x = eeg(len(names), 1600, 200.0, line=None)
    f = encode(x, model, ch_names=names, sfreq=200.0, positions={"CB1": "Iz"}, pooling="region")
    assert "200 Hz as recorded" in f.attrs["report"]
    assert "; 20 channels: 1 unknown, encoded by position;" in f.attrs["report"]
    assert json.loads(f.attrs["regions"])["other"] == ["CB1"]


@pytest.mark.parametrize(
    ("name", "region"),
    [("C3", "central-left"), ("C4", "central-right"), ("Cz", "central-midline"),
     ("Fp1", "frontal-left"), ("AF8", "frontal-right"), ("FC5", "central-left"),
     ("FFC1h", "central-left"), ("CPP6h", "parietal-right"), ("T7", "temporal-left"),
     ("TP10", "temporal-right"), ("POz", "occipital-midline"), ("Iz", "occipital-midline"),
     ("O2", "occipital-right"), ("Fp1-F7", "frontal-left"), ("T8-P8", "temporal-right"),
     ("A1", "other"), ("M2", "other"), ("E12x", "other"), ("Nz", "other")],
)  # fmt: skip
def test_scalp_regions_by_name(name, region):
    assert scalp_region(name) == region


def test_fmri_pooling_by_network_and_its_refusal():
    from neurofm.io import read_parcels

    x = np.random.default_rng(0).standard_normal((120, 100)).cumsum(0)
    recipe = neurofm.FMRIRecipe(t_r=2.0, patch_trs=5, window_patches=4)
    net = create_model("fmri-tiny", recipe=recipe)
    series = read_parcels(x, "schaefer2018-100", t_r=2.0)  # read, not prepared
    f = encode(series, net, pooling="region")
    assert f.dims == ("window", "region", "feature") and f.shape == (6, 7, 64)
    assert list(f.region.values) == ["Cont", "Default", "DorsAttn", "Limbic", "SalVentAttn",
                                     "SomMot", "Vis"]  # fmt: skip
    prepared = neurofm.read_fmri(x, "schaefer2018-100", t_r=2.0, recipe=recipe)
    np.testing.assert_allclose(encode(prepared, net, pooling="region").values, f.values,
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    table = encode(x, net, t_r=2.0, atlas="schaefer2018-100", pooling="channel")
    assert table.dims == ("window", "parcel", "feature") and table.shape == (6, 100, 64)
    assert "100 parcels of schaefer2018-100" in table.attrs["report"]
    power = read_parcels(x[:, :10], t_r=2.0, coords=np.random.default_rng(1).normal(0, 40, (10, 3)),
                         labels=[f"roi{i}" for i in range(10)])  # fmt: skip
    with pytest.raises(NeurofmError, match="Schaefer-style names.*carry none.*pooling='channel'"):
        encode(power, net, pooling="region")


# ---------------------------------------------------------------------- layers
def test_layer_selection(model, short):
    default = encode(short, model, output="numpy")
    np.testing.assert_array_equal(encode(short, model, layer=-1, output="numpy"), default)
    np.testing.assert_array_equal(encode(short, model, layer=1, output="numpy"), default)
    first = encode(short, model, layer=0)
    assert first.attrs["layer"] == 0 and "block 0 of 2" in first.attrs["report"]
    assert np.abs(first.values - default).max() > 0.1
    assert _cos(first.values, default).mean() < 0.99
    np.testing.assert_array_equal(encode(short, model, layer=-2, output="numpy"), first.values)


# ---------------------------------------------------------------------- events
def test_tokenize_with_events_gives_one_window_per_event(model, raw):
    recipe = model.recipe
    ann = raw.annotations
    keep = np.isin(ann.description, ["T1", "T2"])
    tokens = neurofm.tokenize(raw, recipe, event_id=["T1", "T2"], tmin=0.0, tmax=4.0)
    assert tokens.shape == (15, 64, 4, 200) and keep.sum() == 15
    np.testing.assert_allclose(tokens.t[:, 0].numpy(), ann.onset[keep], atol=1e-4)
    np.testing.assert_allclose(tokens.t[0].numpy(), ann.onset[keep][0] + np.arange(4), atol=1e-4)
    # the same windows from an MNE events array and from onsets in seconds
    events, ids = mne.events_from_annotations(raw, event_id={"T1": 2, "T2": 3}, verbose="error")
    by_events = neurofm.tokenize(raw, recipe, events=events, event_id=ids, tmin=0, tmax=4)
    by_onsets = neurofm.tokenize(raw, recipe, events=ann.onset[keep], tmin=0, tmax=4)
    for other in (by_events, by_onsets):
        torch.testing.assert_close(other.x, tokens.x)
        torch.testing.assert_close(other.t, tokens.t)
    # cut from the recording prepared once: the regular windows at the same starts, and
    # neurofm.preprocess (the same filter, whole) at any start
    regular = neurofm.tokenize(raw, recipe)
    at = neurofm.tokenize(raw, recipe, events=[8.0, 0.0, 4.0], tmin=0, tmax=4)
    torch.testing.assert_close(at.x, regular.x[:3])
    plan = plan_windows(raw, recipe, events=[8.0, 0.0, 4.0], tmin=0, tmax=4)
    assert plan.event.tolist() == [1, 2, 0] and plan.seconds.tolist() == [0.0, 4.0, 8.0]
    whole = neurofm.preprocess(raw, recipe).get_data() / recipe.unit_scale
    first = round(ann.onset[keep][0] * 200)
    np.testing.assert_allclose(tokens.x[0].flatten(1).numpy(), whole[:, first : first + 800],
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_events_in_mne_samples_count_from_the_acquisition_start(model, raw):
    cropped = raw.copy().crop(10, 100)  # first_samp 1600: MNE's samples include it
    events, ids = mne.events_from_annotations(cropped, event_id={"T1": 2}, verbose="error")
    assert events[0, 0] >= cropped.first_samp
    plan = plan_windows(cropped, model.recipe, events=events, tmin=-0.5, tmax=3.5)
    expected = (events[:, 0] - cropped.first_samp) / 160.0
    np.testing.assert_allclose(plan.onset, expected)
    np.testing.assert_allclose(plan.seconds, expected - 0.5, atol=1e-9)
    assert plan.label == ["2"] * len(events)  # the code as text without event_id names


def test_event_edges_rounding_and_labels(model, raw):
    with pytest.warns(SignalWarning, match=r"1 of 15 events .*event 0 at 4.200 s"):
        plan = plan_windows(raw, model.recipe, event_id=["T1", "T2"], tmin=-5, tmax=-1)
    assert plan.n_windows == 14 and plan.dropped.tolist() == [0] and plan.event[0] == 1
    with pytest.warns(NeurofmWarning, match="4.5 patches .* each spans -0.5 to 4.5 s"):
        plan = plan_windows(raw, model.recipe, event_id="T1", tmin=-0.5, tmax=4.0)
    assert plan.recipe.window_seconds == 5.0 and set(plan.label) == {"T1"} and plan.n_windows == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole number of patches: no warning
        plan_windows(raw, model.recipe, event_id={"T2": 7}, tmin=-1, tmax=3)
    with pytest.raises(SignalError, match="no whole window"):
        plan_windows(raw, model.recipe, events=[200.0], tmin=0, tmax=4)
    with pytest.raises(NeurofmError, match="'t1', which no annotation .*did you mean 'T1'"):
        plan_windows(raw, model.recipe, event_id=["t1"])
    with pytest.raises(NeurofmError, match="tmin/tmax place windows around events"):
        plan_windows(raw, model.recipe, tmin=0, tmax=4)
    with pytest.raises(NeurofmError, match="shape .*MNE events array"):
        plan_windows(raw, model.recipe, events=np.zeros((3, 2)))


def test_epochs_match_the_recording_with_events(model, raw):
    events, ids = mne.events_from_annotations(raw, event_id={"T1": 2, "T2": 3}, verbose="error")
    epochs = mne.Epochs(raw, events, ids, tmin=0, tmax=4.0, baseline=None, preload=True,
                        verbose="error")  # fmt: skip
    by_epochs = encode(epochs, model)
    by_events = encode(raw, model, events=events, event_id=ids, tmin=0, tmax=4)
    assert by_epochs.shape == by_events.shape == (15, 100)
    for coord in ("event", "label", "onset", "start"):
        np.testing.assert_array_equal(by_epochs[coord], by_events[coord])
    assert list(by_epochs["label"].values[:3]) == ["T2", "T1", "T1"]
    # each epoch is filtered alone (a 33 s high-pass on 4 s): measured cosine 0.9915 at
    # worst (mean 0.998), against 0.43 between neighbouring 4 s windows
    cos = _cos(by_epochs.values, by_events.values)
    assert cos.min() > 0.98 and cos.mean() > 0.99
    assert "15 epochs, one window of 4 s each" in by_epochs.attrs["report"]
    tokens = neurofm.tokenize(epochs, model.recipe)  # tokenize takes Epochs too
    assert tokens.shape == (15, 64, 4, 200)
    np.testing.assert_allclose(tokens.t[:, 0].numpy(), by_events["start"].values, atol=1e-4)
    with pytest.raises(NeurofmError, match="already cut"):
        encode(epochs, model, tmin=0, tmax=2)


# ---------------------------------------------------------------------- bad input
def test_bad_input_each_with_its_fix(model, raw, tmp_path, monkeypatch):
    data = raw.get_data()
    names = raw.ch_names
    with pytest.raises(EEGReadError, match="63 ch_names for an array with 64 rows"):
        encode(data, model, ch_names=names[:63], sfreq=160.0)
    with pytest.raises(EEGReadError, match=r"is the array transposed"):
        encode(data[:3, :64].T.copy(), model, ch_names=names[:3], sfreq=160.0)
    with pytest.raises(NeurofmError, match="no sampling rate: pass sfreq="):
        encode(data, model, ch_names=names)
    with pytest.raises(NeurofmError, match="no channel names: pass ch_names="):
        encode(data, model, sfreq=160.0)
    with pytest.raises(NeurofmError, match="describe a NumPy array"):
        encode(raw, model, sfreq=160.0)
    with pytest.raises(SignalError, match=r"shorter than one window \(4 s\).*window_seconds"):
        encode(data[:, :480], model, ch_names=names, sfreq=160.0)  # 3 s
    fmri = create_model("fmri-tiny")
    with pytest.raises(NeurofmError, match="is EEG data but model .* is an fMRI model"):
        encode(raw, fmri)
    series = xr.DataArray(np.zeros((300, 4)), dims=("time", "parcel"), attrs={"t_r": 0.72})
    with pytest.raises(NeurofmError, match="is fMRI data but model 'eeg-tiny.sample' is an EEG"):
        encode(series, "eeg-tiny.sample")
    with pytest.raises(NeurofmError, match=r"layer=2 is out of range: this model has 2 blocks"):
        encode(raw, model, layer=2)
    with pytest.raises(NeurofmError, match=r"layer=-3 is out of range"):
        encode(raw, model, layer=-3)
    with pytest.raises(NeurofmError, match="layer must be an int"):
        encode(raw, model, layer=1.0)
    with pytest.raises(NeurofmError, match="invalid pooling 'chanel' .did you mean 'channel'"):
        encode(raw, model, pooling="chanel")
    with pytest.raises(NeurofmError, match="invalid output 'pandas'"):
        encode(raw, model, output="pandas")
    no_cls = create_model("eeg-tiny", cls_token=False)
    with pytest.raises(NeurofmError, match="pooling='cls' needs a .CLS. token"):
        encode(raw, no_cls, pooling="cls")


def test_absent_weights_never_give_random_features(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROFM_HOME", str(tmp_path))  # an empty cache, offline (conftest)
    with pytest.raises(CheckpointError) as err:
        encode(raw, "labram-base")
    text = str(err.value)
    assert "labram-base" in text and str(tmp_path / "models" / "labram-base") in text
    assert "never falls back to random weights" in text and "random_init=True" in text
    with pytest.raises(CheckpointError, match="(?s)names a model .*random_init=True"):
        encode(raw, "eeg-base")
    with pytest.raises(CheckpointError, match="no checkpoint at 'eeg-tiny.smaple'.*did you mean"):
        encode(raw, "eeg-tiny.smaple")
    # asked for explicitly: random weights of the registered size, said in the report
    crop = raw.copy().crop(0, 20, include_tmax=False)
    torch.manual_seed(0)
    rand = encode(crop, "eeg-tiny", random_init=True)
    assert rand.shape == (2, 100) and rand.attrs["model"] == "eeg-tiny (random weights)"
    assert encode(crop, "labram-base", random_init=True).shape == (2, 200)  # eeg-base
    with pytest.raises(NeurofmError, match="random_init=True builds a registered model"):
        encode(crop, str(tmp_path), random_init=True)


# ---------------------------------------------------------------------- real data
def test_real_recordings_from_shared(model):
    """EEGMAT (19 EEG with old 10-20 names, A2-A1 and ECG, 500 Hz) and a CHB-MIT cut
    (23 bipolar derivations, 256 Hz): the report says what the recipe did to each."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeurofmWarning)
        f = encode(shared("eeg/eegmat/Subject00_2.edf"), model, pooling="region")
        g = encode(shared("eeg/chbmit/chb01_03_Seizure.edf"), model, pooling="region")
    assert f.shape == (15, 14, 100) and np.isfinite(f.values).all()
    assert f.attrs["report"].startswith("resampled 500 -> 200 Hz; filtered 0.1-75 Hz")
    assert "20 channels: 20 renamed, 1 dropped (ECG ECG)" in f.attrs["report"]
    assert json.loads(f.attrs["regions"])["other"] == ["A2"]  # "EEG A2-A1": an ear, no region
    assert g.shape == (10, 10, 100) and "resampled 256 -> 200 Hz" in g.attrs["report"]
    assert json.loads(g.attrs["regions"])["temporal-left"] == ["T7-P7", "T7-FT9", "FT9-FT10"]


# ---------------------------------------------------------------------- CLI
def test_cli_encode_writes_netcdf_and_npy(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NEUROFM_HOME", str(tmp_path / "home"))
    out = tmp_path / "features.nc"
    argv = ["encode", str(sample_path()), "--pooling", "channel", "--out", str(out),
            "event_id=[T1,T2]", "tmin=0", "tmax=4"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "15 windows at events, 0 to 4 s" in printed and str(out) in printed
    f = xr.open_dataarray(out)
    assert f.dims == ("window", "channel", "feature") and f.shape == (15, 64, 100)
    assert list(f["label"].values[:2]) == ["T2", "T1"] and f.attrs["pooling"] == "channel"
    assert f["real"].values.all() and "64 renamed" in f.attrs["report"]
    f.close()
    npy = tmp_path / "f.npy"
    assert main(["encode", str(sample_path()), "--layer", "0", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (31, 100)
    assert main(["encode", str(sample_path()), "--pooling", "regoin"]) == 2
    assert "did you mean 'region'" in capsys.readouterr().err
    assert main(["encode", str(sample_path()), "--model", "labram-base",
                 "--out", str(tmp_path / "x.nc")]) == 2  # fmt: skip
    assert "error: " in capsys.readouterr().err and not (tmp_path / "x.nc").exists()
    with pytest.raises(NeurofmError, match=r"\.nc \(netCDF\) or \.npy"):
        save_features(f, tmp_path / "f.csv")
