"""Named model sizes, checkpoints as data (``config.json`` + ``model.safetensors``).

timm's idea: a model is a name in a registry with its config; weights are a folder
anyone can read without running our code (JSON and safetensors, never a pickle)::

    model = create_model("eeg-base")            # LaBraM-base geometry, random weights
    model.save_pretrained("runs/my-model")      # config.json + model.safetensors
    model = neurofm.load_model("runs/my-model") # or "hf://owner/repo" (Hugging Face Hub)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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
from ..preprocess import Recipe
from ..utils import atomic_write_dir, interrupted_backup
from .encoder import Encoder, EncoderConfig

FORMAT = "neurofm.encoder"
FORMAT_VERSION = 2  # 2: config.json carries its own checksum (config_sha256)
CONFIG, WEIGHTS = "config.json", "model.safetensors"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle")

_EEG = dict(modality="eeg", patch_len=200, patch_seconds=1.0, patch_embed="conv")
_FMRI = dict(modality="fmri", patch_len=20, patch_seconds=14.4, patch_embed="linear",
             vocab_size=2, coord_frequencies=8)  # fmt: skip  # parcels placed by centroid

MODELS: dict[str, dict] = {
    # EEG: LaBraM's sizes (embed dim, depth, heads); conv channels = dim / 25
    "eeg-tiny": dict(_EEG, dim=100, depth=2, heads=5),
    "eeg-base": dict(_EEG, dim=200, depth=12, heads=10),
    "eeg-large": dict(_EEG, dim=400, depth=24, heads=16),
    "eeg-huge": dict(_EEG, dim=800, depth=48, heads=16),
    # fMRI: parcels x patches of 20 TRs (BrainLM's patching), coordinates as space
    "fmri-tiny": dict(_FMRI, dim=64, depth=2, heads=4),
    "fmri-base": dict(_FMRI, dim=256, depth=8, heads=8),
    "fmri-large": dict(_FMRI, dim=768, depth=12, heads=12),
}


def list_models() -> list[str]:
    return sorted(MODELS)


def model_config(name: str, **overrides) -> EncoderConfig:
    if name not in MODELS:
        raise NeurofmError(
            f"unknown model {name!r}{did_you_mean(name, MODELS)}; known: {', '.join(MODELS)}"
        )
    return EncoderConfig(name=name, **{**MODELS[name], **overrides})


def default_recipe(config: EncoderConfig):
    """The Recipe (EEG) or FMRIRecipe matching a config's patches."""
    if config.modality == "fmri":
        from ..io.fmri import FMRIRecipe

        return FMRIRecipe(t_r=config.patch_seconds / config.patch_len, patch_trs=config.patch_len)
    return Recipe(sfreq=config.patch_len / config.patch_seconds, patch_seconds=config.patch_seconds)


def recipe_from_dict(data: dict | None):
    """A checkpoint's recipe, EEG or fMRI by its ``modality`` field."""
    if not data:
        return None
    if data.get("modality") == "fmri":
        from ..io.fmri import FMRIRecipe

        return FMRIRecipe(**data)
    return Recipe(**data)


def create_model(name: str, *, recipe: Recipe | None = None, **overrides) -> Encoder:
    """A new encoder of a registered size (random weights); ``overrides`` edit its config.

    >>> create_model("eeg-base", attention="divided", cls_token=False)
    """
    config = model_config(name, **overrides)
    return Encoder(config, recipe=recipe or default_recipe(config))


# ---------------------------------------------------------------------- checkpoints
# A checkpoint folder is switched from the old model to the new one in one atomic step
# (utils.atomic_write_dir: the new folder is written beside it, then exchanged with it by
# one rename), so a save killed at any moment leaves the old model or the new one. Inside,
# config.json records the SHA-256 of model.safetensors and of its own content
# (config_sha256, over the canonical JSON without that key): a damaged or hand-edited
# file is refused by name. Format 1 (no config checksum) still loads.
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _config_sha256(config: dict) -> str:
    body = {k: v for k, v in config.items() if k != "config_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _not_debris(name: str) -> bool:
    """Entries of an old checkpoint folder carried into the new one (a model card, logs)."""
    return (
        name not in (CONFIG, WEIGHTS) and not name.endswith(".part") and not name.startswith(".tmp")
    )


def save_model(model: Encoder, path, *, extra: dict | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into folder ``path``, atomically.

    The folder switches from its previous content to the new checkpoint in one step: a
    save killed at any moment leaves the previous checkpoint or the new one, never a mix
    (other files in the folder, such as a model card, are kept). ``extra`` adds
    JSON-serialisable keys to ``config.json``.
    """
    from safetensors.torch import save_file

    from .. import __version__

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.config.model_dump_json()}
    config = {
        **(extra or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "neurofm_version": __version__,
        "model": model.config.model_dump(),
        "recipe": None if model.recipe is None else model.recipe.model_dump(mode="json"),
    }

    def write(folder: Path) -> None:
        save_file(state, str(folder / WEIGHTS), metadata=meta)
        config["weights_sha256"] = _sha256(folder / WEIGHTS)
        config["config_sha256"] = _config_sha256(config)
        (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    try:
        json.dumps(config)
        return atomic_write_dir(path, write, keep=_not_debris)
    except TypeError as err:
        raise NeurofmError(f"save_model: extra= must be JSON-serialisable ({err})") from err
    except OSError as err:
        raise CheckpointError(
            f"could not save the checkpoint to {path} ({type(err).__name__}: {err}): a save "
            "writes the new folder beside the old one, so the folder's parent must be writable; "
            "the previous checkpoint, if any, is unchanged"
        ) from err


def _pickle_error(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} is a pickle checkpoint; neurofm never unpickles model files. If it holds "
        "LaBraM or braindecode Labram weights, import it with "
        "neurofm.models.from_labram(path) (tensors only, torch.load(weights_only=True)) and "
        "save_pretrained() the result"
    )


def _resolve(source, cache_dir=None) -> Path:
    """A checkpoint folder from a folder, a file in it, a registered name or 'hf://repo'."""
    validate_type(source, "path-like", "source", "a folder, a registered name or 'hf://repo'")
    text = str(source)
    if text.startswith("hf://"):
        return _hub_download(text[len("hf://") :], cache_dir)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise _pickle_error(path)
        if path.name not in (CONFIG, WEIGHTS) or not (path.parent / CONFIG).is_file():
            hint = (" A lone .safetensors of LaBraM weights imports with "
                    "neurofm.models.from_labram(path).") if path.suffix == ".safetensors" else ""  # fmt: skip
            raise CheckpointError(
                f"{path} is not part of a neurofm checkpoint: load_model takes a folder "
                f"holding {CONFIG} and {WEIGHTS} (or one of those two files).{hint}"
            )
        path = path.parent
    if path.is_dir():
        return path
    backup = interrupted_backup(path)
    if backup is not None:
        logger.warning("%s is absent after an interrupted save; reading the previous "
                       "checkpoint from %s (the next save puts it back)", path, backup)  # fmt: skip
        return backup
    if text in MODELS:
        home = Path(os.environ.get("NEUROFM_HOME", "~/.cache/neurofm")).expanduser()
        local = home / "models" / text
        if (local / CONFIG).exists():
            return local
        raise CheckpointError(
            f"no weights for {text!r} in {local}: neurofm ships no pretrained weights and never "
            f"downloads them. create_model({text!r}) builds it with random weights; to use "
            "LaBraM's, run neurofm.models.from_labram('labram-base.pth').save_pretrained("
            f"'{local}')"
        )
    raise CheckpointError(
        f"no checkpoint at {text!r}{did_you_mean(text, MODELS)}: give a folder with "
        f"{CONFIG} and {WEIGHTS}, a registered name, or 'hf://owner/repo'"
    )


def _read_files(path: Path) -> tuple[bytes | None, bytes | None]:
    """``config.json`` and ``model.safetensors`` (None if absent) of one version of the folder.

    A save swaps the whole folder, so a read that straddles a swap is seen (the folder's
    inode changed) and repeated.
    """
    for _ in range(5):
        inode = path.stat().st_ino
        files = tuple((path / n).read_bytes() if (path / n).is_file() else None
                      for n in (CONFIG, WEIGHTS))  # fmt: skip
        if path.stat().st_ino == inode:
            return files
    raise CheckpointError(f"{path} kept changing while it was read: another process is saving "
                          "into it; load it when the save is done")  # fmt: skip


def _parse_config(raw: bytes | None, path: Path) -> dict:
    """The verified content of a checkpoint's ``config.json``."""
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
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{cfg_path} is not a neurofm encoder config (format {got!r})")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path} has format version {version!r}; this neurofm reads up to "
            f"{FORMAT_VERSION}: upgrade neurofm"
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
    return config


def read_config(path) -> dict:
    """A checkpoint's ``config.json``, verified against its checksum."""
    path = _resolve(path)
    return _parse_config(_read_files(path)[0], path)


def load_model(source, *, modality: str | None = None, device=None, cache_dir=None) -> Encoder:
    """Load an encoder from a checkpoint folder, a registered name or ``'hf://owner/repo'``.

    Parameters
    ----------
    source : str | Path
        Folder with ``config.json`` + ``model.safetensors`` (or a file in it); a name
        from :func:`list_models` whose weights sit in ``$NEUROFM_HOME/models/<name>``;
        or ``hf://owner/repo`` (Hugging Face Hub, cached; honours ``HF_HUB_OFFLINE``).
    modality : 'eeg' | 'fmri' | None
        Refuse a checkpoint of another modality.

    Raises
    ------
    CheckpointError
        A missing, damaged or edited checkpoint, named with the fix.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    check_option("modality", modality, ("eeg", "fmri", None))
    path = _resolve(source, cache_dir)
    raw_config, raw_weights = _read_files(path)
    config = _parse_config(raw_config, path)
    try:
        cfg = EncoderConfig(**config["model"])
        model = Encoder(cfg, recipe=recipe_from_dict(config.get("recipe")))
    except (KeyError, TypeError, ValueError) as err:  # pydantic's errors are ValueErrors
        raise CheckpointError(
            f"{path / CONFIG} does not describe a model this neurofm can build "
            f"({type(err).__name__}: {str(err)[:300]}): save the model again"
        ) from err
    if modality is not None and cfg.modality != modality:
        raise CheckpointError(
            f"{path} holds an {cfg.modality} model ({cfg.name}); this call needs {modality}"
        )
    weights = path / WEIGHTS
    if raw_weights is None:
        raise CheckpointError(f"{path} has {CONFIG} but no {WEIGHTS}: the checkpoint is incomplete")
    expected = config.get("weights_sha256")
    if expected and hashlib.sha256(raw_weights).hexdigest() != expected:
        raise CheckpointError(
            f"{weights} does not match the checksum in {CONFIG}: the file is corrupt or a save "
            "was interrupted; save the model again"
        )
    try:
        state = load(raw_weights)
    except SafetensorError as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({err})") from err
    load_weights(model, state, source=str(weights))
    logger.info("loaded %s (%s, %.1fM parameters) from %s", cfg.name, cfg.modality,
                model.num_params() / 1e6, path)  # fmt: skip
    return model.to(device) if device is not None else model


def load_weights(model: Encoder, state: dict, *, source: str = "state dict") -> Encoder:
    """Copy ``state`` into ``model``; mismatches name the config difference behind them."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
             if k in state and state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or wrong:
        lines = [f"{source} does not fit this {model.config.name} model:"]
        if wrong:
            lines += [f"  {k}: checkpoint {a} vs model {b}" for k, a, b in wrong[:5]]
            lines.append("  (another size or modality: build the model from the checkpoint's "
                         "config with neurofm.load_model)")  # fmt: skip
        if missing:
            lines.append(f"  missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            lines.append(f"  unexpected: {', '.join(unexpected[:8])}"
                         f"{' ...' if len(unexpected) > 8 else ''}")  # fmt: skip
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state)
    return model


# ---------------------------------------------------------------------- Hugging Face Hub
def _hub():
    try:
        import huggingface_hub
    except ImportError as err:
        raise NeurofmError(
            "the Hugging Face Hub needs huggingface_hub: pip install 'neurofm[hub]'"
        ) from err
    return huggingface_hub


def _hub_download(repo_id: str, cache_dir=None) -> Path:
    hub = _hub()
    try:
        return Path(hub.snapshot_download(repo_id, allow_patterns=[CONFIG, WEIGHTS],
                                          cache_dir=cache_dir))  # fmt: skip
    except Exception as err:  # offline, missing repo, auth: say which and what to do
        raise NeurofmError(
            f"could not get hf://{repo_id} ({type(err).__name__}: {err}). Offline, the repo "
            "must already be in the Hugging Face cache (HF_HUB_CACHE); or download the folder "
            "and pass its path"
        ) from err


def push_to_hub(model: Encoder, repo_id: str, *, private: bool = True, token=None,
                commit_message: str = "neurofm encoder") -> str:  # fmt: skip
    """Upload ``config.json`` + ``model.safetensors`` to a Hub model repo; returns its URL."""
    import tempfile

    hub = _hub()
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, tmp)
        api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
    return f"https://huggingface.co/{repo_id}"
