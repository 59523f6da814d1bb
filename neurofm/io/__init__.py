"""Readers: EEG through MNE (:func:`read_eeg`)."""

from .eeg import read_eeg

__all__ = ["read_eeg"]
