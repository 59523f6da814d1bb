"""Multi-head self-attention over token sequences with key-padding masks.

One layer, two paths that must agree (``tests/test_attention.py``):

- ``impl="sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, which picks a
  fused kernel (flash, memory-efficient, or the C++ math kernel on CPU);
- ``impl="math"``: the explicit ``softmax(q k^T / sqrt(d)) v`` reference;
- ``impl="flash_attn"``: the ``flash-attn`` package's kernel where it is installed and
  applies (CUDA, fp16/bf16, no padding in the batch); otherwise SDPA, said once in the log;
- ``impl="flex"``: PyTorch's FlexAttention, compiled once per process, with the key-padding
  mask as a block mask (blocks of padded keys are skipped, which pays off in batches that
  mix montages). CUDA only: on CPU the compiled kernel was measured 3x slower than SDPA's
  (10.5 against 3.4 ms for 8 LaBraM-base windows), so there it falls back to SDPA, said
  once in the log, as it does for good if the compiled kernel fails to build.
  ``attend(..., impl="flex")`` runs it anywhere (eagerly off CUDA).

Masks come from ``Tokens.mask`` flattened to a sequence: True for real tokens. A
sequence with no real key at all (a fully padded batch item) would make softmax
produce NaN; such rows attend to everything instead, and their outputs, which belong
to padding, are finite and ignored downstream.

LaBraM's options are here: ``qkv_bias`` (bias on q and v, none on k, as LaBraM and
BEiT do) and ``qk_norm`` (LayerNorm of q and k per head). ``pad_head_dim`` rounds the
head dimension up to a multiple of 8 with zero channels, which leaves the result
unchanged (zeros add nothing to q.k and produce zero outputs that are cut away) but
lets flash kernels run for LaBraM-base's head size of 20.

:class:`CrissCrossAttention` (CBraMod, Wang et al. 2025) works on the token grid
(B, S, N, dim): the first half of the channels and of the heads attend over space
within each time patch, the second half over time within each unit, each half with its
own q/k/v and output projections; the halves are concatenated. Both run through
:func:`attend` (SDPA) with the grid's key-padding mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...errors import logger
from .compile import describe, is_compile_error
from .norm import HeadNorm, centre_heads

IMPLS = ("sdpa", "math", "flash_attn", "flex")
MODES = ("full", "divided", "criss-cross")  # how a block attends over the token grid
_warned: set[tuple[str, str]] = set()  # (impl, reason) already logged
_compiled: dict[str, object] = {}


def _flash_attn_func():
    """flash-attn's kernel when installed, else None (neurofm never requires it)."""
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def _fallback(impl: str, reason: str) -> None:
    if (impl, reason) not in _warned:
        _warned.add((impl, reason))
        logger.info("attention impl %r falls back to SDPA: %s", impl, reason)


def _flex(q, k, v, key_mask, scale, compiled: bool | None = None):
    """FlexAttention on (B, H, L, D): compiled once (default: on CUDA), eager (unfused)
    otherwise. None when the compiled kernel fails to build (it is then not tried again
    in this process; inductor and Triton report such failures at the first call, e.g.
    for head sizes they do not support); other errors, such as running out of memory,
    are raised (:func:`~neurofm.models.layers.compile.is_compile_error`)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = q.is_cuda if compiled is None else compiled
    if compiled and "flex_failed" in _compiled:
        return None
    kernel = flex_attention
    if compiled:
        if "flex" not in _compiled:
            _compiled["flex"] = torch.compile(flex_attention)
        kernel = _compiled["flex"]
    block_mask = None
    if key_mask is not None:
        keep = _safe_mask(key_mask)[:, 0, 0]  # (B, L) with no all-padding rows

        def real_key(b, h, q_idx, kv_idx):
            return keep[b, kv_idx]

        block_mask = create_block_mask(real_key, keep.shape[0], None, q.shape[-2], k.shape[-2],
                                       device=q.device)  # fmt: skip
    try:
        return kernel(q, k, v, block_mask=block_mask, scale=scale)
    except Exception as err:  # a compiled kernel that cannot be built: SDPA from now on
        if not compiled or not is_compile_error(err):
            raise  # out of memory, bad input: the caller's error, not the compiler's
        _compiled["flex_failed"] = describe(err)
        _fallback("flex", f"the compiled kernel failed ({_compiled['flex_failed']})")
        return None


def has_flex() -> bool:
    """Whether this torch has FlexAttention (``torch.nn.attention.flex_attention``)."""
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def _safe_mask(key_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, L) real-token mask -> (B, 1, 1, L) attention mask with no empty rows."""
    if key_mask is None:
        return None
    empty = ~key_mask.any(dim=-1, keepdim=True)
    return (key_mask | empty)[:, None, None, :]


def attend(q, k, v, key_mask=None, *, impl: str = "sdpa", dropout_p: float = 0.0,
           scale: float | None = None) -> torch.Tensor:  # fmt: skip
    """Scaled dot-product attention of (B, H, L, D) tensors; ``key_mask`` (B, L) bool."""
    mask = _safe_mask(key_mask)
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])  # SDPA's default
    if impl == "flex":
        if dropout_p:
            raise ValueError("impl='flex' has no attention dropout: use 'sdpa' or 'math'")
        out = _flex(q, k, v, key_mask, scale)
        if out is not None:
            return out
        impl = "sdpa"  # the compiled kernel failed to build (logged once)
    if impl == "sdpa":
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale
        )
    if impl != "math":
        raise ValueError(f"attention impl must be one of {IMPLS}, got {impl!r}")
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if dropout_p:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v


class Attention(nn.Module):
    """Multi-head self-attention: (B, L, dim) -> (B, L, dim).

    Parameters
    ----------
    dim, heads : int
        Model width and number of heads (``dim % heads == 0``).
    qkv_bias : bool
        Learned bias on q and v (k has none), as in LaBraM.
    qk_norm : bool
        LayerNorm on q and k per head (LaBraM's ``qk_norm``).
    pad_head_dim : int
        Round the head dimension up to a multiple of this (8 for flash kernels; 0: off).
    impl : str
        ``'sdpa'`` (fused kernels), ``'math'`` (reference), ``'flash_attn'`` or ``'flex'``
        (CUDA kernels that fall back to SDPA where they do not apply).
    """

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True, qk_norm: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, pad_head_dim: int = 0,
                 impl: str = "sdpa", norm_eps: float = 1e-6):  # fmt: skip
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        if impl not in IMPLS:
            raise ValueError(f"attention impl must be one of {IMPLS}, got {impl!r}")
        self.heads, self.head_dim, self.impl, self.qk_norm = heads, dim // heads, impl, qk_norm
        self.pad_to = pad_head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.q_norm = HeadNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = HeadNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        # three matmuls on row blocks of one qkv weight (LaBraM's layout): each result is
        # contiguous, so QK-norm and the (b l h d) -> (b h l d) view need no copies
        wq, wk, wv = self.qkv.weight.chunk(3)
        bq = self.q_bias
        if self.qk_norm:  # LayerNorm's centring per head, folded into the weights
            wq, wk = centre_heads(wq, self.heads), centre_heads(wk, self.heads)
            bq = None if bq is None else centre_heads(bq, self.heads)
        q = F.linear(x, wq, bq)
        k = F.linear(x, wk)
        v = F.linear(x, wv, self.v_bias)
        q, k, v = (rearrange(t, "b l (h d) -> b l h d", h=self.heads) for t in (q, k, v))
        if self.qk_norm:
            q, k = self.q_norm(q, centred=True), self.k_norm(k, centred=True)
        pad = (-self.head_dim) % self.pad_to if self.pad_to else 0
        if pad:  # zero channels: same scores, same outputs, kernel-friendly size
            q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
        out = self._flash(q, k, v, key_mask) if self.impl == "flash_attn" else None
        if out is None:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            out = attend(q, k, v, key_mask, impl=self._attend_impl(q),
                         scale=1.0 / math.sqrt(self.head_dim),
                         dropout_p=self.attn_drop if self.training else 0.0).transpose(1, 2)  # fmt: skip
        out = rearrange(out[..., : self.head_dim], "b l h d -> b l (h d)")
        return self.proj_drop(self.proj(out))

    def _attend_impl(self, q) -> str:
        """What ``attend`` runs: 'math', 'flex' where it applies, else 'sdpa'."""
        if self.impl != "flex":
            return "math" if self.impl == "math" else "sdpa"
        if not has_flex():
            _fallback("flex", "this torch has no FlexAttention")
        elif not q.is_cuda:
            _fallback("flex", "its compiled kernel needs CUDA (on CPU it is slower than SDPA)")
        elif self.training and self.attn_drop:
            _fallback("flex", "it has no attention dropout")
        else:
            return "flex"
        return "sdpa"

    def _flash(self, q, k, v, key_mask):
        """flash-attn on (B, L, H, D), or None when it does not apply here."""
        func = _flash_attn_func()
        if func is None:
            _fallback("flash_attn", "the flash-attn package is not installed")
        elif not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
            _fallback("flash_attn", "it needs CUDA tensors in fp16 or bf16")
        elif key_mask is not None:
            _fallback(
                "flash_attn", "the batch has padding (flash-attn's dense kernel takes no mask)"
            )
        else:
            return func(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                        softmax_scale=1.0 / math.sqrt(self.head_dim))  # fmt: skip
        return None


class CrissCrossAttention(nn.Module):
    """CBraMod's criss-cross attention over the token grid: (B, S, N, dim) -> (B, S, N, dim).

    The first ``dim // 2`` channels go to ``space`` (``heads // 2`` heads attending over
    the S units of one time patch), the others to ``time`` (``heads // 2`` heads over the
    N patches of one unit); the two outputs are concatenated. Each half is an
    :class:`Attention` of width ``dim // 2`` (its own q/k/v and output projection), so a
    layer costs S N (S + N) dim / 2 in attention, where full attention costs (S N)^2 dim.

    ``key_mask`` (B, S, N): True for the tokens others may attend to; None: all.
    ``options`` are :class:`Attention`'s (qkv_bias, qk_norm, impl, attn_drop, ...).
    """

    def __init__(self, dim: int, heads: int, **options):
        super().__init__()
        if dim % 2 or heads % 2:
            raise ValueError(
                f"criss-cross attention splits channels and heads in two halves: dim={dim} "
                f"and heads={heads} must both be even"
            )
        self.space = Attention(dim // 2, heads // 2, **options)
        self.time = Attention(dim // 2, heads // 2, **options)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, S, N, _ = x.shape
        xs, xt = x.chunk(2, dim=-1)
        out = []
        for attn, half, rows in ((self.space, xs, "(b n) s"), (self.time, xt, "(b s) n")):
            h = rearrange(half, f"b s n d -> {rows} d")
            m = None if key_mask is None else rearrange(key_mask, f"b s n -> {rows}")
            out.append(rearrange(attn(h, m), f"{rows} d -> b s n d", b=B, s=S, n=N))
        return torch.cat(out, dim=-1)
