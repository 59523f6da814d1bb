"""Property-based bad input for corpora: damaged shards, config mappings, manifest tables.

Each case must give correct data, a neurofm error, or a named warning (``fuzz.outcome``).
Where data comes back it is compared with what was written.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from fuzz import outcome
from hypothesis import given
from hypothesis import strategies as st

from neurofm.config import load_config
from neurofm.data import CorpusConfig, ShardDataset, ShardWarning, preprocess_corpus
from neurofm.data.shards import DATA_FILES
from neurofm.errors import ConfigError, ShardError
from neurofm.io.datasets import read_dataset
from neurofm.preprocess import Recipe

SHARD_IDS = ("a", "b", "c")  # 20, 25 and 30 s: 2, 2 and 3 windows of 10 s
FILES = (*DATA_FILES, "meta.json")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz_corpus")
    rng = np.random.default_rng(0)
    rows = ["path,label,sfreq,ch_names"]
    for name, seconds in zip(SHARD_IDS, (20, 25, 30), strict=True):
        np.save(tmp / f"{name}.npy", rng.normal(0, 20e-6, (2, seconds * 256)))
        rows.append(f"{name}.npy,{name}-label,256,Fp1;Cz")
    (tmp / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp / "out"
    preprocess_corpus(CorpusConfig(dataset="manifest", root=str(tmp / "m.csv"), out=str(out),
                                   workers=1, recipe={"notch": None}), progress=False)  # fmt: skip
    windows = {s: np.load(out / "shards" / s / "x.npy").astype(np.float32) for s in SHARD_IDS}
    return out, windows


# ---------------------------------------------------------------------- shard damage
json_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.text(max_size=5),
                        st.lists(st.integers(0, 3), max_size=3))  # fmt: skip
META_KEYS = ("n_windows", "window_labels", "channels", "files", "checksum", "subject", "split")
shard = st.sampled_from(SHARD_IDS)
damage = st.one_of(
    st.tuples(
        st.just("flip"), shard, st.sampled_from(FILES), st.integers(0, 10**5), st.integers(0, 7)
    ),  # fmt: skip
    st.tuples(st.just("truncate"), shard, st.sampled_from(FILES), st.floats(0, 1)),
    st.tuples(st.just("delete"), shard, st.sampled_from((*FILES, ""))),
    st.tuples(st.just("append"), shard, st.sampled_from(FILES), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("edit-meta"), shard, st.sampled_from(META_KEYS), json_values),
    st.tuples(
        st.just("flip"),
        st.just(""),
        st.sampled_from(("index.csv", "stats.json")),
        st.integers(0, 10**4),
        st.integers(0, 7),
    ),  # fmt: skip
    st.tuples(
        st.just("edit-index"),
        st.integers(0, 2),
        st.sampled_from(("n_windows", "id", "split")),
        st.sampled_from(("", "0", "9", "x", "train")),
    ),  # fmt: skip
)


def _apply(root: Path, op) -> None:
    kind, *args = op
    if kind == "edit-index":
        row, column, value = args
        lines = list(csv.DictReader((root / "index.csv").read_text().splitlines()))
        lines[row][column] = value
        with open(root / "index.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(lines[0]))
            writer.writeheader()
            writer.writerows(lines)
        return
    path = root / "shards" / args[0] / args[1] if args[0] else root / args[1]
    if kind == "delete":
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return
    if not path.is_file():
        return
    data = bytearray(path.read_bytes())
    if kind == "flip" and data:
        data[args[2] % len(data)] ^= 1 << args[3]
    elif kind == "truncate":
        data = data[: int(len(data) * args[2])]
    elif kind == "append":
        data += args[2]
    elif kind == "edit-meta":
        try:
            meta = json.loads(data)
            meta[args[2]] = args[3]
            data = bytearray(json.dumps(meta, indent=1).encode())
        except (ValueError, TypeError):
            pass  # already unreadable
    path.write_bytes(bytes(data))


def _json(path: Path):
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _damaged(clean: Path, root: Path) -> set[str]:
    """Shards whose data files changed, or whose meta.json no longer reads the same."""
    out = set()
    for s in SHARD_IDS:
        for name in DATA_FILES:
            a, b = clean / "shards" / s / name, root / "shards" / s / name
            if not b.is_file() or a.read_bytes() != b.read_bytes():
                out.add(s)
        meta = _json(root / "shards" / s / "meta.json")
        if meta is None or meta != _json(clean / "shards" / s / "meta.json"):
            out.add(s)
    return out


def _read_all(root: Path, max_damaged: int) -> dict:
    ds = ShardDataset(root, shuffle=False, batch_size=3, max_damaged=max_damaged)
    seen, repeats, n_batches = {}, [], 0
    for tokens, labels in ds:
        n_batches += 1
        for i, lbl in enumerate(labels):
            key = (lbl["shard"], lbl["window"])
            if lbl["repeat"]:  # stands in for a damaged shard's window
                repeats.append(key)
                continue
            assert key not in seen, f"window {key} came twice"
            seen[key] = (tokens.x[i].numpy(), lbl["label"])
    assert n_batches == len(ds), "a damaged shard changed the batch count"
    assert len(seen) + len(repeats) == ds.n_windows and set(repeats) <= set(seen)
    return seen


@given(ops=st.lists(damage, min_size=1, max_size=3), max_damaged=st.integers(0, 3))
def test_damaged_shards_are_named_and_the_rest_is_exact(corpus, ops, max_damaged):
    clean, windows = corpus
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "out"
        shutil.copytree(clean, root)
        for op in ops:
            _apply(root, op)
        damaged = _damaged(clean, root)
        index_bad = (root / "index.csv").read_bytes() != (clean / "index.csv").read_bytes()
        stats = _json(root / "stats.json")
        stats_bad = not isinstance(stats, dict) or stats.get("index_sha256") != _json(
            clean / "stats.json"
        ).get("index_sha256")
        result = outcome(_read_all, root, max_damaged)
    if index_bad or stats_bad:
        assert result.kind == "error" and isinstance(result.error, ShardError)
        assert "index.csv" in str(result.error) or "stats.json" in str(result.error)
        return
    if len(damaged) > max_damaged:
        assert result.kind == "error" and isinstance(result.error, ShardError), result
        named = {s for s in damaged if f"shard {s}:" in str(result.error)}
        assert len(named) == max_damaged + 1, result.error
        return
    assert result.ok, result.error
    warned = {s for w in result.warnings for s in SHARD_IDS if f"shard {s}:" in str(w.message)}
    assert all(issubclass(w.category, ShardWarning) for w in result.warnings)
    assert warned == damaged and len(result.warnings) == len(damaged)
    expected = {(s, w) for s in SHARD_IDS if s not in damaged for w in range(len(windows[s]))}
    assert set(result.value) == expected  # undamaged shards: exactly their windows
    for (s, w), (x, label) in result.value.items():
        assert np.array_equal(x, windows[s][w]) and label == f"{s}-label"


# ---------------------------------------------------------------------- configs
BASE = {"dataset": "chbmit", "root": "x", "out": "y", "workers": 1,
        "recipe": {"sfreq": 200, "notch": 60}, "reader": {"subjects": ["chb01"]}}  # fmt: skip
anything = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**4), st.text(max_size=6),
                     st.floats(allow_nan=True, allow_infinity=True),
                     st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                     st.integers(), max_size=2))  # fmt: skip


@st.composite
def typo(draw, word: str) -> str:
    i = draw(st.integers(0, len(word) - 1))
    kind = draw(st.sampled_from(("drop", "swap", "insert", "change")))
    c = draw(st.sampled_from("aeiorstxz_"))
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + c + word[i + (kind == "change") :]


@st.composite
def bad_config(draw):
    """(mapping, the dotted key that was damaged, whether it is a misspelt key)."""
    data = json.loads(json.dumps(BASE))
    section = draw(st.sampled_from((None, "recipe", "reader")))
    node = data if section is None else data[section]
    key = draw(st.sampled_from(sorted(node)))
    if draw(st.booleans()):
        wrong = draw(typo(key))
        valid = {None: CorpusConfig.model_fields, "recipe": Recipe.model_fields,
                 "reader": {"subjects"}}[section]  # fmt: skip
        if wrong in valid or len(wrong) < 3:
            wrong = key + "x"
        node[wrong] = node.pop(key)
        return data, wrong, True
    node[key] = draw(anything)
    return data, key if section is None else f"{section}.{key}", False


@given(case=bad_config())
def test_config_mappings_give_config_errors_with_suggestions(case):
    data, key, misspelt = case
    result = outcome(load_config, data, CorpusConfig)
    if misspelt:
        assert result.kind == "error" and isinstance(result.error, ConfigError)
        assert f"{key.split('.')[-1]!r}" in str(result.error) and "did you mean" in str(
            result.error
        )
        return
    if result.kind == "error":
        assert isinstance(result.error, ConfigError) and "pydantic" not in str(result.error)
        assert key.split(".")[0] in str(result.error) or "invalid dataset" in str(result.error)
        return
    assert isinstance(result.value, CorpusConfig)
    if not key.startswith("recipe"):  # the corpus's own fields keep the value given
        section, _, leaf = key.rpartition(".")
        dumped = result.value.model_dump()
        got = dumped[section][leaf] if section else dumped[key]
        assert got == (data[section][leaf] if section else data[key])


yaml_texts = st.one_of(
    st.text(max_size=40),
    st.builds(yaml.safe_dump, st.lists(st.integers(), max_size=3)),
    st.builds(lambda c: yaml.safe_dump(c[0]), bad_config()),
    st.sampled_from(("a: ${nope}\n", "dataset: [\n", "- 1\n- 2\n", "", "42\n", "{a: 1, a: 2}\n")),
)


@given(text=yaml_texts, overrides=st.lists(st.text(max_size=12), max_size=2))
def test_yaml_files_and_overrides_give_config_errors(text, overrides):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        result = outcome(load_config, path, CorpusConfig, overrides)
    if result.kind == "error":
        first = str(result.error).split("\n")[0]
        assert isinstance(result.error, ConfigError)
        assert str(path) in first or first.startswith("override")
    else:
        assert isinstance(result.value, CorpusConfig)


# ---------------------------------------------------------------------- manifests
CELLS = {
    "path": st.sampled_from(("a.npy", "b.npy", "missing.npy", "", "sub", "a.npy\x00")),
    "subject": st.sampled_from(("", "p1", "p2")),
    "label": st.sampled_from(("", "x", "y")),
    "onset": st.sampled_from(("", "0", "1.5", "-1", "nan", "inf", "abc")),
    "duration": st.sampled_from(("", "2", "-2", "x")),
    "sfreq": st.sampled_from(("", "256", "0", "-5", "x", "inf")),
    "ch_names": st.sampled_from(("", "D1", "D1;D2", "D1 D2")),
    "positions": st.sampled_from(("", "D1=Cz", "D1=1 2 3", "D1=1 2", "=Cz", "D1", "D1=1 2 x")),
    "units": st.sampled_from(("", "uV", "1e-6")),
    "sujbect": st.just("p1"),  # a misspelt column
}


@st.composite
def manifest(draw):
    columns = ["path", *draw(st.lists(st.sampled_from(sorted(set(CELLS) - {"path"})),
                                      unique=True, max_size=6))]  # fmt: skip
    rows = draw(st.lists(st.fixed_dictionaries({c: CELLS[c] for c in columns}), min_size=1,
                         max_size=4))  # fmt: skip
    return columns, rows


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz_manifest")
    np.save(tmp / "a.npy", np.ones((1, 512)))
    np.save(tmp / "b.npy", np.ones((2, 512)))
    (tmp / "sub").mkdir()
    return tmp


def _load_all(path: Path) -> list:
    recs = list(read_dataset("manifest", path))
    for r in recs:
        if r.array is not None:
            assert r.array().shape[0] == len(r.ch_names)
    return recs


@given(table=manifest())
def test_manifest_tables_with_bad_rows(arrays, table):
    columns, rows = table
    path = arrays / "m.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    result = outcome(_load_all, path)
    if not result.ok:
        return
    assert "sujbect" not in columns
    by_file = {}
    for row in rows:
        by_file.setdefault(row["path"], []).append(row)
    assert sorted(r.id for r in result.value) == sorted(Path(p).stem for p in by_file)
    for rec in result.value:
        mine = by_file[f"{rec.id}.npy"]
        onsets = [float(r["onset"]) for r in mine if r.get("onset")]
        assert [e.onset for e in rec.events] == onsets
        assert all(np.isfinite(e.onset) and e.onset >= 0 and e.duration >= 0 for e in rec.events)
        labels = {r["label"] for r in mine if r.get("label") and not r.get("onset")}
        assert rec.label == (labels.pop() if labels else None)
        assert rec.sfreq > 0 and np.isfinite(rec.sfreq)
        subjects = {r["subject"] for r in mine if r.get("subject")}
        assert rec.subject == (subjects.pop() if subjects else rec.id)
