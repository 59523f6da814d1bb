"""Dataset readers on fixtures written in each corpus's real layout (names, keys, syntax)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import shared

from neurofm.io.datasets import read_dataset
from neurofm.io.edf import write_edf
from neurofm.synthetic import eeg
from neurofm.utils import NeurofmError

CHB_CHANNELS = ("FP1-F7 F7-T7 T7-P7 P7-O1 FP1-F3 F3-C3 C3-P3 P3-O1 FP2-F4 F4-C4 C4-P4 P4-O2 "
                "FP2-F8 F8-T8 T8-P8 P8-O2 FZ-CZ CZ-PZ P7-T7 T7-FT9 FT9-FT10 FT10-T8 T8-P8").split()  # fmt: skip


def _edf(path: Path, names, seconds=20.0, sfreq=256):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_edf(path, eeg(len(names), int(seconds * sfreq), sfreq, line=None), sfreq, names)


def _wfdb(path: Path, marks, sfreq=256):
    """An MIT-format annotation file: SKIP to each sample, then '[' (32) or ']' (33)."""
    words, t = [], 0
    for code, seconds in marks:
        interval = int(seconds * sfreq) - t
        words += [59 << 10, (interval >> 16) & 0xFFFF, interval & 0xFFFF, code << 10]
        t += interval
    path.write_bytes(struct.pack(f"<{len(words) + 1}H", *words, 0))


# ---------------------------------------------------------------------- CHB-MIT
SUMMARY = """Data Sampling Rate: 256 Hz
*************************

Channels in EDF Files:
**********************
{channels}

File Name: chb01_01.edf
File Start Time: 11:42:54
File End Time: 12:42:54
Number of Seizures in File: 0

File Name: chb01_03.edf
File Start Time: 13:43:04
File End Time: 14:43:04
Number of Seizures in File: 1
Seizure Start Time: 2.5 seconds
Seizure End Time: 7 seconds

Channels changed:
*****************
Channel 1: FP1-F7
Channel 2: F7-T7

File Name: chb01_04.edf
File Start Time: 14:43:12
File End Time: 15:43:12
Number of Seizures in File: 2
Seizure 1 Start Time: 1 seconds
Seizure 1 End Time: 4 seconds
Seizure 2 Start Time: 12 seconds
Seizure 2 End Time: 15.5 seconds
"""


def test_chbmit(tmp_path, caplog):
    root = tmp_path / "chb-mit"
    channels = "\n".join(f"Channel {i}: {n}" for i, n in enumerate(CHB_CHANNELS, 1))
    (root / "chb01").mkdir(parents=True)
    (root / "chb01" / "chb01-summary.txt").write_text(SUMMARY.format(channels=channels))
    for name in ("chb01_01", "chb01_03"):
        _edf(root / "chb01" / f"{name}.edf", CHB_CHANNELS)
    _edf(root / "chb01" / "chb01_04.edf", CHB_CHANNELS[:2])
    _edf(root / "chb02" / "chb02_16.edf", CHB_CHANNELS)  # not in a summary: .seizures only
    _wfdb(root / "chb02" / "chb02_16.edf.seizures", [(32, 3.0), (33, 9.25)])
    recs = {r.id: r for r in read_dataset("chbmit", root)}
    assert set(recs) == {"chb01_01", "chb01_03", "chb01_04", "chb02_16"}
    assert recs["chb01_01"].events == []
    assert [(e.onset, e.duration) for e in recs["chb01_03"].events] == [(2.5, 4.5)]
    assert [(e.onset, e.onset + e.duration) for e in recs["chb01_04"].events] == [
        (1, 4),
        (12, 15.5),
    ]
    assert [(e.onset, e.onset + e.duration) for e in recs["chb02_16"].events] == [(3.0, 9.25)]
    assert recs["chb01_04"].labels["montage"] == ("FP1-F7", "F7-T7")  # montage change
    assert recs["chb01_03"].subject == "chb01" and recs["chb01_03"].session == "03"
    raw = recs["chb01_03"].load()
    seizure = [a for a in raw.annotations if a["description"] == "seizure"]
    assert len(seizure) == 1 and seizure[0]["onset"] == 2.5
    assert "Fp1-F7" in raw.ch_names
    _wfdb(root / "chb01" / "chb01_03.edf.seizures", [(32, 2.0), (33, 30.0)])
    with caplog.at_level("WARNING", logger="neurofm"):
        again = {r.id: r for r in read_dataset("chbmit", root)}
    assert "differ" in caplog.text and again["chb01_03"].events[0].onset == 2.5
    # a subject list picks subjects; a typo is named, not an empty corpus (issue 13)
    assert {r.subject for r in read_dataset("chbmit", root, subjects="chb02")} == {"chb02"}
    with pytest.raises(NeurofmError, match="invalid CHB-MIT subject 'chb2' .did you mean 'chb02'"):
        read_dataset("chbmit", root, subjects=["chb01", "chb2"])


def test_chbmit_real_wfdb_seizures_file():
    from neurofm.io.datasets.chbmit import _wfdb_seizures

    path = shared("eeg/formats/wfdb/chb06_04.edf.seizures")
    assert _wfdb_seizures(path, 256.0) == [(327.0, 347.0), (6211.0, 6231.0)]  # PhysioNet's summary


# ---------------------------------------------------------------------- TUH
CSV_HEADER = """# version = csv_v1.0.0
# bname = {bname}
# duration = 20.00 secs
# montage_file = nedc_eas_default_montage.txt
#
channel,start_time,stop_time,label,confidence
"""
TUH_REF = [
    f"EEG {n}-LE" for n in "FP1 FP2 F3 F4 C3 C4 P3 P4 O1 O2 F7 F8 T3 T4 T5 T6 FZ CZ PZ".split()
]


def test_tusz(tmp_path):
    root = tmp_path / "tusz"
    base = root / "edf" / "train" / "aaaaaaac" / "s001_2002" / "02_tcp_le"
    edf = _edf(base / "aaaaaaac_s001_t000.edf", TUH_REF, sfreq=250)
    bname = edf.stem
    (base / f"{bname}.csv_bi").write_text(CSV_HEADER.format(bname=bname) + (
        "TERM,0.0000,3.6868,bckg,1.0000\nTERM,3.6868,13.3055,seiz,1.0000\n"
        "TERM,13.3055,20.0000,bckg,1.0000\n"))  # fmt: skip
    (base / f"{bname}.csv").write_text(CSV_HEADER.format(bname=bname) + (
        "FP1-F7,3.6868,13.3055,cpsz,1.0000\nF7-T3,4.0000,12.0000,cpsz,1.0000\n"))  # fmt: skip
    _edf(root / "edf" / "dev" / "aaaaaaad" / "s002_2003" / "01_tcp_ar" / "aaaaaaad_s002_t001.edf",
         TUH_REF, sfreq=250)  # fmt: skip
    recs = {r.id: r for r in read_dataset("tusz", root)}
    rec = recs["aaaaaaac_s001_t000"]
    assert (rec.subject, rec.session, rec.split) == ("aaaaaaac", "s001", "train")
    assert rec.labels["montage"] == "02_tcp_le" and rec.labels["seizure"]
    assert [(e.onset, e.label) for e in rec.events] == [(3.6868, "seiz")]
    assert rec.events[0].duration == pytest.approx(9.6187)
    other = recs["aaaaaaad_s002_t001"]
    assert other.split == "dev" and other.events == [] and not other.labels["seizure"]
    per_channel = {r.id: r for r in read_dataset("tusz", root, per_channel=True)}
    assert [(e.channel, e.label) for e in per_channel[bname].events] == [("FP1-F7", "cpsz"),
                                                                          ("F7-T3", "cpsz")]  # fmt: skip
    raw = rec.load()
    assert raw.info["sfreq"] == 250 and "Fp1" in raw.ch_names


def test_tuab_and_tuev(tmp_path):
    root = tmp_path / "tuab"
    _edf(root / "edf" / "train" / "abnormal" / "01_tcp_ar" / "aaaaamye_s001_t000.edf", TUH_REF)
    _edf(root / "edf" / "eval" / "normal" / "01_tcp_ar" / "aaaaaasf_s003_t002.edf", TUH_REF)
    recs = {r.id: r for r in read_dataset("tuab", root)}
    assert recs["aaaaamye_s001_t000"].labels["abnormal"] == 1
    assert recs["aaaaaasf_s003_t002"].labels["abnormal"] == 0
    # issue 12, item 17: the recording's class labels its windows
    assert recs["aaaaamye_s001_t000"].label_at(0, 10, "bckg") == "abnormal"
    assert recs["aaaaaasf_s003_t002"].label_at(0, 10, "bckg") == "normal"
    assert (
        recs["aaaaaasf_s003_t002"].split == "eval" and recs["aaaaamye_s001_t000"].split == "train"
    )

    root = tmp_path / "tuev"
    edf = _edf(root / "edf" / "train" / "aaaaablw" / "aaaaablw_00000001.edf", TUH_REF)
    edf.with_suffix(".rec").write_text("0,1.0,2.0,6\n14,3.0,4.0,1\n2,5.5,6.5,4\n")
    rec = next(iter(read_dataset("tuev", root)))
    assert rec.subject == "aaaaablw"
    assert [(e.channel, e.onset, e.label) for e in rec.events] == [
        ("FP1-F7", 1.0, "bckg"), ("FP1-F3", 3.0, "spsw"), ("T3-T5", 5.5, "eyem")]  # fmt: skip


# ---------------------------------------------------------------------- affective
def test_seed_and_seed_iv(tmp_path):
    from scipy.io import savemat

    from neurofm.io.datasets.emotion import SEED_CHANNELS

    rng = np.random.default_rng(0)
    root = tmp_path / "SEED" / "Preprocessed_EEG"
    root.mkdir(parents=True)
    for date in ("20131027", "20131030", "20131107"):
        savemat(root / f"1_{date}.mat", {f"djc_eeg{k}": rng.normal(0, 20, (62, 600 + k))
                                         for k in range(1, 16)})  # fmt: skip
    savemat(
        root / "label.mat",
        {"label": np.array([[1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1]])},
    )
    recs = list(read_dataset("seed", tmp_path / "SEED"))
    assert len(recs) == 45
    first = next(r for r in recs if r.session == "2" and r.labels["trial"] == 3)
    assert first.labels["emotion"] == "negative" and first.subject == "1"
    assert first.label_at(0, 2, "bckg") == "negative"  # issue 12, item 17
    assert first.array().shape == (62, 603)
    raw = first.load()
    assert len(raw.ch_names) == 62 and raw.info["sfreq"] == 200
    _check_cerebellar(raw)

    root = tmp_path / "SEED_IV" / "eeg_raw_data" / "2"
    root.mkdir(parents=True)
    savemat(
        root / "3_20151101.mat", {f"cz_eeg{k}": rng.normal(0, 20, (62, 400)) for k in range(1, 25)}
    )
    recs = list(read_dataset("seed-iv", tmp_path / "SEED_IV"))
    assert len(recs) == 24 and recs[0].session == "2"
    assert [r.labels["emotion"] for r in recs[:3]] == ["fear", "sad", "happy"]
    assert len(SEED_CHANNELS) == 62


def _check_cerebellar(raw):
    """CB1/CB2 keep the unknown id (no row borrowed) and sit at I1/I2's template positions."""
    from neurofm.channels import UNK, positions
    from neurofm.preprocess import Recipe
    from neurofm.tokens import tokenize

    tokens = tokenize(raw.copy().crop(0, 2.9), Recipe(window_seconds=2.0))
    names = tokens.names[0]
    for cb, near in (("CB1", "I1"), ("CB2", "I2")):
        i = names.index(cb)
        assert int(tokens.space[0, i]) == UNK
        np.testing.assert_allclose(tokens.pos[0, i].numpy(), positions([near])[0], atol=0.01)
    assert np.isfinite(tokens.pos.numpy()).all()


def test_seed_v_raw_cnt(tmp_path, caplog):
    """SEED-V's EEG_raw/{subject}_{session}_{date}.cnt (Neuroscan), 62 EEG + M1 M2 VEO HEO.

    A value planted on Cz during each clip (100 uV x clip number) must sit exactly inside
    that clip's event after reading: the ReadMe's seconds land on the right samples.
    """
    from neuroscan import write_cnt

    from neurofm.io.datasets.emotion import SEED_CHANNELS, SEED_V_SESSIONS

    sfreq = 10  # the real files are 1000 Hz; the layout and times are what is tested
    names = (
        SEED_CHANNELS[:32]
        + ["M1"]
        + SEED_CHANNELS[32:41]
        + ["M2"]
        + SEED_CHANNELS[41:]
        + ["VEO", "HEO"]
    )
    x = eeg(len(names), 3370 * sfreq, sfreq, line=None)
    cz = names.index("CZ")
    starts, ends, _ = SEED_V_SESSIONS[1]
    x[cz] = np.random.default_rng(0).normal(0, 2e-6, x.shape[1])
    for k, (a, b) in enumerate(zip(starts, ends, strict=True), 1):
        x[cz, a * sfreq : b * sfreq] += k * 100e-6
    root = tmp_path / "SEED-V" / "EEG_raw"
    write_cnt(root / "1_1_20180804.cnt", x, sfreq, names, dtype="int16")
    write_cnt(root / "12_3_20180517.cnt", x[:, : 3100 * sfreq], sfreq, names, dtype="int16")
    (root / "notes.cnt").write_bytes(b"not a session")  # not {subject}_{session}_{date}: ignored

    recs = {r.id: r for r in read_dataset("seed-v", tmp_path / "SEED-V")}
    assert set(recs) == {"1_1_20180804", "12_3_20180517"}
    s1, s3 = recs["1_1_20180804"], recs["12_3_20180517"]
    assert (s1.subject, s1.session, s3.subject, s3.session) == ("1", "1", "12", "3")
    assert [e.label for e in s1.events[:5]] == ["happy", "fear", "neutral", "sad", "disgust"]
    assert [(e.onset, e.duration) for e in s3.events[:2]] == [(30.0, 291.0), (353.0, 65.0)]
    assert s1.label_at(40, 50) == "happy" and s1.label_at(110, 120, "rest") == "rest"

    assert (
        next(iter(read_dataset("seed-v", root, data_format="int16"))).reader["data_format"]
        == "int16"
    )
    raw = s1.load(preload=True)
    # 62 EEG + the mastoids; Neuroscan's VEO/HEO are recognised as EOG and dropped
    assert len(raw.ch_names) == 64 and {"M1", "M2", "CB1", "CB2"} <= set(raw.ch_names)
    assert set(raw.get_channel_types()) == {"eeg"}
    data = raw.get_data(picks="Cz")[0]
    for k, a in enumerate(raw.annotations, 1):
        i0, i1 = round(a["onset"] * sfreq), round((a["onset"] + a["duration"]) * sfreq)
        inside, before = data[i0:i1].mean(), data[i0 - 5 : i0].mean()
        assert abs(inside - k * 100e-6) < 10e-6 and abs(before) < 10e-6, (k, inside, before)
        assert abs(data[i1:i1 + 5].mean()) < 10e-6  # fmt: skip
    _check_cerebellar(raw)
    with caplog.at_level("WARNING", logger="neurofm"):
        s3.load()  # session 3's last clip ends at 3066 s: inside this 3100 s file
        assert "end after the recording" not in caplog.text
        recs = list(read_dataset("seed-v", tmp_path / "SEED-V"))
        write_cnt(root / "12_3_20180517.cnt", x[:, : 2900 * sfreq], sfreq, names, dtype="int16")
        next(r for r in recs if r.subject == "12").load()
    assert (
        "1 of 15 events end after the recording (2900.0 s), first disgust at 2888.0 s"
        in caplog.text
    )


def test_deap_and_its_pickle(tmp_path):
    import pickle

    from scipy.io import savemat

    rng = np.random.default_rng(0)
    data = rng.normal(0, 10, (3, 40, 128 * 8))
    labels = np.array([[7.1, 2.0, 5.0, 6.0], [3.0, 8.5, 4.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    mat_root = tmp_path / "deap" / "data_preprocessed_matlab"
    mat_root.mkdir(parents=True)
    savemat(mat_root / "s01.mat", {"data": data, "labels": labels})
    recs = list(read_dataset("deap", tmp_path / "deap"))
    assert len(recs) == 3 and recs[0].labels["high_valence"] == 1
    assert recs[1].labels["arousal"] == 8.5 and recs[1].labels["high_valence"] == 0
    assert recs[0].array().shape == (32, 1024)
    assert recs[0].load().info["sfreq"] == 128

    py_root = tmp_path / "deap_py" / "data_preprocessed_python"
    py_root.mkdir(parents=True)
    with open(py_root / "s02.dat", "wb") as fh:
        pickle.dump({"data": data, "labels": labels}, fh)
    with pytest.raises(NeurofmError, match="allow_pickle=True"):
        list(read_dataset("deap", tmp_path / "deap_py"))
    assert len(list(read_dataset("deap", tmp_path / "deap_py", allow_pickle=True))) == 3


def test_dreamer(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    electrodes = "AF3 F7 F3 FC5 T7 P7 O1 O2 P8 T8 FC6 F4 F8 AF4".split()

    def cells(arrays):
        out = np.empty((len(arrays), 1), dtype=object)
        for i, a in enumerate(arrays):
            out[i, 0] = a
        return out

    subjects = np.empty((1, 2), dtype=object)
    for s in range(2):
        subjects[0, s] = {
            "Age": "22", "Gender": "male",
            "EEG": {"baseline": cells([4000 + rng.normal(0, 10, (7808, 14)) for _ in range(3)]),
                    "stimuli": cells([4000 + rng.normal(0, 10, (1280 + 128 * k, 14)) for k in range(3)])},
            "ScoreValence": np.array([[4], [2], [5]]), "ScoreArousal": np.array([[3], [3], [1]]),
            "ScoreDominance": np.array([[2], [4], [4]]),
        }  # fmt: skip
    savemat(tmp_path / "DREAMER.mat", {"DREAMER": {
        "Data": subjects, "EEG_SamplingRate": 128, "ECG_SamplingRate": 256,
        "EEG_Electrodes": np.array(electrodes, dtype=object)}})  # fmt: skip
    recs = list(read_dataset("dreamer", tmp_path))
    assert len(recs) == 6 and recs[1].labels["valence"] == 2 and recs[4].subject == "S02"
    assert recs[2].array().shape == (14, 1536)
    raw = recs[2].load()
    assert raw.ch_names[:2] == ["AF3", "F7"] and raw.info["sfreq"] == 128


# ---------------------------------------------------------------------- PhysioNet
def test_eegmmidb(tmp_path):
    from importlib.resources import files

    (tmp_path / "S001").mkdir()
    shutil.copy(files("neurofm") / "sample_data" / "S001R03.edf", tmp_path / "S001" / "S001R03.edf")
    rec = next(iter(read_dataset("eegmmidb", tmp_path)))
    assert rec.subject == "S001" and rec.labels["run"] == 3
    labels = {e.label for e in rec.events}
    assert labels == {"rest", "left_fist", "right_fist"}
    raw = rec.load()
    assert set(raw.annotations.description) == labels  # T0/T1/T2 replaced, not duplicated
    assert list(read_dataset("eegmmidb", tmp_path, runs=[4])) == []
    with pytest.raises(NeurofmError, match="invalid eegmmidb run 15"):
        list(read_dataset("eegmmidb", tmp_path, runs=[3, 15]))


def test_sleep_edf(tmp_path):
    hyp = shared("eeg/formats/EDF/SC4001EC-Hypnogram.edf")
    shutil.copy(hyp, tmp_path / hyp.name)
    _edf(tmp_path / "SC4001E0-PSG.edf", ["EEG Fpz-Cz", "EEG Pz-Oz"], seconds=60, sfreq=100)
    _edf(tmp_path / "SC4002E0-PSG.edf", ["EEG Fpz-Cz", "EEG Pz-Oz"], seconds=10, sfreq=100)
    recs = list(read_dataset("sleep-edf", tmp_path))  # SC4002 has no hypnogram: skipped
    assert len(recs) == 1
    rec = recs[0]
    assert (rec.subject, rec.session) == ("SC00", "1")
    stages = {e.label for e in rec.events}
    assert {"W", "N1", "N2", "N3", "R"} <= stages and not any(s.startswith("Sleep") for s in stages)
    assert rec.events[0].onset == 0.0 and rec.events[1].onset == rec.events[0].duration


# ---------------------------------------------------------------------- manifest
def test_manifest(tmp_path):
    rng = np.random.default_rng(0)
    _edf(tmp_path / "data" / "a.edf", ["Fp1", "Fp2", "Cz"])
    np.save(tmp_path / "data" / "b.npy", rng.normal(0, 20e-6, (3, 2560)))
    np.savetxt(tmp_path / "data" / "c.txt", rng.normal(0, 20e-6, (2560, 2)))  # samples x channels
    (tmp_path / "manifest.csv").write_text(
        "path,subject,session,label,onset,duration,split,sfreq,ch_names\n"
        "data/a.edf,p1,1,patient,,,train,,\n"
        "data/a.edf,p1,1,seizure,3.5,2.0,train,,\n"
        "data/b.npy,p2,1,control,,,test,256,Fp1;Fp2;Cz\n"
        "data/c.txt,p3,,control,,,test,256,C3 C4\n"
    )
    recs = {r.id: r for r in read_dataset("manifest", tmp_path / "manifest.csv")}
    assert recs["a"].labels["label"] == "patient" and recs["a"].events[0].onset == 3.5
    assert recs["a"].split == "train" and recs["b"].split == "test"
    assert recs["b"].load().ch_names == ["Fp1", "Fp2", "Cz"]
    assert recs["c"].array().shape == (2, 2560)
    (tmp_path / "bad.csv").write_text("path,subjet\ndata/a.edf,p1\n")
    with pytest.raises(NeurofmError, match="did you mean 'subject'"):
        read_dataset("manifest", tmp_path / "bad.csv")
    (tmp_path / "bare.csv").write_text("path\ndata/b.npy\n")
    with pytest.raises(NeurofmError, match="sfreq and ch_names"):
        read_dataset("manifest", tmp_path / "bare.csv")


def test_unknown_dataset_and_wrong_folders(tmp_path):
    with pytest.raises(NeurofmError, match="did you mean 'chbmit'"):
        read_dataset("chb-mit", tmp_path)
    with pytest.raises(NeurofmError, match="is this the CHB-MIT folder"):
        list(read_dataset("chbmit", tmp_path))
    with pytest.raises(NeurofmError, match="does not exist"):
        read_dataset("tusz", tmp_path / "nope")


def test_manifest_positions_labels_and_bad_rows(tmp_path):
    # issue 12, items 17 and 18: the recording's label and electrode places
    from neurofm.errors import ConfigError
    from neurofm.io.datasets.manifest import parse_positions

    np.save(tmp_path / "a.npy", np.zeros((1, 2560)))
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "a.npy", np.zeros((1, 2560)))
    head = "path,subject,label,onset,duration,sfreq,ch_names,positions\n"
    good = head + ('a.npy,p1,patient,,,256,D1,"D1=-30, -10, 20; D2 = Cz"\n'
                   "sub/a.npy,p2,,,,256,D1,\n")  # fmt: skip
    (tmp_path / "m.csv").write_text(good)
    recs = read_dataset("manifest", tmp_path / "m.csv")
    assert [r.id for r in recs] == ["a", "sub/a"]  # one file name in two folders
    assert recs[0].reader == {"positions": {"D1": (-30.0, -10.0, 20.0), "D2": "Cz"}}
    assert recs[0].label == "patient" and recs[0].label_at(0, 10, "bckg") == "patient"
    assert recs[1].label is None and recs[1].label_at(0, 10, "bckg") == "bckg"
    assert parse_positions("") == {}
    bad_rows = {
        "a.npy,p1,x,-3,1,256,D1,\n": "line 2: onset '-3' is not a finite number >= 0",
        "a.npy,p1,x,,,0,D1,\n": "line 2: sfreq '0' is not a finite number > 0",
        "a.npy,p1,x,,,256,D1,D1=1 2\n": "line 2: positions: 'D1=1 2' is not NAME=TARGET",
        "a.npy,p1,x,,,256,D1,\na.npy,p9,,,,,,\n": "line 3: subject 'p9' contradicts 'p1'",
        "a.npy,p1,x,,,256,D1,\na.npy,,y,,,,,\n": "line 3: label 'y' contradicts 'x'",
        "nope.edf,p1,,,,,,\n": "line 2: 'nope.edf' is not a file",
        ",p1,,,,,,\n": "line 2: no path is not a file",
    }
    for rows, message in bad_rows.items():
        (tmp_path / "bad.csv").write_text(head + rows)
        with pytest.raises(NeurofmError, match=message):
            read_dataset("manifest", tmp_path / "bad.csv")
    (tmp_path / "bin.csv").write_bytes(b"path\n\xff\xfe\x00garbage")
    with pytest.raises(NeurofmError, match="not a readable CSV"):
        read_dataset("manifest", tmp_path / "bin.csv")
    # reader options: the reader's own, read_eeg's (applied to every recording), or a typo
    with pytest.raises(ConfigError, match="'positons' .did you mean 'positions'"):
        read_dataset("manifest", tmp_path / "m.csv", positons={"D1": "Cz"})
    recs = list(read_dataset("manifest", tmp_path / "m.csv", positions={"D2": "Pz", "D3": "Oz"}))
    # the row is more specific: its D2 wins, the config's D3 is added
    assert recs[0].reader["positions"] == {"D1": (-30.0, -10.0, 20.0), "D2": "Cz", "D3": "Oz"}
    assert recs[1].reader["positions"] == {"D2": "Pz", "D3": "Oz"}


def test_a_manifest_rows_units_win_over_the_configs(tmp_path):
    np.save(tmp_path / "a.npy", np.full((1, 2560), 20.0))  # microvolts
    np.save(tmp_path / "b.npy", np.full((1, 2560), 20e-6))  # volts
    (tmp_path / "m.csv").write_text("path,sfreq,ch_names,units\na.npy,256,Cz,uV\nb.npy,256,Cz,\n")
    a, b = read_dataset("manifest", tmp_path / "m.csv", units="V", check_units=False)
    assert a.units == "uV" and "units" not in a.reader and b.reader["units"] == "V"
    assert a.load().get_data()[0, 0] == pytest.approx(20e-6)
    assert b.load().get_data()[0, 0] == pytest.approx(20e-6)


# ---------------------------------------------------------------------- EEGMAT
EEGMAT_CHANNELS = [f"EEG {n}" for n in "Fp1 Fp2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 Fz Cz "
                   "Pz".split()] + ["EEG A2-A1", "ECG ECG"]  # fmt: skip
EEGMAT_INFO = """Subject,Age,Gender,Recording year,Number of subtractions,Count quality
Subject00,21,F,2011,9.7,0
Subject01,18,F,2011,29.35,1
"""


def _eegmat(root: Path, subjects=(0, 1), seconds=(12.0, 8.0)) -> Path:
    for s in subjects:
        for number, length in zip((1, 2), seconds, strict=True):
            _edf(root / f"Subject{s:02d}_{number}.edf", EEGMAT_CHANNELS, seconds=length, sfreq=500)
    (root / "subject-info.csv").write_text(EEGMAT_INFO)
    return root


def _check_eegmat_channels(raw):
    """The 19 scalp electrodes, canonical; no 'A2' from the ear-to-ear channel, no ECG."""
    assert raw.ch_names == ["Fp1", "Fp2", "F3", "F4", "F7", "F8", "T7", "T8", "C3", "C4", "P7",
                            "P8", "P3", "P4", "O1", "O2", "Fz", "Cz", "Pz"]  # fmt: skip


def test_eegmat(tmp_path, caplog):
    root = _eegmat(tmp_path / "eegmat")
    recs = read_dataset("eegmat", root)
    assert [(r.id, r.subject, r.session, r.label) for r in recs] == [
        ("Subject00_1", "Subject00", "1", "rest"), ("Subject00_2", "Subject00", "2", "arithmetic"),
        ("Subject01_1", "Subject01", "1", "rest"), ("Subject01_2", "Subject01", "2", "arithmetic"),
    ]  # fmt: skip
    assert recs[3].labels == {"task": "arithmetic", "age": 18, "gender": "F",
                              "recording_year": 2011, "subtractions": 29.35, "count_quality": 1}  # fmt: skip
    assert recs[0].label_at(0, 4, "bckg") == "rest"
    raw = recs[1].load()
    _check_eegmat_channels(raw)
    assert raw.info["sfreq"] == 500
    # subjects by name or number; a typo is named
    assert {r.subject for r in read_dataset("eegmat", root, subjects=[1])} == {"Subject01"}
    assert len(read_dataset("eegmat", root, subjects="Subject00")) == 2
    with pytest.raises(NeurofmError, match="invalid EEGMAT subject 'Subject1' .did you mean"):
        read_dataset("eegmat", root, subjects=["Subject1"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NeurofmError, match="is this the EEGMAT folder"):
        read_dataset("eegmat", tmp_path / "empty")
    (root / "subject-info.csv").unlink()
    with caplog.at_level("WARNING", logger="neurofm"):
        assert read_dataset("eegmat", root)[0].labels == {"task": "rest"}
    assert "no subject-info.csv" in caplog.text


def test_eegmat_real_files():
    root = shared("eeg/eegmat")
    recs = read_dataset("eegmat", root)
    assert len(recs) == 40 and len({r.subject for r in recs}) == 20
    assert [r.label for r in recs[:2]] == ["rest", "arithmetic"]
    assert recs[0].labels["count_quality"] == 0 and recs[2].labels["count_quality"] == 1
    raw = recs[1].load()  # Subject00_2: mental arithmetic, 62 s at 500 Hz
    _check_eegmat_channels(raw)
    assert raw.info["sfreq"] == 500 and 60 <= raw.times[-1] <= 63


# ---------------------------------------------------------------------- folder
def _annotations_only(path: Path) -> Path:
    from neurofm.io.edf import header_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header_bytes(["EDF Annotations"], 1, 0.0, samples_per_record=60) + b"\0" * 120)
    return path


def _tree(root: Path) -> Path:
    """Recordings in several formats with their companions, hidden files and others."""
    _edf(root / "site1" / "sub-01_ses-a.edf", ["Fp1", "Fp2", "Cz"], seconds=10)
    _edf(root / "site1" / "sub-02_ses-b.EDF", ["Fp1", "Fp2", "Cz"], seconds=10)
    _annotations_only(root / "site1" / "sub-02-Hypnogram.edf")
    files = {
        "site2/rec.vhdr": "", "site2/rec.vmrk": "", "site2/rec.eeg": "",  # BrainVision
        "site2/nk.EEG": "", "site2/nk.PNT": "", "site2/nk.21E": "",  # Nihon Kohden alone
        "site2/p.lay": "", "site2/p.dat": "", "site2/curry.dat": "",  # Persyst; a Curry .dat
        "site2/raw.set": "", "site2/raw.fdt": "", "site2/x.edf.event": "", "notes.txt": "",
        "site2/y.edf.seizures": "", ".hidden/h.edf": "", "site1/._sub-01_ses-a.edf": "",
        "egi.mff/signal1.bin": "", "egi.mff/info.xml": "",
    }  # fmt: skip
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_folder_lists_recordings_not_their_parts(tmp_path, caplog):
    root = _tree(tmp_path / "corpus")
    with caplog.at_level("WARNING", logger="neurofm"):
        recs = read_dataset("folder", root)
    assert [r.id for r in recs] == [
        "egi.mff", "site1/sub-01_ses-a.edf", "site1/sub-02_ses-b.EDF", "site2/curry.dat",
        "site2/nk.EEG", "site2/p.lay", "site2/raw.set", "site2/rec.vhdr",
    ]  # fmt: skip
    assert "1 file(s) holding annotations only" in caplog.text
    assert "site1/sub-02-Hypnogram.edf" in caplog.text
    assert recs[1].dataset == "folder" and recs[1].subject == "sub-01_ses-a"
    assert recs[1].label is None and recs[1].path == root / "site1" / "sub-01_ses-a.edf"
    assert recs[1].load().ch_names == ["Fp1", "Fp2", "Cz"]
    # patterns: a '/' matches the relative path, otherwise the name; case does not matter
    recs = read_dataset("folder", root, include="*.edf", exclude=["site1/*-02*"],
                        subject=r"sub-(?P<subject>\d+)_ses-(?P<session>\w+)", label="healthy")  # fmt: skip
    assert [(r.id, r.subject, r.session, r.label) for r in recs] == [
        ("site1/sub-01_ses-a.edf", "01", "a", "healthy")]  # fmt: skip
    assert recs[0].labels == {"label": "healthy"} and recs[0].label_at(0, 4, "bckg") == "healthy"
    recs = read_dataset("folder", root, include=["site1/**/*.EDF"], subject=r"sub-(\d+)|nomatch")
    assert [r.subject for r in recs] == ["01", "02"]
    recs = read_dataset("folder", root, include="*.edf", subject="nomatch")
    assert [r.subject for r in recs] == ["sub-01_ses-a", "sub-02_ses-b"]  # no match: the stem
    # bad options are named, with the fix
    with pytest.raises(NeurofmError, match="no EEG recordings under .* matching"):
        read_dataset("folder", root, include="*.gdf")
    with pytest.raises(NeurofmError, match="is not a regular expression"):
        read_dataset("folder", root, subject="sub-(")
    with pytest.raises(NeurofmError, match="is not a folder: dataset 'folder' reads"):
        read_dataset("folder", root / "notes.txt")
    with pytest.raises(NeurofmError, match="'inclde' .did you mean 'include'"):
        read_dataset("folder", root, inclde="*.edf")


def test_folder_with_known_datasets_inside_and_file_options(tmp_path, caplog):
    root = tmp_path / "corpus"
    _eegmat(root / "eegmat")
    _edf(root / "other" / "a.edf", ["Fp1", "Cz"], seconds=10)
    (root / "other" / "a.gdf").write_bytes(b"")  # an export of a.edf, say: a twin
    with caplog.at_level("WARNING", logger="neurofm"):
        recs = read_dataset("folder", root, readers={"eegmat": "eegmat"},
                            file_options={"other/a.*": {"units": "uV"},
                                          "*.EDF": {"exclude": ["Cz", "EEG Cz"]}})  # fmt: skip
    assert "likely one recording twice (a.edf / a.gdf)" in caplog.text
    assert [(r.dataset, r.id, r.label) for r in recs] == [
        ("eegmat", "Subject00_1", "rest"), ("eegmat", "Subject00_2", "arithmetic"),
        ("eegmat", "Subject01_1", "rest"), ("eegmat", "Subject01_2", "arithmetic"),
        ("folder", "other/a.edf", None), ("folder", "other/a.gdf", None),
    ]  # fmt: skip
    # per-file options merge (later patterns win) and apply to a known reader's files too
    assert recs[4].reader == {"units": "uV", "exclude": ["Cz", "EEG Cz"]}
    assert recs[0].reader == {"exclude": ["EEG A2-A1", "Cz", "EEG Cz"]}
    assert recs[5].reader == {"units": "uV"}
    assert recs[4].load(check_units=False, units="V").ch_names == ["Fp1"]
    assert "Cz" not in recs[0].load().ch_names and "A2" not in recs[0].load().ch_names
    _check_eegmat_channels(read_dataset("folder", root, readers={"eegmat": "eegmat"})[0].load())
    # without the reader, the EEGMAT files are plain files (and need their own rules)
    assert {r.dataset for r in read_dataset("folder", root)} == {"folder"}
    for options, words in (({"readers": {"eegmat": "eegmt"}}, "did you mean 'eegmat'"),
                           ({"readers": {"nope": "eegmat"}}, "'nope' is not a folder inside"),
                           ({"file_options": {"*.cnt": {"data_fromat": "int16"}}},
                            "'data_fromat' is not a read_eeg option .did you mean 'data_format'"),
                           ({"include": [3]}, "pattern must be a string")):  # fmt: skip
        with pytest.raises(NeurofmError, match=words):
            read_dataset("folder", root, **options)


def test_folder_lists_the_shared_eeg_corpus():
    """The shipped pretraining corpus: eegmat and eegmmidb by their readers, the format
    files that are recordings, no chbmit, no hypnogram, no exported twins."""
    from neurofm.config import load_config
    from neurofm.data import CorpusConfig

    root = shared("eeg")
    config = load_config(Path(__file__).parents[1] / "configs/preprocess/shared_eeg.yaml",
                         CorpusConfig)  # fmt: skip
    recs = read_dataset(config.dataset, root, **config.reader)
    datasets = [r.dataset for r in recs]
    assert datasets.count("eegmat") == 40 and datasets.count("eegmmidb") == 4
    loose = {r.path.relative_to(root).as_posix() for r in recs if r.dataset == "folder"}
    assert not any(p.startswith("chbmit/") for p in loose)
    assert "formats/EDF/SC4001EC-Hypnogram.edf" not in loose
    assert {"formats/NihonKohden/MB0400FU.EEG", "formats/antio/CA_208/test_CA_208.cnt",
            "formats/EEGLAB/test_raw.set", "formats/BrainVision/test_NO.vhdr"} <= loose  # fmt: skip
    assert not any(p.endswith((".EDF", ".vmrk", ".fdt", ".dat", ".event")) for p in loose)
    assert not any(p.startswith("formats/antio/") and p.endswith(".vhdr") for p in loose)
    assert len(recs) == len({r.id for r in recs})
