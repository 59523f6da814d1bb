"""Pretraining on real EEG (PhysioNet eegmmidb S001, ../shared/data/eeg): the tokenizer
learns (its spectrum loss falls, most of its codebook is in use) and masked code
prediction learns what the codes say (accuracy well above the most common code's share).

The whole pipeline runs as a user runs it: ``neurofm preprocess`` shards the four runs,
:func:`neurofm.train.pretrain` trains the tokenizer, then masked code prediction with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import shared

import neurofm
from neurofm.config import load_config
from neurofm.data import CorpusConfig, ShardDataset, preprocess_corpus
from neurofm.models import model_config
from neurofm.models.registry import get_architecture
from neurofm.train import PretrainConfig, pretrain, read_metrics

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "pretrain").glob("*.yaml"))
CODES = 32


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_pretrain_config_validates_and_names_a_fitting_model(path):
    config = load_config(path, PretrainConfig)
    arch = get_architecture(
        next(a for a in ("encoder", "tokenizer") if isinstance(model_config(config.model.name),
                                                             get_architecture(a).config_cls))
    )  # fmt: skip
    assert (arch.name == "tokenizer") == (config.objective.kind == "tokenizer"), path.name
    text = path.read_text()
    assert "Data:" in text and "Ran:" in text, f"{path.name} must say what data and how long"


def _mean(rows, key, first: bool, n: int = 3) -> float:
    values = [r[key] for r in rows if key in r]
    part = values[:n] if first else values[-n:]
    return sum(part) / len(part)


def test_tokenizer_then_masked_codes_learn_on_real_eegmmidb(tmp_path):  # issue 14
    root = shared("eeg/eegmmidb")
    corpus = CorpusConfig(dataset="eegmmidb", root=str(root), out=str(tmp_path / "corpus"),
                          recipe={"window_seconds": 4.0}, workers=1)  # fmt: skip
    assert preprocess_corpus(corpus, progress=False)["windows"] == 92
    common = {"data": {"corpus": corpus.out, "batch_size": 4, "workers": 0}, "log_every": 5,
              "checkpoint_every": 1000, "progress": False, "plot": False, "device": "cpu"}  # fmt: skip
    pretrain(common | {"out": str(tmp_path / "tok"), "steps": 120,
                       "model": {"name": "tokenizer-tiny",
                                 "overrides": {"n_codes": CODES, "dead_after": 10}},
                       "objective": {"kind": "tokenizer"},
                       "optim": {"lr": 1e-3, "warmup_steps": 10}})  # fmt: skip
    tok = read_metrics(tmp_path / "tok")
    spectrum = [{**r, "spectrum": r["amplitude"] + r["phase"]} for r in tok]
    before, after = _mean(spectrum, "spectrum", True), _mean(spectrum, "spectrum", False)
    # usage as a user sees it: the codes the trained tokenizer gives every window
    tokenizer = neurofm.load_model(tmp_path / "tok" / "checkpoint")
    ids = torch.cat(
        [tokenizer.codes(t)[t.mask] for t, _ in ShardDataset(corpus.out, batch_size=16)]
    )
    usage = len(ids.unique()) / CODES
    print(f"tokenizer: spectrum loss {before:.3f} -> {after:.3f}; {len(ids.unique())} of {CODES} "
          f"codes used over {len(ids)} tokens")  # fmt: skip
    assert after < 0.85 * before
    assert usage > 0.5
    pretrain(common | {"out": str(tmp_path / "codes"), "steps": 400,
                       "model": {"name": "eeg-tiny"},
                       "objective": {"kind": "masked_codes",
                                     "tokenizer": str(tmp_path / "tok" / "checkpoint")},
                       "optim": {"lr": 2e-3, "warmup_steps": 10}})  # fmt: skip
    codes = read_metrics(tmp_path / "codes")
    acc, majority = _mean(codes, "accuracy", False, 10), _mean(codes, "majority", False, 10)
    print(f"masked codes: accuracy {_mean(codes, 'accuracy', True):.3f} -> {acc:.3f}, "
          f"most common code {majority:.3f}")  # fmt: skip
    assert acc > 1.3 * majority
    model = neurofm.load_model(tmp_path / "codes" / "checkpoint")
    assert (
        json.loads((tmp_path / "codes" / "checkpoint" / "config.json").read_text())["training"][
            "objective"
        ]
        == "masked_codes"
    )
    assert model.recipe.window_seconds == 4.0
