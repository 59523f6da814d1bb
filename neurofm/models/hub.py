"""The Hugging Face Hub: checkpoint folders down (cached, offline-aware) and up, and other
projects' published weights downloaded once and converted into neurofm checkpoints.

Only files move here; what they hold is :mod:`neurofm.models.checkpoint`'s business (and
:mod:`neurofm.models.convert`'s for other projects' layouts).
``huggingface_hub`` is optional (``pip install 'neurofm[hub]'``).

Weights registered with an ``hf://owner/repo`` source and an ``importer``
(``labram-base``, ``cbramod``: braindecode's copies of LaBraM and CBraMod) are obtained
on the first ``load_model(name)`` by :func:`import_weights`:

1. the repo's weights file is looked up, without the network, first where a person may
   place it by hand (``$NEUROFM_HOME/downloads/<name>/model.safetensors``, or
   ``pytorch_model.bin``), then in the Hugging Face cache (``HF_HUB_CACHE``, else
   ``$HF_HOME/hub``, in its own layout ``models--owner--repo/snapshots/<commit>/``);
2. only when it is in neither, and neither ``NEUROFM_OFFLINE`` nor ``HF_HUB_OFFLINE`` is
   set, it is downloaded into the Hugging Face cache (``model.safetensors``; the pickle
   ``pytorch_model.bin``, read with ``torch.load(weights_only=True)``, only where a repo
   has no safetensors file);
3. the importer converts it; the result is saved as a neurofm checkpoint in
   ``$NEUROFM_HOME/models/<name>`` with a model card (``README.md``) recording the repo,
   its commit, the file's SHA-256 and the licence the repo's card states; later loads
   read that folder and nothing else.

Offline, nothing here opens a connection: a missing file is an error that names the
exact path to place it at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..cache import TRUE, is_offline, neurofm_home
from ..errors import CheckpointError, NeurofmError, logger

#: the weights files of a braindecode Hub repo, in the order they are tried: safetensors
#: (written by PyTorchModelHubMixin), then braindecode's pickle of the same state dict
SOURCE_FILES = ("model.safetensors", "pytorch_model.bin")
HF_DOCS = "https://huggingface.co/"


def _hub():
    try:
        import huggingface_hub
    except ImportError as err:
        raise NeurofmError(
            "the Hugging Face Hub needs huggingface_hub: pip install 'neurofm[hub]'"
        ) from err
    return huggingface_hub


def download(repo_id: str, files: list[str], cache_dir=None) -> Path:
    """The local folder holding ``files`` of Hub repo ``repo_id`` (cached; honours
    ``HF_HUB_OFFLINE``, where the repo must already be in the cache)."""
    hub = _hub()
    try:
        return Path(hub.snapshot_download(repo_id, allow_patterns=files, cache_dir=cache_dir))
    except Exception as err:  # offline, missing repo, auth: say which and what to do
        raise NeurofmError(
            f"could not get hf://{repo_id} ({type(err).__name__}: {err}). Offline, the repo "
            "must already be in the Hugging Face cache (HF_HUB_CACHE); or download the folder "
            "and pass its path"
        ) from err


def upload(folder, repo_id: str, *, private: bool = True, token=None,
           commit_message: str = "neurofm checkpoint") -> str:  # fmt: skip
    """Upload a folder to a Hub model repo (created if absent); returns the repo's URL."""
    api = _hub().HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    return f"https://huggingface.co/{repo_id}"


# ---------------------------------------------------------------------- other projects' weights
def hub_offline(offline: bool | None = None) -> bool:
    """Whether the Hub may not be contacted: ``offline`` when given, else whether
    ``NEUROFM_OFFLINE`` or ``HF_HUB_OFFLINE`` is set (read now, not when
    ``huggingface_hub`` was imported)."""
    if offline is not None:
        return bool(offline)
    return is_offline() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE


def hf_cache_dir() -> Path:
    """The Hugging Face cache, resolved as ``huggingface_hub`` does, from the environment
    as it is now: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "huggingface" / "hub"


def manual_folder(name: str) -> Path:
    """Where a person may place registered weights ``name``'s source file by hand."""
    return neurofm_home() / "downloads" / name


def _repo(weights) -> str:
    return weights.source[len("hf://") :]


def _cached(hub, repo_id: str, cache_dir: Path) -> Path | None:
    """The repo's weights file in the Hugging Face cache (``refs/main``), or None; no
    network."""
    for filename in SOURCE_FILES:
        found = hub.try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _fetch(hub, repo_id: str, cache_dir: Path) -> Path:
    """Download the repo's weights file into the Hugging Face cache (the first of
    :data:`SOURCE_FILES` the repo holds)."""
    from huggingface_hub import utils

    # a file the repo lacks (huggingface_hub >= 1.0 says so with RemoteEntryNotFoundError;
    # before, with EntryNotFoundError, whose Local- subclass means "could not connect")
    errors = getattr(hub, "errors", None)
    missing = getattr(errors, "RemoteEntryNotFoundError", utils.EntryNotFoundError)
    for filename in SOURCE_FILES:
        try:
            return Path(hub.hf_hub_download(repo_id, filename, cache_dir=str(cache_dir)))
        except missing as err:
            if isinstance(err, utils.LocalEntryNotFoundError):
                raise
            continue  # try the next file
    raise NeurofmError(f"hf://{repo_id} holds none of {', '.join(SOURCE_FILES)}")


def source_file(weights, local: Path, *, cache_dir=None, offline: bool | None = None) -> Path:
    """The file registered ``weights`` (``hf://`` source) are converted from: placed by
    hand, in the Hugging Face cache, or downloaded into it once (never offline).
    ``local``: where the converted checkpoint goes (named in errors)."""
    repo, manual = _repo(weights), manual_folder(weights.name)
    for filename in SOURCE_FILES:
        if (manual / filename).is_file():
            return manual / filename
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
    by_hand = (
        f"download {HF_DOCS}{repo}/resolve/main/{SOURCE_FILES[0]} on a machine online and "
        f"place it by hand at {manual / SOURCE_FILES[0]} (or the repo's {SOURCE_FILES[1]} at "
        f"{manual / SOURCE_FILES[1]})"
    )
    original = _original(weights, local)
    try:
        hub = _hub()
    except NeurofmError as err:
        raise CheckpointError(
            f"no weights for {weights.name!r} in {local}, and getting them from hf://{repo} "
            f"needs huggingface_hub: pip install 'neurofm[hub]'; or {by_hand}{original}"
        ) from err
    found = _cached(hub, repo, cache)
    if found is not None:
        return found
    if hub_offline(offline):
        raise CheckpointError(
            f"no weights for {weights.name!r} in {local}, nor hf://{repo} in the Hugging Face "
            f"cache {cache}, and neurofm is offline (NEUROFM_OFFLINE or HF_HUB_OFFLINE is "
            f"set), so it never downloads: {by_hand}{original}; or go online once (unset "
            "both) to download them"
        )
    try:
        return _fetch(hub, repo, cache)
    except Exception as err:  # the network, a server, a full disk: all say the same fix
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise CheckpointError(
            f"could not download hf://{repo} into {cache} ({reason}): check the network "
            f"and retry, or {by_hand}{original}"
        ) from err


def _convert():
    """:mod:`neurofm.models.convert`, by name: the importers named by ``Weights.importer``.

    Looked up at call time, as the registry looks up architectures (``PROVIDERS``):
    ``convert`` builds encoders, whose module imports ``checkpoint``, which imports this
    one, so a static import here would close a cycle.
    """
    import importlib

    return importlib.import_module("neurofm.models.convert")


def _original(weights, local: Path) -> str:
    """The other way out: the project's original file and its importer."""
    ORIGINALS = _convert().ORIGINALS
    if weights.name not in ORIGINALS or not weights.importer:
        return ""
    return (f"; or download the original {ORIGINALS[weights.name]} and run neurofm.models."
            f"{weights.importer}('<that file>').save_pretrained('{local}')")  # fmt: skip


def _provenance(path: Path, repo: str) -> dict:
    """Where a source file came from: repo, commit (from the cache layout), SHA-256."""
    from ..utils import file_sha256

    parts = path.parts  # the cache's snapshots/<commit>/<file> (a link into blobs/)
    commit = None
    if "snapshots" in parts[:-1]:
        commit = parts[len(parts) - parts[::-1].index("snapshots")]
    return {"repo": f"hf://{repo}", "file": path.name, "commit": commit,
            "sha256": file_sha256(path)}  # fmt: skip


def _licence(hub, repo: str, path: Path, cache: Path, offline: bool) -> str | None:
    """The licence the repo's card (README.md front matter) states, if it can be read:
    beside the file, in the cache, or (online) downloaded; None otherwise."""
    card = path.parent / "README.md"
    if not card.is_file() and hub is not None:
        found = hub.try_to_load_from_cache(repo, "README.md", cache_dir=str(cache))
        if isinstance(found, str):
            card = Path(found)
        elif not offline:
            try:
                card = Path(hub.hf_hub_download(repo, "README.md", cache_dir=str(cache)))
            except Exception as err:  # a card is nice to have: the weights are what counts
                logger.info("no model card for hf://%s (%s)", repo, err)
    if not card.is_file():
        return None
    text = card.read_text(errors="replace")
    front = text.split("---", 2)[1] if text.startswith("---") else ""
    match = re.search(r"^licen[cs]e:\s*(\S.*)$", front, flags=re.MULTILINE)
    return match.group(1).strip().strip("'\"") if match else None


def import_weights(weights, local, *, cache_dir=None, offline: bool | None = None) -> Path:
    """Registered ``weights`` with an ``hf://`` source and an importer, as a neurofm
    checkpoint folder ``local`` (``$NEUROFM_HOME/models/<name>``), converted there on
    first use (see the module docstring); returns the folder."""
    from .card import write_card

    convert = _convert()
    local, repo = Path(local), _repo(weights)
    path = source_file(weights, local, cache_dir=cache_dir, offline=offline)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
    importer = getattr(convert, weights.importer)
    logger.info("converting %s (hf://%s) with %s into %s", path, repo, weights.importer, local)
    model = importer(path)
    source = _provenance(path, repo)
    try:
        hub = _hub()
    except NeurofmError:
        hub = None
    licence = _licence(hub, repo, path, cache, hub_offline(offline))
    source.update(importer=weights.importer, licence=licence)
    model.save_pretrained(local, extra={"source": source})
    stated = (f"`{licence}`, as stated by the card of {HF_DOCS}{repo}" if licence else
              f"not stated in the files read; see {HF_DOCS}{repo}")  # fmt: skip
    write_card(
        local, name=weights.name, summary=weights.card,
        sources=f"## Source\n\nConverted by `neurofm.models.{weights.importer}` from "
        f"`{source['file']}` of {HF_DOCS}{repo} (commit {source['commit'] or 'unknown'}, "
        f"SHA-256 {source['sha256']}). Tensors left out in the conversion: "
        f"{', '.join(model.conversion.get('ignored_tensors', [])) or 'none'}.",
        licence=f"Licence of the source weights: {stated}. Cite the original paper.",
    )  # fmt: skip
    return local
