"""The Hugging Face Hub: checkpoint folders down (cached, offline-aware) and up.

Only files move here; what they hold is :mod:`neurofm.models.checkpoint`'s business.
``huggingface_hub`` is optional (``pip install 'neurofm[hub]'``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NeurofmError


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
