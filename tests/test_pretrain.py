"""Pretraining: masking never picks padding, the loop resumes bit for bit after kill -9,
and two gloo processes compute what one process computes on the same global batch."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import neurofm
from neurofm.data import write_shard
from neurofm.data.shards import write_index
from neurofm.errors import ConfigError
from neurofm.io.datasets import Recording
from neurofm.models import create_model
from neurofm.objectives import (
    MaskedAutoencoder,
    MaskedCodes,
    MaskedReconstruction,
    MaskingConfig,
    TokenizerTraining,
    future_tokens,
    random_tokens,
)
from neurofm.synthetic import eeg
from neurofm.train import PretrainConfig, lr_at, pretrain, read_metrics

RECIPE = neurofm.Recipe(window_seconds=4.0, notch=None)
NAMES = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "O1", "O2"]
TIMING = ("tokens_per_s", "seconds")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six synthetic recordings of 24-40 s, two montages, as shards."""
    out = tmp_path_factory.mktemp("pretrain") / "corpus"
    for i in range(6):
        names = NAMES if i % 2 else NAMES[:6]
        seconds = 24 + 4 * i
        signal = functools.partial(eeg, len(names), int(seconds * 200), 200.0, seed=i, line=None)
        rec = Recording(dataset="manifest", subject=f"s{i}", id=f"r{i}", array=signal,
                        sfreq=200.0, ch_names=names, units="V")  # fmt: skip
        write_shard(rec, RECIPE, out)
    write_index(out)
    return out


def _batch(seed=0, B=4, S=5, N=3, pad_units=2, pad_patches=1) -> neurofm.Tokens:
    """Tokens with padding: the last units of half the windows, the last patch of others."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, S, N, dtype=torch.bool)
    mask[: B // 2, S - pad_units :] = False
    mask[B // 2 :, :, N - pad_patches :] = False
    x = torch.randn(B, S, N, 200, generator=g)
    x[~mask] = float("nan")  # padding may hold anything: it must never reach a loss
    space = torch.tensor(neurofm.eeg_vocabulary().ids(NAMES[:S])).repeat(B, 1)
    return neurofm.Tokens(x=x, space=space, pos=torch.full((B, S, 3), float("nan")),
                          t=torch.arange(N).float().repeat(B, 1), mask=mask)  # fmt: skip


# ---------------------------------------------------------------------- masking
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.9])
def test_random_masking_picks_real_tokens_only_in_the_right_number(ratio):  # issue 14
    tokens = _batch()
    seeds = torch.arange(4)
    hidden = random_tokens(tokens.mask, ratio, seeds)
    assert not (hidden & ~tokens.mask).any()
    real = tokens.mask.flatten(1).sum(1)
    expected = torch.round(real * ratio).clamp(min=1, max=None)
    assert torch.equal(hidden.flatten(1).sum(1), torch.minimum(expected.long(), real - 1))
    assert torch.equal(hidden, random_tokens(tokens.mask, ratio, seeds))  # seeded
    assert not torch.equal(hidden, random_tokens(tokens.mask, ratio, seeds + 100))


def test_a_windows_choice_depends_on_its_seed_only():
    tokens = _batch()
    both = random_tokens(tokens.mask, 0.5, torch.tensor([7, 8, 9, 10]))
    alone = random_tokens(tokens.mask[2:3], 0.5, torch.tensor([9]))
    assert torch.equal(both[2:3], alone)


def test_future_masking_takes_the_last_real_patches():  # issue 14
    tokens = _batch()
    hidden = future_tokens(tokens.mask, 1)
    assert not (hidden & ~tokens.mask).any()
    # windows 0-1: 3 real patches -> patch 2 withheld; windows 2-3: patch 2 is padding -> 1
    assert hidden[:2, :3, 2].all() and not hidden[:2, :, :2].any()
    assert hidden[2:, :, 1].all() and not hidden[2:, :, [0, 2]].any()
    assert not future_tokens(tokens.mask[:, :, :1], 1).any()  # one patch: nothing to predict


@pytest.mark.parametrize(
    "objective", ["masked_codes", "masked_reconstruction", "mae", "mae_future", "tokenizer"]
)
def test_padding_is_never_a_target_nor_in_a_loss(objective):  # issue 14
    torch.manual_seed(0)
    encoder = create_model("eeg-tiny")
    if objective == "masked_codes":
        obj = MaskedCodes(encoder, create_model("tokenizer-tiny"))
    elif objective == "tokenizer":
        obj = TokenizerTraining(create_model("tokenizer-tiny", n_codes=16))
    elif objective == "masked_reconstruction":
        obj = MaskedReconstruction(encoder)
    else:
        kind = "future" if objective.endswith("future") else "random"
        obj = MaskedAutoencoder(
            encoder, MaskingConfig(kind=kind, ratio=0.6), {"dim": 32, "depth": 1}
        )
    tokens = _batch()
    plan = obj.plan(tokens, torch.arange(4))
    assert not (plan.targets & ~tokens.mask).any()
    for mask in (plan.hidden, plan.dropped):
        assert mask is None or not (mask & ~tokens.mask).any()
    obj.train()
    loss = obj(tokens, plan)  # NaN in every padded patch: a finite loss never read them
    assert torch.isfinite(loss.total) and loss.count == plan.targets.sum()
    clean = neurofm.Tokens(**{**vars(tokens), "x": torch.nan_to_num(tokens.x, nan=1e3)})
    torch.manual_seed(1)
    again = obj(clean, plan)  # other padding content: the same loss
    if objective != "tokenizer":  # (its codebook moved in the first call: EMA)
        torch.testing.assert_close(again.total, loss.total)
    loss.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in obj.parameters() if p.grad is not None)


def test_masking_config_is_validated():
    with pytest.raises(ConfigError, match="ratio"):
        MaskingConfig(ratio=1.0)
    with pytest.raises(ConfigError, match="did you mean 'future'"):
        MaskingConfig(kind="futur")


def test_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 100, 1e-3, 1e-5, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lr_at(100, 100, 1e-3, 1e-5, 10) == pytest.approx(1e-5)


def test_config_typos_name_the_fix(tmp_path):
    cfg = {"out": "x", "steps": 1, "model": {"name": "eeg-tiny"}, "data": {"corpus": "c"},
           "objective": {"kind": "mae", "maskng": {}}, "optim": {"lr": 1e-3, "min_lr": 1e-2}}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        neurofm.config.load_config(cfg, PretrainConfig)
    assert "did you mean 'masking'" in str(err.value)


# ---------------------------------------------------------------------- resume after kill -9
RUN = {
    "steps": 12, "log_every": 1, "checkpoint_every": 4, "seed": 3, "progress": False,
    "model": {"name": "eeg-tiny", "overrides": {"dropout": 0.1, "drop_path": 0.1}},
    "objective": {"kind": "masked_reconstruction"},
    "data": {"batch_size": 4, "workers": 2},
    "optim": {"lr": 1e-3, "warmup_steps": 3, "accum": 2, "ema": 0.9},
    "threads": 1,
}  # fmt: skip

KILLER = """
import os, signal, sys
import neurofm.train.loop as loop
real = loop.lr_at
def lr_at(step, *args):
    if step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9, mid-run, between checkpoints
    return real(step, *args)
loop.lr_at = lr_at
from neurofm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _config(tmp_path: Path, corpus: Path, name: str, **changes) -> Path:
    cfg = json.loads(json.dumps(RUN)) | {"out": str(tmp_path / name)} | changes
    cfg["data"]["corpus"] = str(corpus)
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _cli(args, env=None, script=None) -> subprocess.CompletedProcess:
    cmd = (
        [sys.executable, "-c", script, *args]
        if script
        else [sys.executable, "-m", "neurofm", *args]
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})  # fmt: skip


def _untimed(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_kill_9_then_resume_continues_bit_for_bit(corpus, tmp_path):  # issue 14
    whole = _cli(["pretrain", str(_config(tmp_path, corpus, "whole"))])
    assert whole.returncode == 0, whole.stderr
    cfg = _config(tmp_path, corpus, "killed")
    killed = _cli(["pretrain", str(cfg)], env={"KILL_AT": "10"}, script=KILLER)
    assert killed.returncode == -9, killed.stderr
    rows = read_metrics(tmp_path / "killed")
    assert rows[-1]["step"] == 10  # steps 9 and 10 ran after the checkpoint of step 8
    resumed = _cli(["pretrain", str(cfg)])
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "killed")
    assert [r["step"] for r in b] == list(range(1, 13))  # steps 9-10 logged once, redone
    assert _untimed(a) == _untimed(b)  # the same floats: bit for bit
    wa = load_file(tmp_path / "whole" / "checkpoint" / "model.safetensors")
    wb = load_file(tmp_path / "killed" / "checkpoint" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    model = neurofm.load_model(tmp_path / "killed" / "checkpoint")
    assert isinstance(model, neurofm.models.Encoder)
    assert (tmp_path / "killed" / "curves.png").stat().st_size > 0


def test_resume_refuses_another_config(corpus, tmp_path):
    cfg = _config(tmp_path, corpus, "run", steps=2, checkpoint_every=2)
    assert _cli(["pretrain", str(cfg)]).returncode == 0
    changed = _cli(["pretrain", str(cfg), "optim.lr=0.01", "steps=3"])
    assert changed.returncode == 2
    assert "optim.lr: 0.001 -> 0.01" in changed.stderr
    longer = _cli(["pretrain", str(cfg), "steps=3"])  # more steps: allowed
    assert longer.returncode == 0, longer.stderr
    assert read_metrics(tmp_path / "run")[-1]["step"] == 3


# ---------------------------------------------------------------------- two gloo ranks
class Batches:
    """Fixed global batches; a rank of ``world`` takes its contiguous share of each."""

    def __init__(self, batches, recipe, rank=0, world=1):
        self.batches, self.recipe, self.rank, self.world = batches, recipe, rank, world

    def set_epoch(self, epoch, start=0):
        self.start = start

    def __iter__(self):
        for tokens in self.batches[self.start :]:
            b = len(tokens) // self.world
            yield tokens[self.rank * b : (self.rank + 1) * b]


def _global_batches(corpus: Path, n: int, size: int):
    from neurofm.data import ShardDataset

    ds = ShardDataset(corpus, batch_size=size, seed=0, shuffle=False, rank=0, world_size=1)
    ds.set_epoch(0)
    batches = [t for t, _ in ds][:n]
    return [t for t in batches if len(t) == size], ds.recipe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, cfg: dict, corpus: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    batches, recipe = _global_batches(Path(corpus), 6, 8)
    pretrain(cfg, data=Batches(batches, recipe, rank, world))


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_on_the_same_global_batch(
    corpus, tmp_path, parallel
):  # issue 14
    import torch.multiprocessing as mp

    base = {"steps": 5, "log_every": 1, "checkpoint_every": 5, "progress": False, "plot": False,
            "model": {"name": "eeg-tiny"}, "objective": {"kind": "mae", "decoder": {"depth": 1}},
            "data": {"corpus": str(corpus), "batch_size": 8}, "parallel": parallel,
            "optim": {"lr": 1e-3, "warmup_steps": 1, "accum": 2}, "device": "cpu"}  # fmt: skip
    one = base | {"out": str(tmp_path / "one")}
    batches, recipe = _global_batches(corpus, 10, 8)
    torch.set_num_threads(1)
    pretrain(one, data=Batches(batches, recipe))
    two = base | {"out": str(tmp_path / "two"), "data": base["data"] | {"batch_size": 4}}
    mp.spawn(_rank, args=(2, _free_port(), two, str(corpus)), nprocs=2)
    a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert len(a) == len(b) == 5
    for ra, rb in zip(a, b, strict=True):  # float sums in another order: 1e-5 relative
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5), (ra, rb)
    # the checkpoint of the two-process run loads into one process: the same weights
    wa = neurofm.load_model(tmp_path / "one" / "checkpoint").state_dict()
    wb = neurofm.load_model(tmp_path / "two" / "checkpoint").state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)


def test_no_weight_decay_on_biases_norms_tokens_and_tables():
    model = create_model("eeg-tiny", time_embed="table")
    decay, plain = (set(map(id, g["params"])) for g in neurofm.train.param_groups(model, 0.05))
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = {names[i] for i in plain}
    assert {
        "time_embed.table",
        "space_embed.table.weight",
        "cls_token",
        "mask_token",
    } <= plain_names
    assert all(names[i].endswith("weight") and "norm" not in names[i] for i in decay)
    assert "blocks.0.attn.qkv.weight" in {names[i] for i in decay}


@pytest.mark.parametrize("name", ["eeg-tiny.sample", "tokenizer-tiny.sample"])
def test_shipped_weights_load_offline_with_their_card(name, monkeypatch, tmp_path):  # issue 14
    from neurofm.models.card import read_card
    from neurofm.models.registry import WEIGHTS, shipped_folder

    monkeypatch.setenv("NEUROFM_HOME", str(tmp_path))  # an empty cache: the package holds them
    monkeypatch.setenv("NEUROFM_OFFLINE", "1")
    folder = Path(str(shipped_folder(name)))
    assert WEIGHTS[name].shipped and (folder / "model.safetensors").stat().st_size < 10e6
    model = neurofm.load_model(name)
    card = read_card(folder)
    assert card["name"] == name and card["model"] == model.config.name
    tensors = load_file(folder / "model.safetensors")
    assert card["parameters"] == sum(t.numel() for t in tensors.values())
    assert card["data"]["hours"] > 1 and "chbmit" not in card["data"]["datasets"]
    text = (folder / "README.md").read_text()
    assert "Not a medical device" in text and "2-core CPU" in text
    assert (folder / "curves.png").stat().st_size > 10_000
    from neurofm.cli import sample_path

    tokens = neurofm.tokenize(sample_path(), model.recipe)
    if name.startswith("eeg"):
        assert "| eegmat |" in text  # the probes, beside random init and band power
        assert model(tokens).pooled.shape == (len(tokens), 100)
    else:
        ids = model.codes(tokens)
        assert ids.shape == tokens.mask.shape and ids.max() < model.config.n_codes
