"""`neurofm preprocess CONFIG --part i/n` on several machines, then `--merge`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_corpus import _chbmit

from neurofm.cli import main
from neurofm.data import CorpusConfig, preprocess_corpus
from neurofm.data.shards import parse_part, part_ids, split_parts
from neurofm.errors import NeurofmError


@pytest.fixture(scope="module")
def chb(tmp_path_factory) -> Path:
    """3 subjects x 2 files of 30 s, and one corrupt file (a failure)."""
    root = _chbmit(tmp_path_factory.mktemp("parts") / "chb", subjects=3, files=2)
    (root / "chb03" / "chb03_03.edf").write_bytes(b"0       garbage header")
    return root


def _config(root: Path, out: Path, **kw) -> CorpusConfig:
    kw.setdefault("recipe", {"notch": 60.0})
    return CorpusConfig(dataset="chbmit", root=str(root), out=str(out), workers=1, **kw)


def _mtimes(out: Path) -> dict:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*/x.npy")}


def _corpus(out: Path) -> tuple[str, dict, list]:
    failures = sorted((out / "failures.jsonl").read_text().splitlines())
    return (out / "index.csv").read_text(), json.loads((out / "stats.json").read_text()), failures


def test_part_numbers_and_the_split():
    assert parse_part("2/4") == (2, 4) and parse_part(" 1 / 1 ") == (1, 1)
    # parts of about equal bytes: largest first, each to the lightest part (EEGMAT-like
    # pairs of long and short files do not all land in one part, as every 2nd id would)
    sizes = {"a_1": 38, "a_2": 13, "b_1": 38, "b_2": 13, "c_1": 38, "c_2": 13, "d": 0}
    parts = [part_ids(sizes, i, 2) for i in (1, 2)]
    assert parts == [["a_1", "c_1", "d"], ["a_2", "b_1", "b_2", "c_2"]]  # 77 and 77 bytes
    assert split_parts(dict(reversed(sizes.items())), 2) == parts  # listing order: no matter
    assert split_parts(sizes, 1) == [sorted(sizes)]
    assert sum(split_parts(sizes, 9), []) == sorted(sizes, key=lambda i: (-sizes[i], i))
    for bad, words in {"3/2": "only 2 parts", "0/2": "numbered from 1", "a/b": "not i/n",
                       "/": "lacks a number", "1/0": "at least 1", "$X/4": "not expanded",
                       True: "not i/n", "1/2/3": "not i/n"}.items():  # fmt: skip
        with pytest.raises(ValueError, match=words):
            parse_part(bad)


def test_two_parts_then_merge_equal_one_run(chb, tmp_path):
    single = tmp_path / "single"
    preprocess_corpus(_config(chb, single), progress=False)
    out = tmp_path / "split"
    one = preprocess_corpus(_config(chb, out, part="1/2"), progress=False)
    assert one["status"] == "finished" and one["part"] == "1/2"
    assert one["ids"] == ["chb01_01", "chb02_01", "chb03_01", "chb03_03"]  # every 2nd id
    assert one["written"] == 3 and one["windows"] == 9
    assert [f["shard"] for f in one["failures"]] == ["chb03_03"]
    assert not (out / "index.csv").exists() and not (out / "stats.json").exists()
    assert (out / "parts" / "part-1-of-2.json").exists()
    # a merge before part 2 has run names it, with the command, and writes nothing
    with pytest.raises(NeurofmError, match=r"(?s)3 of 7 recordings.*part 2/2: never ran "
                       r"\(no record\); shards: 3 not made \(chb01_02, chb02_02, chb03_02\).*"
                       r"`neurofm preprocess CONFIG --part 2/2`"):  # fmt: skip
        preprocess_corpus(_config(chb, out, merge=True), progress=False)
    assert not (out / "index.csv").exists()
    two = preprocess_corpus(_config(chb, out, part="2/2"), progress=False)
    assert two["written"] == 3 and two["failures"] == []
    merged = preprocess_corpus(_config(chb, out, merge=True), progress=False)
    assert merged["recordings"] == 6 and merged["failures"] == 1
    assert _corpus(out) == _corpus(single)  # the same index, statistics and failures
    assert _mtimes(out).keys() == _mtimes(single).keys()
    for shard in _mtimes(out):
        for name in ("x.npy", "mask.npy", "t.npy", "meta.json"):
            a, b = (folder / "shards" / shard / name for folder in (out, single))
            assert a.read_bytes() == b.read_bytes(), (shard, name)


def test_a_rerun_part_resumes_and_leaves_other_parts_alone(chb, tmp_path):
    out = tmp_path / "out"
    preprocess_corpus(_config(chb, out, part="1/2"), progress=False)
    before = _mtimes(out)
    busy = out / "shards" / "chb01_02.partial"  # part 2 at work on another machine
    busy.mkdir()
    again = preprocess_corpus(_config(chb, out, part="1/2"), progress=False)
    assert again["written"] == 0 and again["done_before"] == 3 and _mtimes(out) == before
    assert busy.exists()
    # without --part the run is the whole corpus's, as before: it finishes part 2's work
    shutil.rmtree(busy)
    stats = preprocess_corpus(_config(chb, out), progress=False)
    assert stats["recordings"] == 6 and all(_mtimes(out)[k] == v for k, v in before.items())


def test_merge_names_unfinished_parts_and_their_commands(chb, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    cfg = tmp_path / "corpus.yaml"
    cfg.write_text(f"dataset: chbmit\nroot: {chb}\nout: {out}\nworkers: 1\n"
                   "recipe: {notch: 60.0}\n")  # fmt: skip
    argv = ["preprocess", str(cfg), "--part", "1/3", "recipe.h_freq=70"]
    monkeypatch.setattr("sys.argv", ["neurofm", *argv])
    assert main(argv) == 0
    assert "part 1/3: 2 of 3 recordings sharded (2 now, 0 before)" in capsys.readouterr().out
    record = json.loads((out / "parts" / "part-1-of-3.json").read_text())
    assert record["command"] == f"neurofm preprocess {cfg} --part 1/3 recipe.h_freq=70"
    # part 2 was killed: its record says running; part 3 never ran
    running = record | {"part": "2/3", "status": "running", "ids": ["chb01_02", "chb03_01"],
                        "started": "9999"}  # fmt: skip
    (out / "parts" / "part-2-of-3.json").write_text(json.dumps(running))
    assert main(["preprocess", str(cfg), "--merge", "recipe.h_freq=70"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert all(line.startswith("error: ") for line in err) and len(err) == 4
    assert "cannot merge: 4 of 7 recordings" in err[0] and "2 of 3 parts" in err[0]
    assert "part 2/3: started 9999" in err[1] and "never ended" in err[1]
    assert f"`neurofm preprocess {cfg} --part 2/3 recipe.h_freq=70`" in err[1]
    assert "part 3/3: never ran" in err[2] and "--part 3/3 recipe.h_freq=70`" in err[2]
    assert not (out / "index.csv").exists()
    # the parts run (part 2 resumes), then a damaged shard sends the merge back to its part
    for part in ("2/3", "3/3"):
        assert main(["preprocess", str(cfg), "--part", part, "recipe.h_freq=70"]) == 0
    (out / "shards" / "chb02_02" / "meta.json").write_text("{}")
    with pytest.raises(NeurofmError, match=r"part 1/3: finished; shards: 1 damaged \(chb02_02: "
                       r"shard chb02_02: meta.json has no checksum"):  # fmt: skip
        preprocess_corpus(_config(chb, out, merge=True, recipe={"notch": 60.0, "h_freq": 70.0}),
                          progress=False)  # fmt: skip
    assert main(["preprocess", str(cfg), "--part", "1/3", "recipe.h_freq=70"]) == 0
    assert main(["preprocess", str(cfg), "--merge", "recipe.h_freq=70"]) == 0
    assert "chbmit: 6 recordings, 18 windows" in capsys.readouterr().out
    # a merge with another recipe than the parts' names the shards made differently
    with pytest.raises(NeurofmError, match=r"made differently from this config \(chb01_01, "
                       r"chb02_02: chb01_01: recipe.h_freq 70.0 -> 75.0\).*--overwrite`(?s:.*)"
                       r"merge with the config and overrides the parts ran with"):  # fmt: skip
        preprocess_corpus(_config(chb, out, merge=True), progress=False)


def test_merge_after_the_listing_changed(chb, tmp_path):
    root = tmp_path / "chb"
    shutil.copytree(chb, root)
    out = tmp_path / "out"
    for part in ("1/2", "2/2"):
        preprocess_corpus(_config(root, out, part=part), progress=False)
    shutil.copy(root / "chb01" / "chb01_01.edf", root / "chb01" / "chb01_00.edf")  # new file
    with pytest.raises(NeurofmError, match=r"part 1/2: finished on another listing of the "
                       r"corpus \(7 recordings then, 8 now\).*chb01_00"):  # fmt: skip
        preprocess_corpus(_config(root, out, merge=True), progress=False)
    # a part run on the new listing says the other part saw another one
    from neurofm.data import ShardWarning

    with pytest.warns(ShardWarning, match=r"part 2/2 ran on another listing .*7 recordings, now 8"):
        assert preprocess_corpus(_config(root, out, part="1/2"), progress=False)["written"] == 1
    empty = tmp_path / "empty"
    with pytest.raises(NeurofmError, match="holds no shards: run the parts first"):
        preprocess_corpus(_config(root, empty, merge=True), progress=False)
    (empty / "shards").mkdir(parents=True)
    with pytest.raises(NeurofmError, match=r"8 of 8 recordings .* no part has run there"):
        preprocess_corpus(_config(root, empty, merge=True), progress=False)


def test_a_part_stopped_by_a_bad_setting_says_so(chb, tmp_path):
    out = tmp_path / "out"
    bad = _config(chb, out, part="1/2", reader={"format": "bdf"})  # every file fails alike
    with pytest.raises(NeurofmError, match="first 3 recordings .* all failed the same way"):
        preprocess_corpus(bad, progress=False)
    record = json.loads((out / "parts" / "part-1-of-2.json").read_text())
    assert record["status"] == "stopped" and "all failed the same way" in record["error"]
    assert len(record["failures"]) == 3 and not (out / "failures.jsonl").exists()
    with pytest.raises(NeurofmError, match=r"part 1/2: stopped .*: NeurofmError: the first 3"):
        preprocess_corpus(bad.replace(part=None, merge=True), progress=False)
