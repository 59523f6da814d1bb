"""Every registered model: forward, backward, save/load; the registry and checkpoint format
know architectures and weights; wrapped modules save plain checkpoints; patch geometry has
one source; masked modelling (hidden, dropped); the training forward reads no values.

Models are built with at most two blocks: blocks repeat, so two exercise every kind of
parameter an architecture has, and eeg-huge stays small enough for a CPU test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import neurofm
from neurofm.channels import UNK, eeg_vocabulary
from neurofm.errors import CheckpointError, ConfigError, NeurofmError
from neurofm.models import (
    Encoder,
    EncoderConfig,
    create_model,
    list_models,
    list_weights,
    load_model,
    load_weights,
    model_config,
    save_model,
)
from neurofm.models.checkpoint import RESERVED
from neurofm.tokens import Tokens

EEG_NAMES = ("Fp1", "Cz", "O1")
#: the encoder sizes (the tokenizer's, tests/test_tokenizer.py, take other inputs and outputs)
ENCODERS = list_models("encoder")


def small(name: str, **overrides) -> Encoder:
    torch.manual_seed(0)
    return create_model(name, depth=min(2, model_config(name).depth), **overrides)


def tokens_for(model: Encoder, B: int = 2, N: int = 3, seed: int = 0) -> Tokens:
    """Tiny tokens in the model's recipe: 3 units, the last patch of item 1 padding."""
    recipe, S = model.recipe, len(EEG_NAMES)
    g = torch.Generator().manual_seed(seed)
    if model.config.modality == "eeg":
        vocab = eeg_vocabulary()
        space = torch.as_tensor(vocab.ids(list(EEG_NAMES))).expand(B, -1).clone()
        pos = torch.as_tensor(np.stack([vocab.position(n) for n in EEG_NAMES]), dtype=torch.float32)
        pos = pos.expand(B, -1, -1).clone()
    else:  # parcels placed by their centroid
        space, pos = torch.full((B, S), UNK), torch.randn(B, S, 3, generator=g) * 50
    mask = torch.ones(B, S, N, dtype=torch.bool)
    mask[1, :, -1] = False
    return Tokens(
        x=torch.randn(B, S, N, recipe.patch_len, generator=g), space=space, pos=pos,
        t=(torch.arange(N) * recipe.patch_seconds).float().expand(B, -1).clone(), mask=mask,
    )  # fmt: skip


def replace(tokens: Tokens, **fields) -> Tokens:
    names = ("x", "space", "pos", "t", "mask", "names")
    return Tokens(**{n: fields.get(n, getattr(tokens, n)) for n in names})


def with_noise_at(tokens: Tokens, where: torch.Tensor) -> Tokens:
    """The same tokens with loud new signal at ``where`` (B, S, N)."""
    x = tokens.x.clone()
    x[where] += 10 * torch.randn_like(x[where])
    return replace(tokens, x=x)


def assert_same_features(a, b, where: torch.Tensor) -> None:
    torch.testing.assert_close(a.tokens[where], b.tokens[where], rtol=0, atol=1e-5)
    torch.testing.assert_close(a.pooled, b.pooled, rtol=0, atol=1e-5)


def small_eeg(attention: str) -> Encoder:
    extra = {"cls_token": False} if attention == "divided" else {}  # no [CLS] in divided
    return small("eeg-tiny", attention=attention, **extra).eval()


# ---------------------------------------------------------------------- every model
@pytest.mark.parametrize("name", ENCODERS)
def test_forward(name):
    model = small(name).eval()
    tokens = tokens_for(model)
    with torch.no_grad():
        out = model(tokens)
    assert out.tokens.shape == (*tokens.mask.shape, model.dim)
    assert out.pooled.shape == (2, model.dim) and torch.isfinite(out.pooled).all()
    assert torch.isfinite(out.tokens[tokens.mask]).all()
    assert torch.equal(out.visible, tokens.mask) and out.hidden is None


@pytest.mark.parametrize("name", ENCODERS)
def test_backward_reaches_every_parameter(name):
    model = small(name).train()
    tokens = tokens_for(model)
    hidden = torch.zeros_like(tokens.mask)
    hidden[0, 1, 1] = True  # so the [MASK] embedding is used
    out = model(tokens, hidden=hidden)
    loss = out.tokens[tokens.mask].pow(2).mean() + out.pooled.pow(2).mean()
    loss.backward()
    # a name table of PAD and UNK only (fMRI: parcels placed by centroid) is never read
    unread = {"space_embed.table.weight"} if model.config.vocab_size == 2 else set()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname}: NaN gradient"
        assert (p.grad.abs().sum() == 0) == (pname in unread), f"{pname}: zero gradient"


@pytest.mark.parametrize("name", ENCODERS)
def test_save_load_round_trip(name, tmp_path):
    model = small(name).eval()
    path = model.save_pretrained(tmp_path / name)
    config = json.loads((path / "config.json").read_text())
    assert config["architecture"] == "encoder" and config["format"] == "neurofm"
    assert (
        "patch_len" not in config["model"] and config["recipe"]["modality"] == model.config.modality
    )
    loaded = load_model(path)
    assert type(loaded) is Encoder
    assert loaded.config == model.config and loaded.recipe == model.recipe
    tokens = tokens_for(model)
    with torch.no_grad():
        a, b = model(tokens), loaded(tokens)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled)


# ---------------------------------------------------------------------- one source of geometry
@pytest.mark.parametrize("name", list_models())
def test_geometry_override_is_refused_with_the_fix(name):
    with pytest.raises(ConfigError, match=r"patch_len=100 is not a model setting.*recipe="):
        create_model(name, patch_len=100)
    with pytest.raises(ConfigError, match=r"patch_seconds=2\.0 is not a model setting"):
        create_model(name, patch_seconds=2.0)


def test_model_with_contradicting_recipe_and_config_is_refused():
    with pytest.raises(ConfigError, match="patch_len=100, patch_seconds=0.5 are not model"):
        EncoderConfig(patch_len=100, patch_seconds=0.5)
    with pytest.raises(ConfigError, match="an fMRI model .* cannot take an EEG recipe"):
        create_model("fmri-tiny", recipe=neurofm.Recipe())
    with pytest.raises(ConfigError, match="an EEG model .* cannot take an fMRI recipe"):
        Encoder(model_config("eeg-tiny"), recipe=neurofm.FMRIRecipe())
    model = create_model("eeg-tiny")
    with pytest.raises(ConfigError, match="patches of 200 samples; the new recipe makes .* 100"):
        model.recipe = neurofm.Recipe(sfreq=100, h_freq=40)
    model.recipe = neurofm.Recipe(sfreq=400, patch_seconds=0.5)  # the same 200 samples
    assert model.recipe.patch_seconds == 0.5
    other = create_model("fmri-tiny", recipe=neurofm.FMRIRecipe(t_r=2.0, patch_trs=10))
    with pytest.raises(CheckpointError, match=r"checkpoint \(64, 20\) vs model \(64, 10\)"):
        other.load_weights(create_model("fmri-tiny").state_dict())


def test_time_embedding_follows_the_recipe():
    """The recipe's patch_seconds is what the time embedding divides by: the same tokens
    with times and patch length both doubled give the same features."""
    model = small("fmri-tiny").eval()
    slow = create_model("fmri-tiny", depth=2, recipe=neurofm.FMRIRecipe(t_r=1.44))
    slow.load_state_dict(model.state_dict())
    tokens = tokens_for(model)
    with torch.no_grad():
        a = model(tokens)
        b = slow.eval()(replace(tokens, t=tokens.t * 2))
    torch.testing.assert_close(a.tokens, b.tokens)


# ---------------------------------------------------------------------- registry, weights
def test_architectures_and_weights_are_different_names(tmp_path, monkeypatch):
    assert "eeg-base" in list_models() and "labram-base" in list_weights()
    assert set(list_models()).isdisjoint(list_weights())
    assert list_weights("eeg-base") == ["labram-base"] and list_weights("fmri-tiny") == []
    assert set(list_models()) == set(ENCODERS) | set(list_models("tokenizer"))
    monkeypatch.setenv("NEUROFM_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"names a model .*create_model\('eeg-base'\).*"
                       r"never downloads.*from_labram\('labram-base\.pth'\)"):  # fmt: skip
        load_model("eeg-base")
    with pytest.raises(CheckpointError, match=r"no weights for 'labram-base' .*never downloads.*"
                       r"LaBraM/.*labram-base\.pth.*from_labram"):  # fmt: skip
        load_model("labram-base")
    with pytest.raises(NeurofmError, match="names weights: neurofm.load_model"):
        create_model("labram-base")
    model = small("eeg-tiny").eval()
    model.save_pretrained(tmp_path / "models" / "labram-base")  # where the import is saved
    assert torch.equal(load_model("labram-base").norm.weight, model.norm.weight)


def test_weights_need_their_own_name():
    from neurofm.models import Weights, register_weights

    with pytest.raises(NeurofmError, match="names a model"):
        register_weights(Weights("eeg-base", model="eeg-base", source="hf://x/y", card=""))
    with pytest.raises(NeurofmError, match="unknown model 'eeg-bsae'"):
        register_weights(Weights("eeg-bsae.sample", model="eeg-bsae", source="hf://x/y", card=""))


class _Toy(torch.nn.Module):
    """A second architecture: load_model builds whatever class config.json names."""

    def __init__(self, config, recipe=None):
        super().__init__()
        self.config, self.recipe = config, neurofm.Recipe() if recipe is None else recipe
        self.head = torch.nn.Linear(config.dim, 2)


def test_load_model_builds_the_architecture_the_checkpoint_names(tmp_path, monkeypatch):
    from neurofm.config import StrictConfig
    from neurofm.models import registry

    class ToyConfig(StrictConfig):
        name: str = "toy"
        dim: int = 4

    monkeypatch.setitem(
        registry.ARCHITECTURES, "toy", registry.Architecture("toy", _Toy, ToyConfig)
    )
    toy = _Toy(ToyConfig())
    path = save_model(toy, tmp_path / "toy")
    assert json.loads((path / "config.json").read_text())["architecture"] == "toy"
    loaded = load_model(path)
    assert type(loaded) is _Toy and torch.equal(loaded.head.weight, toy.head.weight)
    with pytest.raises(CheckpointError, match="holds a toy; this call needs a encoder"):
        load_model(path, architecture="encoder")
    monkeypatch.delitem(registry.ARCHITECTURES, "toy")
    with pytest.raises(CheckpointError, match="unknown architecture 'toy'.*newer neurofm"):
        load_model(path)


def test_unregistered_modules_are_not_saved(tmp_path):
    with pytest.raises(NeurofmError, match="not a registered architecture"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x")


@pytest.mark.parametrize("key", RESERVED)
def test_extra_cannot_overwrite_reserved_keys(tmp_path, key):
    model = small("eeg-tiny")
    with pytest.raises(NeurofmError, match=f"extra= cannot set '{key}'"):
        model.save_pretrained(tmp_path / "ckpt", extra={key: "mine", "run": 1})
    assert not (tmp_path / "ckpt").exists()
    path = model.save_pretrained(tmp_path / "ckpt", extra={"run": 1})
    assert json.loads((path / "config.json").read_text())["run"] == 1


# ---------------------------------------------------------------------- wrapped modules
@pytest.fixture
def process_group(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("this torch has no torch.distributed")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _same_as_plain(path, plain: Encoder) -> None:
    loaded = load_model(path)
    saved = json.loads((path / "config.json").read_text())
    assert saved["architecture"] == "encoder" and type(loaded) is Encoder
    assert loaded.state_dict().keys() == plain.state_dict().keys()
    tokens = tokens_for(plain)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(tokens).tokens, plain.eval()(tokens).tokens)


def test_ddp_wrapped_model_saves_a_plain_checkpoint(tmp_path, process_group):
    from torch.nn.parallel import DistributedDataParallel

    plain = small("eeg-tiny")
    ddp = DistributedDataParallel(plain)
    assert all(k.startswith("module.") for k in ddp.state_dict())
    _same_as_plain(save_model(ddp, tmp_path / "ddp"), plain)
    fresh = small("eeg-tiny", dim=100)  # the same shapes, other values
    torch.nn.init.zeros_(fresh.norm.weight)
    fresh.load_weights(ddp.state_dict())  # 'module.' prefixes are ignored
    assert torch.equal(fresh.norm.weight, plain.norm.weight)
    target = DistributedDataParallel(small("eeg-tiny", dim=100))
    torch.nn.init.zeros_(target.module.norm.weight)
    load_weights(target, plain.state_dict())  # a wrapped model takes a plain state dict
    assert torch.equal(target.module.norm.weight, plain.norm.weight)


def test_compiled_model_saves_a_plain_checkpoint(tmp_path):
    plain = small("eeg-tiny")
    compiled = torch.compile(plain)  # not run: nothing is compiled, the wrapper is enough
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    _same_as_plain(save_model(compiled, tmp_path / "compiled"), plain)
    fresh = small("eeg-tiny")
    torch.nn.init.zeros_(fresh.norm.weight)
    fresh.load_weights(compiled.state_dict())
    assert torch.equal(fresh.norm.weight, plain.norm.weight)


def test_fsdp2_sharded_model_saves_a_full_checkpoint(tmp_path, process_group, monkeypatch):
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        pytest.skip("this torch has no FSDP2 (fully_shard)")
    plain = small("eeg-tiny")
    reference = {k: v.clone() for k, v in plain.state_dict().items()}
    sharded = small("eeg-tiny")
    mesh = init_device_mesh("cpu", (1,))
    for block in sharded.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    from torch.distributed.tensor import DTensor

    assert isinstance(sharded.norm.weight, DTensor)
    loaded = load_model(save_model(sharded, tmp_path / "fsdp")).state_dict()
    assert loaded.keys() == reference.keys()
    assert all(type(v) is torch.Tensor and torch.equal(v, reference[k]) for k, v in loaded.items())
    other = small("eeg-tiny", dim=100)
    other.load_weights(loaded)
    tokens = tokens_for(plain)
    with torch.no_grad():
        expected = plain.eval()(tokens).tokens
    monkeypatch.setattr(Encoder, "inference_tokens", 3 * 3)  # groups of 1 window
    passes = []  # passes over the first block: grouped inference, one per group
    plain.blocks[0].register_forward_hook(lambda *_: passes.append("plain"))
    sharded.blocks[0].register_forward_hook(lambda *_: passes.append("sharded"))
    with torch.no_grad():  # the sharded model runs the batch in one pass: no gather per group
        assert torch.equal(sharded.eval()(tokens).tokens, expected)
        plain(tokens)
    assert passes == ["sharded", "plain", "plain"]


def test_only_rank_0_writes(tmp_path, process_group, monkeypatch):
    """Under DDP every rank holds the whole model: only rank 0 writes the folder (ranks
    writing it at once would race); another rank returns without writing."""
    import torch.distributed as dist

    model = small("eeg-tiny")
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: 1)
    assert save_model(model, tmp_path / "ckpt") == tmp_path / "ckpt"
    assert list(tmp_path.iterdir()) == [tmp_path / "store"]  # the process group's file
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: 0)
    _same_as_plain(save_model(model, tmp_path / "ckpt"), model)


def test_old_names_still_work(tmp_path):
    """What neurofm.models.registry exported before checkpoint.py existed still imports
    (85f7a23); from_labram(patch_len=) names the recipe instead of a bare TypeError."""
    import neurofm.models.checkpoint as checkpoint
    from neurofm.models import from_labram
    from neurofm.models.registry import FORMAT, read_config
    from neurofm.models.registry import load_model as old_load
    from neurofm.models.registry import save_model as old_save

    assert FORMAT == checkpoint.FORMAT and read_config is checkpoint.read_config
    model = small("eeg-tiny")
    assert old_load(old_save(model, tmp_path / "m")).config == model.config
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        neurofm.models.registry.nothing  # noqa: B018
    with pytest.raises(NeurofmError, match="geometry comes from the recipe: pass recipe="):
        from_labram({}, patch_len=200)
    with pytest.raises(TypeError, match="'hedas'"):
        from_labram({}, hedas=10)


# ---------------------------------------------------------------------- masked modelling
@pytest.mark.parametrize("attention", ["full", "divided"])
def test_hidden_tokens_content_reaches_nothing(attention):
    """Hidden tokens become [MASK]: changing their signal changes no feature at all
    (LaBraM's per-sample GroupNorm statistics leave them out too)."""
    model = small_eeg(attention)
    tokens = tokens_for(model, N=4)
    hidden = torch.zeros_like(tokens.mask)
    hidden[:, 0, 1:3] = True
    hidden[1, :, -1] = True  # padding: never counted as hidden
    with torch.no_grad():
        a = model(tokens, hidden=hidden)
        b = model(with_noise_at(tokens, hidden), hidden=hidden)
        plain = model(tokens)
    assert_same_features(a, b, tokens.mask)
    assert torch.equal(a.hidden, hidden & tokens.mask)
    assert not torch.allclose(a.tokens[hidden & tokens.mask], plain.tokens[hidden & tokens.mask])


@pytest.mark.parametrize("attention", ["full", "divided"])
def test_dropped_tokens_influence_nothing(attention):
    """Dropped tokens are out of the input: the others' features equal those of the same
    tokens with the dropped ones removed (a whole unit sliced away, or marked padding)."""
    model = small_eeg(attention)
    tokens = tokens_for(model, N=4)
    dropped = torch.zeros_like(tokens.mask)
    dropped[:, 1] = True  # a whole channel ...
    with torch.no_grad():
        out = model(tokens, dropped=dropped)
        keep = [0, 2]
        sliced = model(Tokens(x=tokens.x[:, keep], space=tokens.space[:, keep],
                              pos=tokens.pos[:, keep], t=tokens.t, mask=tokens.mask[:, keep]))  # fmt: skip
    out.tokens = out.tokens[:, keep]
    assert_same_features(out, sliced, tokens.mask[:, keep])
    assert not out.visible[:, 1].any()

    dropped = torch.rand(tokens.mask.shape, generator=torch.Generator().manual_seed(1)) < 0.4
    dropped[1, :, -1] = True  # padding: dropping it changes nothing
    with torch.no_grad():
        a = model(tokens, dropped=dropped)
        b = model(with_noise_at(tokens, dropped), dropped=dropped)
        as_padding = model(replace(tokens, mask=tokens.mask & ~dropped))
    visible = tokens.mask & ~dropped
    assert torch.equal(a.visible, visible) and torch.equal(a.mask, tokens.mask)
    for other in (b, as_padding):
        assert_same_features(a, other, visible)
    assert (a.tokens[~visible] == 0).all()


def test_hidden_and_dropped_together_and_the_old_name():
    model = small("eeg-tiny")  # training mode: [MASK] and dropping are for pretraining
    tokens = tokens_for(model, N=4)
    hidden, dropped = torch.zeros_like(tokens.mask), torch.zeros_like(tokens.mask)
    hidden[:, 0, 0], dropped[:, 2, 1:] = True, True
    out = model(tokens, hidden=hidden, dropped=dropped)
    out.tokens[out.visible].pow(2).mean().backward()
    assert model.mask_token.grad.abs().sum() > 0
    with pytest.warns(FutureWarning, match="hidden="), torch.no_grad():
        old = model.eval()(tokens, hide=hidden)
    with torch.no_grad():
        torch.testing.assert_close(old.tokens, model(tokens, hidden=hidden).tokens)
    with pytest.raises(NeurofmError, match="hidden has shape"):
        model(tokens, hidden=hidden[:, :2])
    with pytest.raises(NeurofmError, match="dropped must be a bool tensor"):
        model(tokens, dropped=dropped.float())


# ---------------------------------------------------------------------- the training path
@pytest.mark.parametrize("name", ["eeg-tiny", "fmri-tiny"])
@pytest.mark.parametrize("attention", ["full", "divided"])
def test_training_forward_reads_no_values(name, attention):
    """On the meta device a tensor has no values: any host read (.item(), bool(), nonzero)
    raises. A training step there (forward with hidden or dropped tokens and padding,
    backward) runs, so it needs no host sync on any accelerator; validating does read
    (and raises here)."""
    extra = {"cls_token": False} if attention == "divided" else {}  # no [CLS] in divided
    with torch.device("meta"):
        model = small(name, attention=attention, **extra).train()
        B, S, N, P = 2, 3, 4, model.recipe.patch_len
        tokens = Tokens(x=torch.randn(B, S, N, P), space=torch.randint(2, 5, (B, S)),
                        pos=torch.randn(B, S, 3), t=torch.arange(N).float().expand(B, -1),
                        mask=torch.rand(B, S, N) < 0.8)  # fmt: skip
        hidden = torch.rand(B, S, N) < 0.3
        out = model(tokens, hidden=hidden)
        (out.tokens.sum() + out.pooled.sum()).backward()
        assert out.tokens.device.type == "meta"
        dropped = torch.rand(B, S, N) < 0.3  # MAE-style: the full length, no count read
        out = model(tokens, hidden=hidden, dropped=dropped)
        (out.tokens.sum() + out.pooled.sum()).backward()
        assert out.tokens.shape == (B, S, N, model.config.dim)
        with pytest.raises(RuntimeError, match="meta"):
            model(tokens, validate=True)


def test_cpu_tricks_only_on_cpu_without_autograd(monkeypatch):
    """Grouped inference runs on the CPU without autograd only: never with autograd,
    never on another device (meta here), never for sharded weights."""
    calls = []
    one_pass = Encoder._forward

    def spy(self, *args):
        calls.append(args[0].shape[0])
        return one_pass(self, *args)

    monkeypatch.setattr(Encoder, "_forward", spy)
    monkeypatch.setattr(Encoder, "inference_tokens", 2 * 3 * 3)  # groups of 2 windows
    model = small("eeg-tiny").eval()
    tokens = tokens_for(model, B=5)
    with torch.no_grad():
        model(tokens)
    assert calls == [2, 2, 1]
    calls.clear()
    model(tokens)  # autograd on
    with torch.device("meta"), torch.no_grad():
        meta = small("eeg-tiny").eval()
        meta(tokens.to("meta"), validate=False)
    assert calls == [5, 5]
