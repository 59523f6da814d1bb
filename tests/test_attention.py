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


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_matches_math_with_padding():
    """FlexAttention (eager here, compiled on CUDA) with the key-padding mask as a block
    mask: the math path's outputs, finite for a fully padded item (its backward needs
    CUDA, so gradients are not checked here); it has no dropout."""
    from neurofm.models.attention import has_flex

    if not has_flex():
        pytest.skip("this torch has no FlexAttention")
    q, k, v = _qkv()
    mask = _mask()
    flex, ref = attend(q, k, v, mask, impl="flex"), attend(q, k, v, mask, impl="math")
    torch.testing.assert_close(flex, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(flex).all()
    with pytest.raises(ValueError, match="no attention dropout"):
        attend(q, k, v, mask, impl="flex", dropout_p=0.1)


def test_flex_build_failure_falls_back_to_sdpa(monkeypatch, caplog):
    """A compiled FlexAttention that fails at its first call (as inductor/Triton do for
    unsupported head sizes) gives SDPA's result, logs why once, and is not retried."""
    from torch._inductor.exc import InductorError

    from neurofm.models.layers import attention

    if not attention.has_flex():
        pytest.skip("this torch has no FlexAttention")
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise InductorError(RuntimeError("NoValidChoicesError: no kernel for head dim 20"), None)

    monkeypatch.setattr(attention, "_compiled", {"flex": broken})
    monkeypatch.setattr(attention, "_warned", set())
    q, k, v = _qkv()
    mask = _mask()
    with caplog.at_level("INFO", logger="neurofm"):
        assert attention._flex(q, k, v, mask, 20**-0.5, compiled=True) is None
        assert attention._flex(q, k, v, mask, 20**-0.5, compiled=True) is None
    assert len(calls) == 1
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "no kernel for head dim 20" in said[0]
    monkeypatch.setattr(attention, "_flex", lambda *a, **k: None)  # as on CUDA after that
    torch.testing.assert_close(attend(q, k, v, mask, impl="flex"), attend(q, k, v, mask))


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("shape mismatch"),
     "oom-inside-a-backend-failure"],
)  # fmt: skip
def test_flex_runtime_errors_are_raised_not_fallen_back(monkeypatch, error):
    """Out of memory (even wrapped in a backend failure) or an ordinary runtime error at
    the compiled kernel's call is raised, and the compiled kernel is tried again next time."""
    from torch._dynamo.exc import BackendCompilerFailed

    from neurofm.models.layers import attention

    if not attention.has_flex():
        pytest.skip("this torch has no FlexAttention")
    if error == "oom-inside-a-backend-failure":  # autotuning ran out of memory
        error = BackendCompilerFailed(lambda *a: None, torch.OutOfMemoryError("autotune"), None)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise error

    monkeypatch.setattr(attention, "_compiled", {"flex": failing})
    q, k, v = _qkv()
    for _ in range(2):
        with pytest.raises(type(error)):
            attention._flex(q, k, v, _mask(), 20**-0.5, compiled=True)
    assert len(calls) == 2 and "flex_failed" not in attention._compiled


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


def test_centred_qk_norm_matches_layer_norm():
    """QK-norm as Attention runs it (centring folded into the q weights, then HeadNorm's
    root-mean-square form) against nn.LayerNorm after the plain linear layer: the
    function's own backward passes gradcheck in float64; outputs and every gradient (input,
    linear weight and bias, norm weight and bias) equal LayerNorm's in fp32, with and
    without autograd; in bf16 they are at least as close to the float64 truth."""
    from neurofm.models.layers.norm import HeadNorm, _CentredHeadNorm, centre_heads

    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 20, dtype=torch.float64, requires_grad=True)
    w = torch.randn(20, dtype=torch.float64, requires_grad=True)
    b = torch.randn(20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _CentredHeadNorm.apply(*a, 1e-6), (x, w, b))

    def run(folded, dtype, params, x, g):
        lin, norm = (
            torch.nn.Linear(16, 80),
            (HeadNorm if folded else torch.nn.LayerNorm)(20, eps=1e-6),
        )
        lin.load_state_dict(params["lin"])
        norm.load_state_dict(params["norm"])
        lin, norm = lin.to(dtype), norm.to(dtype)
        x = x.to(dtype).requires_grad_()
        if folded:
            q = torch.nn.functional.linear(
                x, centre_heads(lin.weight, 4), centre_heads(lin.bias, 4)
            )
            y = norm(q.view(2, 7, 4, 20), centred=True)
            with torch.no_grad():  # the in-place inference path gives the same values
                torch.testing.assert_close(norm(q.view(2, 7, 4, 20), centred=True), y)
        else:
            y = norm(lin(x).view(2, 7, 4, 20))
        params = [x, lin.weight, lin.bias, norm.weight, norm.bias]
        return [y, *torch.autograd.grad(y, params, g.to(dtype))]

    params = {"lin": {"weight": torch.randn(80, 16), "bias": torch.randn(80)},
              "norm": {"weight": torch.randn(20), "bias": torch.randn(20)}}  # fmt: skip
    x, g = torch.randn(2, 7, 16), torch.randn(2, 7, 4, 20)
    ours, ref = run(True, torch.float32, params, x, g), run(False, torch.float32, params, x, g)
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, atol=2e-5, rtol=2e-5)
    x, g = x.bfloat16().double(), g.bfloat16().double()  # the bf16 inputs, exactly
    params = {m: {k: v.bfloat16().double() for k, v in p.items()} for m, p in params.items()}
    truth = run(False, torch.float64, params, x, g)
    ours, ref = run(True, torch.bfloat16, params, x, g), run(False, torch.bfloat16, params, x, g)
    for a, r, t in zip(ours, ref, truth, strict=True):
        assert a.dtype == r.dtype == torch.bfloat16
        err_ours, err_ref = (a.double() - t).abs().max(), (r.double() - t).abs().max()
        assert err_ours <= 1.5 * err_ref + 1e-2 * t.abs().max(), (err_ours, err_ref)
