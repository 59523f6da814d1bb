"""Sharded preprocessing, crash recovery, streaming across ranks and workers, splits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from neurofm.config import load_config
from neurofm.data import (
    CorpusConfig,
    ShardDataset,
    check_no_overlap,
    make_splits,
    preprocess_corpus,
)
from neurofm.errors import ConfigError, NeurofmError, ShardError
from neurofm.io.edf import write_edf
from neurofm.synthetic import eeg

NAMES = "FP1-F7 F7-T7 T7-P7 P7-O1 FP1-F3 F3-C3 C3-P3 P3-O1 FZ-CZ CZ-PZ".split()


def _chbmit(root: Path, subjects=3, files=2, seconds=30.0, sfreq=256):
    """A CHB-MIT-layout corpus; each file's seizure at 12-17 s (window 2 of 3 at 10 s)."""
    for s in range(1, subjects + 1):
        subject = f"chb{s:02d}"
        folder = root / subject
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["Data Sampling Rate: 256 Hz", "", "Channels in EDF Files:"]
        lines += [f"Channel {i}: {n}" for i, n in enumerate(NAMES, 1)]
        for f in range(1, files + 1):
            name = f"{subject}_{f:02d}.edf"
            write_edf(folder / name, eeg(len(NAMES), int(seconds * sfreq), sfreq, line=None),
                      sfreq, NAMES)  # fmt: skip
            lines += ["", f"File Name: {name}", "Number of Seizures in File: 1",
                      "Seizure Start Time: 12 seconds", "Seizure End Time: 17 seconds"]  # fmt: skip
        (folder / f"{subject}-summary.txt").write_text("\n".join(lines) + "\n")
    return root


def _config(tmp_path, root, **kw) -> CorpusConfig:
    return CorpusConfig(dataset="chbmit", root=str(root), out=str(tmp_path / "out"),
                        recipe={"notch": 60.0}, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    root = _chbmit(tmp / "chb")
    (root / "chb03" / "chb03_03.edf").write_bytes(b"0       garbage header")  # a corrupt file
    stats = preprocess_corpus(_config(tmp, root, workers=2), progress=False)
    return tmp / "out", stats


def test_preprocess_writes_shards_index_and_stats(corpus):
    out, stats = corpus
    assert stats["recordings"] == 6 and stats["windows"] == 18 and stats["subjects"] == 3
    assert stats["failures"] == 1 and stats["window_labels"] == {"bckg": 12, "seizure": 6}
    failure = json.loads((out / "failures.jsonl").read_text().splitlines()[0])
    assert "chb03_03" in failure["source"] and failure["error"]
    assert stats["channels_seen"]["Fp1-F7"] == 6 and stats["hours"] == pytest.approx(0.05)
    meta = json.loads((out / "shards" / "chb01_01" / "meta.json").read_text())
    assert meta["window_labels"] == ["bckg", "seizure", "bckg"]
    assert meta["subject"] == "chb01" and meta["made_with"]["source"]["files"][0][1] > 0
    x = np.load(out / "shards" / "chb01_01" / "x.npy", mmap_mode="r")
    assert x.shape == (3, 10, 10, 200) and x.dtype == np.float16
    assert np.load(out / "shards" / "chb01_01" / "t.npy").tolist()[1][0] == 10.0
    assert len(meta["amplitude_percentiles"]["values"]) == 10
    assert not list((out / "shards").glob("*.partial"))


def test_rerun_skips_finished_files(corpus, tmp_path):
    out, _ = corpus
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*/x.npy")}
    root = Path(
        json.loads((out / "shards" / "chb01_01" / "meta.json").read_text())["source"]
    ).parents[1]
    cfg = CorpusConfig(dataset="chbmit", root=str(root), out=str(out), recipe={"notch": 60.0})
    stats = preprocess_corpus(cfg, progress=False)
    assert stats["windows"] == 18
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*/x.npy")} == before


def test_kill_9_then_rerun_finishes_without_redoing(tmp_path):
    root = _chbmit(tmp_path / "chb", subjects=4, files=2, seconds=300.0)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"dataset: chbmit\nroot: {root}\nout: {tmp_path / 'out'}\n"
                      "workers: 1\nrecipe: {notch: 60.0}\n")  # fmt: skip
    cmd = [sys.executable, "-m", "neurofm", "preprocess", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    shards = tmp_path / "out" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("*/meta.json"))) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in shards.glob("*/x.npy")
            if (p.parent / "meta.json").exists()}  # fmt: skip
    assert 2 <= len(done) < 8, "the kill should land mid-corpus"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    after = {p.parent.name: p.stat().st_mtime_ns for p in shards.glob("*/x.npy")}
    assert len(after) == 8 and all(after[k] == v for k, v in done.items())  # not redone
    index = (tmp_path / "out" / "index.csv").read_text().splitlines()
    assert len(index) == 9 and len(set(index)) == 9  # each recording once
    assert not list(shards.glob("*.partial"))


def _seen(ds, repeats: bool = False) -> list[tuple[str, int]]:
    """Windows read in one epoch; padding repeats only when asked."""
    return [(lbl["shard"], lbl["window"]) for _, labels in ds for lbl in labels
            if lbl["repeat"] == repeats]  # fmt: skip


def test_ranks_see_disjoint_windows_whose_union_is_the_corpus(corpus):
    out, stats = corpus
    ranks = [_seen(ShardDataset(out, rank=r, world_size=2, batch_size=4)) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])
    assert len(ranks[0]) + len(ranks[1]) == len(set(ranks[0]) | set(ranks[1])) == stats["windows"]
    again = _seen(ShardDataset(out, rank=0, world_size=2, batch_size=4))
    assert again == ranks[0]  # deterministic for a seed
    epoch1 = []
    for r in (0, 1):
        ds = ShardDataset(out, rank=r, world_size=2, batch_size=4)
        ds.set_epoch(1)
        epoch1 += _seen(ds)
    assert sorted(epoch1) == sorted(ranks[0] + ranks[1]) and epoch1 != ranks[0] + ranks[1]


def test_dataloader_workers_do_not_duplicate(corpus):
    out, stats = corpus
    ds = ShardDataset(out, batch_size=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    seen = [(lbl["shard"], lbl["window"]) for tokens, labels in loader for lbl in labels]
    assert len(seen) == len(set(seen)) == stats["windows"]


def test_batches_are_tokens_for_the_encoder(corpus):
    out, _ = corpus
    tokens, labels = next(iter(ShardDataset(out, batch_size=5, bucket=True)))
    assert tokens.shape == (5, 10, 10, 200) and tokens.x.dtype == torch.float32
    assert len({n for n in tokens.names}) == 1  # bucketed: one montage
    from neurofm.models import create_model

    with torch.no_grad():
        out_ = create_model("eeg-tiny")(tokens)
    assert out_.pooled.shape == (5, 100)


def test_subject_splits_and_overlap_check(corpus, tmp_path):
    out, _ = corpus
    splits = make_splits(out, {"train": 0.34, "val": 0.33, "test": 0.33}, seed=1)
    assert sorted(splits.values()) == ["test", "train", "val"]
    test_subject = next(s for s, v in splits.items() if v == "test")
    ds = ShardDataset(out, split="test", batch_size=100)
    assert {lbl["shard"].split("_")[0] for _, labels in ds for lbl in labels} == {test_subject}
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "index.csv").write_text(
        "id,dataset,subject,session,split,n_windows,n_channels,montage\n"
        f"x,chbmit,{test_subject},01,,3,10,a\n"
    )
    with pytest.raises(
        NeurofmError, match=f"1 test subjects were in the pretraining.*{test_subject}"
    ):
        check_no_overlap(out, pre)
    (pre / "index.csv").write_text(
        "id,dataset,subject,session,split,n_windows,n_channels,montage\n"
        f"x,tusz,{test_subject},01,,3,10,a\n"  # another dataset's subject of the same name
    )
    check_no_overlap(out, pre)


def test_config_typos_and_missing_index(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: chbmit\nroot: x\nout: y\nworkrs: 2\n")
    with pytest.raises(NeurofmError, match="did you mean 'workers'"):
        load_config(cfg, CorpusConfig)
    cfg.write_text("dataset: chbmit\nroot: x\nout: y\nrecipe: {sfrq: 200}\n")
    with pytest.raises(NeurofmError, match="did you mean 'sfreq'"):
        load_config(cfg, CorpusConfig)
    with pytest.raises(NeurofmError, match="neurofm preprocess"):
        ShardDataset(tmp_path)


def test_dataloader_bench_runs():
    script = Path(__file__).resolve().parents[1] / "bench" / "dataloader.py"
    out = subprocess.run([sys.executable, str(script), "--hours", "0.1", "--files", "2"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ratio shards / EDFs" in out.stdout


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs" / "preprocess").glob("*.yaml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_shipped_configs_are_valid(path):
    """Every example config parses, names a known dataset and builds its Recipe."""
    from neurofm.io.datasets import DATASETS

    config = load_config(path, CorpusConfig)
    assert config.dataset in DATASETS and config.recipe.window_len > 0


# ---------------------------------------------------------------------- issue 12
def _small(tmp_path, seconds=30.0, files=2, subjects=1, **kw) -> CorpusConfig:
    root = _chbmit(tmp_path / "chb", subjects=subjects, files=files, seconds=seconds)
    return _config(tmp_path, root, workers=1, **kw)


def _mtimes(out: Path) -> dict:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*/x.npy")}


def test_rerun_with_another_recipe_or_reader_option_is_refused_or_redone(tmp_path):
    # issue 12, item 4
    config = _small(tmp_path, seconds=17.0)
    assert preprocess_corpus(config, progress=False)["windows"] == 2
    out = Path(config.out)
    before = _mtimes(out)
    changed = config.replace(recipe=config.recipe.replace(window_seconds=5.0))
    with pytest.raises(
        ShardError, match=r"2 shard\(s\).*recipe.window_seconds 10.0 -> 5.0.*overwrite"
    ):
        preprocess_corpus(changed, progress=False)
    assert _mtimes(out) == before  # refused before touching anything
    with pytest.raises(ShardError, match="reader.check_units None -> False"):
        preprocess_corpus(config.replace(reader={"check_units": False}), progress=False)
    stats = preprocess_corpus(changed.replace(overwrite=True), progress=False)
    assert stats["windows"] == 6 and stats["hours"] == round(2 * 15 / 3600, 3)
    assert all(_mtimes(out)[k] != v for k, v in before.items())  # redone
    meta = json.loads((out / "shards" / "chb01_01" / "meta.json").read_text())
    assert meta["made_with"]["recipe"]["window_seconds"] == 5.0 and len(meta["fingerprint"]) == 16
    again = _mtimes(out)
    assert preprocess_corpus(changed, progress=False)["windows"] == 6  # now "done before"
    assert _mtimes(out) == again
    # a damaged shard is not "done": it is redone without asking
    (out / "shards" / "chb01_02" / "meta.json").write_text("{}")
    assert preprocess_corpus(changed, progress=False)["recordings"] == 2
    assert _mtimes(out)["chb01_02"] != again["chb01_02"]


@pytest.fixture
def damaged_corpus(corpus, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(corpus[0], out)
    return out


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x10
    path.write_bytes(bytes(data))


def test_damaged_shards_are_named_and_skipped_or_refused(damaged_corpus, corpus):
    # issue 12, item 10
    import warnings

    from neurofm.data import ShardWarning

    out, stats = damaged_corpus, corpus[1]
    _flip(out / "shards" / "chb01_01" / "x.npy", 5000)  # a bit inside the signal
    with pytest.warns(ShardWarning, match="chb01_01: x.npy does not match its SHA-256"):
        batches = list(ShardDataset(out, batch_size=4))
    seen, repeats = _seen(batches), _seen(batches, repeats=True)
    assert len(seen) == len(set(seen)) == stats["windows"] - 3
    assert not {s for s, _ in seen} & {"chb01_01"}
    # the damaged shard's 3 windows are stood in for by repeats: the batch count holds
    assert len(repeats) == 3 and set(repeats) <= set(seen)
    assert len(batches) == len(ShardDataset(out, batch_size=4)) == 5
    with pytest.raises(ShardError, match="more than max_damaged=0.*chb01_01"):
        _seen(ShardDataset(out, batch_size=4, max_damaged=0))
    ds = ShardDataset(out, batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _seen(ds), _seen(ds)  # two epochs: one warning per shard and process
    assert sum(issubclass(w.category, ShardWarning) for w in caught) == 1
    # truncation, deletion and an edited meta.json are named too; the second one is refused
    x = out / "shards" / "chb02_01" / "x.npy"
    x.write_bytes(x.read_bytes()[:-100])
    (out / "shards" / "chb02_02" / "mask.npy").unlink()
    with pytest.raises(ShardError, match="3 damaged shards.*truncated.*mask.npy is missing"):
        _seen(ShardDataset(out, batch_size=4, shuffle=False, max_damaged=2, mix=10))
    meta = out / "shards" / "chb01_02" / "meta.json"
    meta.write_text(meta.read_text().replace('"bckg"', '"seizure"', 1))
    with pytest.warns(ShardWarning, match="chb01_02: meta.json does not match its checksum"):
        _seen(ShardDataset(out, split=None, batch_size=4, max_damaged=10))
    (out / "index.csv").write_text((out / "index.csv").read_text().replace(",3,", ",4,", 1))
    with pytest.raises(ShardError, match="index.csv does not match its checksum"):
        ShardDataset(out)


def test_float32_shards_give_no_torch_warning(tmp_path):
    # issue 12, item 21
    import warnings

    config = _small(tmp_path, files=1, dtype="float32")
    preprocess_corpus(config, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (tokens, labels), *_ = list(ShardDataset(config.out, batch_size=2, shuffle=False))
    x = np.load(Path(config.out) / "shards" / "chb01_01" / "x.npy")
    assert x.dtype == np.float32 and [lbl["window"] for lbl in labels] == [0, 1]
    assert torch.equal(tokens.x, torch.from_numpy(x[:2]))


def test_dropped_seconds_are_counted(tmp_path, capsys):
    # issue 12, item 22
    from neurofm.cli import main

    config = _small(tmp_path, seconds=17.0)
    path = tmp_path / "c.yaml"
    path.write_text(f"dataset: chbmit\nroot: {config.root}\nout: {config.out}\nworkers: 1\n"
                    "recipe: {notch: 60.0}\n")  # fmt: skip
    assert main(["preprocess", str(path)]) == 0
    stats = json.loads((Path(config.out) / "stats.json").read_text())
    assert stats["windows"] == 2 and stats["dropped"]["seconds"] == pytest.approx(14.0)
    assert stats["dropped"]["per_recording"] == {"chb01_01": 7.0, "chb01_02": 7.0}
    assert stats["recorded_hours"] == round(34 / 3600, 3)
    printed = capsys.readouterr().out
    assert printed.count("14 s at the ends of 2 recordings fill no whole 10 s window") == 1


def test_one_bad_setting_fails_fast_with_one_summary(tmp_path, caplog):
    # issue 12, item 20
    config = _small(tmp_path, files=3, subjects=2, reader={"format": "bdf"})
    with pytest.raises(NeurofmError, match=r"first 3 recordings \(.*\) all failed the same way, "
                       r"so the other 3 were not tried.*The error: EEGReadError.*as bdf"):  # fmt: skip
        preprocess_corpus(config, progress=False)
    assert len((Path(config.out) / "failures.jsonl").read_text().splitlines()) == 3
    # failures of some files among good ones are skipped, each distinct error logged once
    root = Path(config.root)
    for f in ("chb01_02", "chb02_01", "chb02_03"):
        (root / f[:5] / f"{f}.edf").write_bytes(b"0       garbage")
    stats = preprocess_corpus(config.replace(reader={}), progress=False)
    assert stats["failures"] == 3 and stats["recordings"] == 3
    assert len([r for r in caplog.records if "skipped 3 file(s)" in r.getMessage()]) == 1


def test_config_errors_are_one_line_per_problem(tmp_path):
    # issue 12, item 16
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- dataset: chbmit\n- root: x\n")
    with pytest.raises(ConfigError, match="holds a list at the top level"):
        load_config(cfg, CorpusConfig)
    cfg.write_text("dataset: chbmit\nroot: x\nout: y\nreader: {subjets: [chb01]}\n")
    with pytest.raises(
        ConfigError, match="unknown reader option 'subjets' .did you mean 'subjects'"
    ):
        load_config(cfg, CorpusConfig)
    cfg.write_text("dataset: manifest\nroot: x\nout: y\nreader: {positons: {X: Cz}}\n")
    with pytest.raises(ConfigError, match="did you mean 'positions'"):
        load_config(cfg, CorpusConfig)
    cfg.write_text("dataset: chbmit\nroot: x\nout: y\nworkrs: 1\nworkers: 0\n"
                   "recipe: {sfrq: 1, notch: 50}\n")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(cfg, CorpusConfig)
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and "pydantic" not in str(info.value)
    assert any(
        ": unknown CorpusConfig field 'workrs' (did you mean 'workers'?)" in x for x in lines
    )
    assert all(line.startswith(f"{cfg}: ") for line in lines)
    assert any(": workers: Input should be greater than or equal to 1 (got 0)" in x for x in lines)
    assert any(": recipe: " in x and "'sfrq' (did you mean 'sfreq'?)" in x for x in lines)
    config = load_config({"dataset": "chbmit", "root": "x", "out": "y"}, CorpusConfig,
                         ["recipe.notch=50", "reader.subjects=[chb01]"])  # fmt: skip
    assert config.recipe.notch == 50 and config.reader == {"subjects": ["chb01"]}
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        load_config({}, CorpusConfig, ["workers"])
    (tmp_path / "file").write_text("")
    root = _chbmit(tmp_path / "chb", subjects=1, files=1)
    unwritable = _config(tmp_path, root).replace(out=str(tmp_path / "file" / "out"))
    with pytest.raises(ConfigError, match="is not a writable folder"):
        preprocess_corpus(unwritable, progress=False)


def test_cli_prints_one_clean_line_for_bad_input(tmp_path):
    # issue 12, item 16
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: chbmit\nroot: x\nout: y\nreader: {subjets: [chb01]}\n")
    res = subprocess.run([sys.executable, "-m", "neurofm", "preprocess", str(cfg)],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and "did you mean 'subjects'" in res.stderr
    res = subprocess.run([sys.executable, "-m", "neurofm", "preprocess", str(cfg), "--workers",
                          "0"], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 2 and "workers: Input should be greater" in res.stderr


def _manifest_corpus(tmp_path) -> Path:
    """An intracranial-like single-channel array and an EDF with a channel outside 10-05."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.save(data / "lfp.npy", rng.normal(0, 20e-6, (1, 25 * 256)))
    write_edf(data / "scalp.edf", eeg(3, 30 * 256, 256, line=None), 256, ["Fp1", "Cz", "G1"])
    (tmp_path / "manifest.csv").write_text(
        "path,subject,label,onset,duration,sfreq,ch_names,positions\n"
        "data/lfp.npy,p1,patient,,,256,LFP1,LFP1=-20 -10 5\n"
        "data/scalp.edf,p2,control,,,,,\n"
        "data/scalp.edf,p2,seizure,12,5,,,\n"
    )
    return tmp_path / "manifest.csv"


def test_recording_label_reaches_the_batches(tmp_path):
    # issue 12, item 17
    csv = _manifest_corpus(tmp_path)
    config = CorpusConfig(dataset="manifest", root=str(csv), out=str(tmp_path / "out"),
                          workers=1, recipe={"notch": None})  # fmt: skip
    stats = preprocess_corpus(config, progress=False)
    assert stats["window_labels"] == {"patient": 2, "control": 2, "seizure": 1}
    labels = {(lbl["shard"], lbl["window"]): lbl["label"]
              for _, batch in ShardDataset(config.out, batch_size=3) for lbl in batch}  # fmt: skip
    assert labels == {("lfp", 0): "patient", ("lfp", 1): "patient", ("scalp", 0): "control",
                      ("scalp", 1): "seizure", ("scalp", 2): "control"}  # fmt: skip


def test_manifest_and_yaml_reader_place_electrodes(tmp_path):
    # issue 12, item 18
    csv = _manifest_corpus(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: manifest\nroot: {csv}\nout: {tmp_path / 'out'}\nworkers: 1\n"
                   "recipe: {notch: null}\nreader: {positions: {G1: Cz}}\n")  # fmt: skip
    config = load_config(cfg, CorpusConfig)
    assert preprocess_corpus(config, progress=False)["recordings"] == 2
    shards = tmp_path / "out" / "shards"
    lfp = json.loads((shards / "lfp" / "meta.json").read_text())
    assert lfp["channels"] == ["LFP1"] and lfp["made_with"]["reader"]["positions"]
    assert np.load(shards / "lfp" / "pos.npy").tolist() == [[-20.0, -10.0, 5.0]]
    scalp = json.loads((shards / "scalp" / "meta.json").read_text())
    pos = dict(zip(scalp["channels"], np.load(shards / "scalp" / "pos.npy"), strict=True))
    assert np.isfinite(pos["Cz"]).all() and np.array_equal(pos["G1"], pos["Cz"])


def test_shards_made_with_another_recipe_than_the_models_are_refused(corpus):
    # issue 13: the dataset checks the shard recipe against the model's
    from neurofm.preprocess import Recipe

    out, _ = corpus
    assert ShardDataset(out).recipe == Recipe(notch=60.0)
    ShardDataset(out, recipe=Recipe(notch=60.0).model_dump())  # a checkpoint's dict works too
    with pytest.raises(NeurofmError, match=r"another recipe than the model's \(recipe.notch .*50"):
        ShardDataset(out, recipe=Recipe(notch=50.0))


# ---------------------------------------------------------------------- corpus review
def _split_manifest(tmp_path, splits: dict[str, str]) -> CorpusConfig:
    """A manifest of single-channel arrays, one per subject, with the given splits."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows = ["path,subject,session,split,sfreq,ch_names"]
    for i, (subject, split) in enumerate(splits.items()):
        if not (data / f"{subject}.npy").exists():
            np.save(
                data / f"{subject}.npy", np.random.default_rng(i).normal(0, 20e-6, (1, 25 * 256))
            )
        rows.append(f"data/{subject}.npy,{subject},s1,{split},256,Cz")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return CorpusConfig(dataset="manifest", root=str(tmp_path / "manifest.csv"),
                        out=str(tmp_path / "out"), workers=1, recipe={"notch": None})  # fmt: skip


def test_a_changed_split_reaches_the_index_without_recomputing(tmp_path):
    config = _split_manifest(tmp_path, {"a": "train", "b": "train"})
    preprocess_corpus(config, progress=False)
    out = Path(config.out)
    before = _mtimes(out)
    _split_manifest(tmp_path, {"a": "train", "b": "test"})  # b moves to the test split
    preprocess_corpus(config, progress=False)
    assert _mtimes(out) == before  # the windows are kept
    assert {lbl["shard"] for _, labels in ShardDataset(out, split="test") for lbl in labels} == {
        "b"
    }
    assert set(ShardDataset(out, split="train").index.id) == {"a"}
    meta = json.loads((out / "shards" / "b" / "meta.json").read_text())
    assert meta["split"] == "test" and meta["session"] == "s1"


def test_an_unreadable_shard_file_is_a_damaged_shard(damaged_corpus, monkeypatch):
    import errno

    from neurofm.data import ShardWarning, shards

    def eio(path):
        if path.parent.name == "chb01_01":
            raise OSError(errno.EIO, "Input/output error")
        return file_sha256(path)

    file_sha256 = shards.file_sha256
    monkeypatch.setattr(shards, "file_sha256", eio)
    with pytest.raises(ShardError, match="chb01_01: x.npy is unreadable .Input/output error"):
        shards.verify_shard(damaged_corpus / "shards" / "chb01_01",
                            shards.read_meta(damaged_corpus / "shards" / "chb01_01"))  # fmt: skip
    with pytest.warns(ShardWarning, match="chb01_01: x.npy is unreadable"):
        seen = _seen(ShardDataset(damaged_corpus, batch_size=4))
    assert "chb01_01" not in {s for s, _ in seen} and len(seen) == 15


def test_a_corpus_of_an_older_neurofm_says_so(damaged_corpus):
    stats = json.loads((damaged_corpus / "stats.json").read_text())
    del stats["index_sha256"]
    (damaged_corpus / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ShardError, match=r"made by an older neurofm.*preprocess .*--overwrite"):
        ShardDataset(damaged_corpus)


def test_each_shard_is_hashed_once_across_workers_and_epochs(damaged_corpus, monkeypatch):
    from collections import Counter

    from neurofm.data import shards

    log = damaged_corpus / "hashed.log"

    def counted(path):
        with open(log, "a") as fh:  # from the workers too (forked: they share the patch)
            fh.write(f"{path}\n")
        return file_sha256(path)

    file_sha256 = shards.file_sha256
    monkeypatch.setattr(shards, "file_sha256", counted)
    ds = ShardDataset(damaged_corpus, batch_size=2)
    for epoch in range(3):  # workers are new processes every epoch
        ds.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2,
                                             multiprocessing_context="fork")  # fmt: skip
        assert len({(lbl["shard"], lbl["window"]) for _, b in loader for lbl in b}) == 18
    hashed = Counter(log.read_text().splitlines())
    assert len(hashed) == 6 * 5 and set(hashed.values()) == {1}  # 6 shards x 5 files, once
    # a changed file invalidates the marker: that shard is verified (and refused) again
    _flip(damaged_corpus / "shards" / "chb02_01" / "t.npy", 300)
    with pytest.warns(UserWarning, match="chb02_01: t.npy does not match"):
        list(ShardDataset(damaged_corpus, batch_size=2))


def test_shards_of_recordings_no_longer_listed_are_left_out(tmp_path):
    from neurofm.data import ShardWarning, write_shard
    from neurofm.data.shards import write_index
    from neurofm.io.datasets import read_dataset

    config = _small(tmp_path)
    assert preprocess_corpus(config, progress=False)["recordings"] == 2
    out = Path(config.out)
    with pytest.warns(ShardWarning, match=r"1 shard\(s\) .* does not list \(chb01_02\)"):
        stats = preprocess_corpus(config.replace(max_files=1), progress=False)
    assert stats["recordings"] == 1 and list(ShardDataset(out).index.id) == ["chb01_01"]
    assert (out / "shards" / "chb01_02" / "meta.json").exists()  # left in place
    # a corpus of two recipes (here indexed by hand) is refused by the dataset
    rec = next(iter(read_dataset("chbmit", config.root)))
    rec.id = "other"
    write_shard(rec, config.recipe.replace(notch=50.0), out)
    assert len(write_index(out)["recipes"]) == 2
    with pytest.raises(ShardError, match="made with 2 different recipes"):
        ShardDataset(out)


# ---------------------------------------------------------------------- folder corpora
def test_a_folder_of_mixed_files_becomes_one_corpus(tmp_path, caplog):
    """Known layouts by their readers, loose files by name, annotation-only files skipped
    before they can fail, a broken file a failure; the index keeps each file's dataset."""
    from test_datasets import _annotations_only, _eegmat

    root = tmp_path / "corpus"
    _eegmat(root / "eegmat", subjects=(0,), seconds=(12.0, 8.0))
    (root / "other").mkdir()
    write_edf(root / "other" / "sub-7.edf", eeg(3, 10 * 256, 256, line=None), 256,
              ["Fp1", "Cz", "O1"])  # fmt: skip
    _annotations_only(root / "other" / "sub-7-Hypnogram.edf")
    (root / "other" / "broken.edf").write_bytes(b"0       garbage")
    config = CorpusConfig(dataset="folder", root=str(root), out=str(tmp_path / "out"), workers=1,
                          reader={"readers": {"eegmat": "eegmat"}, "subject": r"sub-(\d+)"},
                          recipe={"notch": None, "window_seconds": 4.0})  # fmt: skip
    with caplog.at_level("WARNING", logger="neurofm"):
        stats = preprocess_corpus(config, progress=False)
    assert "holding annotations only" in caplog.text
    assert stats["recordings"] == 3 and stats["failures"] == 1 and stats["windows"] == 3 + 2 + 2
    assert stats["window_labels"] == {"rest": 3, "arithmetic": 2, "bckg": 2}
    index = ShardDataset(config.out).index
    assert dict(zip(index.id, zip(index.dataset, index.subject, strict=True), strict=True)) == {
        "Subject00_1": ("eegmat", "Subject00"), "Subject00_2": ("eegmat", "Subject00"),
        "other_sub-7.edf": ("folder", "7")}  # fmt: skip
    assert set(index[index.dataset == "eegmat"].n_channels) == {19}  # no 'A2', no ECG


def test_a_channel_no_model_can_place_is_masked_in_the_shard(tmp_path):
    """A unit with an unknown name and no position (Nihon Kohden's 'E') would stop
    training at the first batch holding it: the shard keeps it as padding, and says so."""
    import functools

    from neurofm.data import ShardDataset, write_shard
    from neurofm.data.shards import read_meta, write_index
    from neurofm.errors import ChannelWarning
    from neurofm.io.datasets import Recording
    from neurofm.models import create_model
    from neurofm.preprocess import Recipe
    from neurofm.synthetic import eeg

    signal = functools.partial(eeg, 3, 2000, 200.0, line=None)
    rec = Recording(dataset="manifest", subject="p", id="p", array=signal, sfreq=200.0,
                    ch_names=["Fp1", "Cz", "E"], units="V")  # fmt: skip
    recipe = Recipe(window_seconds=4.0, notch=None)
    with pytest.warns(ChannelWarning, match="E have no known name and no position"):
        write_shard(rec, recipe, tmp_path)
    write_index(tmp_path)
    meta = read_meta(tmp_path / "shards" / "p")
    assert meta["channels"] == ["Fp1", "Cz", "E"] and meta["unplaced_channels"] == ["E"]
    tokens, _ = next(iter(ShardDataset(tmp_path, batch_size=2)))
    assert not tokens.mask[:, 2].any() and tokens.mask[:, :2].all()
    create_model("eeg-tiny", recipe=recipe)(tokens)  # encodes: 'E' is padding now


def test_event_locked_corpus_one_window_per_trial(tmp_path):  # issue 16: BCI trials as shards
    from conftest import shared

    import neurofm
    from neurofm.data import ShardDataset
    from neurofm.data.shards import read_meta

    root = shared("eeg/eegmmidb")
    config = load_config({"dataset": "eegmmidb", "root": str(root), "out": str(tmp_path / "out"),
                          "reader": {"runs": [3]}, "workers": 1,
                          "events": {"event_id": ["left_fist", "right_fist"], "tmin": 0.0, "tmax": 4.0}},
                         CorpusConfig)  # fmt: skip
    stats = preprocess_corpus(config, progress=False)
    raw = neurofm.read_eeg(root / "S001R03.edf")
    cues = [
        (a["onset"], a["description"]) for a in raw.annotations if a["description"] in ("T1", "T2")
    ]
    assert stats["windows"] == len(cues) == 15
    meta = read_meta(tmp_path / "out" / "shards" / "S001R03")
    assert meta["window_labels"] == [{"T1": "left_fist", "T2": "right_fist"}[d] for _, d in cues]
    tokens, labels = next(iter(ShardDataset(tmp_path / "out", batch_size=32, shuffle=False)))
    assert tokens.shape[2] == 4  # tmax - tmin = 4 s of 1 s patches
    assert sorted(tokens.t[:, 0].tolist()) == pytest.approx(sorted(o for o, _ in cues), abs=0.01)
    with pytest.raises(ConfigError, match="tmax=0.0 must be after tmin=1.0"):
        load_config({"dataset": "eegmmidb", "root": str(root), "out": str(tmp_path / "o2"),
                     "events": {"event_id": ["T1"], "tmin": 1.0, "tmax": 0.0}}, CorpusConfig)  # fmt: skip
