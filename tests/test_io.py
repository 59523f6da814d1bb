"""read_eeg on every real file in ../shared/data/eeg, and on damaged input."""

import warnings

import numpy as np
import pytest
from conftest import EEG_DIR, shared

import neurofm
from neurofm.io.eeg import TruncatedFileWarning
from neurofm.utils import ChannelError, EEGReadError, NeurofmError, SignalError, UnitsError

SHORT = neurofm.Recipe(window_seconds=2.0)  # the shortest real files are 3 s long
COMPANION = (EEGReadError, "not a recording to open on its own")
# Every file under ../shared/data/eeg and what must happen to it.
EXPECTED = {
    "eegmmidb/S001R0?.edf": "tokens",
    "eegmat/Subject*_[12].edf": "tokens",
    "eegmat/subject-info.csv": (EEGReadError, "unknown EEG file type"),
    "chbmit/chb01_03_*Seizure.edf": "tokens",
    "eegmmidb/*.edf.event": COMPANION,
    "formats/BDF/multiple_annotation_chans.bdf": "tokens",
    "formats/BrainVision/Analyzer_nV_Export.vhdr": (SignalError, "shorter than one window"),
    "formats/BrainVision/test_NO.vhdr": (ChannelError, "cannot place them"),
    "formats/BrainVision/*.eeg": COMPANION,
    "formats/BrainVision/*.vmrk": COMPANION,
    "formats/CNT/scan41_short.cnt": (EEGReadError, "data_format='int16'"),
    "formats/EDF/SC4001EC-Hypnogram.edf": (EEGReadError, "holds no signal"),
    "formats/EDF/chtypes_edf.edf": "tokens",
    "formats/EDF/subsecond_starttime.edf": "tokens",
    "formats/EDF/test_edf_overlapping_annotations.edf": "tokens",
    "formats/EDF/test_reduced.edf": (ChannelError, "biosemi128"),
    "formats/EEGLAB/test_raw.set": (ChannelError, "cannot place them"),
    "formats/EEGLAB/test_raw_chanloc.set": "tokens",
    "formats/EEGLAB/*.fdt": COMPANION,
    "formats/NihonKohden/MB0400FU.EEG": "tokens",
    "formats/NihonKohden/MB0400FU.EDF": "tokens",
    "formats/NihonKohden/MB0400FU.[!EE]*": COMPANION,
    "formats/NihonKohden/MB0400FU.[0-9]*": (EEGReadError, "Nihon Kohden"),
    "formats/Persyst/*.lay": "tokens",
    "formats/Persyst/*.dat": COMPANION,
    "formats/antio/CA_208/test_CA_208.cnt": "tokens",
    "formats/antio/CA_208/test_CA_208.vhdr": "tokens",
    "formats/antio/andy_101/Andy_101-raw.cnt": (ChannelError, "cannot place them"),
    "formats/antio/andy_101/Andy_101-raw.vhdr": (ChannelError, "cannot place them"),
    "formats/antio/*/*.eeg": COMPANION,
    "formats/antio/*/*.vmrk": COMPANION,
    "formats/antio/*/*.evt": COMPANION,
    "formats/wfdb/chb06_04.edf.seizures": COMPANION,
}
ALL_FILES = sorted(p for p in EEG_DIR.rglob("*") if p.is_file()) if EEG_DIR.exists() else []


def _expected(path):
    rel = path.relative_to(EEG_DIR)
    for pattern, outcome in EXPECTED.items():
        if rel.match(pattern):
            return outcome
    return None


@pytest.mark.parametrize(
    "path", ALL_FILES or [None], ids=lambda p: p and str(p.relative_to(EEG_DIR))
)
def test_every_shared_eeg_file(path):
    if path is None:
        pytest.skip("../shared/data/eeg is absent")
    outcome = _expected(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokens = neurofm.tokenize(neurofm.read_eeg(path), SHORT)
    except NeurofmError as err:
        assert outcome is not None and outcome != "tokens", f"unexpected failure: {err}"
        kind, words = outcome
        assert isinstance(err, kind) and words in str(err), str(err)
        return
    assert outcome == "tokens", f"{path.name} loaded but was expected to fail: {outcome}"
    B, S, N, P = tokens.shape
    assert B >= 1 and S >= 1 and N == 2 and P == 200
    assert np.isfinite(tokens.x.numpy()).all() and tokens.mask.any()


def test_every_shared_file_has_an_expectation():
    if not ALL_FILES:
        pytest.skip("../shared/data/eeg is absent")
    assert [p.name for p in ALL_FILES if _expected(p) is None] == []


def test_cnt_format_option_passes_through():
    path = shared("eeg/formats/CNT/scan41_short.cnt")
    raw = neurofm.read_eeg(path, data_format="int16")
    assert raw.info["sfreq"] == 400 and len(raw.ch_names) > 100
    with pytest.raises(UnitsError, match="data_format"):
        neurofm.read_eeg(path, data_format="int32")  # the wrong width: amplitudes of volts


def test_biosemi_montage_option():
    raw = neurofm.read_eeg(shared("eeg/formats/EDF/test_reduced.edf"), montage="biosemi128")
    assert np.isfinite(raw.info["chs"][0]["loc"][:3]).all()
    tokens = neurofm.tokenize(raw, SHORT)
    # 'A1' here is a BioSemi cap label, not the ear electrode: no vocabulary id of its own
    assert tokens.names[0][0] == "A1" and tokens.space[0, 0].item() == 1
    assert np.isfinite(tokens.pos[0, 0].numpy()).all()


def test_read_existing_raw_is_not_modified():
    import mne

    raw = mne.io.read_raw_edf(shared("eeg/eegmmidb/S001R01.edf"), verbose="error")
    out = neurofm.read_eeg(raw)
    assert raw.ch_names[0] == "Fc5." and out.ch_names[0] == "FC5"


def test_array_input(sine):
    x = sine(10, 250, 20, n_channels=3)
    raw = neurofm.read_eeg(x, sfreq=250, ch_names=["Cz", "C3", "C4"])
    assert raw.ch_names == ["Cz", "C3", "C4"] and raw.info["sfreq"] == 250
    with pytest.raises(EEGReadError, match="transposed"):
        neurofm.read_eeg(x.T, sfreq=250, ch_names=["Cz", "C3", "C4"])
    with pytest.raises(EEGReadError, match="sfreq= and ch_names="):
        neurofm.read_eeg(x)


def test_microvolts_stored_as_volts(sine):
    x = sine(10, 200, 20, n_channels=3) * 1e6  # 50 "V": really microvolts
    with pytest.raises(UnitsError, match="units='uV'"):
        neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "C3", "C4"])
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "C3", "C4"], units="uV")
    assert np.isclose(raw.get_data().std(), 50e-6 / np.sqrt(2), rtol=0.01)
    with pytest.raises(NeurofmError, match="did you mean 'uV'"):
        neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "C3", "C4"], units="uv")


def test_units_scaling_on_lazy_file(write_edf):
    from neurofm.synthetic import eeg

    data = eeg(3, 256 * 20, 256, line=None) * 1e6  # microvolt numbers in a file that says V
    path = write_edf(["Fp1", "Fp2", "Cz"], data=data, unit="V", phys_range=3200)
    with pytest.raises(UnitsError, match="units='uV'"):
        neurofm.read_eeg(path)
    raw = neurofm.read_eeg(path, units="uV")  # lazy: scaled through the calibrations
    assert not raw.preload and 5e-6 < raw.get_data().std() < 1e-4


def test_volts_stored_as_microvolts(sine):
    with pytest.raises(UnitsError, match="units=1e6"):
        neurofm.read_eeg(sine(10, 200, 20, 3) * 1e-6, sfreq=200, ch_names=["Cz", "C3", "C4"])


def test_all_unknown_names(sine):
    with pytest.raises(ChannelError, match="rename="):
        neurofm.read_eeg(sine(10, 200, 20, 3), sfreq=200, ch_names=["ch1", "ch2", "ch3"])
    raw = neurofm.read_eeg(sine(10, 200, 20, 3), sfreq=200, ch_names=["ch1", "ch2", "ch3"],
                           rename={"ch1": "Fp1", "ch2": "Fp2"})  # fmt: skip
    assert raw.ch_names == ["Fp1", "Fp2", "ch3"]


def test_positions_for_a_caps_own_electrodes(sine, caplog):
    """Names outside 10-05 keep the UNK id and are placed where the caller says."""
    from neurofm.channels import positions

    names = ["Cz", "CB1", "CB2"]
    with caplog.at_level("WARNING", logger="neurofm"):
        raw = neurofm.read_eeg(sine(10, 200, 20, 3), sfreq=200, ch_names=names,
                               positions={"CB1": "I1", "CB2": (10.0, -20.0, 30.0)})  # fmt: skip
    assert "unknown" not in caplog.text  # placed on purpose: nothing to warn about
    tokens = neurofm.tokenize(raw, neurofm.Recipe(window_seconds=10))
    np.testing.assert_allclose(tokens.pos[0, 1:].numpy(), [positions(["I1"])[0], [10, -20, 30]],
                               atol=0.01)  # fmt: skip
    assert tokens.space[0, 1:].tolist() == [1, 1]  # UNK: no learned row borrowed
    for bad, match in (({"CB1": "Q9"}, "not a 10-05 electrode"), ({"CB1": (1, 2)}, r"\(x, y, z\)")):
        with pytest.raises(ChannelError, match=match):
            neurofm.read_eeg(sine(10, 200, 20, 3), sfreq=200, ch_names=names, positions=bad)


def test_truncated_edf_warns_and_keeps_what_is_there(write_edf):
    path = write_edf(["Fp1", "Fp2", "C3", "C4"], seconds=60)
    blob = path.read_bytes()
    path.write_bytes(blob[: 256 * 5 + (len(blob) - 256 * 5) // 2 + 100])
    with pytest.warns(TruncatedFileWarning, match="announces 60 records"):
        raw = neurofm.read_eeg(path)
    assert raw.times[-1] == pytest.approx(30, abs=0.01)
    path.write_bytes(blob[: 256 * 5])
    with pytest.raises(EEGReadError, match="truncated"):
        neurofm.read_eeg(path)


@pytest.mark.parametrize(("offset", "value"), [(236, b"abc     "), (252, b"99  ")])
def test_corrupt_edf_header(write_edf, offset, value):
    path = write_edf(["Fp1", "Fp2"], seconds=10)
    blob = bytearray(path.read_bytes())
    blob[offset : offset + len(value)] = value
    path.write_bytes(bytes(blob))
    with pytest.raises(EEGReadError, match="fix: the header may not match"):
        neurofm.read_eeg(path)


def test_missing_empty_and_unknown_files(tmp_path):
    (tmp_path / "rec01.edf").write_bytes(b"")
    with pytest.raises(EEGReadError, match="did you mean 'rec01.edf'"):
        neurofm.read_eeg(tmp_path / "rec1.edf")
    with pytest.raises(EEGReadError, match="empty"):
        neurofm.read_eeg(tmp_path / "rec01.edf")
    (tmp_path / "x.edff").write_text("x")
    with pytest.raises(EEGReadError, match="did you mean '.edf'"):
        neurofm.read_eeg(tmp_path / "x.edff")
    with pytest.raises(EEGReadError, match="cannot read EEG from a dict"):
        neurofm.read_eeg({})
