"""Preprocessing: the recipes (:mod:`.recipe`) and how they transform a recording.

- :mod:`neurofm.preprocess.recipe`: :class:`EEGRecipe` (``Recipe``), :class:`FMRIRecipe`,
  :data:`AnyRecipe`, :func:`recipe_from_dict`; imports nothing else of neurofm's pipeline.
- :mod:`neurofm.preprocess.eeg`: the chunked :class:`Stream` and :func:`preprocess`.
- :mod:`neurofm.preprocess.fmri`: cleaning, resampling to the model's TR, robust scaling.

Reading lives in :mod:`neurofm.io`, windowing in :mod:`neurofm.windows`.
"""

from .eeg import (
    MAX_ABS_VOLTS,
    MAX_RATIO_TERM,
    Stream,
    design_fir,
    detect_line_noise,
    n_resampled,
    preprocess,
    resample_ratio,
)
from .fmri import preprocess_fmri, robust_scale
from .recipe import (
    LINE_FREQS,
    MAX_FIR_TAPS,
    MAX_SECONDS,
    SFREQ_RANGE,
    AnyRecipe,
    EEGRecipe,
    FMRIRecipe,
    Recipe,
    as_recipe,
    check_sfreq,
    check_tr,
    check_vocabulary,
    fir_bands,
    notch_frequencies,
    recipe_from_dict,
)

__all__ = [
    "LINE_FREQS",
    "MAX_ABS_VOLTS",
    "MAX_FIR_TAPS",
    "MAX_RATIO_TERM",
    "MAX_SECONDS",
    "SFREQ_RANGE",
    "AnyRecipe",
    "EEGRecipe",
    "FMRIRecipe",
    "Recipe",
    "Stream",
    "as_recipe",
    "check_sfreq",
    "check_tr",
    "check_vocabulary",
    "design_fir",
    "detect_line_noise",
    "fir_bands",
    "n_resampled",
    "notch_frequencies",
    "preprocess",
    "preprocess_fmri",
    "recipe_from_dict",
    "resample_ratio",
    "robust_scale",
]
