"""The encoder: LaBraM parity, masks, embeddings, registry, checkpoints and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import neurofm
from neurofm.channels import PAD, UNK, eeg_vocabulary, map_channels
from neurofm.errors import CheckpointError, FileFormatWarning, NeurofmError, SignalError
from neurofm.models import (
    Encoder,
    EncoderConfig,
    create_model,
    from_labram,
    list_models,
    load_model,
    model_config,
)
from neurofm.models.convert import LABRAM_CHANNELS
from neurofm.tokens import Tokens, collate

CHB = "FP1 FP2 F7 F3 FZ F4 F8 T7 C3 CZ C4 T8 P7 P3 PZ P4 P8 O1 O2 FT9 FT10 FC1 FC2".split()


def make_tokens(names, B=2, N=4, P=200, seed=0, t0=0.0) -> Tokens:
    vocab = eeg_vocabulary()
    canon = [c.name for c in map_channels(list(names)).channels]
    ids = torch.as_tensor(vocab.ids(canon))
    pos = torch.as_tensor(np.stack([vocab.position(n) for n in canon]), dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    S = len(names)
    return Tokens(
        x=torch.randn(B, S, N, P, generator=g),
        space=ids.expand(B, -1).clone(),
        pos=pos.expand(B, -1, -1).clone(),
        t=(t0 + torch.arange(N, dtype=torch.float32)).expand(B, -1).clone(),
        mask=torch.ones(B, S, N, dtype=torch.bool),
        names=[tuple(canon)] * B,
    )


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("eeg-tiny").eval()


# ---------------------------------------------------------------------- LaBraM parity
def _braindecode_labram(**kwargs):
    pytest.importorskip("braindecode")
    import warnings

    from braindecode.models import Labram

    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Labram(n_chans=len(CHB), n_times=2000, n_outputs=3, sfreq=200, **kwargs).eval()
    with torch.no_grad():  # move every weight off its init (zeros, ones) so all are tested
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return ref


def _reference(ref, x):
    with torch.no_grad():
        out = ref(x, ch_names=CHB, return_features=True)
        feats = ref.forward_features(x, input_chans=_input_chans())
    return out["features"], out["cls_token"], feats


def _input_chans():
    return torch.tensor([0] + [LABRAM_CHANNELS.index(n) + 1 for n in CHB])


def _check_parity(model, ref, pooling):
    tokens = make_tokens(CHB, B=3, N=10)
    x = tokens.x.reshape(3, len(CHB), 2000)
    features, cls, pooled = _reference(ref, x)
    with torch.no_grad():
        out = model(tokens)
    ours = out.tokens.reshape(3, len(CHB) * 10, -1)  # LaBraM's order: channel-major
    assert (ours - features).abs().max() <= 1e-4
    assert (out.cls - cls).abs().max() <= 1e-4
    assert (out.pooled - pooled).abs().max() <= 1e-4
    assert model.config.pooling == pooling


@pytest.mark.parametrize("qkv_bias,mean", [(False, False), (True, True)])
def test_braindecode_labram_parity(qkv_bias, mean):
    ref = _braindecode_labram(qkv_bias=qkv_bias, use_mean_pooling=mean)
    model = from_labram(ref).eval()
    _check_parity(model, ref, "mean" if mean else "cls")
    assert model.conversion["layout"] == "braindecode"
    # T3..T6 are aliases of T7/P7/T8/P8 in neurofm; CB1, CFC1 ... are outside 10-05
    assert {"T3", "T5", "CB1", "CFC1"} <= set(model.conversion["dropped_channels"])
    assert model.conversion["mapped_channels"] == 110


def _original_layout(ref) -> dict:
    """braindecode's weights under the original labram-base.pth names (pretraining dump)."""
    renames = [(r"^position_embedding$", "pos_embed"), (r"^temporal_embedding$", "time_embed"),
               (r"^patch_embed\.temporal_conv\.", "patch_embed."), (r"\.mlp\.0\.", ".mlp.fc1."),
               (r"\.mlp\.2\.", ".mlp.fc2."), (r"^final_layer\.", "lm_head.")]  # fmt: skip
    out = {}
    for key, value in ref.state_dict().items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        out["student." + key] = value.clone()
    time = out["student.time_embed"]  # LaBraM's table has 16 rows
    out["student.time_embed"] = torch.cat(
        [time, torch.randn(1, 16 - time.shape[1], time.shape[2])], 1
    )
    out["student.mask_token"] = torch.randn(1, 1, time.shape[2])
    return {"model": out, "epoch": 10}


def test_original_labram_checkpoint_parity(tmp_path):
    ref = _braindecode_labram(qkv_bias=True)
    path = tmp_path / "labram-base.pth"
    torch.save(_original_layout(ref), path)
    model = from_labram(path).eval()
    assert model.conversion["layout"] == "labram"
    assert model.config.time_rows == 16 and model.config.time_embed == "table"
    _check_parity(model, ref, "cls")
    assert model.conversion["ignored_tensors"] == ["lm_head.weight", "lm_head.bias"]


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "args": _Opaque()}, path)
    with pytest.raises(NeurofmError, match="weights_only"):
        from_labram(path)
    with pytest.raises(NeurofmError, match="pickle"):
        load_model(path)


class _Opaque:  # an arbitrary object: torch.load(weights_only=True) must refuse it
    pass


def test_not_a_labram_state_dict():
    with pytest.raises(NeurofmError, match="not a LaBraM"):
        from_labram({"encoder.weight": torch.zeros(2, 2)})


def test_imported_labram_refuses_channels_it_cannot_place():
    ref = _braindecode_labram()
    model = from_labram(ref).eval()
    tokens = make_tokens(["Fp1", "FCC1h"], N=10)  # FCC1h: a 10-05 name outside LaBraM's table
    with pytest.raises(NeurofmError, match="'FCC1h' cannot be placed"):
        model(tokens)
    with pytest.raises(NeurofmError, match="covers 11 patches"):
        model(make_tokens(["Fp1"], N=12))


# ---------------------------------------------------------------------- attention paths
@pytest.mark.parametrize("attention", ["full", "divided"])
def test_sdpa_matches_math_reference(attention):
    extra = {"cls_token": False} if attention == "divided" else {}
    torch.manual_seed(0)
    fast = create_model("eeg-tiny", attention=attention, **extra).eval()
    slow = create_model("eeg-tiny", attention=attention, impl="math", **extra).eval()
    slow.load_state_dict(fast.state_dict())
    batch = collate([make_tokens(CHB[:5], B=2), make_tokens(CHB, B=1, N=3, seed=1)])
    with torch.no_grad():
        a, b = fast(batch), slow(batch)
    real = batch.mask
    torch.testing.assert_close(a.tokens[real], b.tokens[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attention", ["full", "divided"])
def test_padding_changes_nothing(attention):
    """A window alone and the same window padded in a mixed-montage batch agree."""
    extra = {"cls_token": False} if attention == "divided" else {}
    torch.manual_seed(0)
    model = create_model("eeg-tiny", attention=attention, **extra).eval()
    small, big = make_tokens(CHB[:5], B=1, N=3), make_tokens(CHB, B=1, N=4, seed=2)
    with torch.no_grad():
        alone = model(small)
        mixed = model(collate([small, big]))
    torch.testing.assert_close(mixed.tokens[0, :5, :3], alone.tokens[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mixed.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attention", ["full", "divided"])
def test_grouped_inference_and_chunked_mlp_change_nothing(attention, monkeypatch):
    """Inference in groups of windows, and the MLP in row blocks, give the same numbers
    (and, for the MLP, the same gradients) as one pass over the whole batch."""
    from neurofm.models.encoder import Encoder, Mlp

    extra = {"cls_token": False} if attention == "divided" else {}
    torch.manual_seed(0)
    model = create_model("eeg-tiny", attention=attention, **extra).eval()
    batch = collate([make_tokens(CHB[:5], B=3, N=3), make_tokens(CHB, B=4, N=4, seed=2)])
    hidden = torch.rand(batch.mask.shape) < 0.3
    dropped = torch.rand(batch.mask.shape) < 0.3
    with torch.no_grad():
        monkeypatch.setattr(Encoder, "inference_tokens", 0)
        whole = model(batch, hidden, dropped)
        monkeypatch.setattr(Encoder, "inference_tokens", 2 * 23 * 4)  # groups of 2 windows
        grouped = model(batch, hidden, dropped)
    for field in ("tokens", "pooled", "cls", "visible", "hidden"):
        a, b = getattr(whole, field), getattr(grouped, field)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)

    mlp = Mlp(16, 64)
    x = torch.randn(5, 77, 16)
    calls = []
    one_pass = Mlp._mlp

    def spy(self, h):
        calls.append(h.shape[0])
        return one_pass(self, h)

    monkeypatch.setattr(Mlp, "_mlp", spy)
    monkeypatch.setattr(Mlp, "chunk_bytes", 256 * 64 * 4)  # 256-row blocks: 2 blocks here
    with torch.no_grad():
        blocks = mlp(x)
        assert calls == [256, 5 * 77 - 256]
        monkeypatch.setattr(Mlp, "chunk_bytes", 1 << 30)
        torch.testing.assert_close(blocks, mlp(x))
    # with autograd, on another device or with sharded weights: one call (CPU trick only)
    monkeypatch.setattr(Mlp, "chunk_bytes", 256 * 64 * 4)
    calls.clear()
    mlp(x.requires_grad_())
    with torch.device("meta"), torch.no_grad():
        Mlp(16, 64)(torch.empty(5, 77, 16))
    assert calls == [5, 5]  # the spy sees the leading dim of each call


def test_divided_attention_factorises():
    """Space attention mixes units within a patch; time attention patches within a unit.

    With one sub-layer silenced (its layer scale set to 0), poking token (1, 1) changes
    only its column (space) or only its row (time); with both on, everything.
    """
    torch.manual_seed(0)
    model = create_model("eeg-tiny", attention="divided", cls_token=False, depth=1,
                         conv_norm="patch").eval()  # fmt: skip
    tokens = make_tokens(CHB[:4], B=1, N=4)
    poked = tokens.x.clone()
    poked[0, 1, 1] += 5.0  # change unit 1 at patch 1

    def changed():
        with torch.no_grad():
            base = model(tokens).tokens
            out = model(Tokens(**{**tokens.__dict__, "x": poked})).tokens
        return ((out - base).abs().amax(-1)[0] > 1e-6).numpy()

    block = model.blocks[0]
    with torch.no_grad():
        space, time = block.gamma_1.clone(), block.gamma_t.clone()
        block.gamma_t.zero_()
        only_space = changed()
        block.gamma_t.copy_(time)
        block.gamma_1.zero_()
        only_time = changed()
        block.gamma_1.copy_(space)
    column, row = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    column[:, 1], row[1, :] = True, True
    assert (only_space == column).all()
    assert (only_time == row).all()
    assert changed().all()  # space then time: two hops reach every token


def test_pad_head_dim_gives_same_result(tiny):
    padded = create_model("eeg-tiny", pad_head_dim=8).eval()
    padded.load_state_dict(tiny.state_dict())
    tokens = make_tokens(CHB[:6])
    with torch.no_grad():
        torch.testing.assert_close(padded(tokens).tokens, tiny(tokens).tokens, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------- embeddings
def test_unknown_units_never_borrow_a_row(tiny):
    emb = tiny.space_embed
    pos = torch.tensor([[[10.0, 20.0, 30.0], [10.0, 20.0, 30.0], [float("nan")] * 3]])
    space = torch.tensor([[UNK, PAD, UNK]])
    with torch.no_grad():
        emb.table.weight[UNK] += 100.0  # if UNK/PAD read their rows, this would show
        emb.table.weight[PAD] += 100.0
        out = emb(space, pos)
        coords_only = emb.coords(
            neurofm.models.embeddings.fourier_features(pos[:, :1] / emb.scale_mm, emb.freqs)
        )
        emb.table.weight[UNK] -= 100.0
        emb.table.weight[PAD] -= 100.0
    torch.testing.assert_close(out[:, 0], coords_only[:, 0])
    assert torch.equal(out[0, 2], torch.zeros_like(out[0, 2]))  # no name, no position
    named = emb(torch.tensor([[eeg_vocabulary().id("Cz")]]), pos[:, :1])
    assert not torch.allclose(named, out[:, :1])


def test_unknown_channel_with_position_is_encoded(tiny):
    tokens = make_tokens(["Fp1", "Cz", "O1"])
    tokens.space[:, 2] = UNK  # as read_eeg marks a name it does not know
    with torch.no_grad():
        out = tiny(tokens)
    assert torch.isfinite(out.tokens).all()
    tokens.pos[:, 2] = float("nan")  # no name and no position: the model cannot place it
    with pytest.raises(NeurofmError, match="'O1' cannot be placed"):
        tiny(tokens)


def test_time_embedding_uses_seconds_not_indices(tiny):
    """Windows longer than pretraining work, and only time relative to the window counts."""
    with torch.no_grad():
        long = tiny(make_tokens(CHB[:3], B=1, N=40))  # 40 s, beyond LaBraM's 16
        a = tiny(make_tokens(CHB[:3], B=1, N=4, t0=0.0))
        b = tiny(make_tokens(CHB[:3], B=1, N=4, t0=3600.0))  # the same window an hour later
    assert torch.isfinite(long.tokens).all()
    torch.testing.assert_close(a.tokens, b.tokens)
    emb = tiny.time_embed
    half = emb(torch.tensor([[0.0, 0.5, 1.0]]), tiny.recipe.patch_seconds)
    assert not torch.allclose(half[0, 1], half[0, 0]) and not torch.allclose(half[0, 1], half[0, 2])


def test_time_table_interpolates_and_resizes():
    model = create_model("eeg-tiny", time_embed="table", time_rows=4).eval()
    emb = model.time_embed
    rows = emb(torch.tensor([[0.0, 1.0, 2.0, 1.5]]), model.recipe.patch_seconds)[0]
    torch.testing.assert_close(rows[3], (emb.table[1] + emb.table[2]) / 2)
    with pytest.raises(NeurofmError, match="resize_time_table"):
        model(make_tokens(CHB[:2], N=6))
    model.resize_time_table(8)
    assert model.config.time_rows == 8
    with torch.no_grad():
        assert torch.isfinite(model(make_tokens(CHB[:2], N=6)).tokens).all()


def test_time_embedding_arguments_are_checked():
    """The old positional order (dim, patch_seconds, kind, rows) fails loudly instead of
    building kind=1.0; other bad arguments are named."""
    from neurofm.models.layers.embeddings import TimeEmbedding

    with pytest.raises(NeurofmError, match="patch_seconds is no longer an argument"):
        TimeEmbedding(200, 1.0, "table", 16)
    with pytest.raises(NeurofmError, match="did you mean 'table'"):
        TimeEmbedding(200, "tabel")
    with pytest.raises(NeurofmError, match="rows must be an int"):
        TimeEmbedding(200, "table", 16.0)
    with pytest.raises(NeurofmError, match="dim must be at least 1"):
        TimeEmbedding(0)
    assert TimeEmbedding(200, "table", 16).table.shape == (16, 200)


def test_masked_group_norm_ignores_padding():
    from neurofm.models.layers.embeddings import ConvPatchEmbed

    torch.manual_seed(0)
    embed = ConvPatchEmbed(200, 200)
    x = torch.randn(1, 3, 2, 200)
    mask = torch.ones(1, 3, 2, dtype=torch.bool)
    full = embed(x, None)
    mask_pad = torch.cat([mask, torch.zeros(1, 2, 2, dtype=torch.bool)], 1)
    x_pad = torch.cat([x, 1e3 * torch.randn(1, 2, 2, 200)], 1)  # loud padding
    torch.testing.assert_close(embed(x_pad, mask_pad)[:, :3], full, atol=1e-5, rtol=1e-4)
    per_patch = ConvPatchEmbed(200, 200, norm="patch")
    per_patch.load_state_dict(embed.state_dict())
    one = per_patch(x[:, :1, :1], None)
    torch.testing.assert_close(per_patch(x, None)[:, :1, :1], one, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------- registry
def test_registry_sizes():
    assert {"eeg-tiny", "eeg-base", "eeg-large", "eeg-huge", "fmri-base"} <= set(list_models())
    sizes = {"eeg-base": (200, 12, 10), "eeg-large": (400, 24, 16), "eeg-huge": (800, 48, 16)}
    for name, (dim, depth, heads) in sizes.items():
        cfg = model_config(name)
        assert (cfg.dim, cfg.depth, cfg.heads) == (dim, depth, heads)
    with torch.device("meta"):
        base = create_model("eeg-base")
        huge = create_model("eeg-huge")
    assert 5e6 < base.num_params() < 7e6  # LaBraM-base: 5.8M
    assert 3.5e8 < huge.num_params() < 4.0e8  # LaBraM-huge: 369M
    assert base.recipe.patch_len == 200 and base.recipe.sfreq == 200
    with pytest.raises(NeurofmError, match="did you mean 'eeg-base'"):
        create_model("eeg-bsae")


def test_config_typos_and_contradictions():
    with pytest.raises(ValueError, match="did you mean 'heads'"):
        EncoderConfig(haeds=4)
    with pytest.raises(ValueError, match="cls_token=False"):
        EncoderConfig(attention="divided")
    with pytest.raises(ValueError, match="not divisible"):
        EncoderConfig(dim=200, heads=7)
    with pytest.raises(ValueError, match="conv_channels"):
        Encoder(EncoderConfig(dim=210, heads=7))  # 210 is not a multiple of 25 conv steps


def test_fmri_model_takes_parcel_patches():
    torch.manual_seed(0)
    model = create_model("fmri-tiny").eval()
    B, S, N, P = 2, 30, 5, 20
    tokens = Tokens(
        x=torch.randn(B, S, N, P), space=torch.full((B, S), UNK),
        pos=torch.randn(B, S, 3) * 50, t=torch.arange(N).float().expand(B, -1) * 14.4,
        mask=torch.ones(B, S, N, dtype=torch.bool),
    )  # fmt: skip
    with torch.no_grad():
        out = model(tokens)
    assert out.tokens.shape == (B, S, N, 64) and out.pooled.shape == (B, 64)
    with pytest.raises(NeurofmError, match="patches of 200 TRs"):
        model(make_tokens(CHB[:2]))


# ---------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path, tiny):
    path = tiny.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["name"] == "eeg-tiny" and config["recipe"]["sfreq"] == 200
    loaded = load_model(path)
    assert loaded.recipe == tiny.recipe and loaded.config == tiny.config
    tokens = make_tokens(CHB[:4])
    with torch.no_grad():
        assert torch.equal(loaded(tokens).tokens, tiny(tokens).tokens)
    assert load_model(path / "model.safetensors").config == tiny.config  # a file in it
    assert neurofm.load_model is load_model


def test_labram_import_round_trips_through_safetensors(tmp_path):
    model = from_labram(_braindecode_labram()).eval()
    loaded = load_model(model.save_pretrained(tmp_path / "labram"))
    tokens = make_tokens(CHB, N=10)
    with torch.no_grad():
        assert torch.equal(loaded(tokens).pooled, model(tokens).pooled)
    assert torch.equal(loaded.space_embed.learned, model.space_embed.learned)


def test_checkpoint_errors(tmp_path, tiny):
    path = tiny.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(NeurofmError, match="holds an eeg model"):
        load_model(path, modality="fmri")
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(NeurofmError, match="checksum"):
        load_model(path)
    weights.unlink()
    with pytest.raises(NeurofmError, match="no model.safetensors"):
        load_model(path)
    with pytest.raises(NeurofmError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(NeurofmError, match="never downloads"):
        load_model("eeg-base")
    with pytest.raises(NeurofmError, match="did you mean 'eeg-tiny'"):
        load_model("eeg-tinny")


def test_weights_of_another_size_name_the_difference(tiny):
    other = create_model("eeg-tiny", dim=200, heads=10)
    with pytest.raises(NeurofmError, match=r"checkpoint \(100,\) vs model \(200,\)|another size"):
        other.load_weights(tiny.state_dict())


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, tiny, monkeypatch):
    path = tiny.save_pretrained(tmp_path / "ckpt")
    before = (path / "config.json").read_text()
    from neurofm.models.checkpoint import save_model

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_model(create_model("eeg-tiny"), path)
    assert (path / "config.json").read_text() == before
    load_model(path)  # still whole


@pytest.mark.parametrize(
    "edit",
    [("model", "pooling", "cls"), ("recipe", "sfreq", 250.0), ("model", "modality", "fmri"),
     (None, "weights_sha256", "0" * 64)],
)  # fmt: skip
def test_edited_config_json_is_refused_by_name(tmp_path, tiny, edit):
    # issue 12, item 1: config.json is covered by a checksum of its own
    path = tiny.save_pretrained(tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    section, key, value = edit
    (config[section] if section else config)[key] = value
    (path / "config.json").write_text(json.dumps(config, indent=2))
    with pytest.raises(CheckpointError, match=r"ckpt/config\.json does not match its checksum"):
        load_model(path)
    (path / "config.json").write_text(json.dumps(json.loads((path / "config.json").read_text())))
    with pytest.raises(CheckpointError, match="save_pretrained"):  # the fix is named
        load_model(path)


def test_whitespace_in_config_json_is_not_damage(tmp_path, tiny):
    # issue 12, item 1: the checksum covers the content, not its layout
    path = tiny.save_pretrained(tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config, indent=7, sort_keys=True))
    assert torch.equal(load_model(path).norm.weight, tiny.norm.weight)


def legacy_checkpoint(path, version: int, **model_changes) -> dict:
    """Rewrite a saved checkpoint's config.json as neurofm 0.1 wrote it: format
    'neurofm.encoder' 1 (no config checksum) or 2, patch geometry in the model config."""
    from neurofm.models.checkpoint import _config_sha256

    config = json.loads((path / "config.json").read_text())
    recipe = config["recipe"]
    patch_len = round(recipe["sfreq"] * recipe["patch_seconds"]) if recipe["modality"] == "eeg" \
        else recipe["patch_trs"]  # fmt: skip
    seconds = recipe["patch_seconds"] if recipe["modality"] == "eeg" else patch_len * recipe["t_r"]
    del config["architecture"], config["config_sha256"]
    config.update(format="neurofm.encoder", format_version=version)
    config["model"].update({"patch_len": patch_len, "patch_seconds": seconds, **model_changes})
    if version >= 2:
        config["config_sha256"] = _config_sha256(config)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return config


def test_format_1_and_2_checkpoints_still_load(tmp_path, tiny):
    # issue 12, item 1: checkpoints saved before the config checksum stay readable;
    # issue 13: format 1-2 (encoders only, geometry in the model config) migrate to 3
    from safetensors.torch import load_file

    from neurofm.models.checkpoint import FORMAT_VERSION, read_config

    for name, sfreq in (("eeg_tiny", 200.0), ("fmri_tiny", None)):  # written by 85f7a23
        real = Path(__file__).parent / "data" / f"format1_{name}"
        with pytest.warns(FileFormatWarning, match="format-1 checkpoint"):
            loaded = load_model(real)
        saved = load_file(real / "model.safetensors")
        state = loaded.state_dict()
        assert state.keys() == saved.keys()
        assert all(torch.equal(state[k], v) for k, v in saved.items())
        old = json.loads((real / "config.json").read_text())["model"]
        assert loaded.config.name == old["name"] and loaded.config.dim == old["dim"]
        assert loaded.recipe.patch_len == old["patch_len"]
        assert loaded.recipe.patch_seconds == pytest.approx(old["patch_seconds"])
        assert sfreq is None or loaded.recipe.sfreq == sfreq

    path = tiny.save_pretrained(tmp_path / "ckpt")
    legacy_checkpoint(path, 1)
    with pytest.warns(FileFormatWarning, match="save the model again"):
        loaded = load_model(path)
    assert torch.equal(loaded.norm.weight, tiny.norm.weight)
    assert loaded.config == tiny.config and loaded.recipe == tiny.recipe
    legacy_checkpoint(tiny.save_pretrained(path), 2)
    config = read_config(path)
    assert config["architecture"] == "encoder" and "patch_len" not in config["model"]
    assert load_model(path).config == tiny.config
    config = json.loads((tiny.save_pretrained(path) / "config.json").read_text())
    assert config["format"] == "neurofm" and config["architecture"] == "encoder"
    config["format_version"] = FORMAT_VERSION + 1
    (path / "config.json").write_text(json.dumps(config, indent=2))
    with pytest.raises(CheckpointError, match="upgrade neurofm"):
        load_model(path)


@pytest.mark.parametrize("key,value", [("patch_len", 100), ("patch_seconds", 0.5)])
def test_old_checkpoint_contradicting_its_recipe_is_refused(tmp_path, tiny, key, value):
    # issue 13: an old config.json whose geometry disagrees with its recipe names both values
    path = tiny.save_pretrained(tmp_path / "ckpt")
    legacy_checkpoint(path, 2, **{key: value})
    ours = tiny.recipe.patch_len if key == "patch_len" else tiny.recipe.patch_seconds
    with pytest.raises(CheckpointError, match=rf"says {key}={value}\b.*recipe makes {key}={ours}"):
        load_model(path)


def test_stale_temporaries_are_ignored_then_removed(tmp_path, tiny):
    # issue 12, item 1: what killed saves left is never read, and the next save removes it
    path = tiny.save_pretrained(tmp_path / "ckpt")
    (path / "README.md").write_text("model card")
    stale = tmp_path / ".ckpt.99999999-0a1b2c3d.tmp"  # no such process
    stale.mkdir()
    (stale / "config.json").write_text("{half a file")
    (path / ".tmpX78Rn8").write_bytes(b"\0" * 10)  # safetensors' own temporary (neurofm 0.1)
    (tmp_path / "ckpt.part").write_bytes(b"\0")  # neurofm 0.1's atomic_write debris
    assert load_model(path).config == tiny.config
    create_model("eeg-tiny").save_pretrained(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json",
                                                      "model.safetensors"]  # fmt: skip
    assert (path / "README.md").read_text() == "model card"  # other files are kept


def test_only_this_hosts_dead_writers_are_reaped(tmp_path, tiny):
    """A pid means something on its own host only: siblings another host left in a shared
    folder (NFS) stay; this host's dead writers' are removed."""
    from neurofm.utils import _host, _temp_sibling

    path = tiny.save_pretrained(tmp_path / "ckpt")
    assert _temp_sibling(path, "tmp").name.startswith(f".ckpt.{_host()}-")
    ours = tmp_path / f".ckpt.{_host()}-99999999-0a1b2c3d.tmp"  # no such process here
    other = tmp_path / ".ckpt.not-this_host.example-1-0a1b2c3d.tmp"
    for stale in (ours, other):
        stale.mkdir()
    tiny.save_pretrained(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "ckpt"]


def test_atomic_write_leaves_no_part_file(tmp_path):
    # issue 12, item 1: a failed write leaves the old file and no temporary
    from neurofm.utils import atomic_write

    target = tmp_path / "splits.json"
    atomic_write(target, lambda p: p.write_text("old"))

    def half(p):
        p.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_bad_checkpoint_files_are_named(tmp_path, tiny):
    # issue 12, item 16: the error names the file given, not its folder
    lone = tmp_path / "weights.safetensors"
    lone.write_bytes(b"garbage")
    with pytest.raises(
        CheckpointError, match=r"weights\.safetensors is not part of a neurofm .*from_labram"
    ):
        load_model(lone)
    path = tiny.save_pretrained(tmp_path / "ckpt")
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"ckpt/model\.safetensors does not match"):
        load_model(path / "model.safetensors")
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"ckpt/config\.json is not valid JSON"):
        load_model(path / "config.json")
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        tiny.save_pretrained(lone)


def test_labram_pickle_named_safetensors(tmp_path):
    # issue 12, item 16: a CheckpointError with the fix, not a raw SafetensorError
    path = tmp_path / "labram-base.safetensors"
    torch.save({"cls_token": torch.zeros(1, 1, 200)}, path)
    with pytest.raises(
        CheckpointError, match=r"labram-base\.safetensors is a PyTorch pickle.*rename it to \.pth"
    ):
        from_labram(path)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        from_labram(path)


def test_hub_pull_from_local_cache(tmp_path, tiny, monkeypatch):
    """hf://owner/repo resolves through the Hugging Face cache layout, offline."""
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hub" / "models--lab--eeg-tiny"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    tiny.save_pretrained(repo / "snapshots" / commit)
    loaded = load_model("hf://lab/eeg-tiny", cache_dir=tmp_path / "hub")
    assert loaded.config == tiny.config
    with pytest.raises(NeurofmError, match="Hugging Face cache"):
        load_model("hf://lab/absent", cache_dir=tmp_path / "hub")


def test_hub_push_uploads_the_checkpoint_folder(tiny, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private, exist_ok):
            calls["repo"] = (repo_id, private)

        def upload_folder(self, repo_id, folder_path, commit_message):
            from pathlib import Path

            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    url = tiny.push_to_hub("lab/eeg-tiny")
    assert url.endswith("lab/eeg-tiny") and calls["repo"] == ("lab/eeg-tiny", True)
    assert calls["files"] == ["config.json", "model.safetensors"]


# ---------------------------------------------------------------------- bad input
def test_bad_tokens(tiny):
    with pytest.raises(NeurofmError, match="takes neurofm.Tokens"):
        tiny(torch.randn(2, 3, 4, 200))
    tokens = make_tokens(CHB[:3])
    tokens.x[0, 1, 2, 5] = float("nan")
    with pytest.raises(NeurofmError, match="NaN"):
        tiny(tokens)
    tokens.mask[0, 1, 2] = False  # the same NaN, masked: fine
    with torch.no_grad():
        assert torch.isfinite(tiny(tokens).tokens[tokens.mask]).all()
    tokens = make_tokens(CHB[:3])
    tokens.space[0, 0] = 10_000
    with pytest.raises(NeurofmError, match="outside this model's vocabulary"):
        tiny(tokens)
    with pytest.raises(NeurofmError, match="patches of 100 samples"):
        tiny(make_tokens(CHB[:3], P=100))
    with pytest.raises(NeurofmError, match="needs"):  # shapes that disagree
        Tokens(x=torch.zeros(1, 3, 4, 200), space=torch.zeros(1, 2, dtype=torch.long),
               pos=torch.zeros(1, 3, 3), t=torch.zeros(1, 4),
               mask=torch.ones(1, 3, 4, dtype=torch.bool))  # fmt: skip


def test_nan_or_inf_in_t_is_refused(tiny):
    # issue 12, item 11: NaN in Tokens.t gave NaN features without a word
    for bad in (float("nan"), float("inf")):
        tokens = make_tokens(CHB[:3])
        tokens.t[1, 2] = bad
        with pytest.raises(SignalError, match="Tokens.t holds NaN or inf"):
            tiny(tokens)
    tokens = make_tokens(CHB[:3], t0=1.7e9)  # a Unix time stamp in float32: 128 s steps
    with pytest.raises(SignalError, match="from the recording's start, or as float64"):
        tiny(tokens)
    tokens.t = tokens.t.double() + torch.arange(4, dtype=torch.float64)  # exact in float64
    with torch.no_grad():
        ref = tiny(make_tokens(CHB[:3])).pooled
        torch.testing.assert_close(tiny(tokens).pooled, ref)


def test_positions_and_ids_are_checked(tiny):
    # issue 12, item 11: pos finite or NaN (never inf, never metres x 1e6), ids >= 0
    tokens = make_tokens(CHB[:3])
    tokens.pos[0, 1, 2] = float("inf")
    with pytest.raises(NeurofmError, match="MNI millimetres"):
        tiny(tokens)
    tokens = make_tokens(CHB[:3])
    tokens.space[0, 0] = -3
    with pytest.raises(NeurofmError, match="negative ids"):
        tiny(tokens)
    tokens = make_tokens(CHB[:3])
    tokens.x[0, 0, 0, 0] = 3e12
    with pytest.raises(NeurofmError, match="model units"):
        tiny(tokens)


def test_tokens_dtypes_follow_one_rule(tiny):
    # issue 12, item 16: float64/float16 x were raw conv errors; float space an IndexError
    tokens = make_tokens(CHB[:3])
    with torch.no_grad():
        ref = tiny(tokens).tokens
        for dtype in (torch.float64, torch.float16):
            x = tokens.x.to(dtype)
            other = Tokens(x=x, space=tokens.space, pos=tokens.pos, t=tokens.t, mask=tokens.mask)
            torch.testing.assert_close(
                tiny(other).tokens, tiny(replace_x(tokens, x.float())).tokens
            )
        ints = Tokens(x=tokens.x, space=tokens.space.int(), pos=tokens.pos, t=tokens.t.long(),
                      mask=tokens.mask)  # fmt: skip
        assert ints.space.dtype == torch.long and ints.t.dtype == torch.float32
        assert torch.equal(tiny(ints).tokens, ref)
    with pytest.raises(
        NeurofmError, match=r"integer vocabulary ids, got torch.float32.*space.long\(\)"
    ):
        replace_space(tokens, tokens.space.float())
    with pytest.raises(NeurofmError, match="floating-point signal"):
        replace_x(tokens, tokens.x.long())
    with pytest.raises(NeurofmError, match="must be a torch.Tensor"):
        replace_x(tokens, tokens.x.numpy())


def replace_x(tokens, x):
    return Tokens(x=x, space=tokens.space, pos=tokens.pos, t=tokens.t, mask=tokens.mask)


def replace_space(tokens, space):
    return Tokens(x=tokens.x, space=space, pos=tokens.pos, t=tokens.t, mask=tokens.mask)


def test_resize_time_table_rows_are_checked():
    # issue 12, item 16: rows 0 or negative were a raw F.interpolate error
    model = create_model("eeg-tiny", time_embed="table")
    for rows in (0, -1, 2.5, True):
        with pytest.raises(NeurofmError, match="integer >= 1"):
            model.resize_time_table(rows)
    assert model.resize_time_table(30).config.time_rows == 30


def test_time_positions_survive_bf16_autocast(tiny):
    # issue 12, item 11: t was cast to the compute dtype first; bf16 holds 3600 s in 16 s steps
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        early = tiny(make_tokens(CHB[:3])).pooled.float()
        late = tiny(make_tokens(CHB[:3], t0=3600.5)).pooled.float()
    torch.testing.assert_close(late, early)  # the time embedding is relative to the window


def test_fmri_errors_speak_of_parcels():
    # issue 12, item 19: the encoder's errors were worded for EEG (128 names, picks=)
    model = create_model("fmri-tiny")
    B, S, N = 1, 3, 2
    pos = torch.tensor([[[10.0, 20, 30], [float("nan")] * 3, [-10.0, 0, 5]]])
    tokens = Tokens(x=torch.randn(B, S, N, 20), space=torch.full((B, S), UNK), pos=pos,
                    t=torch.tensor([[0.0, 14.4]]), mask=torch.ones(B, S, N, dtype=torch.bool),
                    names=[("L_V1", "R_V1", "L_M1")])  # fmt: skip
    with pytest.raises(NeurofmError, match=r"'R_V1' cannot be placed .*atlas=.*coords=") as err:
        model(tokens)
    assert "picks" not in str(err.value) and "128" not in str(err.value)
    tokens.space[0, 0] = 7
    with pytest.raises(NeurofmError, match="parcel ids .*tokenize_fmri"):
        model(tokens)
    with pytest.raises(NeurofmError, match="patches of 200 TRs but this fmri model takes 20"):
        model(make_tokens(CHB[:3]))


# ---------------------------------------------------------------------- end to end
def test_sample_recording_end_to_end_and_training_step(tiny):
    from importlib.resources import files

    path = files("neurofm") / "sample_data" / "S001R03.edf"
    tokens = neurofm.tokenize(str(path), tiny.recipe)
    with torch.no_grad():
        out = tiny(tokens[:4])
    assert out.pooled.shape == (4, tiny.dim) and torch.isfinite(out.tokens).all()

    model = create_model("eeg-tiny", drop_path=0.1)
    model.train()
    hidden = torch.rand(tokens[:4].mask.shape) < 0.5
    loss = model(tokens[:4], hidden=hidden).tokens.pow(2).mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_bench_script_runs(tmp_path):
    """bench/encoder.py --smoke: the script works (no timing is asserted here)."""
    pytest.importorskip("braindecode")
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "encoder.py"
    plot = tmp_path / "sweep.png"
    out = subprocess.run([sys.executable, str(script), "--smoke", "--kernels", "--plot", str(plot)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ratio" in out.stdout and "divided MiB" in out.stdout
    assert "by attention kernel" in out.stdout
    assert "(SDPA: its compiled kernel needs CUDA" in out.stdout  # flex on CPU
    assert plot.stat().st_size > 10_000  # a rendered figure, not an empty file


@pytest.mark.parametrize("impl", ["flash_attn", "flex"])
def test_cuda_kernels_fall_back_to_sdpa(tiny, impl, caplog, monkeypatch):
    """Where flash-attn or FlexAttention cannot apply (here: CPU, fp32, padding) results
    equal SDPA's, and the log says why, once."""
    from neurofm.models.layers import attention

    monkeypatch.setattr(attention, "_warned", set())  # as in a fresh process
    model = create_model("eeg-tiny", impl=impl).eval()
    model.load_state_dict(tiny.state_dict())
    batch = collate([make_tokens(CHB[:3]), make_tokens(CHB[:5], seed=1)])
    with torch.no_grad(), caplog.at_level("INFO", logger="neurofm"):
        torch.testing.assert_close(model(batch).pooled, tiny(batch).pooled)
        model(batch)
    said = [r.getMessage() for r in caplog.records if "falls back to SDPA" in r.getMessage()]
    assert len(said) == 1 and repr(impl) in said[0], said


def _compile_raising(monkeypatch, error):
    """torch.compile whose compiled function raises ``error`` at every call (counted)."""
    calls = []

    def compile_(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(1)
            raise error

        return compiled

    monkeypatch.setattr(torch, "compile", compile_)
    return calls


def test_compile_matches_eager_and_falls_back(monkeypatch, caplog):
    from torch._dynamo.exc import BackendCompilerFailed

    torch.manual_seed(0)
    eager = create_model("eeg-tiny", depth=1).eval()
    tokens = make_tokens(CHB[:3])
    with torch.no_grad():
        expected = eager(tokens).pooled
    failed = BackendCompilerFailed(lambda *a: None, RuntimeError("no C++ compiler"), None)
    calls = _compile_raising(monkeypatch, failed)
    model = create_model("eeg-tiny", depth=1).eval()
    model.load_state_dict(eager.state_dict())
    model.compile()
    with torch.no_grad(), caplog.at_level("WARNING", logger="neurofm"):
        torch.testing.assert_close(model(tokens).pooled, expected)
        torch.testing.assert_close(model(tokens).pooled, expected)
    assert "running eagerly" in caplog.text and "no C++ compiler" in caplog.text
    assert len(calls) == 1  # compilation is not retried


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "oom-while-compiling"],
)  # fmt: skip
def test_compile_fallback_is_for_compile_errors_only(monkeypatch, caplog, error):
    """Out of memory (also when a backend failure wraps it) and ordinary runtime errors
    are raised as they are, and the compiled blocks are used again on the next call."""
    from torch._dynamo.exc import BackendCompilerFailed

    if error == "oom-while-compiling":  # e.g. inductor's autotuning ran out of memory
        error = BackendCompilerFailed(lambda *a: None, torch.OutOfMemoryError("autotune"), None)
    calls = _compile_raising(monkeypatch, error)
    model = create_model("eeg-tiny", depth=1).eval().compile()
    tokens = make_tokens(CHB[:3])
    with torch.no_grad(), caplog.at_level("WARNING", logger="neurofm"):
        for _ in range(2):
            with pytest.raises(type(error)):
                model(tokens)
    assert len(calls) == 2 and "running eagerly" not in caplog.text


@pytest.mark.slow
def test_torch_compile_gives_the_same_features(caplog):
    torch.manual_seed(0)
    eager = create_model("eeg-tiny", depth=1).eval()
    compiled = create_model("eeg-tiny", depth=1).eval()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    tokens = make_tokens(CHB[:3])
    with torch.no_grad(), caplog.at_level("WARNING", logger="neurofm"):
        torch.testing.assert_close(compiled(tokens).pooled, eager(tokens).pooled,
                                   atol=1e-5, rtol=1e-4)  # fmt: skip
    assert "running eagerly" not in caplog.text  # it really compiled
