"""Moved to :mod:`neurofm.models.layers.embeddings`; this module keeps
``neurofm.models.embeddings`` imports working."""

from .layers.embeddings import *  # noqa: F403
from .layers.embeddings import __all__  # noqa: F401
