"""Readers, and nothing else: EEG through MNE (:func:`read_eeg`), fMRI through nilearn
(:func:`read_parcels`; :func:`read_fmri` reads and prepares with a recipe).

``tokenize_fmri`` lives in :mod:`neurofm.windows`; it is still importable from here
(lazily, by a module ``__getattr__``, since :mod:`neurofm.windows` imports ``io``).
"""

from .eeg import read_eeg
from .fmri import FMRIRecipe, load_atlas, read_fmri, read_parcels

__all__ = ["FMRIRecipe", "load_atlas", "read_eeg", "read_fmri", "read_parcels", "tokenize_fmri"]


def __getattr__(name: str):
    if name == "tokenize_fmri":
        import importlib

        return importlib.import_module("neurofm.windows").tokenize_fmri
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
