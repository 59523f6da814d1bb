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

from ..preprocess import Recipe
from ..utils import NeurofmError, atomic_write, did_you_mean, logger
from .encoder import Encoder, EncoderConfig

FORMAT = "neurofm.encoder"
FORMAT_VERSION = 1
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
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model: Encoder, path, *, extra: dict | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into folder ``path`` (atomically).

    The weights go first and ``config.json`` records their SHA-256, so a save cut short
    leaves either the previous checkpoint or one that refuses to load, never a mix.
    """
    from safetensors.torch import save_file

    from .. import __version__

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.config.model_dump_json()}
    atomic_write(path / WEIGHTS, lambda p: save_file(state, str(p), metadata=meta))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "neurofm_version": __version__,
        "model": model.config.model_dump(),
        "recipe": None if model.recipe is None else model.recipe.model_dump(mode="json"),
        "weights_sha256": _sha256(path / WEIGHTS),
        **(extra or {}),
    }
    atomic_write(path / CONFIG, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return path


def _pickle_error(path: Path) -> NeurofmError:
    return NeurofmError(
        f"{path} is a pickle checkpoint; neurofm never unpickles model files. If it holds "
        "LaBraM or braindecode Labram weights, import it with "
        "neurofm.models.from_labram(path) (tensors only, torch.load(weights_only=True)) and "
        "save_pretrained() the result"
    )


def _resolve(source, cache_dir=None) -> Path:
    """A checkpoint folder from a folder, a file in it, a registered name or 'hf://repo'."""
    text = str(source)
    if text.startswith("hf://"):
        return _hub_download(text[len("hf://") :], cache_dir)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise _pickle_error(path)
        path = path.parent
    if path.is_dir():
        return path
    if text in MODELS:
        home = Path(os.environ.get("NEUROFM_HOME", "~/.cache/neurofm")).expanduser()
        local = home / "models" / text
        if (local / CONFIG).exists():
            return local
        raise NeurofmError(
            f"no weights for {text!r} in {local}: neurofm ships no pretrained weights and never "
            f"downloads them. create_model({text!r}) builds it with random weights; to use "
            "LaBraM's, run neurofm.models.from_labram('labram-base.pth').save_pretrained("
            f"'{local}')"
        )
    raise NeurofmError(
        f"no checkpoint at {text!r}{did_you_mean(text, MODELS)}: give a folder with "
        f"{CONFIG} and {WEIGHTS}, a registered name, or 'hf://owner/repo'"
    )


def read_config(path) -> dict:
    path = _resolve(path)
    cfg_path = path / CONFIG
    if not cfg_path.exists():
        pickles = [p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise _pickle_error(path / pickles[0])
        raise NeurofmError(f"{path} has no {CONFIG}: not a neurofm checkpoint folder")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise NeurofmError(
            f"{cfg_path} is not valid JSON ({err}): the checkpoint is corrupt"
        ) from err
    if config.get("format") != FORMAT:
        raise NeurofmError(
            f"{cfg_path} is not a neurofm encoder config (format {config.get('format')!r})"
        )
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise NeurofmError(
            f"{cfg_path} has format version {config['format_version']}; this neurofm reads up "
            f"to {FORMAT_VERSION}: upgrade neurofm"
        )
    return config


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
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _resolve(source, cache_dir)
    config = read_config(path)
    cfg = EncoderConfig(**config["model"])
    if modality is not None and cfg.modality != modality:
        raise NeurofmError(
            f"{path} holds an {cfg.modality} model ({cfg.name}); this call needs {modality}"
        )
    weights = path / WEIGHTS
    if not weights.exists():
        raise NeurofmError(f"{path} has {CONFIG} but no {WEIGHTS}: the checkpoint is incomplete")
    expected = config.get("weights_sha256")
    if expected and _sha256(weights) != expected:
        raise NeurofmError(
            f"{weights} does not match the checksum in {CONFIG}: the file is corrupt or a save "
            "was interrupted; save the model again"
        )
    recipe = recipe_from_dict(config.get("recipe"))
    model = Encoder(cfg, recipe=recipe)
    try:
        state = load_file(str(weights))
    except SafetensorError as err:
        raise NeurofmError(f"{weights} is not a readable safetensors file ({err})") from err
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
        raise NeurofmError("\n".join(lines))
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
