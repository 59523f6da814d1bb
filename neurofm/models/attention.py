"""Moved to :mod:`neurofm.models.layers.attention` (QK-norm to :mod:`~.layers.norm`); this
module keeps ``neurofm.models.attention`` imports working."""

from .layers.attention import IMPLS, Attention, attend, has_flex
from .layers.norm import HeadNorm, centre_heads

__all__ = ["IMPLS", "Attention", "HeadNorm", "attend", "centre_heads", "has_flex"]
