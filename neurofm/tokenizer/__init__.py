"""The VQ neural tokenizer (LaBraM's VQ-NSP): each patch becomes a code id.

- :mod:`.quantizer`: :class:`VectorQuantizer`, cosine nearest-code quantization with an
  EMA codebook (k-means start, dead-code revival, straight-through gradients)
- :mod:`.model`: :class:`NeuralTokenizer` (encoder -> codes -> Fourier spectrum of each
  patch) and its config; registers the ``tokenizer`` architecture and the
  ``tokenizer-tiny`` / ``tokenizer-base`` sizes

>>> tok = neurofm.models.create_model("tokenizer-tiny")
>>> out = tok(tokens)          # out.loss, out.codes, out.stats.as_dict()
>>> ids = tok.codes(tokens)    # (B, S, N) code ids, -1 at padding
"""

from .model import NeuralTokenizer, TokenizerConfig, TokenizerOutput, spectrum_targets
from .quantizer import CodebookStats, QuantizerOutput, VectorQuantizer, kmeans_cosine, perplexity

__all__ = [
    "CodebookStats",
    "NeuralTokenizer",
    "QuantizerOutput",
    "TokenizerConfig",
    "TokenizerOutput",
    "VectorQuantizer",
    "kmeans_cosine",
    "perplexity",
    "spectrum_targets",
]
