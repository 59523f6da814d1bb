"""Checkpoints as data: a folder with ``config.json`` and ``model.safetensors``.

timm's idea: weights are a folder anyone can read without running our code (JSON and
safetensors, never a pickle)::

    model.save_pretrained("runs/my-model")       # config.json + model.safetensors
    model = neurofm.load_model("runs/my-model")  # or a weights name, or "hf://owner/repo"

``config.json`` (format 3) names the ``architecture`` (``"encoder"``; see
:mod:`neurofm.models.registry`), holds the model ``config`` and the ``recipe`` (the one
source of patch geometry), the SHA-256 of the weights and of its own content. The
weights are always the unwrapped module's full state dict: a model wrapped in DDP or
``torch.compile`` or sharded by FSDP2 saves the same file as the plain model, and any
of them loads into a plain one. Formats 1 and 2 (``"neurofm.encoder"``: encoders only,
patch geometry in the model config) still load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from pathlib import Path

import torch
from torch import nn

from ..cache import neurofm_home
from ..errors import (
    CheckpointError,
    FileFormatWarning,
    NeurofmError,
    check_option,
    did_you_mean,
    logger,
    validate_type,
    warn,
)
from ..preprocess.recipe import EEGRecipe, FMRIRecipe, recipe_from_dict
from ..utils import atomic_write_dir, file_sha256, interrupted_backup
from . import hub
from .registry import (
    MODELS,
    WEIGHTS,
    architecture_of,
    get_architecture,
    list_weights,
    shipped_folder,
)

FORMAT = "neurofm"
FORMAT_VERSION = 3  # 3: architecture-keyed, patch geometry in the recipe only
LEGACY_FORMAT = "neurofm.encoder"  # versions 1 (no config checksum) and 2: encoders only
CONFIG, WEIGHTS_FILE = "config.json", "model.safetensors"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle")
#: config.json keys a save writes itself; ``extra=`` cannot set them
RESERVED = ("format", "format_version", "architecture", "neurofm_version", "model", "recipe",
            "weights_sha256", "config_sha256")  # fmt: skip
#: what wrappers put into state-dict keys: DDP/DataParallel's leading "module.",
#: torch.compile's "_orig_mod.", activation checkpointing's and FSDP1's wrapped modules
_WRAPPED = re.compile(
    r"^(module\.)+|(?<![^.])(_orig_mod|_checkpoint_wrapped_module|_fsdp_wrapped_module)\."
)


def _neurofm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neurofm")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown"


# ---------------------------------------------------------------------- the module to save
def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel and ``torch.compile`` wrappers (FSDP2 shards
    in place: the module is the model)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile(model)
            model = model._orig_mod
        else:
            return model


def clean_key(key: str) -> str:
    """A state-dict key without what wrappers add (``module.``, ``_orig_mod.``, ...)."""
    return _WRAPPED.sub("", key)


def _sharded(module: nn.Module) -> bool:
    """Whether parameters are DTensors (FSDP2's ``fully_shard``, tensor parallelism)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unwrapped module's full state dict on the CPU, keys without wrapper prefixes.

    Sharded parameters are gathered (a collective: every rank must call it; with
    ``cpu_offload`` only rank 0 receives the tensors, the others get an empty dict).
    """
    module = unwrap(model)
    if _sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(module, options=options)
    else:
        state = module.state_dict()
    return {clean_key(k): v.detach().to("cpu").contiguous() for k, v in state.items()}


# ---------------------------------------------------------------------- save
# A checkpoint folder is switched from the old model to the new one in one atomic step
# (utils.atomic_write_dir: the new folder is written beside it, then exchanged with it by
# one rename), so a save killed at any moment leaves the old model or the new one. Inside,
# config.json records the SHA-256 of model.safetensors and of its own content
# (config_sha256, over the canonical JSON without that key): a damaged or hand-edited
# file is refused by name. Format 1 (no config checksum) still loads.
def _config_sha256(config: dict) -> str:
    body = {k: v for k, v in config.items() if k != "config_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _not_debris(name: str) -> bool:
    """Entries of an old checkpoint folder carried into the new one (a model card, logs)."""
    return (
        name not in (CONFIG, WEIGHTS_FILE)
        and not name.endswith(".part")
        and not name.startswith(".tmp")
    )


class ModelFiles:
    """What :func:`save_model` writes, gathered: the full state dict and ``config.json``.

    ``write(folder)`` puts ``model.safetensors`` and ``config.json`` into an existing
    folder (no atomic swap: for callers that assemble a larger folder atomically, such
    as a training checkpoint).
    """

    def __init__(self, state: dict, config: dict):
        self.state, self.config = state, config

    def write(self, folder: Path) -> None:
        from safetensors.torch import save_file

        config = dict(self.config)
        meta = {"format": FORMAT, "architecture": config["architecture"]}
        save_file(self.state, str(Path(folder) / WEIGHTS_FILE), metadata=meta)
        config["weights_sha256"] = file_sha256(Path(folder) / WEIGHTS_FILE)
        config["config_sha256"] = _config_sha256(config)
        (Path(folder) / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def model_files(
    model: nn.Module, extra: dict | None = None, state: dict | None = None
) -> ModelFiles:
    """The files of ``model``'s checkpoint, in memory (see :func:`save_model`).

    ``state``: tensors to write instead of the model's own (e.g. its EMA weights).
    Gathering a sharded model's state is a collective: every rank calls it.
    """
    module = unwrap(model)
    clash = sorted(set(extra or {}) & set(RESERVED))
    if clash:
        raise NeurofmError(
            f"save_model: extra= cannot set {', '.join(map(repr, clash))}: the save writes "
            f"those itself (reserved: {', '.join(RESERVED)}); give your keys other names"
        )
    config = {
        **(extra or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture_of(module),
        "neurofm_version": _neurofm_version(),
        "model": module.config.model_dump(mode="json"),
        "recipe": module.recipe.model_dump(mode="json"),
    }
    try:
        json.dumps(config)
    except TypeError as err:
        raise NeurofmError(f"save_model: extra= must be JSON-serialisable ({err})") from err
    return ModelFiles(full_state_dict(model) if state is None else state, config)


def save_model(model: nn.Module, path, *, extra: dict | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into folder ``path``, atomically.

    The folder switches from its previous content to the new checkpoint in one step: a
    save killed at any moment leaves the previous checkpoint or the new one, never a mix
    (other files in the folder, such as a model card, are kept). ``model`` may be wrapped
    (DDP, ``torch.compile``) or sharded (FSDP2: call it on every rank).

    Under ``torch.distributed`` only rank 0 writes; the other ranks return at once,
    without waiting for it (no barrier, so calling it on rank 0 alone works for an
    unsharded model). A rank that reads the checkpoint next calls
    ``torch.distributed.barrier()`` first.
    ``extra`` adds JSON-serialisable keys to ``config.json`` (not the reserved ones).
    """
    files = model_files(model, extra)  # a collective for a sharded model: every rank calls it
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return Path(path)  # rank 0 writes: ranks writing one folder at once would collide

    try:
        return atomic_write_dir(path, files.write, keep=_not_debris)
    except OSError as err:
        raise CheckpointError(
            f"could not save the checkpoint to {path} ({type(err).__name__}: {err}): a save "
            "writes the new folder beside the old one, so the folder's parent must be writable; "
            "the previous checkpoint, if any, is unchanged"
        ) from err


# ---------------------------------------------------------------------- find
def _pickle_error(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} is a pickle checkpoint; neurofm never unpickles model files. If it holds "
        "LaBraM or braindecode Labram weights, import it with "
        "neurofm.models.from_labram(path) (tensors only, torch.load(weights_only=True)) and "
        "save_pretrained() the result"
    )


def weights_folder(name: str) -> Path:
    """Where registered weights ``name`` live once imported: ``$NEUROFM_HOME/models/<name>``."""
    return neurofm_home() / "models" / name


def _resolve(source, cache_dir=None) -> Path:
    """A checkpoint folder from a folder, a file in it, a weights name or 'hf://repo'."""
    validate_type(source, "path-like", "source", "a folder, a weights name or 'hf://repo'")
    text = str(source)
    if text.startswith("hf://"):
        return hub.download(text[len("hf://") :], [CONFIG, WEIGHTS_FILE], cache_dir)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise _pickle_error(path)
        if path.name not in (CONFIG, WEIGHTS_FILE) or not (path.parent / CONFIG).is_file():
            hint = (" A lone .safetensors of LaBraM weights imports with "
                    "neurofm.models.from_labram(path).") if path.suffix == ".safetensors" else ""  # fmt: skip
            raise CheckpointError(
                f"{path} is not part of a neurofm checkpoint: load_model takes a folder "
                f"holding {CONFIG} and {WEIGHTS_FILE} (or one of those two files).{hint}"
            )
        path = path.parent
    if path.is_dir():
        return path
    backup = interrupted_backup(path)
    if backup is not None:
        logger.warning("%s is absent after an interrupted save; reading the previous "
                       "checkpoint from %s (the next save puts it back)", path, backup)  # fmt: skip
        return backup
    if text in WEIGHTS:
        return _weights_folder(text, cache_dir)
    if text in MODELS:
        known = list_weights(text)
        weights = (f"weights for it: {', '.join(known)} (load_model(name))" if known
                   else "no weights are registered for it")  # fmt: skip
        raise CheckpointError(
            f"{text!r} names a model (an architecture at a size), not weights: "
            f"create_model({text!r}) builds it with random weights; {weights}. A model name "
            "never downloads anything; weights names do, once (load_model('labram-base') "
            "gets LaBraM's from the Hub), or import a file yourself: "
            "neurofm.models.from_labram('labram-base.pth')"
        )
    raise CheckpointError(
        f"no checkpoint at {text!r}{did_you_mean(text, [*WEIGHTS, *MODELS])}: give a folder "
        f"with {CONFIG} and {WEIGHTS_FILE}, a weights name (neurofm.models.list_weights()), "
        "or 'hf://owner/repo'"
    )


def _weights_folder(name: str, cache_dir=None) -> Path:
    """Registered weights: ``$NEUROFM_HOME/models/<name>``, or their Hub repo."""
    weights, local = WEIGHTS[name], weights_folder(name)
    if weights.shipped:  # inside the package: no cache, no network
        return Path(str(shipped_folder(name)))
    if (local / CONFIG).exists():
        return local
    if weights.source.startswith("hf://") and weights.importer:  # another project's file
        return hub.import_weights(weights, local, cache_dir=cache_dir)
    if weights.source.startswith("hf://"):
        return hub.download(weights.source[len("hf://") :], [CONFIG, WEIGHTS_FILE], cache_dir)
    how = (f"neurofm.models.{weights.importer}('<downloaded file>').save_pretrained('{local}')"
           if weights.importer else f"save them to {local}")  # fmt: skip
    raise CheckpointError(
        f"no weights for {name!r} in {local}: neurofm never downloads them. Download "
        f"{weights.source}, then run {how}"
    )


def _read_files(path: Path):
    """``config.json`` (bytes) and ``model.safetensors`` (an open binary file) of one
    version of the folder, each None if absent; the caller closes the file.

    A save swaps the whole folder, so a read that straddles a swap is seen (the folder's
    inode changed) and repeated. The open file keeps that version's weights readable
    (hashed and loaded from it) even if a later save replaces the folder.
    """
    for _ in range(5):
        inode = path.stat().st_ino
        config = (path / CONFIG).read_bytes() if (path / CONFIG).is_file() else None
        weights = open(path / WEIGHTS_FILE, "rb") if (path / WEIGHTS_FILE).is_file() else None
        if path.stat().st_ino == inode:
            return config, weights
        if weights is not None:
            weights.close()
    raise CheckpointError(f"{path} kept changing while it was read: another process is saving "
                          "into it; load it when the save is done")  # fmt: skip


def _load_tensors(file) -> dict:
    """The tensors of an open safetensors file: mapped from the same file where the OS
    names open files (Linux /proc/self/fd; peak memory: the tensors), else read whole."""
    from safetensors import safe_open
    from safetensors.torch import load

    proc = Path(f"/proc/self/fd/{file.fileno()}")
    if not proc.exists():
        file.seek(0)
        return load(file.read())
    with safe_open(str(proc), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)


def _parse_config(raw: bytes | None, path: Path) -> dict:
    """The verified content of a checkpoint's ``config.json``, in the current format."""
    cfg_path = path / CONFIG
    if raw is None:
        pickles = [p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise _pickle_error(path / pickles[0])
        raise CheckpointError(f"{path} has no {CONFIG}: not a neurofm checkpoint folder")
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as err:  # bad JSON or UTF-8
        raise CheckpointError(
            f"{cfg_path} is not valid JSON ({str(err)[:120]}): the file is damaged; restore it "
            "or save the model again"
        ) from err
    fmt = config.get("format") if isinstance(config, dict) else type(config).__name__
    if fmt not in (FORMAT, LEGACY_FORMAT):
        raise CheckpointError(f"{cfg_path} is not a neurofm checkpoint config (format {fmt!r})")
    newest = FORMAT_VERSION if fmt == FORMAT else 2
    version = config.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version > newest:
        raise CheckpointError(
            f"{cfg_path} has format version {version!r}; this neurofm reads {fmt!r} up to "
            f"version {newest}: upgrade neurofm"
        )
    if "config_sha256" in config or version >= 2:
        if config.get("config_sha256") != _config_sha256(config):
            raise CheckpointError(
                f"{cfg_path} does not match its checksum (config_sha256): it was edited or "
                "damaged after the save. Restore it or save the model again; to change a "
                "setting, change it on the loaded model in Python and save_pretrained() again"
            )
        if not isinstance(config.get("weights_sha256"), str):
            raise CheckpointError(f"{cfg_path} has no weights_sha256: save the model again")
    else:
        warn(f"{cfg_path} is a format-{version} checkpoint: its config.json has no checksum, so "
             "edits to it cannot be detected; save the model again to protect it",
             FileFormatWarning)  # fmt: skip
    return _migrate(config, cfg_path) if fmt == LEGACY_FORMAT else config


def _migrate(config: dict, cfg_path: Path) -> dict:
    """Format 1-2 -> 3: ``architecture`` 'encoder'; patch geometry out of the model config,
    checked against the saved recipe (a contradiction is refused, naming both values)."""
    model = config.get("model")
    if not isinstance(model, dict):
        return {**config, "architecture": "encoder"}  # refused when the model is built
    geometry = {k: model[k] for k in ("patch_len", "patch_seconds") if k in model}
    model = {k: v for k, v in model.items() if k not in geometry}
    recipe = config.get("recipe")
    try:
        if recipe is None and len(geometry) == 2:  # saved without a recipe: it had 1 source
            recipe = _recipe_of_geometry(model.get("modality", "eeg"), **geometry)
        elif recipe is not None:
            recipe = recipe_from_dict(recipe)
    except (NeurofmError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{cfg_path} holds a recipe this neurofm cannot read ({err})"
        ) from err
    if recipe is not None:
        for key, value in geometry.items():
            ours = getattr(recipe, key)
            if not isinstance(value, int | float) or not math.isclose(ours, value, rel_tol=1e-9):
                raise CheckpointError(
                    f"{cfg_path} contradicts itself: its model config says {key}={value!r} but "
                    f"its recipe makes {key}={ours!r}. Patch geometry now comes from the recipe "
                    "alone; rebuild the model with the recipe its weights were trained with "
                    "(create_model(name, recipe=...), load_weights) and save it again"
                )
        recipe = recipe.model_dump(mode="json")
    return {**config, "architecture": "encoder", "model": model, "recipe": recipe}


def _recipe_of_geometry(modality: str, patch_len: int, patch_seconds: float):
    """The recipe a format-1/2 model config implied when it was saved without one."""
    if modality == "fmri":
        return FMRIRecipe(t_r=patch_seconds / patch_len, patch_trs=patch_len)
    return EEGRecipe(sfreq=patch_len / patch_seconds, patch_seconds=patch_seconds)


def read_config(path) -> dict:
    """A checkpoint's ``config.json``, verified against its checksum, in format 3."""
    path = _resolve(path)
    config, weights = _read_files(path)
    if weights is not None:
        weights.close()
    return _parse_config(config, path)


# ---------------------------------------------------------------------- load
def load_model(source, *, modality: str | None = None, architecture: str | None = None,
               device=None, cache_dir=None) -> nn.Module:  # fmt: skip
    """Load a model from a checkpoint folder, a weights name or ``'hf://owner/repo'``.

    The class comes from the checkpoint's ``architecture`` (see
    :mod:`neurofm.models.registry`).

    Parameters
    ----------
    source : str | Path
        Folder with ``config.json`` + ``model.safetensors`` (or a file in it); a name
        from :func:`~neurofm.models.list_weights` (its files in
        ``$NEUROFM_HOME/models/<name>`` or its Hub repo); or ``hf://owner/repo``
        (Hugging Face Hub, cached; honours ``HF_HUB_OFFLINE``). A model name
        (``"eeg-base"``) is refused: it names an architecture; ``create_model`` builds it.
    modality : 'eeg' | 'fmri' | None
        Refuse a checkpoint of another modality.
    architecture : str | None
        Refuse a checkpoint of another architecture (e.g. ``'encoder'``).

    Raises
    ------
    CheckpointError
        A missing, damaged or edited checkpoint, named with the fix.
    """
    check_option("modality", modality, ("eeg", "fmri", None))
    path = _resolve(source, cache_dir)
    raw_config, raw_weights = _read_files(path)
    with contextlib.ExitStack() as stack:
        if raw_weights is not None:
            stack.callback(raw_weights.close)
        return _load(path, raw_config, raw_weights, modality, architecture, device)


def _load(path, raw_config, raw_weights, modality, architecture, device) -> nn.Module:
    from safetensors import SafetensorError

    config = _parse_config(raw_config, path)
    try:
        arch = get_architecture(config.get("architecture"))
    except NeurofmError as err:
        raise CheckpointError(f"{path / CONFIG}: {err}") from None
    if architecture is not None and arch.name != architecture:
        raise CheckpointError(f"{path} holds a {arch.name}; this call needs a {architecture}")
    try:
        cfg = arch.config_cls(**config["model"])
        model = arch.cls(cfg, recipe=config.get("recipe"))
    except (KeyError, TypeError, ValueError) as err:  # pydantic's errors are ValueErrors
        raise CheckpointError(
            f"{path / CONFIG} does not describe a model this neurofm can build "
            f"({type(err).__name__}: {str(err)[:300]}): save the model again"
        ) from err
    if modality is not None and getattr(cfg, "modality", None) != modality:
        raise CheckpointError(
            f"{path} holds an {cfg.modality} model ({cfg.name}); this call needs {modality}"
        )
    weights = path / WEIGHTS_FILE
    if raw_weights is None:
        raise CheckpointError(
            f"{path} has {CONFIG} but no {WEIGHTS_FILE}: the checkpoint is incomplete"
        )
    expected = config.get("weights_sha256")
    if expected and file_sha256(raw_weights) != expected:
        raise CheckpointError(
            f"{weights} does not match the checksum in {CONFIG}: the file is corrupt or a save "
            "was interrupted; save the model again"
        )
    try:
        state = _load_tensors(raw_weights)
    except SafetensorError as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({err})") from err
    load_weights(model, state, source=str(weights))
    logger.info("loaded %s %s (%.1fM parameters) from %s", arch.name, cfg.name,
                sum(p.numel() for p in model.parameters()) / 1e6, path)  # fmt: skip
    return model.to(device) if device is not None else model


def load_weights(model: nn.Module, state: dict, *, source: str = "state dict") -> nn.Module:
    """Copy ``state`` into ``model``; mismatches name the config difference behind them.

    Wrapper prefixes in ``state`` (DDP's ``module.``, ``_orig_mod.``) are ignored, and a
    wrapped or sharded ``model`` receives the full tensors.
    """
    module = unwrap(model)
    state = {clean_key(k): v for k, v in state.items()}
    own = {clean_key(k): v for k, v in module.state_dict().items()}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]  # fmt: skip
    if missing or unexpected or wrong:
        name = getattr(getattr(module, "config", None), "name", type(module).__name__)
        lines = [f"{source} does not fit this {name} model:"]
        if wrong:
            lines += [f"  {k}: checkpoint {a} vs model {b}" for k, a, b in wrong[:5]]
            lines.append("  (another size, modality or patch length: build the model from the "
                         "checkpoint's config and recipe with neurofm.load_model)")  # fmt: skip
        if missing:
            lines.append(f"  missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            lines.append(f"  unexpected: {', '.join(unexpected[:8])}"
                         f"{' ...' if len(unexpected) > 8 else ''}")  # fmt: skip
        raise CheckpointError("\n".join(lines))
    if _sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
    else:
        module.load_state_dict(state)
    return model


# ---------------------------------------------------------------------- Hub, methods
def push_to_hub(model: nn.Module, repo_id: str, *, private: bool = True, token=None,
                commit_message: str = "neurofm checkpoint") -> str:  # fmt: skip
    """Upload ``config.json`` + ``model.safetensors`` to a Hub model repo; returns its URL."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, tmp)
        return hub.upload(tmp, repo_id, private=private, token=token,
                          commit_message=commit_message)  # fmt: skip


class Pretrained:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` / ``load_weights``
    methods for a registered architecture (an ``nn.Module`` with ``config`` and
    ``recipe``)."""

    def save_pretrained(self, path, **kwargs) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (see :func:`save_model`)."""
        return save_model(self, path, **kwargs)

    @classmethod
    def from_pretrained(cls, source, **kwargs):
        """A folder, a weights name or ``'hf://owner/repo'`` (see :func:`load_model`)."""
        model = load_model(source, **kwargs)
        if not isinstance(model, cls):
            raise CheckpointError(f"{source} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        return push_to_hub(self, repo_id, **kwargs)

    def load_weights(self, state: dict, source: str = "state dict"):
        """Copy a state dict in; mismatches are named with the config difference behind them."""
        return load_weights(self, state, source=source)
