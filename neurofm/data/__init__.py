"""Corpora on disk: shards written by ``neurofm preprocess``, streamed for training."""

from .dataset import ShardDataset
from .shards import CorpusConfig, ShardWarning, merge_parts, preprocess_corpus, write_shard
from .splits import check_no_overlap, make_splits

__all__ = [
    "CorpusConfig",
    "ShardDataset",
    "ShardWarning",
    "check_no_overlap",
    "make_splits",
    "merge_parts",
    "preprocess_corpus",
    "write_shard",
]
