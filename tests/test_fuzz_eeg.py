"""Property-based bad input for EEG: EDF headers, arrays and recipes (issue 12).

Every case ends in one of three outcomes (``tests/fuzz.py``): correct data, a neurofm
error, or a named warning. Where data comes back it is checked against what was written:
EDF samples equal the signal within half a quantisation step (polarity kept), tokens of
an unfiltered recipe equal the array in model units, a filtered sine keeps its amplitude,
and bad samples are masked where they are, not elsewhere. Cases with a known defect
(an impossible header field, an implausible rate, NaN with ``on_nan='raise'``) must be
refused, and oddities that are read anyway must come with a named warning.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
from fuzz import outcome
from hypothesis import given
from hypothesis import strategies as st

import neurofm
from neurofm.errors import ConfigError, EEGReadError, FileFormatWarning, SignalError
from neurofm.io.edf import header_bytes
from neurofm.preprocess import LINE_FREQS, SFREQ_RANGE, Recipe, design_fir, notch_frequencies

EEG_LABELS = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "O1", "O2", "Cz", "Pz", "T3", "EEG T4-REF"]
OTHER_LABELS = ["ECG", "EOG L", "Resp", "SpO2", "", "-", "X1", "Unknown1", "A-very-long-label"]
AS_READ = {"uV": 1e-6, "mV": 1e-3, "V": 1.0, "nV": 1.0, "": 1.0}  # MNE: unknown units are V
BAD_NUMBERS = st.sampled_from([0.0, -1.0, -50.0, math.nan, math.inf, -math.inf, 1e300, 1e-300])
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


def plausible(sfreq) -> bool:
    return isinstance(sfreq, (int, float)) and SFREQ_RANGE[0] <= sfreq <= SFREQ_RANGE[1]


# --------------------------------------------------------------------------- EDF headers
@st.composite
def edf_cases(draw):
    """An EDF file with a known analog truth per channel, and the defects its header has."""
    eeg = draw(st.lists(st.sampled_from(EEG_LABELS), min_size=1, max_size=4, unique=True))
    eeg += eeg[:1] * draw(st.sampled_from([0, 0, 0, 1]))  # a label twice (MNE numbers them)
    other = draw(st.lists(st.sampled_from(OTHER_LABELS), max_size=2, unique=True))
    labels = [lab[:16] for lab in draw(st.permutations(eeg + other))]  # as the header holds them
    ns = len(labels)
    c = dict(labels=labels, defects=[], warned=[], slow=None)
    c["duration"] = draw(st.sampled_from([1] * 6 + [0.5, 2, 0, -1, 1e-9]))
    if not c["duration"] > 0:
        c["defects"].append("duration")
    spr0 = draw(st.sampled_from([64, 100, 128]))
    c["spr"] = spr = [spr0] * ns
    if len(set(eeg)) > 1 and draw(st.booleans()):  # an EEG name sampled slower: dropped, named
        c["slow"] = draw(st.sampled_from([e for e in eeg if eeg.count(e) == 1]))
        spr[labels.index(c["slow"])] = draw(st.sampled_from([1, spr0 // 8]))  # < rate / 4
        c["warned"].append("slower")
    c["units"] = [draw(st.sampled_from(["uV", "uV", "mV", "V", "nV", ""])) for _ in labels]
    c["pmin"], c["pmax"], c["dmin"], c["dmax"] = [], [], [], []
    for _ in range(ns):
        mag = draw(st.sampled_from([1, 100, 3200, 5000]))
        pmin, pmax = (-mag, mag) if draw(st.integers(0, 3)) else (mag, -mag)  # legal inversion
        dmin, dmax = draw(st.sampled_from([(-32768, 32767), (-2048, 2047), (0, 4095), (-100, 100)]))
        for key, v in zip(("pmin", "pmax", "dmin", "dmax"), (pmin, pmax, dmin, dmax)):
            c[key].append(v)
    defect = draw(st.sampled_from([None] * 6 + ["phys equal", "dig equal", "dig swapped",
                                                "no samples"]))  # fmt: skip
    i = draw(st.integers(0, ns - 1))  # the channel with the defect
    if defect == "phys equal":
        c["pmax"][i] = c["pmin"][i]
    elif defect == "dig equal":
        c["dmax"][i] = c["dmin"][i]
    elif defect == "dig swapped":
        c["dmin"][i], c["dmax"][i] = c["dmax"][i], c["dmin"][i]
    elif defect == "no samples":
        spr[i] = 0
    if defect:
        c["defects"].append(f"{labels[i]}: {defect}")
    c["n_records"] = n = draw(st.integers(1, 4))
    c["announced"] = draw(st.sampled_from([n, n, n, -1, 0, n + 2] + ([n - 1] if n > 1 else [])))
    c["cut"] = draw(st.sampled_from([None] * 6 + ["partial record", "no whole record"]))
    c["check_units"] = draw(st.sampled_from([False, False, True]))
    c["seed"] = draw(st.integers(0, 2**16))
    return c


def _write_edf(c, path: Path):
    """Write case ``c``; returns the analog truth (physical units) per signal, records held."""
    rng = np.random.default_rng(c["seed"])
    truth, digital = [], []
    for i in range(len(c["labels"])):
        pmin, pmax, dmin, dmax = c["pmin"][i], c["pmax"][i], c["dmin"][i], c["dmax"][i]
        n = c["spr"][i] * c["n_records"]
        x = rng.uniform(min(pmin, pmax), max(pmin, pmax), n) * 0.98
        if dmin < dmax and pmin != pmax:  # the spec's mapping; defects get any samples
            d = np.round((x - pmin) / (pmax - pmin) * (dmax - dmin) + dmin)
        else:
            d = rng.integers(-100, 100, n)
        truth.append(x)
        digital.append(d.astype("<i2"))
    records = b"".join(
        b"".join(d[r * s : (r + 1) * s].tobytes() for d, s in zip(digital, c["spr"]))
        for r in range(c["n_records"])
    )
    head = header_bytes(c["labels"], c["announced"], c["duration"], unit=c["units"],
                        physical_min=c["pmin"], physical_max=c["pmax"], digital_min=c["dmin"],
                        digital_max=c["dmax"], samples_per_record=c["spr"])  # fmt: skip
    record = 2 * sum(c["spr"])
    if c["cut"] == "partial record":
        records = records[: max(record, len(records) - record // 2)]
    elif c["cut"] == "no whole record":
        records = records[: record // 2]
    path.write_bytes(head + records)
    return truth, len(records) // max(record, 1)


def _label_index(name: str, labels: list) -> int:
    """The signal an MNE channel name came from ('Fp1-1': the second 'Fp1')."""
    if labels.count(name) == 1:
        return labels.index(name)
    base, _, k = name.rpartition("-")
    return [i for i, lab in enumerate(labels) if lab == base][int(k)]


@given(edf_cases())
def test_fuzz_edf_headers(c):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.edf"
        truth, held = _write_edf(c, path)
        out = outcome(neurofm.read_eeg, path, check_units=c["check_units"], preload=True,
                      return_report=True)  # fmt: skip
    rates_ok = c["duration"] > 0 and plausible(max(c["spr"]) / c["duration"])
    if c["defects"] or held < 1 or not rates_ok:
        assert out.kind == "error", f"read despite {c['defects'] or 'no whole record'}: {out}"
        assert isinstance(out.error, EEGReadError), out.error
        return
    if out.kind == "error":  # no EEG left, no position, or (check_units) implausible units
        assert c["check_units"] or not isinstance(out.error, EEGReadError), out.error
        return
    raw, report = out.value
    said = " ".join(str(w.message) for w in out.warnings)
    expected_words = list(c["warned"])
    if c["announced"] != held:
        expected_words.append("record")
    if any(u not in ("uV", "mV", "V") for lab, u in zip(c["labels"], c["units"])
           if lab in report.renamed or lab in [ch.original for ch in report.kept]):  # fmt: skip
        expected_words.append("unit")
    for word in expected_words:
        assert word in said, f"no named warning with {word!r}: {said!r}"
    assert all(issubclass(w.category, FileFormatWarning) or "position" in str(w.message)
               for w in out.warnings), said  # fmt: skip
    spr0 = max(c["spr"])
    assert raw.info["sfreq"] == spr0 / c["duration"] and raw.n_times == held * spr0
    assert c["slow"] is None or c["slow"] not in [ch.original for ch in report.kept]
    data = raw.get_data()
    for ch in report.kept:  # values read == values written, within half a quantum, polarity kept
        i = _label_index(ch.original, c["labels"])
        step = abs(c["pmax"][i] - c["pmin"][i]) / (c["dmax"][i] - c["dmin"][i])
        want = truth[i][: held * spr0] * AS_READ[c["units"][i]]
        got = data[raw.ch_names.index(ch.name)]
        tol = (0.5 * step + 1e-9 * abs(c["pmin"][i])) * AS_READ[c["units"][i]]
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * 1.001, err_msg=ch.original)


# --------------------------------------------------------------------------- arrays
@st.composite
def array_cases(draw):
    """A sine per channel with bad samples, flat channels and odd rates, and a recipe."""
    c = dict(names=draw(st.lists(st.sampled_from(EEG_LABELS[:10]), min_size=1, max_size=4,
                                 unique=True)))  # fmt: skip
    nice = st.sampled_from([128, 200, 250, 256, 500])
    c["identity"] = draw(st.booleans())  # no filter, no resampling: tokens are the samples
    c["sfreq"] = draw(nice if c["identity"] else st.one_of(
        nice, nice, st.sampled_from([173.61, 99999.999]), st.floats(1, 2e5),
        st.sampled_from([0, -256, math.nan, math.inf, 1e9, 5]),
    ))  # fmt: skip
    c["seconds"] = draw(st.sampled_from([3, 8, 12]))
    c["amp"] = draw(st.sampled_from([50e-6] * 5 + [1e-3, 50e-9, 50.0, 0.0]))
    c["units"] = draw(st.sampled_from([None] * 15 + ["uV", 1e6, 0, -1.0, math.nan]))
    c["bad"] = draw(st.sampled_from([None] * 5 + ["nan", "inf", "-inf", "1e300", "row"]))
    c["flat"] = draw(st.booleans()) and len(c["names"]) > 1
    c["on_nan"] = draw(st.sampled_from(["raise", "mask"]))
    c["seed"] = draw(st.integers(0, 2**16))
    return c


def _array(c):
    """The case's array, and (row, column) of its bad sample (row: all bad) or None."""
    rng = np.random.default_rng(c["seed"])
    n = int(round(c["seconds"] * c["sfreq"])) if plausible(c["sfreq"]) else 2000
    t = np.arange(n) / (c["sfreq"] if plausible(c["sfreq"]) else 200)
    x = c["amp"] * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (len(c["names"]), 1)))
    if c["flat"]:
        x[-1] = 0.0
    if not c["bad"]:
        return x, None
    row, col = int(rng.integers(len(c["names"]))), int(rng.integers(n // 4, 3 * n // 4))
    if c["bad"] == "row":
        x[row] = np.nan
    else:
        x[row, col] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "1e300": 1e300}[c["bad"]]
    return x, (row, col)


@given(array_cases())
def test_fuzz_arrays_through_read_and_tokenize(c):
    x, bad = _array(c)
    window = 2.0
    if c["identity"]:  # no filter, no resampling: tokens are the samples in model units
        recipe = Recipe(sfreq=c["sfreq"], l_freq=None, h_freq=None, notch=None,
                        window_seconds=window, on_nan=c["on_nan"])  # fmt: skip
    else:
        recipe = Recipe(window_seconds=window, on_nan=c["on_nan"], notch=None)

    def run():
        raw = neurofm.read_eeg(x, sfreq=c["sfreq"], ch_names=c["names"], units=c["units"])
        return neurofm.tokenize(raw, recipe)

    out = outcome(run)
    units_ok = c["units"] is None or c["units"] in ("uV", 1e6)
    if not plausible(c["sfreq"]) or not units_ok or (bad and c["on_nan"] == "raise"):
        assert out.kind == "error", f"{c}: {out}"
        return
    if out.kind == "error":  # units check, too short, nothing but bad channels
        return
    tokens = out.value
    xs, mask = tokens.x.numpy(), tokens.mask.numpy()
    assert np.isfinite(xs[mask]).all()
    B, S, N, P = xs.shape
    assert (S, N, P) == (len(c["names"]), window / recipe.patch_seconds, recipe.patch_len)
    scale = {None: 1.0, "uV": 1e-6, 1e6: 1e6}[c["units"]] / recipe.unit_scale
    if c["flat"] or c["amp"] == 0:
        assert not mask[:, -1].any()  # a flat channel is masked, never fed as signal
    good = [s for s in range(S) if not (bad and bad[0] == s) and not (c["flat"] and s == S - 1)]
    if c["amp"] == 0:
        good = []
    if c["identity"]:
        want = (x[:, : B * N * P] * scale).reshape(S, B, N, P).transpose(1, 0, 2, 3)
        np.testing.assert_allclose(
            xs[:, good], want[:, good], rtol=1e-5, atol=1e-6 * scale * c["amp"]
        )
        assert mask[:, good].all()
    elif good and B > 2:  # a 10 Hz sine keeps its amplitude through the 0.1-75 Hz band
        inner = xs[1:-1, good][mask[1:-1, good]]
        if inner.size:
            assert np.isclose(np.median(np.abs(inner).max(-1)), c["amp"] * scale, rtol=0.1)
    if bad and c["on_nan"] == "mask":
        assert not mask[:, bad[0]].all()  # the bad samples' patches are masked


# --------------------------------------------------------------------------- recipes
RECIPE_FIELDS = {  # typical values; each case replaces up to two with bad or any numbers
    "sfreq": [100, 128, 200, 250, 256, 500, 1000],
    "l_freq": [None, 0, 0.1, 0.5, 1.0, 4.0],
    "h_freq": [None, 30, 45, 75, 100, 120],
    "notch": ["auto", None, 50, 60, (50, 60)],
    "notch_width": [0.5, 1.0, 2.0],
    "unit_scale": [1e-4, 1e-6, 1.0],
    "clip": [None, 5.0, 20.0],
    "patch_seconds": [0.5, 1.0, 2.0],
    "window_seconds": [2.0, 4.0, 10.0],
    "stride_seconds": [None, 1.0, 2.0],
    "flat_threshold": [1e-8, 0.0],
}


@st.composite
def recipe_kwargs(draw):
    kw = {k: draw(st.sampled_from(v)) for k, v in RECIPE_FIELDS.items() if draw(st.booleans())}
    for name in draw(st.permutations(list(RECIPE_FIELDS)))[: draw(st.integers(0, 2))]:
        bad = st.one_of(BAD_NUMBERS, ANY_FLOAT)
        kw[name] = draw(st.lists(bad, max_size=3) | bad if name == "notch" else bad)
    return kw


_SINE = None


def _sine_raw():
    global _SINE
    if _SINE is None:
        t = np.arange(256 * 20) / 256
        x = 50e-6 * np.sin(2 * np.pi * 10 * t)[None].repeat(2, 0)
        _SINE = neurofm.read_eeg(x, sfreq=256, ch_names=["Cz", "Pz"])
    return _SINE


@given(recipe_kwargs())
def test_fuzz_recipe_values(kw):
    out = outcome(Recipe, **kw)
    if out.kind == "error":
        assert isinstance(out.error, ConfigError), out.error
        assert any(k in str(out.error) for k in (*kw, "filter", "notch")), out.error
        return
    r = out.value
    nyq = r.sfreq / 2
    numbers = [r.sfreq, r.notch_width, r.unit_scale, r.patch_seconds, r.window_seconds]
    assert all(math.isfinite(v) and v > 0 for v in numbers), r
    assert plausible(r.sfreq) and (r.h_freq is None or r.h_freq < nyq)
    assert r.patch_len >= 1 and r.n_patches * r.patch_len == r.window_len
    for line in LINE_FREQS if r.notch == "auto" else [r.notch]:  # every valid recipe designs
        notches = outcome(notch_frequencies, r, math.inf, line, seconds=5)
        assert notches.kind == "ok" and all(0 < f < nyq for f in notches.value)
        fir = outcome(design_fir, r.sfreq, r.l_freq, r.h_freq, notches.value, r.notch_width)
        assert fir.kind == "ok", fir
    if r.sfreq <= 1000 and r.window_seconds <= 20:  # ... and runs, end to end
        tok = outcome(neurofm.tokenize, _sine_raw(), r)
        if tok.kind == "error":
            assert isinstance(tok.error, SignalError) and "shorter than one window" in str(
                tok.error
            ), tok.error
            return
        tokens = tok.value
        assert tokens.shape[2:] == (r.n_patches, r.patch_len)
        assert np.isfinite(tokens.x.numpy()[tokens.mask.numpy()]).all()
