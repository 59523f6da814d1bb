"""Moved to :mod:`neurofm.models.layers.embeddings`; this module keeps
``neurofm.models.embeddings`` imports working."""

from .layers.embeddings import (
    ConvPatchEmbed,
    LinearPatchEmbed,
    SpatialEmbedding,
    TimeEmbedding,
    conv_out_len,
    fourier_features,
)

__all__ = [
    "ConvPatchEmbed",
    "LinearPatchEmbed",
    "SpatialEmbedding",
    "TimeEmbedding",
    "conv_out_len",
    "fourier_features",
]
