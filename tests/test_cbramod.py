"""CBraMod on neurofm's encoder: criss-cross attention, the import, parity with braindecode.

The parity tests build braindecode's ``CBraMod`` with seeded random weights (its own
initialisation, then every tensor perturbed so that no norm is the identity and no bias
zero), import it with :func:`neurofm.models.from_cbramod`, and compare the features:
braindecode's encoder output (before ``proj_out``, the pretraining head CBraMod's
fine-tuning removes) against neurofm's ``out.tokens``, within 1e-4 (max abs; measured
1.3e-5 for 19 channels x 6 s and 22 x 4 s, features up to ~24 in size).
"""

from __future__ import annotations

import re

import pytest
import torch

from neurofm.channels import eeg_vocabulary
from neurofm.errors import ConfigError, NeurofmError
from neurofm.models import Encoder, create_model, from_cbramod
from neurofm.models.layers import Block, CrissCrossAttention
from neurofm.tokens import Tokens, collate

TOLERANCE = 1e-4  # max abs difference of features, neurofm vs braindecode


def reference(n_chans: int = 19, seconds: int = 6, seed: int = 0):
    """braindecode's CBraMod with seeded random weights, none of them trivial."""
    bd = pytest.importorskip("braindecode.models")
    torch.manual_seed(seed)
    ref = bd.CBraMod(n_chans=n_chans, n_times=200 * seconds, n_outputs=2,
                     return_encoder_output=True).eval()  # fmt: skip
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("mask_encoding"):
                continue
            ones = re.search(r"norm\d?\.weight$|proj_in\.[147]\.weight$", name)
            p.add_((0.1 if ones else 0.02) * torch.randn_like(p))
    return ref


def grid_tokens(x: torch.Tensor) -> Tokens:
    """(B, C, T) signal at 200 Hz -> Tokens of 1 s patches (CBraMod places by order)."""
    B, S, T = x.shape
    N = T // 200
    return Tokens(x=x.reshape(B, S, N, 200), space=torch.ones(B, S, dtype=torch.long),
                  pos=torch.full((B, S, 3), float("nan")),
                  t=torch.arange(N, dtype=torch.float32).expand(B, -1).clone(),
                  mask=torch.ones(B, S, N, dtype=torch.bool))  # fmt: skip


def braindecode_features(ref, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ref.encoder(ref.patch_embedding(ref.rearrange(x)))


# ---------------------------------------------------------------------- parity
@pytest.mark.parametrize(("n_chans", "seconds"), [(19, 6), (22, 4)])
def test_features_match_braindecode(n_chans, seconds):
    ref = reference(n_chans, seconds)
    model = from_cbramod(ref).eval()
    x = torch.randn(2, n_chans, 200 * seconds, generator=torch.Generator().manual_seed(1))
    want = braindecode_features(ref, x)
    with torch.no_grad():
        out = model(grid_tokens(x))
    error = (out.tokens - want).abs().max().item()
    assert error < TOLERANCE, f"max |neurofm - braindecode| = {error:.2e}"
    torch.testing.assert_close(out.pooled, want.mean((1, 2)), rtol=0, atol=TOLERANCE)
    with torch.no_grad():  # braindecode's own forward (proj_out on top) agrees as well
        assert (ref(x) - ref.proj_out(out.tokens)).abs().max() < 10 * TOLERANCE


def test_import_maps_every_tensor_and_says_what_it_left_out():
    ref = reference()
    model = from_cbramod(ref.state_dict())
    assert type(model) is Encoder and model.config.attention == "criss-cross"
    assert model.config == create_model("cbramod-base").config
    assert sorted(model.conversion["ignored_tensors"]) == [
        "patch_embedding.mask_encoding", "proj_out.0.bias", "proj_out.0.weight"
    ]  # fmt: skip
    # every braindecode parameter but those, less the k bias (softmax-invariant)
    kept = sum(v.numel() for k, v in ref.state_dict().items()
               if k not in model.conversion["ignored_tensors"])  # fmt: skip
    k_bias = 12 * 2 * 100
    assert model.num_params() == kept - k_bias + model.config.dim  # + the [MASK] embedding
    assert model.num_params() == 4_881_400
    original = {f"module.{k}": v for k, v in ref.state_dict().items()}  # DataParallel's names
    torch.testing.assert_close(from_cbramod(original).state_dict(), model.state_dict())


def test_files_in_the_formats_braindecode_publishes(tmp_path):
    """braindecode's save_pretrained writes model.safetensors and pytorch_model.bin (a
    pickle, read with weights_only=True); both import to the same weights."""
    ref = reference()
    ref.save_pretrained(tmp_path)
    a = from_cbramod(tmp_path / "model.safetensors").state_dict()
    b = from_cbramod(tmp_path / "pytorch_model.bin").state_dict()
    for k, v in from_cbramod(ref).state_dict().items():
        assert torch.equal(a[k], v) and torch.equal(b[k], v), k


def test_wrong_inputs_are_named():
    ref = reference()
    with pytest.raises(NeurofmError, match="LaBraM state dict: use from_labram"):
        from_cbramod({"cls_token": torch.zeros(1, 1, 200), "x": torch.zeros(1)})
    with pytest.raises(NeurofmError, match="not a CBraMod encoder state dict"):
        from_cbramod({"weight": torch.zeros(2)})
    import neurofm

    with pytest.raises(NeurofmError, match="patches of 200 samples .* recipe makes patches of 100"):
        from_cbramod(ref, recipe=neurofm.Recipe(sfreq=100, h_freq=40))
    extra = dict(ref.state_dict(), **{"encoder.layers.0.mystery.weight": torch.zeros(2)})
    with pytest.raises(NeurofmError, match="unexpected CBraMod tensor 'encoder.layers.0.mystery"):
        from_cbramod(extra)
    with pytest.raises(NeurofmError, match="not a CBraMod encoder state dict"):
        from_cbramod({})


# ---------------------------------------------------------------------- padding, masking
def test_padding_changes_no_real_feature():
    """A window alone and the same window padded with channels and patches (collate pads
    after the real ones) give the same features (float32 rounding: measured 1.7e-5): the
    positional conv sees padding as its own zero padding, GroupNorm statistics and
    attention leave padding out."""
    model = from_cbramod(reference()).eval()
    g = torch.Generator().manual_seed(2)
    small = grid_tokens(torch.randn(1, 19, 4 * 200, generator=g))
    big = grid_tokens(torch.randn(1, 22, 6 * 200, generator=g))
    with torch.no_grad():
        alone, mixed = model(small), model(collate([small, big]))
    assert mixed.mask[0, 19:].sum() == 0 and mixed.mask[0, :, 4:].sum() == 0
    torch.testing.assert_close(mixed.tokens[0, :19, :4], alone.tokens[0], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(mixed.pooled[0], alone.pooled[0], rtol=0, atol=TOLERANCE)
    noisy = collate([small, big])  # padding's content never matters
    noisy.x[0, 19:] = 1e3
    with torch.no_grad():
        torch.testing.assert_close(model(noisy).tokens[0, :19, :4], alone.tokens[0], rtol=0,
                                   atol=TOLERANCE)  # fmt: skip


def small_cbramod(**overrides) -> Encoder:
    torch.manual_seed(0)
    return create_model("cbramod-base", depth=2, **overrides)


def test_hidden_and_dropped_tokens_reach_nothing():
    model = small_cbramod().eval()
    x = torch.randn(2, 5, 4 * 200, generator=torch.Generator().manual_seed(3))
    tokens = grid_tokens(x)
    tokens.mask[1, :, -1] = False
    hidden = torch.zeros_like(tokens.mask)
    hidden[:, 0, 1:3] = True

    def noisy_at(where):
        x = tokens.x.clone()
        x[where] += 10 * torch.randn_like(x[where])
        return Tokens(x=x, space=tokens.space, pos=tokens.pos, t=tokens.t, mask=tokens.mask)

    with torch.no_grad():
        a, b = model(tokens, hidden=hidden), model(noisy_at(hidden), hidden=hidden)
        torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=1e-5)
        dropped = torch.rand(tokens.mask.shape, generator=torch.Generator().manual_seed(4)) < 0.4
        a, b = model(tokens, dropped=dropped), model(noisy_at(dropped), dropped=dropped)
        visible = tokens.mask & ~dropped
        torch.testing.assert_close(a.tokens[visible], b.tokens[visible], rtol=0, atol=1e-5)
        torch.testing.assert_close(a.pooled, b.pooled, rtol=0, atol=1e-5)
        assert (a.tokens[~visible] == 0).all()


def test_training_forward_reads_no_values():
    """On the meta device any host read raises: a training step with hidden and dropped
    tokens and padding runs there, so it needs no host sync on an accelerator."""
    with torch.device("meta"):
        model = small_cbramod().train()
        B, S, N = 2, 3, 4
        tokens = Tokens(x=torch.randn(B, S, N, 200), space=torch.ones(B, S, dtype=torch.long),
                        pos=torch.randn(B, S, 3), t=torch.arange(N).float().expand(B, -1),
                        mask=torch.rand(B, S, N) < 0.8)  # fmt: skip
        out = model(tokens, hidden=torch.rand(B, S, N) < 0.3, dropped=torch.rand(B, S, N) < 0.3)
        (out.tokens.sum() + out.pooled.sum()).backward()
        assert out.tokens.shape == (B, S, N, 200)


# ---------------------------------------------------------------------- criss-cross attention
def test_criss_cross_attends_within_the_row_and_the_column():
    """Poking token (s, n) changes the space half only in column n (its patch) and the
    time half only in row s (its unit); padded tokens are never attended to."""
    torch.manual_seed(0)
    attn = CrissCrossAttention(16, 4).eval()
    x = torch.randn(1, 4, 5, 16)
    poked = x.clone()
    poked[0, 1, 2] += 3.0
    with torch.no_grad():
        diff = (attn(poked) - attn(x)).abs()
    space, time = diff[0, ..., :8].amax(-1) > 1e-6, diff[0, ..., 8:].amax(-1) > 1e-6
    expect_space = torch.zeros(4, 5, dtype=torch.bool)
    expect_space[:, 2] = True
    expect_time = torch.zeros(4, 5, dtype=torch.bool)
    expect_time[1] = True
    assert torch.equal(space, expect_space) and torch.equal(time, expect_time)
    mask = torch.ones(1, 4, 5, dtype=torch.bool)
    mask[0, 1, 2] = False  # the poked token as padding: nothing else changes
    with torch.no_grad():
        diff = (attn(poked, mask) - attn(x, mask)).abs().amax(-1)[0]
    diff[1, 2] = 0
    assert diff.max() == 0
    with pytest.raises(ValueError, match="must both be even"):
        CrissCrossAttention(16, 3)


def test_sdpa_matches_math_and_fully_padded_rows_stay_finite():
    torch.manual_seed(0)
    fast = CrissCrossAttention(32, 4).eval()
    slow = CrissCrossAttention(32, 4, impl="math").eval()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 5, 3, 32)
    mask = torch.ones(2, 5, 3, dtype=torch.bool)
    mask[1, 3:] = False  # whole units of padding: their time rows have no real key
    mask[0, :, 2] = False  # a patch of padding: its space column has none
    with torch.no_grad():
        a, b = fast(x, mask), slow(x, mask)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(a).all()
    blk = Block(32, 4, mode="criss-cross").eval()
    with torch.no_grad():
        assert blk(x, mask).shape == x.shape
    with pytest.raises(ValueError, match="attention mode must be one of"):
        Block(32, 4, mode="criss_cross")


def test_config_rules_and_cost():
    with pytest.raises(ConfigError, match="attention='criss-cross' has no \\[CLS\\] token"):
        create_model("eeg-tiny", attention="criss-cross")
    with pytest.raises(ConfigError, match="heads=5 must be even"):
        create_model("eeg-tiny", attention="criss-cross", cls_token=False)
    model = create_model("eeg-tiny", attention="criss-cross", cls_token=False, heads=4).eval()
    tokens = grid_tokens(torch.randn(1, 3, 400))
    tokens.space[:] = torch.as_tensor(eeg_vocabulary().ids(["Fp1", "Cz", "O1"]))
    with torch.no_grad():
        assert model(tokens).tokens.shape == (1, 3, 2, 100)  # with space-time embeddings
    cbramod = create_model("cbramod-base")
    with pytest.raises(NeurofmError, match="no time table"):
        cbramod.resize_time_table(30)
    full = create_model("cbramod-base", attention="full", pos_embed="conv")
    # 64 channels x 30 patches: criss-cross attention costs far less than full attention
    assert cbramod.flops_per_window(64, 30) < full.flops_per_window(64, 30) / 2  # 19.6 vs 57.8 G
