"""Models: attention layers now; the spatio-temporal encoder and its registry follow (issue 3)."""

from .attention import Attention, attend

__all__ = ["Attention", "attend"]
