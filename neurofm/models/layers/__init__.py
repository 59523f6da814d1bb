"""Building blocks of neurofm's models; each module holds one kind of layer.

- :mod:`.attention`: multi-head self-attention with key-padding masks (SDPA, math, flash, flex);
  criss-cross attention over the token grid (CBraMod)
- :mod:`.norm`: QK-norm for short per-head rows, GroupNorm that ignores padding
- :mod:`.mlp`: the Transformer MLP
- :mod:`.block`: a pre-norm block (full, divided or criss-cross attention, layer scale,
  stochastic depth)
- :mod:`.embeddings`: patch, space and time embeddings of a token; CBraMod's patch
  embedding and convolutional positions
- :mod:`.compile`: ``torch.compile`` with a fallback on compilation failures only
"""

from .attention import IMPLS, MODES, Attention, CrissCrossAttention, attend, has_flex
from .block import Block, drop_path
from .compile import CompiledOrEager, is_compile_error
from .embeddings import (
    CBraModPatchEmbed,
    ConvPatchEmbed,
    ConvPositionEmbedding,
    LinearPatchEmbed,
    SpatialEmbedding,
    TimeEmbedding,
    cbramod_out_len,
    conv_out_len,
    fourier_features,
)
from .mlp import Mlp, plain_cpu
from .norm import HeadNorm, centre_heads, group_norm

__all__ = [
    "IMPLS",
    "MODES",
    "Attention",
    "Block",
    "CBraModPatchEmbed",
    "CompiledOrEager",
    "ConvPatchEmbed",
    "ConvPositionEmbedding",
    "CrissCrossAttention",
    "HeadNorm",
    "LinearPatchEmbed",
    "Mlp",
    "SpatialEmbedding",
    "TimeEmbedding",
    "attend",
    "cbramod_out_len",
    "centre_heads",
    "conv_out_len",
    "drop_path",
    "fourier_features",
    "group_norm",
    "has_flex",
    "is_compile_error",
    "plain_cpu",
]
