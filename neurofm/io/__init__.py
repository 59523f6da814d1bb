"""Readers: EEG through MNE (:func:`read_eeg`), fMRI through nilearn (:func:`read_fmri`)."""

from .eeg import read_eeg
from .fmri import FMRIRecipe, load_atlas, read_fmri, tokenize_fmri

__all__ = ["FMRIRecipe", "load_atlas", "read_eeg", "read_fmri", "tokenize_fmri"]
