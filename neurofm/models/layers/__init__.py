"""Building blocks of neurofm's models; each module holds one kind of layer.

- :mod:`.attention`: multi-head self-attention with key-padding masks (SDPA, math, flash, flex)
- :mod:`.norm`: QK-norm for short per-head rows, GroupNorm that ignores padding
- :mod:`.mlp`: the Transformer MLP
- :mod:`.block`: a pre-norm block (full or divided attention, layer scale, stochastic depth)
- :mod:`.embeddings`: patch, space and time embeddings of a token
- :mod:`.compile`: ``torch.compile`` with a fallback on compilation failures only
"""

from .attention import IMPLS, Attention, attend, has_flex
from .block import Block, drop_path
from .compile import CompiledOrEager, is_compile_error
from .embeddings import (
    ConvPatchEmbed,
    LinearPatchEmbed,
    SpatialEmbedding,
    TimeEmbedding,
    conv_out_len,
    fourier_features,
)
from .mlp import Mlp, plain_cpu
from .norm import HeadNorm, centre_heads, group_norm

__all__ = [
    "IMPLS",
    "Attention",
    "Block",
    "CompiledOrEager",
    "ConvPatchEmbed",
    "HeadNorm",
    "LinearPatchEmbed",
    "Mlp",
    "SpatialEmbedding",
    "TimeEmbedding",
    "attend",
    "centre_heads",
    "conv_out_len",
    "drop_path",
    "fourier_features",
    "group_norm",
    "has_flex",
    "is_compile_error",
    "plain_cpu",
]
