"""The fused attention path agrees with the explicit math reference."""

import pytest
import torch

from neurofm.models import Attention, attend


def _qkv(B=3, H=4, L=17, D=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, D, generator=g) for _ in range(3)]


def _mask(B=3, L=17):
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 10:] = False  # a shorter item
    mask[2] = False  # a fully padded item
    return mask


def test_sdpa_matches_math_with_padding():
    q, k, v = _qkv()
    mask = _mask()
    fused, ref = attend(q, k, v, mask, impl="sdpa"), attend(q, k, v, mask, impl="math")
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(fused).all()  # the fully padded item does not produce NaN


def test_padding_keys_are_ignored():
    q, k, v = _qkv()
    mask = _mask()
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 10:] += 100.0  # change only padded keys and values
    v2[1, :, 10:] -= 50.0
    torch.testing.assert_close(attend(q, k, v, mask)[1], attend(q, k2, v2, mask)[1])


@pytest.mark.parametrize("qk_norm", [False, True])
def test_layer_paths_and_head_padding_agree(qk_norm):
    torch.manual_seed(0)
    ref = Attention(200, 10, qk_norm=qk_norm, impl="math")  # LaBraM-base: head dim 20
    fused = Attention(200, 10, qk_norm=qk_norm, impl="sdpa", pad_head_dim=8)
    with torch.no_grad():
        ref.q_bias.normal_()
        ref.v_bias.normal_()
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(3, 17, 200)
    mask = _mask()
    torch.testing.assert_close(fused(x, mask), ref(x, mask), atol=1e-5, rtol=1e-5)


def test_gradients_flow_and_match():
    torch.manual_seed(0)
    ref = Attention(64, 4, impl="math")
    fused = Attention(64, 4, impl="sdpa")
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 9, 64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 5:] = False
    ref(x, mask)[mask].sum().backward()
    fused(x, mask)[mask].sum().backward()
    torch.testing.assert_close(fused.qkv.weight.grad, ref.qkv.weight.grad, atol=1e-4, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="not divisible"):
        Attention(30, 4)
    with pytest.raises(ValueError, match="impl must be one of"):
        Attention(32, 4, impl="flash3")


def test_head_norm_backward_matches_layer_norm():
    """QK-norm's own backward: gradcheck in float64; in fp32 equal to nn.LayerNorm's; in
    bf16 at least as close to the float64 truth as nn.LayerNorm's (non-trivial affine
    parameters, through a view like the real q/k)."""
    from neurofm.models.attention import HeadNorm, _HeadLayerNorm

    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 20, dtype=torch.float64, requires_grad=True)
    w = torch.randn(20, dtype=torch.float64, requires_grad=True)
    b = torch.randn(20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _HeadLayerNorm.apply(*a, 1e-6), (x, w, b))

    def run(norm_cls, dtype, params, x, g):
        norm = norm_cls(20, eps=1e-6)
        norm.load_state_dict(params)
        norm = norm.to(dtype)
        x = x.to(dtype).requires_grad_()
        y = norm(x.view(2, 7, 4, 20))
        return [y, *torch.autograd.grad(y, [x, norm.weight, norm.bias], g.to(dtype))]

    params = {"weight": torch.randn(20), "bias": torch.randn(20)}
    x, g = torch.randn(2, 7, 80), torch.randn(2, 7, 4, 20)
    ours, ref = run(HeadNorm, torch.float32, params, x, g), run(torch.nn.LayerNorm, torch.float32, params, x, g)
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)
    x, g = x.bfloat16().double(), g.bfloat16().double()  # the bf16 inputs, exactly
    params = {k: v.bfloat16().double() for k, v in params.items()}
    truth = run(torch.nn.LayerNorm, torch.float64, params, x, g)
    ours, ref = run(HeadNorm, torch.bfloat16, params, x, g), run(torch.nn.LayerNorm, torch.bfloat16, params, x, g)
    for a, r, t in zip(ours, ref, truth, strict=True):
        assert a.dtype == r.dtype == torch.bfloat16
        err_ours, err_ref = (a.double() - t).abs().max(), (r.double() - t).abs().max()
        assert err_ours <= 1.5 * err_ref + 1e-2 * t.abs().max(), (err_ours, err_ref)
