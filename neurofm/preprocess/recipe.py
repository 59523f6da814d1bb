"""The preprocessing recipes: how a recording becomes model input, for EEG and fMRI.

A recipe is a pydantic model, serialisable to JSON, saved inside every checkpoint so that
``encode`` and fine-tuning prepare data exactly as pretraining did. :class:`EEGRecipe`
(public name ``Recipe``) and :class:`FMRIRecipe` are told apart by their ``modality``
field; :data:`AnyRecipe` is the discriminated union for configs that hold either, and
:func:`recipe_from_dict` turns a checkpoint's dict back into the right class (a dict
without ``modality`` is EEG, as checkpoints written before fMRI existed).

The recipe is the one source of **patch geometry**; both classes answer the same
questions with the same property names:

====================  ================================  ===============================
property              EEG                               fMRI
====================  ================================  ===============================
``patch_len``         samples per patch                 TRs per patch (``patch_trs``)
``patch_seconds``     field                             ``patch_trs * t_r``
``window_patches``    ``window_len // patch_len``       field
``window_len``        samples per window                TRs per window
``stride_len``        samples between window starts     TRs between window starts
``window_seconds``    field                             ``window_len * t_r``
``seconds(n)``        ``n / sfreq``                     ``n * t_r``
====================  ================================  ===============================

This module imports nothing but the config and error modules, so models, data and I/O
can all depend on it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from ..config import StrictConfig
from ..errors import NeurofmError, check_finite, check_option, validate_type

LINE_FREQS = (50.0, 60.0)
SFREQ_RANGE = (10.0, 100_000.0)  # Hz: plausible EEG and intracranial sampling rates
MAX_FIR_TAPS = 2**20  # a longer band-pass FIR means a transition band too narrow to design
MAX_SECONDS = 86400.0  # patch, window and stride lengths: at most a day
MIN_TR, MAX_TR = 0.05, 30.0  # s: fast multiband/MREG runs to sparse sampling
MODALITIES = ("eeg", "fmri")


def check_sfreq(sfreq, what: str = "sfreq", error: type[NeurofmError] = NeurofmError,
                fix: str = "give the rate in Hz (samples per second), not a period or kHz") -> float:  # fmt: skip
    """A plausible sampling rate in Hz, or ``error`` saying what is wrong and ``fix``."""
    validate_type(sfreq, "numeric", what, "a number (Hz)")
    lo, hi = SFREQ_RANGE
    if not lo <= float(sfreq) <= hi:  # NaN fails too
        raise error(
            f"{what}={float(sfreq):g} Hz is not a plausible sampling rate (EEG is sampled at "
            f"{lo:g} Hz to {hi:g} Hz): {fix}"
        )
    return float(sfreq)


def _tr_problem(t_r: float) -> str | None:
    """Why a finite, positive TR (s) is implausible, with the fix; None when it is fine."""
    if t_r > MAX_TR:
        unit = f"it looks like milliseconds; pass seconds, t_r={t_r / 1000:g}" if t_r >= 100 else (
            "pass the TR in seconds")  # fmt: skip
        return f"t_r={t_r:g} s is longer than any fMRI TR ({MIN_TR:g}-{MAX_TR:g} s): {unit}"
    if t_r < MIN_TR:
        return f"t_r={t_r:g} s is shorter than any fMRI TR ({MIN_TR:g}-{MAX_TR:g} s): pass seconds"
    return None


def check_tr(t_r, name: str = "t_r") -> float:
    """A repetition time in seconds: finite, positive and within fMRI's range."""
    t_r = check_finite(t_r, name, low=0, low_open=True)
    problem = _tr_problem(t_r)
    if problem:
        raise NeurofmError(problem if name == "t_r" else f"{name}: {problem}")
    return t_r


class EEGRecipe(StrictConfig):
    """How a recording becomes model input (EEG).

    Defaults follow LaBraM: 200 Hz, 0.1-75 Hz band, notch at the line frequency,
    volts divided by 100 uV, patches of 1 s.
    """

    modality: Literal["eeg"] = "eeg"
    sfreq: float = Field(200.0, description="target sampling rate (Hz)")
    l_freq: float | None = Field(0.1, ge=0, allow_inf_nan=False,
                                 description="high-pass edge (Hz); None or 0: no high-pass")  # fmt: skip
    h_freq: float | None = Field(75.0, gt=0, allow_inf_nan=False,
                                 description="low-pass edge (Hz), below sfreq/2; None: no low-pass")  # fmt: skip
    notch: Literal["auto"] | float | tuple[float, ...] | None = Field(
        "auto", description="line frequency (Hz) or 'auto' (detected from a 50/60 Hz peak)"
    )
    notch_width: float = Field(
        1.0,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description="stop band width around each line harmonic (Hz)",
    )
    reference: Literal["average"] | None = Field(
        None, description="None keeps the recorded reference"
    )
    unit_scale: float = Field(1e-4, ge=1e-12, le=1.0, allow_inf_nan=False,
                              description="volts per model unit (LaBraM: 100 uV)")  # fmt: skip
    clip: float | None = Field(None, gt=0, le=1e9, allow_inf_nan=False,
                               description="clip |x| at this many model units")  # fmt: skip
    normalize: Literal["none", "channel"] = Field(
        "none", description="'channel': z-score each channel within each window"
    )
    patch_seconds: float = Field(1.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    window_seconds: float = Field(10.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    stride_seconds: float | None = Field(None, gt=0, le=MAX_SECONDS, allow_inf_nan=False,
                                         description="None: windows do not overlap")  # fmt: skip
    flat_threshold: float = Field(
        1e-8,
        ge=0,
        le=1e-4,
        allow_inf_nan=False,
        description="a patch whose std (V) is below this is masked",
    )
    on_nan: Literal["raise", "mask"] = Field(
        "raise", description="non-finite samples (NaN, inf): refuse, or mask the patches they touch"
    )
    version: int = Field(1, ge=1)

    @field_validator("sfreq")
    @classmethod
    def _sfreq(cls, value):
        return check_sfreq(value, "sfreq")

    @field_validator("notch", mode="before")
    @classmethod
    def _notch_values(cls, value):
        if value is None or (isinstance(value, str) and value == "auto"):
            return value
        for f in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < f < math.inf:
                raise ValueError(
                    f"{f!r} is not a line frequency: give the mains frequency in Hz (50 or 60; "
                    "its harmonics are removed too), a list of them, 'auto' (detect a 50/60 Hz "
                    "peak) or None (no notch)"
                )
        return value

    @model_validator(mode="after")
    def _check(self):
        nyq = self.sfreq / 2
        for name in ("l_freq", "h_freq"):
            value = getattr(self, name)
            if value is not None and value >= nyq:
                raise ValueError(
                    f"{name}={value:g} must be below sfreq/2={nyq:g} (Nyquist): lower {name} or "
                    "raise sfreq"
                )
        if self.l_freq and self.h_freq and self.l_freq >= self.h_freq:
            raise ValueError(f"l_freq={self.l_freq} must be below h_freq={self.h_freq}")
        for name in ("patch_seconds", "window_seconds", "stride_seconds"):
            value = getattr(self, name)
            if value is None:
                continue
            n = value * self.sfreq
            if round(n) < 1 or abs(n - round(n)) > 1e-6:
                raise ValueError(
                    f"{name}={value:g} is not a whole number of samples (at least one) at "
                    f"{self.sfreq:g} Hz"
                )
        ratio = self.window_seconds / self.patch_seconds
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(
                f"window_seconds={self.window_seconds} must be a multiple of patch_seconds={self.patch_seconds}"
            )
        self._check_filter()
        return self

    def _check_filter(self):
        """The FIR every recording gets can be designed, whatever line frequency it has."""
        fir_bands(self.sfreq, self.l_freq, self.h_freq)  # the band alone
        w, auto = self.notch_width, self.notch == "auto"
        for line in LINE_FREQS if auto else [self.notch]:
            for f in () if auto or line is None else np.atleast_1d(line):
                if not w / 2 + 1 < f < self.sfreq / 2:
                    raise ValueError(
                        f"notch={f:g} Hz with notch_width={w:g}: a notch needs its stop band and "
                        f"1 Hz transitions between 0 and sfreq/2={self.sfreq / 2:g} Hz. Give the "
                        "line frequency (50 or 60), a narrower notch_width, or notch=None"
                    )
            try:
                fir_bands(self.sfreq, self.l_freq, self.h_freq,
                          notch_frequencies(self, math.inf, line), w)  # fmt: skip
            except NeurofmError as err:
                raise ValueError(
                    f"notch='auto' may remove {line:g} Hz; {err}" if auto else err
                ) from None

    @property
    def patch_len(self) -> int:
        return round(self.patch_seconds * self.sfreq)

    @property
    def window_len(self) -> int:
        return round(self.window_seconds * self.sfreq)

    @property
    def stride_len(self) -> int:
        return round((self.stride_seconds or self.window_seconds) * self.sfreq)

    @property
    def window_patches(self) -> int:
        return self.window_len // self.patch_len

    n_patches = window_patches

    def seconds(self, samples):
        """Samples at ``sfreq`` as seconds."""
        return samples / self.sfreq

    @classmethod
    def from_dict(cls, data: dict) -> EEGRecipe:
        return cls(**data)


def fir_bands(sfreq, l_freq, h_freq, notch_freqs=(), notch_width=1.0):
    """Band edges (Hz), gains and length of the band-pass plus notch FIR, or None if no filter.

    Transition bands as MNE's ``filter_length='auto'``: ``min(max(0.25 f, 2), f)`` below
    the high-pass edge, ``min(max(0.25 f, 2), nyq - f)`` above the low-pass edge (clipped to
    Nyquist, as MNE does), 1 Hz around each notch; length ``3.3 / narrowest transition``
    seconds. Raises ``NeurofmError`` when the edges overlap or the filter would be too long.
    """
    nyq = sfreq / 2
    edges = [(0.0, 0.0 if l_freq else 1.0, "0 Hz")]
    trans = []  # (width, what)
    if l_freq:
        lt = min(max(0.25 * l_freq, 2.0), l_freq)
        trans.append((lt, f"below the high-pass edge l_freq={l_freq:g}"))
        if l_freq - lt > 0:  # 0.1 Hz: the stop edge is DC
            edges.append((l_freq - lt, 0.0, "the high-pass stop edge"))
        edges.append((l_freq, 1.0, f"l_freq={l_freq:g}"))
    for f in sorted(notch_freqs):
        lo, hi = f - notch_width / 2, f + notch_width / 2
        what = f"the notch at {f:g} Hz"
        edges += [(lo - 1.0, 1.0, what), (lo, 0.0, what), (hi, 0.0, what), (hi + 1.0, 1.0, what)]
        trans.append((1.0, what))
    if h_freq:
        ht = min(max(0.25 * h_freq, 2.0), nyq - h_freq)
        trans.append((ht, f"between h_freq={h_freq:g} and Nyquist ({nyq:g} Hz)"))
        edges += [(h_freq, 1.0, f"h_freq={h_freq:g}"), (h_freq + ht, 0.0, "the low-pass stop edge")]
    if not trans:
        return None
    width, what = min(trans)
    taps = 3.3 / width * sfreq if width > 0 else math.inf
    if taps > MAX_FIR_TAPS:
        raise NeurofmError(
            f"the filter would need {taps:.3g} taps ({taps / sfreq:.3g} s at {sfreq:g} Hz): "
            f"its transition band {what} is only {width:.3g} Hz wide (at most {MAX_FIR_TAPS} "
            "taps). Raise l_freq, keep h_freq further below Nyquist, or lower sfreq"
        )
    if edges[-1][0] < nyq:
        edges.append((nyq, edges[-1][1], f"Nyquist ({nyq:g} Hz)"))
    for (f0, _, a), (f1, _, b) in zip(edges, edges[1:]):
        if not f1 - f0 > 1e-9 * nyq:
            raise NeurofmError(
                f"filter bands overlap: {a} reaches {f0:g} Hz, {b} starts at {f1:g} Hz. Widen "
                "the band (l_freq, h_freq), narrow notch_width, or set notch=None"
            )
    return [e[0] for e in edges], [e[1] for e in edges], math.ceil(taps) | 1


def notch_frequencies(recipe: EEGRecipe, sfreq_in: float, line: float | None) -> tuple[float, ...]:
    """Line harmonics to remove: inside the kept band and below both Nyquist rates."""
    if line is None:
        return ()
    top = min(recipe.h_freq or np.inf, recipe.sfreq / 2 - recipe.notch_width - 1, sfreq_in / 2)
    out = set()
    for base in np.atleast_1d(line).astype(float):  # > notch_width/2 + 1 Hz: Recipe checks it
        out.update(base * np.arange(1, math.ceil(top / base)))
    return tuple(sorted(float(f) for f in out if f < top))


class FMRIRecipe(StrictConfig):
    """How an fMRI run becomes model input; saved inside fMRI checkpoints."""

    modality: Literal["fmri"] = "fmri"
    t_r: float = Field(0.72, gt=0, allow_inf_nan=False,
                       description="the model's TR (s); runs are resampled to it")  # fmt: skip
    patch_trs: int = Field(20, gt=0, description="TRs per patch (BrainLM: 20)")
    window_patches: int = Field(10, gt=0, description="patches per window (BrainLM: 200 TRs)")
    stride_patches: int | None = Field(None, gt=0, description="None: windows do not overlap")
    detrend: bool = True
    high_pass: float | None = Field(0.01, gt=0, description="Hz; None: none")
    low_pass: float | None = Field(None, gt=0, description="Hz; None: none")
    smoothing_fwhm: float | None = Field(None, gt=0, description="mm, before extraction")
    sphere_radius: float = Field(5.0, gt=0, description="mm, for coordinate atlases")
    robust_scale: bool = Field(True, description="(x - median) / IQR per parcel and run")
    space: Literal["coords", "atlas"] = Field(
        "coords", description="'coords': parcels placed by centroid (any atlas); "
        "'atlas': vocabulary ids of the atlas (a model trained on that atlas)",
    )  # fmt: skip
    atlas: str | None = Field(None, description="the atlas this model was trained on")
    version: int = 1

    @field_validator("t_r")
    @classmethod
    def _plausible_tr(cls, t_r: float) -> float:
        problem = _tr_problem(t_r)  # before the filters, which would otherwise be blamed
        if problem:
            raise ValueError(problem)
        return t_r

    @model_validator(mode="after")
    def _check(self):
        nyq = 0.5 / self.t_r
        for name in ("high_pass", "low_pass"):
            value = getattr(self, name)
            if value is not None and value >= nyq:
                raise ValueError(
                    f"{name}={value} Hz must be below the Nyquist frequency {nyq:.3g} Hz of "
                    f"t_r={self.t_r} s: lower {name}, or None for no filter"
                )
        if self.high_pass and self.low_pass and self.high_pass >= self.low_pass:
            raise ValueError(
                f"high_pass={self.high_pass} Hz must be below low_pass={self.low_pass} Hz"
            )
        if self.space == "atlas" and not self.atlas:
            raise ValueError(
                "space='atlas' gives parcels the ids of an atlas's vocabulary: name the atlas "
                "(atlas='schaefer2018-400'), or use space='coords' (placed by centroid)"
            )
        return self

    @property
    def patch_len(self) -> int:
        return self.patch_trs

    @property
    def patch_seconds(self) -> float:
        return self.patch_trs * self.t_r

    @property
    def window_len(self) -> int:
        return self.patch_trs * self.window_patches

    @property
    def stride_len(self) -> int:
        return self.patch_trs * (self.stride_patches or self.window_patches)

    @property
    def window_seconds(self) -> float:
        return self.window_len * self.t_r

    @property
    def n_patches(self) -> int:
        return self.window_patches

    def seconds(self, samples):
        """TRs at ``t_r`` as seconds."""
        return samples * self.t_r


Recipe = EEGRecipe  # the public name since the first release


def _modality(value) -> str:
    """The tag of a recipe or of its dict; a dict without one is EEG (older checkpoints)."""
    if isinstance(value, Mapping):
        return value.get("modality", "eeg")
    return getattr(value, "modality", "eeg")


#: Either recipe, told apart by ``modality`` (absent: EEG). Use it as a config field type.
AnyRecipe = Annotated[
    Annotated[EEGRecipe, Tag("eeg")] | Annotated[FMRIRecipe, Tag("fmri")],
    Discriminator(_modality),
]
RECIPES = {"eeg": EEGRecipe, "fmri": FMRIRecipe}


def recipe_from_dict(data: Mapping | EEGRecipe | FMRIRecipe) -> EEGRecipe | FMRIRecipe:
    """The recipe a dict describes (a checkpoint's ``recipe``), by its ``modality``.

    A dict without ``modality`` is an EEG recipe, as in checkpoints written before fMRI.
    A recipe is returned as it is. Raises :class:`~neurofm.errors.ConfigError` (bad fields)
    or :class:`~neurofm.errors.NeurofmError` (unknown modality).
    """
    if isinstance(data, EEGRecipe | FMRIRecipe):
        return data
    validate_type(data, Mapping, "recipe", "a dict of recipe fields or a recipe")
    modality = _modality(data)
    check_option("recipe modality", modality, MODALITIES)
    return RECIPES[modality](**data)


def check_vocabulary(recipe: EEGRecipe | FMRIRecipe, vocab_size: int) -> None:
    """Refuse a recipe whose space ids a model's vocabulary of ``vocab_size`` rows lacks.

    The rule for fMRI: parcels get ``UNK`` and are placed by their centroid
    (``space='coords'``, any model) unless the recipe says ``space='atlas'``, whose ids
    ``2 + parcel index`` need a model with that atlas's vocabulary: more than the two
    reserved rows (``PAD``, ``UNK``) that every registered fMRI model has. EEG ids come
    from :func:`neurofm.channels.eeg_vocabulary`; a model checks them per batch.
    """
    if isinstance(recipe, FMRIRecipe) and recipe.space == "atlas" and vocab_size <= 2:
        raise NeurofmError(
            f"the recipe says space='atlas' (ids of atlas {recipe.atlas!r}) but the model's "
            f"vocabulary has only the reserved ids (vocab_size={vocab_size}): use "
            "FMRIRecipe(space='coords') to place parcels by their centroids, or a model "
            f"trained with {recipe.atlas!r}'s parcels as its vocabulary (vocab_size = 2 + "
            "parcels)"
        )


def as_recipe(recipe, modality: str = "eeg") -> EEGRecipe | FMRIRecipe:
    """A recipe of ``modality`` from None (its defaults), a recipe, or a dict of its fields."""
    check_option("modality", modality, MODALITIES)
    cls = RECIPES[modality]
    if recipe is None:
        return cls()
    if isinstance(recipe, cls):
        return recipe
    if isinstance(recipe, Mapping) and _modality(recipe) == modality:
        from ..config import load_config

        return load_config(recipe, cls)
    public = "neurofm.Recipe" if modality == "eeg" else "neurofm.FMRIRecipe"
    given = _modality(recipe) if isinstance(recipe, Mapping | EEGRecipe | FMRIRecipe) else None
    hint = f" (an {given} recipe, here {modality} is prepared)" if given else ""
    raise NeurofmError(
        f"recipe must be a {public} or a dict of its fields, got {type(recipe).__name__}"
        f"{hint}: e.g. {public.split('.')[1]}() or {{}} for the defaults"
    )
