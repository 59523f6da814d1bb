"""A folder of EEG recordings in any formats: a pretraining corpus of heterogeneous files.

Every file under ``root`` that :func:`~neurofm.read_eeg` can open is a recording:

- **which files**: by default every file whose extension is a readable EEG format (EDF,
  BDF, GDF, BrainVision ``.vhdr``, EEGLAB ``.set``, FIF, CNT, Nihon Kohden ``.EEG``,
  Persyst ``.lay``, EGI ``.mff`` folders, Curry ``.cdt`` ...; see
  ``neurofm.io.eeg.FORMATS``), or those matching the ``include`` patterns; minus those
  matching ``exclude``. Patterns are matched case-insensitively, shell-style, against the
  path relative to ``root`` when they hold a ``/`` (``eegmat/*``; ``*`` crosses folders,
  ``**/`` is any folders) and against the file name otherwise (``*.edf``).
- **never**: hidden files and folders (``.DS_Store``, macOS ``._*.edf`` forks); the
  parts of a recording that are not opened on their own (BrainVision ``.vmrk`` and the
  ``.eeg`` beside a ``.vhdr``, EEGLAB ``.fdt``, the ``.dat`` beside a Persyst ``.lay``,
  Nihon Kohden ``.PNT``/``.LOG``/``.21E``, ANT ``.evt``, PhysioNet ``.event``, WFDB
  ``.seizures``); EDF/BDF files holding annotations only (a Sleep-EDF hypnogram), skipped
  with one log line rather than failing one by one.
- **who**: ``subject`` is a regular expression searched in the relative path; the subject
  is its group named ``subject``, else its first group that matched, else the match
  (``(S\\d{3})R\\d\\d|(Subject\\d\\d)_\\d``); a group named ``session`` gives the session.
  Without it, or where it does not match, the subject is the file's stem.
- **labels**: none (windows take the corpus's ``background``), or ``label`` for all.
- **ids**: the relative path with its extension (``formats_EDF_chtypes_edf.edf`` once made
  safe), so two formats of one stem stay apart and an id never depends on other files.
  Files of one stem in one folder (``MB0400FU.EEG`` and its ``MB0400FU.EDF`` export) are
  likely one recording twice: they are named in a log line, and ``exclude`` drops one.
- **known datasets inside**: ``readers`` maps subfolders to dataset readers
  (``{eegmat: eegmat, eegmmidb: eegmmidb}``): their files are read by that reader (its
  subjects, labels, events, excluded channels and ids) and not walked again
  (``include``/``exclude`` do not apply there).
- **files that need a setting**: ``file_options`` maps patterns to ``read_eeg`` options
  for the files they match (``{"*.cnt": {data_format: int16}}``, ``{"cap2/*": {montage:
  biosemi128}}``); several matching patterns merge, later ones winning, and a list or
  mapping adds to a known reader's own (an ``exclude`` keeps EEGMAT's). The corpus's
  other ``reader:`` options apply to every file, under these.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path, PurePosixPath

from ...errors import (
    ConfigError,
    NeurofmError,
    check_option,
    did_you_mean,
    logger,
    validate_type,
)
from . import Recording

#: extensions of header-less data parts: a companion only beside one of these headers
SHARED_EXTENSIONS = (".eeg", ".dat")
EDF_SUFFIXES = (".edf", ".bdf", ".rec")  # a header that tells whether any signal is there


def _suffix(path: PurePosixPath) -> str:
    name = path.name.lower()
    return ".fif.gz" if name.endswith(".fif.gz") else path.suffix.lower()


def _patterns(value, name: str) -> list[str]:
    if value is None:
        return []
    value = [value] if isinstance(value, str) else value
    validate_type(value, (list, tuple), f"folder {name}", "a pattern or a list of patterns")
    for p in value:
        validate_type(p, str, f"folder {name} pattern", "a string such as '*.edf' or 'sub-*/*'")
    return [p.replace("\\", "/").replace("**/", "*").lower() for p in value]


def _matches(rel: PurePosixPath, patterns: list[str]) -> bool:
    text, name = rel.as_posix().lower(), rel.name.lower()
    return any(fnmatch.fnmatchcase(text if "/" in p else name, p) for p in patterns)


def _subject_pattern(subject):
    if subject is None:
        return None
    validate_type(subject, str, "folder subject", r"a regular expression such as 'sub-(\w+)'")
    try:
        return re.compile(subject)
    except re.error as err:
        raise ConfigError(f"folder subject {subject!r} is not a regular expression ({err}): "
                          r"e.g. 'sub-(\w+)' or '(S\d{3})R\d\d'") from None  # fmt: skip


def _who(rel: PurePosixPath, pattern) -> tuple[str, str]:
    """(subject, session) of a file from the ``subject`` expression, else (stem, '')."""
    stem = rel.name.removesuffix(".gz").rsplit(".", 1)[0]
    m = pattern.search(rel.as_posix()) if pattern is not None else None
    if m is None:
        return stem, ""
    named = m.groupdict()
    subject = named.get("subject") or next((g for g in m.groups() if g), None) or m.group(0)
    return subject or stem, named.get("session") or ""


def _readable_suffixes() -> set[str]:
    from ..eeg import FORMATS

    return {e for _, exts in FORMATS.values() for e in exts}


def _companion(path: Path, suffix: str, siblings: dict[str, set[str]]) -> bool:
    """A file that belongs to a recording opened through another file."""
    from ..eeg import COMPANIONS

    if suffix not in COMPANIONS:
        return False
    headers, _ = COMPANIONS[suffix]
    if suffix in SHARED_EXTENSIONS:  # a Nihon Kohden .EEG or a Curry .dat on its own
        return bool(siblings.get(path.stem.lower(), set()) & set(headers))
    return True


def _annotations_only(path: Path) -> bool:
    """An EDF/BDF whose header lists no signal, only annotation channels."""
    from ...errors import EEGReadError
    from ..edf import read_header

    try:
        return not read_header(path).signals.any()
    except (EEGReadError, OSError, ValueError):
        return False  # damaged: read_eeg says why when it is loaded


def _delegated(root: Path, readers) -> dict[str, str]:
    from . import DATASETS

    if readers is None:
        return {}
    validate_type(readers, dict, "folder readers", "a mapping {subfolder: dataset}, e.g. "
                                                   "{eegmat: eegmat}")  # fmt: skip
    out = {}
    for sub, name in readers.items():
        check_option("dataset of folder readers", name, [d for d in DATASETS if d != "folder"])
        rel = PurePosixPath(str(sub).replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts or not (root / rel).is_dir():
            raise NeurofmError(f"folder readers: {sub!r} is not a folder inside {root}: give "
                               "subfolders relative to root, e.g. {eegmat: eegmat}")  # fmt: skip
        out[rel.as_posix()] = name
    return out


def _file_options(file_options) -> list[tuple[str, dict]]:
    """``file_options`` as (pattern, read_eeg options), each key checked."""
    from . import read_eeg_options

    if file_options is None:
        return []
    validate_type(file_options, dict, "folder file_options",
                  "a mapping {pattern: {read_eeg option: value}}, e.g. {'*.cnt': {data_format: int16}}")  # fmt: skip
    known, out = read_eeg_options(), []
    for pattern, options in file_options.items():
        (pattern,) = _patterns(pattern, "file_options")
        validate_type(options, dict, f"folder file_options[{pattern!r}]",
                      "a mapping of read_eeg options such as {data_format: int16}")  # fmt: skip
        unknown = [k for k in options if k not in known]
        if unknown:
            raise ConfigError("\n".join(
                f"folder file_options[{pattern!r}]: {k!r} is not a read_eeg option"
                f"{did_you_mean(k, known)}" for k in unknown))  # fmt: skip
        out.append((pattern, dict(options)))
    return out


def _merged(mine, new):
    """A file option over the recording's: lists (``exclude``) and mappings (``rename``,
    ``positions``) add to the recording's, other values replace them."""
    if isinstance(mine, list | tuple) and isinstance(new, list | tuple):
        return [*mine, *(v for v in new if v not in mine)]
    if isinstance(mine, dict) and isinstance(new, dict):
        return {**mine, **new}
    return new


def _with_file_options(rec: Recording, rel: PurePosixPath, file_options) -> Recording:
    for pattern, options in file_options:
        if _matches(rel, [pattern]):
            rec.reader = rec.reader | {k: _merged(rec.reader.get(k), v) for k, v in options.items()}
    return rec


def read_folder(root: Path, *, include=None, exclude=None, subject: str | None = None,
                label: str | None = None, readers: dict | None = None,
                file_options: dict | None = None) -> list[Recording]:  # fmt: skip
    """Every EEG recording under ``root`` (module docstring), in the order of their paths."""
    from . import read_dataset

    root = Path(root)
    if not root.is_dir():
        raise NeurofmError(f"{root} is not a folder: dataset 'folder' reads every recording "
                           "under a folder (a CSV list of files is dataset 'manifest')")  # fmt: skip
    include, exclude = _patterns(include, "include"), _patterns(exclude, "exclude")
    pattern = _subject_pattern(subject)
    if label is not None:
        validate_type(label, str, "folder label", "a string")
    delegated = _delegated(root, readers)
    per_file = _file_options(file_options)
    readable = _readable_suffixes()
    found: list[tuple[str, Recording]] = []
    for sub, name in delegated.items():
        for rec in read_dataset(name, root / sub):
            where = rec.path.relative_to(root).as_posix() if rec.path else f"{sub}/{rec.id}"
            found.append((where, rec))
    skipped: dict[str, list[str]] = {"annotations only": [], "excluded": []}
    stems: dict[tuple[str, str], list[str]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        top = PurePosixPath(here.relative_to(root).as_posix())
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (top / d).as_posix().removeprefix("./") not in delegated)  # fmt: skip
        mff = [d for d in dirs if d.lower().endswith(".mff")]  # EGI recordings are folders
        dirs[:] = [d for d in dirs if d not in mff]
        siblings: dict[str, set[str]] = {}
        for f in files:
            siblings.setdefault(Path(f).stem.lower(), set()).add(Path(f).suffix.lower())
        for name in sorted([*files, *mff]):
            rel = PurePosixPath(os.path.relpath(here / name, root).replace(os.sep, "/"))
            suffix = _suffix(rel)
            if name.startswith(".") or _companion(here / name, suffix, siblings):
                continue
            if not (_matches(rel, include) if include else suffix in readable):
                continue
            if exclude and _matches(rel, exclude):
                skipped["excluded"].append(rel.as_posix())
                continue
            if suffix in EDF_SUFFIXES and _annotations_only(here / name):
                skipped["annotations only"].append(rel.as_posix())
                continue
            subj, session = _who(rel, pattern)
            stems.setdefault((rel.parent.as_posix(), Path(name).stem.lower()), []).append(name)
            found.append((rel.as_posix(), Recording(
                dataset="folder", subject=subj, session=session, path=here / name,
                label=label, labels={"label": label} if label is not None else {},
                id=rel.as_posix(),
            )))  # fmt: skip
    if skipped["annotations only"]:
        files = skipped["annotations only"]
        logger.warning("folder: skipped %d file(s) holding annotations only, no signal (%s%s): "
                       "hypnograms or event files, read with the recording they annotate",
                       len(files), ", ".join(files[:3]), " ..." if len(files) > 3 else "")  # fmt: skip
    if skipped["excluded"]:
        logger.info("folder: %d file(s) excluded by %s", len(skipped["excluded"]), exclude)
    twins = [names for names in stems.values() if len(names) > 1]
    if twins:
        logger.warning("folder: %d stem(s) in one folder in several formats, likely one "
                       "recording twice (%s): exclude the copies you do not want read",
                       len(twins), "; ".join(" / ".join(n) for n in twins[:3]))  # fmt: skip
    if not found:
        what = f"matching {include}" if include else "in a format read_eeg reads"
        raise NeurofmError(f"no EEG recordings under {root} {what}"
                           f"{f' and not {exclude}' if exclude else ''}: check root and the "
                           "include/exclude patterns")  # fmt: skip
    return [
        _with_file_options(rec, PurePosixPath(where), per_file)
        for where, rec in sorted(found, key=lambda item: item[0])
    ]
