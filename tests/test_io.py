"""read_eeg on every real file in ../shared/data/eeg, and on damaged input."""

import math
import struct
import warnings

import numpy as np
import pytest
from conftest import EEG_DIR, shared

import neurofm
from neurofm.errors import ChannelWarning, FileFormatWarning, NeurofmWarning
from neurofm.io.edf import header_bytes
from neurofm.io.eeg import TruncatedFileWarning
from neurofm.synthetic import eeg
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
    "formats/BrainVision/test_NO.vhdr": (SignalError, "shorter than one 1 s patch too"),
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
    "formats/antio/andy_101/Andy_101-raw.cnt": (SignalError, "shorter than one window"),
    "formats/antio/andy_101/Andy_101-raw.vhdr": (SignalError, "shorter than one window"),
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
    # its A1..A9 are sampled at 1..256 Hz among 512 Hz channels: those below a quarter of
    # 512 Hz (A1..A7) are dropped and named (item 5); A8 and A9 (128, 256 Hz) are EEG, kept
    with pytest.warns(FileFormatWarning, match=r"'A1' \(1 Hz\), 'A2' \(2 Hz\)"):
        raw = neurofm.read_eeg(shared("eeg/formats/EDF/test_reduced.edf"), montage="biosemi128")
    assert "A1" not in raw.ch_names and "A7" not in raw.ch_names and raw.info["sfreq"] == 512
    assert {"A8", "A9"} <= set(raw.ch_names)
    assert np.isfinite(raw.info["chs"][0]["loc"][:3]).all()
    tokens = neurofm.tokenize(raw, SHORT)
    # 'A8' here is a BioSemi cap label, not the 10-05 electrode: no vocabulary id of its own
    assert tokens.names[0][0] == "A8" and tokens.space[0, 0].item() == 1
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
    # issue 16: the file reads (to look at it), with the fix in a warning; tokenize refuses
    with pytest.warns(ChannelWarning, match="rename="):
        raw = neurofm.read_eeg(sine(10, 200, 20, 3), sfreq=200, ch_names=["ch1", "ch2", "ch3"])
    with pytest.raises(ChannelError, match="cannot place them. Fix: .*rename="):
        neurofm.tokenize(raw, neurofm.Recipe(window_seconds=2.0))
    raw = neurofm.read_eeg(sine(10, 200, 20, 3), sfreq=200, ch_names=["ch1", "ch2", "ch3"],
                           rename={"ch1": "Fp1", "ch2": "Fp2"})  # fmt: skip
    assert raw.ch_names == ["Fp1", "Fp2", "ch3"]


def test_positions_for_a_caps_own_electrodes(sine):
    """Names outside 10-05 keep the UNK id and are placed where the caller says."""
    from neurofm.channels import positions

    names = ["Cz", "CB1", "CB2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeurofmWarning)  # placed on purpose: nothing to warn about
        raw = neurofm.read_eeg(sine(10, 200, 20, 3), sfreq=200, ch_names=names,
                               positions={"CB1": "I1", "CB2": (10.0, -20.0, 30.0)})  # fmt: skip
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


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [(236, b"abc     ", r"number of data records \(bytes 236-244\) is 'abc'"),
     (252, b"99  ", r"says 768 bytes, but 99 signals .* need 25600"),
     (256 + 2 * (16 + 80 + 8), b"3x", r"channel 'Fp1': the header's physical min is '3x200'")],
)  # fmt: skip
def test_corrupt_edf_header(write_edf, offset, value, match):
    path = write_edf(["Fp1", "Fp2"], seconds=10)
    blob = bytearray(path.read_bytes())
    blob[offset : offset + len(value)] = value
    path.write_bytes(bytes(blob))
    with pytest.raises(EEGReadError, match=match):
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


# --------------------------------------------------------------------- issue 12 hardening
def _edf(tmp_path, labels=("Fp1", "Fp2", "Cz"), sfreq=256, seconds=20, name="bad.edf", **fields):
    """An EDF with any header fields (valid or not), holding EEG-like samples."""
    spr = fields.pop("samples_per_record", sfreq)
    spr = list(spr) if isinstance(spr, (list, tuple)) else [spr] * len(labels)
    digital = [np.round(eeg(1, max(n, 1) * seconds, max(n, 1), line=None, seed=i)[0] / 3200e-6
                        * 32767) for i, n in enumerate(spr)]  # fmt: skip
    records = b"".join(
        b"".join(d[r * n : (r + 1) * n].astype("<i2").tobytes() for d, n in zip(digital, spr))
        for r in range(seconds)
    )
    fields.setdefault("duration", 1)
    head = header_bytes(labels, seconds, fields.pop("duration"), samples_per_record=spr, **fields)
    path = tmp_path / name
    path.write_bytes(head + records)
    return path


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(duration=0), r"(?s)record duration \(bytes 244-252\) is 0 s.*fix: write the"),
        (dict(duration=-1), r"record duration .* is -1 s"),
        (dict(physical_min=[-3200, 100, -3200], physical_max=[3200, 100, 3200]),
         r"(?s)'Fp2'.*physical minimum == physical maximum \(100 uV\).*exclude=\['Fp2'\]"),
        (dict(digital_min=[32767, -32768, -32768], digital_max=[-32768, 32767, 32767]),
         r"channel 'Fp1'.*digital minimum \(32767\) is above .*polarity would be inverted"),
        (dict(samples_per_record=[256, 0, 256]), r"channel 'Fp2'.*samples per record is 0"),
    ],
)  # fmt: skip
def test_impossible_edf_headers_are_refused(tmp_path, fields, match):
    # issue 12, item 5: these were read as if valid (rate halved, 3 nV signal, inverted)
    with pytest.raises(EEGReadError, match=match):
        neurofm.read_eeg(_edf(tmp_path, **fields))


def test_digital_min_equal_max_names_the_header_not_millivolts(tmp_path):
    # issue 12, item 16: digital min == max was blamed on millivolts by the units check
    path = _edf(tmp_path, digital_min=[0, -32768, -32768], digital_max=[0, 32767, 32767])
    with pytest.raises(EEGReadError, match=r"channel 'Fp1'.*digital minimum \(0\) equals") as e:
        neurofm.read_eeg(path)
    assert "volts stored" not in str(e.value) and "units=" not in str(e.value)


def test_a_faulty_channel_can_be_skipped_with_exclude(tmp_path):
    # issue 12, item 5: the fix the message names works
    path = _edf(tmp_path, physical_min=[-3200, 100, -3200], physical_max=[3200, 100, 3200])
    raw = neurofm.read_eeg(path, exclude=["Fp2"])
    assert raw.ch_names == ["Fp1", "Cz"]


def test_inverted_physical_range_is_legal_polarity(tmp_path):
    # issue 12, item 5: physical min > max is the spec's way to invert polarity: read as such
    normal = neurofm.read_eeg(_edf(tmp_path, name="a.edf")).get_data()
    flipped = _edf(tmp_path, name="b.edf", physical_min=3200, physical_max=-3200)
    np.testing.assert_allclose(neurofm.read_eeg(flipped).get_data(), -normal, atol=0.2e-6)


def test_slow_channel_with_an_eeg_name_is_dropped(tmp_path):
    # issue 12, item 5: a 1 Hz 'Cz' among 256 Hz channels was upsampled and kept as EEG
    path = _edf(tmp_path, labels=("Fp1", "Fp2", "Cz", "SpO2"), samples_per_record=[256, 256, 1, 1])
    with pytest.warns(FileFormatWarning, match=r"sampled far slower .*: 'Cz' \(1 Hz\)\. "):
        raw = neurofm.read_eeg(path)
    assert raw.ch_names == ["Fp1", "Fp2"] and raw.info["sfreq"] == 256
    # EEG at another plausible rate (200 among 256 Hz) is EEG: kept, resampled by the reader
    path = _edf(tmp_path, labels=("Fp1", "Fp2", "Cz"), samples_per_record=[256, 256, 200],
                name="mixed.edf")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", FileFormatWarning)
        assert neurofm.read_eeg(path).ch_names == ["Fp1", "Fp2", "Cz"]


def test_reader_warnings_are_named(tmp_path):
    # issue 12, item 5: verbose="error" hid MNE's own warnings about the file
    path = _edf(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[168:176] = b"99.99.99"  # an impossible start date
    path.write_bytes(bytes(blob))
    with pytest.warns(FileFormatWarning, match=r"bad.edf: .*measurement date"):
        neurofm.read_eeg(path)
    unknown = _edf(tmp_path, name="open.edf")
    blob = bytearray(unknown.read_bytes())
    blob[236:244] = b"-1      "  # EDF+ while recording: count unknown
    unknown.write_bytes(bytes(blob))
    with pytest.warns(FileFormatWarning, match="reading the 20 complete records") as record:
        raw = neurofm.read_eeg(unknown)
    assert raw.n_times == 20 * 256
    assert not [w for w in record if "does not match" in str(w.message)]  # said once


def test_truncated_file_warning_is_a_named_file_format_warning():
    assert issubclass(TruncatedFileWarning, FileFormatWarning)


def test_thousand_times_too_small_is_refused(sine):
    # issue 12, item 8: 2e-8 V (millivolt numbers labelled microvolts) passed the check
    x = sine(10, 200, 20, n_channels=3) * 1e-3  # std 3.5e-8 V
    names = ["Cz", "C3", "C4"]
    with pytest.raises(UnitsError, match=r"between 5e-07 and 0.01 V.*units=1e3"):
        neurofm.read_eeg(x, sfreq=200, ch_names=names)
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=names, units=1e3)  # the fix it names
    assert np.isclose(raw.get_data().std(), 50e-6 / np.sqrt(2), rtol=0.01)


def test_units_check_is_robust_to_a_few_odd_channels(sine):
    # issue 12, item 8: the median over channels decides, not a dead or wild channel
    x = sine(10, 200, 20, n_channels=5)
    x[0] *= 1e-4  # a dead channel
    x[1] *= 1e3  # a wild one
    neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "C3", "C4", "Pz", "Fz"])


@pytest.mark.parametrize("units", [0, -1e-6, math.inf, math.nan, 1e-300, True])
def test_units_must_be_a_finite_positive_scale(units, sine):
    # issue 12, item 12: units=0 zeroed everything
    with pytest.raises(NeurofmError, match="units"):
        neurofm.read_eeg(sine(10, 200, 20), sfreq=200, ch_names=["Cz", "Pz"], units=units)


def _write_gdf(path, volts, sfreq, labels, phys=3200.0):
    """A minimal GDF 1.25 file: int16 samples in 1 s records, no events."""
    ns, n = volts.shape
    spr, n_rec = int(sfreq), n // int(sfreq)
    head = bytearray(256)
    head[0:8], head[8:11], head[168:184] = b"GDF 1.25", b"X X", b"2000010112000000"
    struct.pack_into("<q", head, 184, 256 * (ns + 1))
    struct.pack_into("<qIII", head, 236, n_rec, 1, 1, ns)  # records, duration 1/1 s, signals

    def text(values, width):
        return b"".join(v.encode().ljust(width) for v in values)

    signals = b"".join([
        text(labels, 16), text(["electrode"] * ns, 80), text(["uV"] * ns, 8),
        struct.pack(f"<{ns}d", *[-phys] * ns), struct.pack(f"<{ns}d", *[phys] * ns),
        struct.pack(f"<{ns}q", *[-32768] * ns), struct.pack(f"<{ns}q", *[32767] * ns),
        text([""] * ns, 80), struct.pack(f"<{ns}i", *[spr] * ns),
        struct.pack(f"<{ns}i", *[3] * ns), bytes(32 * ns),  # type 3: int16
    ])  # fmt: skip
    digital = np.round((volts * 1e6 + phys) / (2 * phys) * 65535 - 32768)
    digital = np.clip(digital, -32768, 32767).astype("<i2")[:, : n_rec * spr]
    body = digital.reshape(ns, n_rec, spr).transpose(1, 0, 2).tobytes()
    path.write_bytes(bytes(head) + signals + body + bytes([1, 0, 0, 0]) + bytes(4))
    return path


def test_gdf_reads(tmp_path):
    # issue 12, item 13: read_raw_gdf() got an unexpected keyword argument 'infer_types'
    x = eeg(3, 256 * 20, 256, line=None)
    path = _write_gdf(tmp_path / "rec.gdf", x, 256, ["Fp1", "Cz", "O2"])
    raw = neurofm.read_eeg(path)
    assert raw.ch_names == ["Fp1", "Cz", "O2"] and raw.info["sfreq"] == 256
    np.testing.assert_allclose(raw.get_data(), x, atol=3200e-6 / 32767)  # one quantum
    assert neurofm.tokenize(raw, SHORT).shape[1:] == (3, 2, 200)


def test_reader_options_are_checked_against_the_reader(tmp_path, write_edf):
    # issue 12, item 13: options go only where the reader takes them, typos are named
    gdf = _write_gdf(tmp_path / "rec.gdf", eeg(2, 256 * 10, 256, line=None), 256, ["Cz", "Pz"])
    with pytest.raises(EEGReadError, match="has no option 'infer_types'.*exclude"):
        neurofm.read_eeg(gdf, infer_types=True)
    edf = write_edf(["Fp1", "Fp2"], seconds=10)
    with pytest.raises(EEGReadError, match="has no option 'exlude' \\(did you mean 'exclude'"):
        neurofm.read_eeg(edf, exlude=["Fp2"])
    assert neurofm.read_eeg(edf, exclude=["Fp2"]).ch_names == ["Fp1"]


def test_every_shared_format_file_reads_or_gives_a_read_error():
    # issue 12, item 13: every format file in ../shared/data either reads or is refused clearly
    files = [p for p in ALL_FILES if "formats" in p.parts]
    if not files:
        pytest.skip("../shared/data/eeg/formats is absent")
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                neurofm.read_eeg(path, check_units=False)
        except (EEGReadError, ChannelError):
            pass  # a neurofm error naming the file's problem (ChannelError: names, not bytes)


def test_channel_hint_offers_positions_and_goes_stale_never(sine):
    # issue 12, item 18: the hint named rename= and montage=, not positions=, and stayed after them
    x = sine(10, 200, 20, 3)
    # issue 16: reading works (to look at the file); tokenizing refuses, with the same fix
    with pytest.warns(ChannelWarning, match=r"positions=\{'ch1': \[x, y, z\]\}"):
        raw = neurofm.read_eeg(x, sfreq=200, ch_names=["ch1", "ch2", "ch3"])
    assert raw.ch_names == ["ch1", "ch2", "ch3"]
    with pytest.raises(ChannelError, match=r"cannot place them. Fix: .*positions=\{'ch1'"):
        neurofm.tokenize(raw, neurofm.Recipe(window_seconds=2.0))
    raw, report = neurofm.read_eeg(x, sfreq=200, ch_names=["ch1", "ch2", "ch3"], return_report=True,
                                   positions={"ch1": "Cz", "ch2": [0, 10, 80], "ch3": [5, 5, 5]})  # fmt: skip
    assert report.hint == "" and "hint" not in str(report)
    with pytest.warns(NeurofmWarning, match=r"no position: \['ch2', 'ch3'\]"):
        _, report = neurofm.read_eeg(x, sfreq=200, ch_names=["ch1", "ch2", "ch3"],
                                     positions={"ch1": "Cz"}, return_report=True)  # fmt: skip
    assert "['ch2', 'ch3']" in report.hint and "ch1" not in report.hint


def test_single_channel_placed_by_positions(sine):
    # issue 12, item 18: a one-channel recording no longer has to pretend to be a scalp electrode
    x = sine(10, 200, 20, 1)
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=["probe"], positions={"probe": [10, -20, 30]})
    tokens = neurofm.tokenize(raw, neurofm.Recipe(notch=None, window_seconds=10))
    assert tokens.names[0] == ("probe",) and tokens.space[0, 0].item() == 1  # UNK
    np.testing.assert_allclose(tokens.pos[0, 0].numpy(), [10, -20, 30], atol=0.01)


def test_intracranial_contacts_placed_by_positions(sine):
    # issue 12, item 18: sEEG contacts (their own type), placed through positions= as YAML gives them
    x = sine(10, 200, 20, 3)
    names = ["LA1", "LA2", "T1"]  # 'T1' is a depth contact here, not the scalp electrode
    yaml_positions = {"LA1": [-20, -5, -15], "LA2": [-25, -5, -15], "T1": [30, 0, -30]}
    with pytest.raises(ChannelError, match="add 'seeg' to include"):
        neurofm.read_eeg(x, sfreq=200, ch_names=names, ch_types="seeg", positions=yaml_positions)
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=names, ch_types="seeg", include=("seeg",),
                           positions=yaml_positions)  # fmt: skip
    tokens = neurofm.tokenize(raw, neurofm.Recipe(notch=None, window_seconds=10))
    assert tokens.names[0] == tuple(names) and (tokens.space[0] == 1).all()
    np.testing.assert_allclose(tokens.pos[0].numpy(), list(yaml_positions.values()), atol=0.01)


def test_positions_that_place_nothing_are_named(sine):
    # issue 12, item 18: a typo in positions= is not silently ignored; bad values are refused
    x = sine(10, 200, 20, 3)
    kw = dict(sfreq=200, ch_names=["Cz", "CB1", "CB2"])
    with pytest.warns(NeurofmWarning, match=r"positions\['CB3'\] names no channel.*did you mean"):
        neurofm.read_eeg(x, **kw, positions={"CB1": "I1", "CB2": "I2", "CB3": "Oz"})
    with pytest.warns(NeurofmWarning, match=r"'Cz' is a 10-05 name and keeps its template"):
        neurofm.read_eeg(x, **kw, positions={"Cz": [0, 0, 0], "CB1": "I1", "CB2": "I2"})
    with pytest.raises(ChannelError, match=r"\(x, y, z\)"):
        neurofm.read_eeg(x, **kw, positions={"CB1": {"x": 1}})
    with pytest.raises(NeurofmError, match="positions must be a mapping"):
        neurofm.read_eeg(x, **kw, positions=[("CB1", "I1")])
    with pytest.raises(ChannelError, match="not both"):
        neurofm.read_eeg(x, **kw, positions={"CB1": "I1"}, montage="biosemi64")


@pytest.mark.parametrize("bad", [[["a", "b"], [1]], "text", {"a": 1}])
def test_arrays_that_are_not_numbers(bad):
    with pytest.raises(EEGReadError):
        neurofm.read_eeg(bad, sfreq=200, ch_names=["Cz"])


def test_array_channel_names_are_checked(sine):
    x = sine(10, 200, 20, 2)
    with pytest.raises(EEGReadError, match="repeated"):
        neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "Cz"])
    with pytest.raises(EEGReadError, match="not names"):
        neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", 3])
    with pytest.raises(EEGReadError, match="ch_types='brain'"):
        neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "Pz"], ch_types="brain")


def test_record_count_other_than_the_file_holds_is_said(tmp_path):
    # issue 12, item 5: MNE's own "does not match" warning was hidden; now said once, named
    path = _edf(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[236:244] = b"15      "  # the file holds 20
    path.write_bytes(bytes(blob))
    with pytest.warns(FileFormatWarning, match="holds 20 complete records .*more than the 15"):
        assert neurofm.read_eeg(path).n_times == 20 * 256


def test_eeg_in_a_unit_the_reader_does_not_know(tmp_path):
    # issue 12, item 5: MNE reads an unknown unit ('nV') as volts: named, and units= fixes it
    path = _edf(tmp_path, unit="nV", physical_min=-3200000, physical_max=3200000)
    with pytest.warns(FileFormatWarning, match=r"unit the reader does not know.*'Fp1' \('nV'\)"):
        with pytest.raises(UnitsError, match="units='nV'"):
            neurofm.read_eeg(path)
    with pytest.warns(FileFormatWarning):
        raw = neurofm.read_eeg(path, units="nV")
    assert 5e-6 < raw.get_data().std() < 1e-4
