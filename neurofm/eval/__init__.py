"""Evaluation: linear probes of frozen features (:mod:`neurofm.eval.probes`).

::

    from neurofm.eval import load_eegmat, run_probe, random_init_features
    data = load_eegmat("../shared/data/eeg", model.recipe)
    print(run_probe(data, model, seeds=range(5)).summary())
"""

from .probes import (
    BANDS,
    EEGMAT_CHANNELS,
    ProbeData,
    ProbeResult,
    bandpower_features,
    bandpower_names,
    eegmat_probe,
    eegmmidb_eyes_probe,
    frozen_features,
    group_folds,
    linear_probe,
    load_eegmat,
    load_eegmmidb_eyes,
    random_init_features,
    reinitialised,
    run_probe,
)

__all__ = [
    "BANDS",
    "EEGMAT_CHANNELS",
    "ProbeData",
    "ProbeResult",
    "bandpower_features",
    "bandpower_names",
    "eegmat_probe",
    "eegmmidb_eyes_probe",
    "frozen_features",
    "group_folds",
    "linear_probe",
    "load_eegmat",
    "load_eegmmidb_eyes",
    "random_init_features",
    "reinitialised",
    "run_probe",
]
