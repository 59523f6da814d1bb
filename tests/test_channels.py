import numpy as np
import pytest
from conftest import shared

import neurofm
from neurofm.channels import (
    BIPOLAR_PAIRS,
    PAD,
    UNK,
    _build_table,
    eeg_vocabulary,
    electrode_name,
    map_channels,
    positions,
)

# The 64 labels of PhysioNet eegmmidb, as its EDF headers spell them.
EEGMMIDB = ("Fc5. Fc3. Fc1. Fcz. Fc2. Fc4. Fc6. C5.. C3.. C1.. Cz.. C2.. C4.. C6.. Cp5. Cp3. "
            "Cp1. Cpz. Cp2. Cp4. Cp6. Fp1. Fpz. Fp2. Af7. Af3. Afz. Af4. Af8. F7.. F5.. F3.. "
            "F1.. Fz.. F2.. F4.. F6.. F8.. Ft7. Ft8. T7.. T8.. T9.. T10. Tp7. Tp8. P7.. P5.. "
            "P3.. P1.. Pz.. P2.. P4.. P6.. P8.. Po7. Po3. Poz. Po4. Po8. O1.. Oz.. O2.. Iz..").split()  # fmt: skip
TUH_AR = [
    f"EEG {n}-REF"
    for n in "FP1 FP2 F3 F4 C3 C4 P3 P4 O1 O2 F7 F8 T3 T4 T5 T6 A1 A2 FZ CZ PZ T1 T2".split()
]
TUH_EXTRA = [
    "EEG EKG1-REF",
    "EEG ROC-REF",
    "EEG LOC-REF",
    "PHOTIC-REF",
    "IBI",
    "BURSTS",
    "SUPPR",
    "EMG-REF",
]
CHB_MIT = ["FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4",
           "F4-C4", "C4-P4", "P4-O2", "FP2-F8", "F8-T8", "T8-P8", "P8-O2", "FZ-CZ", "CZ-PZ",
           "P7-T7", "T7-FT9", "FT9-FT10", "FT10-T8", "T8-P8"]  # fmt: skip


def test_vocabulary_table_matches_mne_template():
    vocab = eeg_vocabulary()
    assert vocab.names[:2] == ("<pad>", "<unk>") and (PAD, UNK) == (0, 1)
    assert _build_table().splitlines() == _table_text().splitlines()
    # ids are part of every checkpoint: pin a few
    assert [vocab.id(n) for n in ("Fp1", "Cz", "Fp1-F7")] == [
        2,
        vocab.names.index("Cz"),
        vocab.names.index("Fp1-F7"),
    ]
    assert vocab.id("nonsense") == UNK and "T3" not in vocab  # aliases have no id of their own
    assert len(set(vocab.names)) == len(vocab)


def _table_text():
    from importlib import resources

    return resources.files("neurofm").joinpath("resources/eeg_vocabulary.tsv").read_text()


def test_positions_are_mni_mm():
    cz, fp1, o1, t7 = positions(["Cz", "Fp1", "O1", "T7"])
    assert 80 < cz[2] < 110 and abs(cz[0]) < 5  # vertex, on the midline
    assert fp1[1] > 60 and o1[1] < -80  # front and back
    assert t7[0] < -70  # left
    pair = positions(["Fp1-F7"])[0]
    np.testing.assert_allclose(pair, (positions(["Fp1"])[0] + positions(["F7"])[0]) / 2, atol=0.01)


def test_all_64_eegmmidb_names_map_with_positions():
    report = map_channels(EEGMMIDB)
    names = [c.name for c in report.kept]
    assert len(names) == 64 and not report.unknown and not report.dropped
    assert names[:4] == ["FC5", "FC3", "FC1", "FCz"] and "Iz" in names and "T10" in names
    assert np.isfinite(positions(names)).all()
    assert all(eeg_vocabulary().id(n) > UNK for n in names)


def test_eegmmidb_file_channels():
    raw, report = neurofm.read_eeg(shared("eeg/eegmmidb/S001R01.edf"), return_report=True)
    assert len(raw.ch_names) == 64 and not report.unknown
    assert raw.ch_names == [c.name for c in map_channels(EEGMMIDB).kept]
    montage = raw.get_montage()
    assert montage is not None and len(montage.ch_names) == 64


def test_tuh_referential_names():
    report = map_channels(TUH_AR + TUH_EXTRA)
    kept = [c.name for c in report.kept]
    assert kept == ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8",
                    "T7", "T8", "P7", "P8", "A1", "A2", "Fz", "Cz", "Pz", "T1", "T2"]  # fmt: skip
    assert report.references == {"REF": 23}
    assert set(report.dropped) == set(TUH_EXTRA)
    assert "ecg" in report.dropped["EEG EKG1-REF"] and "eog" in report.dropped["EEG ROC-REF"]
    assert report.renamed["EEG T3-REF"] == "T7" and report.renamed["EEG T5-REF"] == "P7"


def test_tuh_edf_file(write_edf):
    raw, report = neurofm.read_eeg(write_edf(TUH_AR + TUH_EXTRA), return_report=True)
    assert raw.ch_names[:3] == ["Fp1", "Fp2", "F3"] and len(raw.ch_names) == 23
    assert len(report.dropped) == len(TUH_EXTRA)
    # kept on request, with its type
    raw2 = neurofm.read_eeg(
        write_edf(TUH_AR + TUH_EXTRA, name="b.edf"), include=("eeg", "ecg", "eog")
    )
    assert "ecg" in raw2.get_channel_types() and "eog" in raw2.get_channel_types()


def test_chb_mit_bipolar_edf(write_edf):
    raw, report = neurofm.read_eeg(write_edf(CHB_MIT + ["-", "VNS"]), return_report=True)
    assert raw.ch_names[:4] == ["Fp1-F7", "F7-T7", "T7-P7", "P7-O1"]
    assert len(raw.ch_names) == 22  # 23 minus the duplicate T8-P8
    assert "duplicate" in report.dropped["T8-P8-1"]
    assert "placeholder" in report.dropped["-"] and "misc" in report.dropped["VNS"]
    assert set(report.bipolar) == set(raw.ch_names)
    vocab = eeg_vocabulary()
    assert all(vocab.id(n) > UNK for n in raw.ch_names)  # every CHB-MIT pair has an id
    tokens = neurofm.tokenize(raw, neurofm.Recipe(notch=None))
    assert np.isfinite(tokens.pos.numpy()).all()


def test_tcp_pairs_canonicalise():
    tcp = ["EEG FP1-REF--EEG F7-REF"]  # the long TUH form is not a name we can know: unknown, kept
    assert map_channels(tcp).unknown == tcp
    report = map_channels(["FP1-F7", "F7-T3", "T3-T5", "T5-O1", "A1-T3", "T4-A2", "C3-CZ"])
    assert [c.name for c in report.kept] == [
        "Fp1-F7",
        "F7-T7",
        "T7-P7",
        "P7-O1",
        "A1-T7",
        "T8-A2",
        "C3-Cz",
    ]
    assert all(p in eeg_vocabulary() for p in BIPOLAR_PAIRS)


def test_ear_referenced_montage_is_referential():
    report = map_channels(["Fp1-A1", "F3-A1", "C3-A1", "Fp2-A2", "F4-A2"])
    assert [c.name for c in report.kept] == ["Fp1", "F3", "C3", "Fp2", "F4"]
    assert report.references == {"A1": 3, "A2": 2}


@pytest.mark.parametrize(("raw_name", "canonical"), [
    ("FP1", "Fp1"), ("fp1", "Fp1"), ("EEG Fp1-LE", "Fp1"), ("C3-AVG", "C3"), ("EEG:CZ", "Cz"),
    ("T3", "T7"), ("T4", "T8"), ("T5", "P7"), ("T6", "P8"), ("M1", "M1"), ("A2", "A2"),
    ("Cpz.", "CPz"), ("POZ", "POz"), ("EEG FCZ-AR", "FCz"),
])  # fmt: skip
def test_aliases(raw_name, canonical):
    assert map_channels([raw_name]).kept[0].name == canonical


@pytest.mark.parametrize("name", ["VEO", "HEO", "VEOU", "HEOL", "HEOG", "EOG L", "LOC"])
def test_eog_names_of_every_vendor(name):
    """Neuroscan writes VEO/HEO (SEED-V), others HEOG or 'EOG L': all EOG, never EEG."""
    assert map_channels(["Cz", name]).dropped == {name: "eog channel (add 'eog' to include)"}


def test_unknown_and_biosemi_report():
    report = map_channels([f"{c}{i}" for c in "ABCD" for i in range(1, 33)])
    assert len(report.unknown) == 128 and "biosemi" in report.hint.lower()
    text = str(report)
    assert "unknown" in text and "hint" in text
    frame = report.to_frame()
    assert list(frame.columns[:4]) == ["original", "name", "type", "status"] and len(frame) == 128


def test_electrode_name():
    assert electrode_name("Fc5.") == "FC5" and electrode_name("xyz") is None


def test_unknown_hint_offers_positions():
    # issue 12, item 18: the hint offered rename= and montage=, never positions=
    report = map_channels(["ch1", "Cz", "ch2"])
    assert "rename={'ch1': 'Fp1'}" in report.hint and "positions={'ch1': [x, y, z]}" in report.hint
    assert "['ch1', 'ch2']" in report.hint
    assert map_channels(["Fp1", "Cz"]).hint == ""


def test_intracranial_contacts_are_unknown_space_units():
    # issue 12, item 18: sEEG/ECoG contacts keep their names and the unknown id, never a
    # scalp electrode's ('T1' on a depth electrode is not Silverman's T1)
    report = map_channels(["SEEG T1", "LA2", "ECG"], ["seeg", "seeg", "ecg"], include=("seeg",))
    assert [(c.name, c.status, c.kind) for c in report.channels[:2]] == [
        ("T1", "unknown", "unknown"),
        ("LA2", "unknown", "unknown"),
    ]
    assert report.channels[2].status == "dropped" and "positions=" in report.hint


def test_channel_table_says_which_names_are_unknown():
    """The explicit carrier of 'this name gets UNK': a BioSemi A1 is no ear electrode."""
    from neurofm.channels import ChannelTable

    cap = [f"{c}{i}" for c in "ABCD" for i in range(1, 33)]  # A1, C1 ... look like 10-05 names
    table = ChannelTable.from_report(map_channels(cap + ["Cz-Pz", "EOG1"], include=("eeg", "eog")))
    assert (
        len(table) == 130
        and table.kinds[0] == "unknown"
        and table.kinds[-2:] == ("bipolar", "other")
    )
    assert (table.ids()[:128] == UNK).all() and eeg_vocabulary().id("A1") > UNK
    assert table.ids()[128] == eeg_vocabulary().id("Cz-Pz")
    assert np.isnan(table.positions()[:128]).all()  # never the template's ear
    picked = table.select(["C1", "Cz-Pz", "Fp1"])  # Fp1: not in the table, looked up by name
    assert picked.kinds == ("unknown", "bipolar", "other") and picked.ids()[
        2
    ] == eeg_vocabulary().id("Fp1")
    frame = picked.to_frame()
    assert list(frame.columns) == ["name", "kind", "id", "x", "y", "z"] and frame.id[0] == UNK


def test_read_eeg_attaches_the_table_and_it_follows_the_raw(sine):
    from neurofm.channels import ChannelTable

    x = sine(10, 200, 20, n_channels=3)
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "CB1", "A1"], positions={"CB1": "I1"})
    table = ChannelTable.of(raw)
    assert table.names == ("Cz", "CB1", "A1") and table.kinds == (
        "electrode",
        "unknown",
        "electrode",
    )
    assert ChannelTable.of(raw.copy().pick(["CB1"])) == table  # copy and pick keep it
    import mne

    assert ChannelTable.of(mne.io.RawArray(x, mne.create_info(3, 200.0), verbose="error")) is None
    # preprocess keeps it: a BioSemi cap's C1 stays unknown in the prepared Raw
    cap = [f"{c}{i}" for c in "ABCD" for i in range(1, 5)]
    x = sine(10, 200, 20, n_channels=16) + np.random.default_rng(0).normal(0, 1e-6, (16, 4000))
    bio = neurofm.read_eeg(x, sfreq=200, ch_names=cap, montage="biosemi128")
    out = neurofm.preprocess(bio, neurofm.Recipe(notch=None, window_seconds=5))
    assert ChannelTable.of(out) == ChannelTable.of(bio)
    assert (neurofm.tokenize(out, neurofm.Recipe(notch=None, window_seconds=5)).space == UNK).all()
