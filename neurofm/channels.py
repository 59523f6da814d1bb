"""Channel vocabulary: canonical 10-05 names, MNI positions, aliases and bipolar pairs.

Every EEG channel a file carries is mapped onto one *space unit* of the token grid
(see ``Tokens``): a single electrode of the 10-05 system spelled as MNE spells it
(``Fp1``, ``FC5``, ``T7``, ``Cz``), a bipolar derivation kept as a pair
(``Fp1-F7``), or an unknown channel that keeps its own (cleaned) name. The mapping
always comes with a :class:`ChannelReport` that says what was renamed, what stayed
unknown and what was dropped, and why.

Positions are MNI millimetres taken from MNE's ``colin27_1005`` template (Colin27 is
an MNI-space head); a bipolar pair sits at the midpoint of its two electrodes.
The vocabulary is a frozen table shipped with the package (``resources/``) so that the
id of a name never changes under a checkpoint; ``_build_table`` regenerates it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from .errors import ChannelError

PAD, UNK = 0, 1
SPECIAL = ("<pad>", "<unk>")

# Old 10-20 names -> 10-10 names (Jasper 1958 -> ACNS 2006).
ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

# Silverman's anterior temporal electrodes (TUH files carry them). MNE has no template
# position; they sit below F7/F8 towards the ear, closest to FT9/FT10.
EXTRA_ELECTRODES = {"T1": "FT9", "T2": "FT10"}

# Bipolar derivations seen in clinical corpora, canonical spelling. TUH TCP (01_tcp_ar,
# 22 channels) and the CHB-MIT double banana (23 channels) between them.
BIPOLAR_PAIRS = (
    # left and right temporal chains
    "Fp1-F7", "F7-T7", "T7-P7", "P7-O1",
    "Fp2-F8", "F8-T8", "T8-P8", "P8-O2",
    # parasagittal chains
    "Fp1-F3", "F3-C3", "C3-P3", "P3-O1",
    "Fp2-F4", "F4-C4", "C4-P4", "P4-O2",
    # midline and the TCP coronal chain
    "Fz-Cz", "Cz-Pz", "A1-T7", "T7-C3", "C3-Cz", "Cz-C4", "C4-T8", "T8-A2",
    # CHB-MIT extras
    "P7-T7", "T7-FT9", "FT9-FT10", "FT10-T8",
)  # fmt: skip

# Reference suffixes of referential channels: 'EEG FP1-REF' (TUH), 'Fp1-LE' (linked ears),
# 'C3-AVG' / '-AR' (average reference).
_REF_SUFFIX = re.compile(r"[-_ ](REF|LE|AR|AVG|AV|CAR|LER|A1A2|M1M2|A12|REF\d*)$", re.I)
_PREFIX = re.compile(r"^(EEG|POL|ECG|EKG|EOG|EMG|RESP|SAO2|SPO2|MEG|SEEG|ECOG)[\s:_-]+", re.I)
_DEDUP = re.compile(r"-\d+$")  # MNE appends -0, -1 to duplicate names (CHB-MIT 'T8-P8-0')
_EAR = {"A1", "A2", "M1", "M2"}

# Channel types recognised from the name when the reader says 'eeg' for everything (EDF).
_TYPE_PATTERNS = (
    ("ecg", r"E[CK]G"),
    ("eog", r"EOG|[HV]EOG|[HV]EO[LRUD]?|LOC|ROC"),  # Neuroscan: VEO, HEO, VEOU, HEOL
    ("emg", r"EMG|CHIN|LEG"),
    ("stim", r"STATUS|TRIGGER|STI\d*|EVENTS?|MARKERS?|ANNOTATIONS?|EDF ANNOTATIONS"),
    (
        "misc",
        r"RESP.*|SA?O2|SPO2|PULSE|PLETH|TEMP|ACC\d*|ERGO.*|DC\d+|PHOTIC|IBI|BURSTS|SUPPR"
        r"|PAT|TECH|NR\d*|BN\d*|BP\d*|PG\d*|\$.*|X\d+|OSAT|HR|POSITION|LIGHT|SNORE|VNS",
    ),
)
_TYPE_RES = [(t, re.compile(rf"^({p})([^A-Za-z].*)?$", re.I)) for t, p in _TYPE_PATTERNS]
_PLACEHOLDER = re.compile(r"^[-.\s]*(-\d+)?$")  # CHB-MIT '-', '--0', '.': empty slots
_PREFIX_TYPE = {"ECG": "ecg", "EKG": "ecg", "EOG": "eog", "EMG": "emg", "RESP": "misc",
                "SAO2": "misc", "SPO2": "misc", "MEG": "meg", "SEEG": "seeg", "ECOG": "ecog"}  # fmt: skip
# BioSemi ABC caps label electrodes A1..A32, B1..B32, ...: not 10-05 names.
_BIOSEMI = re.compile(r"^[A-I]\d{1,2}$")
EEG_TYPES = ("eeg",)
# signal types that become space units: scalp EEG and intracranial EEG (ECoG, sEEG, DBS).
# Intracranial contacts are never 10-05 electrodes: they keep their names, the unknown id,
# and are placed by the file's positions or read_eeg(positions=...).
SIGNAL_TYPES = ("eeg", "ecog", "seeg", "dbs")


# --------------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class Vocabulary:
    """Names of the space units a model knows, with an id and an MNI position each.

    Ids 0 and 1 are reserved: ``PAD`` (padding) and ``UNK`` (a channel whose name the
    vocabulary does not hold; the model embeds it from its position alone).
    """

    names: tuple[str, ...]
    positions: np.ndarray  # (V, 3) MNI mm, NaN for the special rows
    kind: str = "eeg"
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self._index.update({n: i for i, n in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def id(self, name: str) -> int:
        """Id of a canonical name, ``UNK`` when the vocabulary does not hold it."""
        return self._index.get(name, UNK)

    def ids(self, names) -> np.ndarray:
        return np.array([self.id(n) for n in names], dtype=np.int64)

    def position(self, name: str) -> np.ndarray:
        i = self._index.get(name)
        return self.positions[i].copy() if i is not None else np.full(3, np.nan)


def _read_table() -> tuple[list[str], np.ndarray]:
    text = resources.files("neurofm").joinpath("resources/eeg_vocabulary.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    names = [r[1] for r in rows]
    pos = np.array([[float(v) for v in r[2:5]] for r in rows], dtype=np.float64)
    return names, pos


@lru_cache(maxsize=1)
def eeg_vocabulary() -> Vocabulary:
    """The EEG vocabulary: ``<pad>``, ``<unk>``, 10-05 electrodes, bipolar pairs."""
    names, pos = _read_table()
    return Vocabulary(tuple(names), pos, kind="eeg")


def _build_table() -> str:
    """Regenerate ``resources/eeg_vocabulary.tsv`` from MNE's template (maintainers only)."""
    import mne

    montage = mne.channels.make_standard_montage("colin27_1005")
    ch_pos = montage.get_positions()["ch_pos"]
    electrodes = {n: 1000.0 * np.asarray(p) for n, p in ch_pos.items() if n not in ALIASES}
    for name, like in EXTRA_ELECTRODES.items():
        electrodes[name] = electrodes[like]
    rows = [(s, (np.nan,) * 3) for s in SPECIAL]
    rows += [(n, tuple(p)) for n, p in electrodes.items()]
    for pair in BIPOLAR_PAIRS:
        a, b = pair.split("-")
        rows.append((pair, tuple((electrodes[a] + electrodes[b]) / 2)))
    lines = ["id\tname\tx_mm\ty_mm\tz_mm"]
    lines += [f"{i}\t{n}\t{x:.2f}\t{y:.2f}\t{z:.2f}" for i, (n, (x, y, z)) in enumerate(rows)]
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def _upper_lookup() -> dict[str, str]:
    vocab = eeg_vocabulary()
    table = {n.upper(): n for n in vocab.names[len(SPECIAL) :] if "-" not in n}
    table.update({old: new for old, new in ALIASES.items()})
    return table


def electrode_name(name: str) -> str | None:
    """Canonical spelling of one electrode name, or None: ``'FP1'`` -> ``'Fp1'``, ``'T3'`` -> ``'T7'``."""
    return _upper_lookup().get(name.strip().rstrip(".").upper())


# --------------------------------------------------------------------------- mapping
@dataclass
class ChannelInfo:
    """What one raw channel name turned into."""

    original: str
    name: str  # canonical name (known) or the cleaned original (unknown)
    type: str  # eeg, eog, ecg, emg, stim, misc, ...
    status: str  # 'kept' | 'renamed' | 'unknown' | 'dropped'
    kind: str = "electrode"  # 'electrode' | 'bipolar' | 'unknown' | 'other'
    reference: str | None = None
    reason: str = ""


@dataclass
class ChannelReport:
    """The outcome of mapping a file's channel names onto the vocabulary."""

    channels: list[ChannelInfo]
    hint: str = ""

    @property
    def kept(self) -> list[ChannelInfo]:
        return [c for c in self.channels if c.status != "dropped"]

    @property
    def renamed(self) -> dict[str, str]:
        return {c.original: c.name for c in self.channels if c.status == "renamed"}

    @property
    def unknown(self) -> list[str]:
        return [c.original for c in self.channels if c.status == "unknown"]

    @property
    def unknown_names(self) -> list[str]:
        """Names (as kept) of the channels without a vocabulary entry."""
        return [c.name for c in self.channels if c.status == "unknown"]

    @property
    def dropped(self) -> dict[str, str]:
        return {c.original: c.reason for c in self.channels if c.status == "dropped"}

    @property
    def bipolar(self) -> list[str]:
        return [c.name for c in self.kept if c.kind == "bipolar"]

    @property
    def references(self) -> dict[str, int]:
        return dict(Counter(c.reference for c in self.kept if c.reference))

    def summary(self) -> str:
        counts = Counter(c.status for c in self.channels)
        parts = [f"{counts.get(s, 0)} {s}" for s in ("kept", "renamed", "unknown", "dropped")]
        text = f"{len(self.channels)} channels: " + ", ".join(parts)
        if self.bipolar:
            text += f"; {len(self.bipolar)} bipolar"
        if self.references:
            text += "; reference " + ", ".join(self.references)
        return text

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.renamed:
            shown = ", ".join(f"{k!r}->{v!r}" for k, v in list(self.renamed.items())[:12])
            more = len(self.renamed) - 12
            lines.append(f"  renamed: {shown}" + (f" (+{more} more)" if more > 0 else ""))
        if self.unknown:
            lines.append(f"  unknown (no vocabulary id): {self.unknown}")
        if self.dropped:
            lines.append(f"  dropped: {self.dropped}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    __repr__ = __str__

    def to_frame(self):
        """The report as a pandas DataFrame, one row per original channel."""
        import pandas as pd

        return pd.DataFrame([c.__dict__ for c in self.channels])


def _strip(name: str) -> tuple[str, str | None, str | None]:
    """Remove padding, type prefixes and reference suffixes: returns (core, prefix, ref)."""
    core = name.strip().rstrip(".").strip()
    prefix = None
    m = _PREFIX.match(core)
    if m:
        prefix, core = m.group(1).upper(), core[m.end() :]
    ref = None
    m = _REF_SUFFIX.search(core)
    if m and electrode_name(core[: m.start()]):
        ref, core = m.group(1).upper(), core[: m.start()]
    return core.strip(), prefix, ref


def _parse(core: str) -> tuple[str | None, str]:
    """Parse a stripped name into (canonical, kind)."""
    single = electrode_name(core)
    if single:
        return single, "electrode"
    parts = core.split("-")
    if len(parts) == 3 and _DEDUP.search(core):  # 'T8-P8-0'
        parts = parts[:2]
    if len(parts) == 2:
        a, b = (electrode_name(p) for p in parts)
        if a and b and a != b:
            return f"{a}-{b}", "bipolar"
    return None, "unknown"


def _infer_type(core: str, prefix: str | None, reader_type: str) -> str:
    if reader_type not in ("eeg", "misc", None) or prefix in _PREFIX_TYPE:
        return _PREFIX_TYPE.get(prefix, reader_type)
    for t, rx in _TYPE_RES:
        if rx.match(core):
            return t
    if prefix == "POL" and not electrode_name(core):  # Nihon Kohden polygraphic sensor
        return "misc"
    return reader_type or "eeg"


def map_channels(names, types=None, include=EEG_TYPES, rename=None) -> ChannelReport:
    """Map raw channel names onto the canonical vocabulary.

    Parameters
    ----------
    names : list of str
        Channel names as the file stores them (``'EEG FP1-REF'``, ``'Fc5.'``, ``'FP1-F7'``).
    types : list of str | None
        Channel types from the reader (MNE's ``raw.get_channel_types()``); names decide
        when a reader calls everything ``'eeg'`` (EDF does).
    include : tuple of str
        Channel types to keep. EOG, ECG, EMG, stim and misc channels are dropped (and
        reported) unless named here.
    rename : dict | None
        Your own mapping applied first, for names no rule can know
        (``{'EEG 000': 'Fp1'}``).

    Returns
    -------
    ChannelReport
    """
    names = list(names)
    types = list(types) if types is not None else [None] * len(names)
    if len(types) != len(names):
        raise ChannelError(f"got {len(names)} names but {len(types)} types: give one type per name")
    rename = rename or {}
    infos: list[ChannelInfo] = []
    stripped = [_strip(rename.get(n, n)) for n in names]
    # A file whose EEG channels all share an ear/mastoid second electrode ('Fp1-A1',
    # 'F3-A1', ...) is referential, not bipolar.
    seconds = [c.split("-")[1] for c, _, _ in stripped if c.count("-") == 1]
    ears = [electrode_name(s) for s in seconds if electrode_name(s) in _EAR]
    referential_ear = set(ears) if len(ears) >= max(len(seconds), 1) / 2 else set()
    biosemi = sum(bool(_BIOSEMI.match(c)) for c, _, _ in stripped)
    biosemi_layout = biosemi >= 16 and any(
        _BIOSEMI.match(c) and not electrode_name(c) for c, _, _ in stripped
    )
    seen: dict[str, str] = {}
    for original, (core, prefix, ref), rtype in zip(names, stripped, types, strict=True):
        if core.count("-") == 1 and electrode_name(core.split("-")[1]) in referential_ear:
            core, ref = core.split("-")[0], electrode_name(core.split("-")[1])
        ctype = _infer_type(core, prefix, rtype)
        if (biosemi_layout and _BIOSEMI.match(core)) or ctype in SIGNAL_TYPES[1:]:
            canonical, kind = None, "unknown"
        else:
            canonical, kind = _parse(core) if ctype == "eeg" else (None, "other")
        signal = ctype in SIGNAL_TYPES
        name = canonical or (core if signal and core else original)
        info = ChannelInfo(original, name, ctype, "kept", kind, ref)
        if _PLACEHOLDER.match(core):
            info.status, info.reason = "dropped", "placeholder channel with no name"
        elif ctype not in include:
            info.status, info.reason = "dropped", f"{ctype} channel (add {ctype!r} to include)"
        elif name in seen:
            info.status = "dropped"
            info.reason = f"duplicate of {seen[name]!r} (both map to {name!r})"
        elif canonical is None and signal:
            info.status = "unknown"
        elif name != original:
            info.status = "renamed"
        if info.status != "dropped":
            seen[name] = original
        infos.append(info)
    if biosemi_layout:
        hint = "names look like a BioSemi ABC cap (A1..A32, B1..): pass montage='biosemi128' (or the cap you used)"
    else:
        hint = unknown_hint([i.original for i in infos if i.status == "unknown"])
    return ChannelReport(infos, hint)


def unknown_hint(names) -> str:
    """How to name or place channels outside the vocabulary ('' when there are none)."""
    if not names:
        return ""
    a = names[0]
    return (
        f"for {names[:4]}{' ...' if len(names) > 4 else ''}: pass rename={{{a!r}: 'Fp1'}} if "
        f"they are 10-05 electrodes under other names, else positions={{{a!r}: 'Cz'}} (at "
        f"that electrode) or positions={{{a!r}: [x, y, z]}} (MNI mm); montage= for a whole cap"
    )


def positions(names, vocab: Vocabulary | None = None) -> np.ndarray:
    """(n, 3) MNI mm positions of canonical names; NaN where the vocabulary has none."""
    vocab = vocab or eeg_vocabulary()
    out = np.full((len(names), 3), np.nan)
    for i, n in enumerate(names):
        if n in vocab:
            out[i] = vocab.position(n)
        elif n.count("-") == 1 and all(p in vocab for p in n.split("-")):
            a, b = n.split("-")
            out[i] = (vocab.position(a) + vocab.position(b)) / 2
    return out


@lru_cache(maxsize=1)
def template_head_t():
    """The Colin27 10-05 template's MRI(=MNI, m) -> head transform, and its fiducials in head."""
    import mne

    template = mne.channels.make_standard_montage("colin27_1005")
    mri_head = mne.channels.compute_native_head_t(template)
    fid = template.get_positions()
    return mri_head, {
        k: mne.transforms.apply_trans(mri_head, fid[k]) for k in ("nasion", "lpa", "rpa")
    }


# --------------------------------------------------------------------------- channel table
CHANNEL_TABLE_KEY = "neurofm.channels"  # where ChannelTable.attach keeps it: raw.info["temp"]


@dataclass(frozen=True)
class ChannelTable:
    """The space units of a recording as the model sees them: one row per channel.

    ``kinds[i]`` is what :func:`map_channels` decided for ``names[i]``: ``'electrode'`` or
    ``'bipolar'`` (a canonical name: its vocabulary id and template position), ``'other'``
    (a kept non-EEG channel, or a name the table never saw: looked up by name) or
    ``'unknown'``. An unknown channel gets
    the ``UNK`` id and no template position, whatever its name looks like: a BioSemi
    ``'A1'`` is not the ear electrode, a depth contact ``'T1'`` not the scalp one; the model
    places it by the recording's own position (``montage=``, ``positions=``, the file).

    :func:`~neurofm.read_eeg` builds the table from its :class:`ChannelReport` and attaches
    it to the Raw it returns (:meth:`attach`; read it back with :meth:`of`). It is kept in
    ``raw.info["temp"]``, MNE's place for data of other programs: it follows the Raw
    through ``copy``, ``pick`` and ``crop`` but not through a file, so a saved and re-read
    Raw goes through ``read_eeg`` again. ``neurofm.tokenize(raw, channels=table)`` takes
    one explicitly.
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]

    def __post_init__(self):
        if len(self.names) != len(self.kinds):
            raise ChannelError(f"{len(self.names)} names but {len(self.kinds)} kinds: one each")

    @classmethod
    def from_report(cls, report: ChannelReport) -> ChannelTable:
        kept = report.kept
        kinds = ("unknown" if c.status == "unknown" else c.kind for c in kept)
        return cls(tuple(c.name for c in kept), tuple(kinds))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def unknown(self) -> np.ndarray:
        """(S,) bool: rows that get ``UNK`` and no template position."""
        return np.array([k == "unknown" for k in self.kinds], bool)

    def select(self, names) -> ChannelTable:
        """The rows of ``names``, in that order; a name the table lacks (renamed since, or
        no table at all) is ``'other'``: looked up by name."""
        index = dict(zip(self.names, self.kinds, strict=True))
        names = tuple(names)
        return ChannelTable(names, tuple(index.get(n, "other") for n in names))

    def ids(self, vocab: Vocabulary | None = None) -> np.ndarray:
        """(S,) vocabulary ids; ``UNK`` for unknown rows and names the vocabulary lacks."""
        ids = (vocab or eeg_vocabulary()).ids(self.names)
        ids[self.unknown] = UNK
        return ids

    def positions(self, raw=None) -> np.ndarray:
        """(S, 3) MNI mm: the vocabulary's template position, else ``raw``'s own, else NaN."""
        pos = positions(["" if u else n for n, u in zip(self.names, self.unknown)])
        missing = [i for i in range(len(self)) if not np.isfinite(pos[i]).all()]
        if raw is not None and missing:
            import mne

            head_mri = mne.transforms.invert_transform(template_head_t()[0])
            for i in missing:
                loc = raw.info["chs"][raw.ch_names.index(self.names[i])]["loc"][:3]
                if np.isfinite(loc).all() and np.any(loc != 0):
                    pos[i] = 1000.0 * mne.transforms.apply_trans(head_mri, loc)
        return pos

    def to_frame(self, raw=None):
        """A pandas DataFrame: name, kind, id, x/y/z (MNI mm), one row per channel."""
        import pandas as pd

        xyz = self.positions(raw)
        return pd.DataFrame({"name": self.names, "kind": self.kinds, "id": self.ids(),
                             **{a: xyz[:, i] for i, a in enumerate("xyz")}})  # fmt: skip

    def attach(self, raw):
        """Keep this table with ``raw`` (in ``raw.info["temp"]``); returns ``raw``."""
        temp = raw.info.get("temp")
        raw.info["temp"] = {**(temp if isinstance(temp, dict) else {}), CHANNEL_TABLE_KEY: self}
        return raw

    @staticmethod
    def of(raw) -> ChannelTable | None:
        """The table :meth:`attach` kept with ``raw`` (``read_eeg`` does), or None."""
        temp = raw.info.get("temp")
        table = temp.get(CHANNEL_TABLE_KEY) if isinstance(temp, dict) else None
        return table if isinstance(table, ChannelTable) else None


def space_ids(raw, names) -> np.ndarray:
    """Vocabulary ids of ``names``, a Raw's channels: its :class:`ChannelTable` decides."""
    return _table(raw, names).ids()


def channel_positions(raw, names) -> np.ndarray:
    """(S, 3) MNI mm of a Raw's channels ``names``: see :meth:`ChannelTable.positions`."""
    return _table(raw, names).positions(raw)


def _table(raw, names) -> ChannelTable:
    table = ChannelTable.of(raw)
    return table.select(names) if table else ChannelTable((), ()).select(names)


if __name__ == "__main__":  # python -m neurofm.channels > neurofm/resources/eeg_vocabulary.tsv
    print(_build_table(), end="")
