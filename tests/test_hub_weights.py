"""Weights by name from the Hugging Face Hub: downloaded once, converted, cached, offline-safe.

``load_model("labram-base")`` and ``load_model("cbramod")`` read braindecode's published
repos (``braindecode/labram-pretrained``, ``braindecode/cbramod-pretrained``). Here the
Hub is a local cache in huggingface_hub's own layout (``models--owner--name/refs/main``,
``snapshots/<commit>/<file>`` linking into ``blobs/``) holding random weights that
braindecode's own ``save_pretrained`` wrote (``model.safetensors``, ``pytorch_model.bin``,
``config.json``, ``README.md``), so the files have the format braindecode publishes. The
network is never used: offline tests refuse any connection, online ones replace the
downloader.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch

from neurofm.errors import CheckpointError
from neurofm.models import from_cbramod, from_labram, load_model
from neurofm.models.card import read_card

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CBRAMOD, LABRAM = "braindecode/cbramod-pretrained", "braindecode/labram-pretrained"


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or name lookup in this test fails loudly (this test only)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"the network was touched: {args[1:]!r}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def home(monkeypatch, tmp_path):
    """Empty neurofm and Hugging Face caches; offline; no downloader may run."""
    import huggingface_hub

    for name in ("HF_HOME", "HF_HUB_OFFLINE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEUROFM_HOME", str(tmp_path / "neurofm"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("NEUROFM_OFFLINE", "1")

    def never(*args, **kwargs):
        raise AssertionError(f"hf_hub_download was called offline: {args}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", never)
    return tmp_path


def published(kind: str, folder: Path):
    """braindecode's model with seeded random weights, saved as braindecode publishes it."""
    bd = pytest.importorskip("braindecode.models")
    torch.manual_seed(0)
    if kind == "cbramod":
        ref = bd.CBraMod(n_chans=19, n_times=800, n_outputs=2, return_encoder_output=True)
    else:
        ref = bd.Labram(n_chans=19, n_times=800, n_outputs=2, sfreq=200, qkv_bias=True)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref.save_pretrained(folder)
    return ref.eval()


def hub_cache(root: Path, repo: str, folder: Path, files) -> Path:
    """``files`` of ``folder`` in huggingface_hub's cache layout under ``root``."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    snapshot, blobs = repo_dir / "snapshots" / COMMIT, repo_dir / "blobs"
    snapshot.mkdir(parents=True, exist_ok=True)
    blobs.mkdir(exist_ok=True)
    for name in files:
        data = (folder / name).read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../..") / "blobs" / blob.name)
    return snapshot


def same_weights(a, b, skip=()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert k in skip or torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------- offline, from the cache
def test_cbramod_from_the_hub_cache_offline(home, no_network):
    ref = published("cbramod", home / "published")
    files = ("config.json", "model.safetensors", "pytorch_model.bin", "README.md")
    snapshot = hub_cache(home / "hf", CBRAMOD, home / "published", files)
    model = load_model("cbramod")
    same_weights(model, from_cbramod(ref))
    local = home / "neurofm" / "models" / "cbramod"
    config = json.loads((local / "config.json").read_text())
    source = config["source"]
    assert source["repo"] == f"hf://{CBRAMOD}" and source["file"] == "model.safetensors"
    assert source["commit"] == COMMIT and source["licence"] == "bsd-3-clause"
    assert source["importer"] == "from_cbramod"
    digest = hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    assert source["sha256"] == digest
    card = (local / "README.md").read_text()
    assert read_card(local)["name"] == "cbramod" and read_card(local)["model"] == "cbramod-base"
    assert f"https://huggingface.co/{CBRAMOD}" in card and COMMIT in card and digest in card
    assert "`bsd-3-clause`, as stated by the card" in card and "proj_out.0.weight" in card
    shutil.rmtree(home / "hf")  # converted once: later loads read the neurofm checkpoint
    same_weights(load_model("cbramod"), model)


def test_labram_from_a_pickle_only_cache_under_hf_home(home, no_network, monkeypatch):
    """A repo holding only pytorch_model.bin: read with torch.load(weights_only=True);
    the cache found through HF_HOME; HF_HUB_OFFLINE alone is offline."""
    ref = published("labram", home / "published")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(home / "hf_home"))
    monkeypatch.setenv("NEUROFM_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache(home / "hf_home" / "hub", LABRAM, home / "published", ["pytorch_model.bin"])
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = load_model("labram-base")
    assert loads == [True]
    same_weights(model, from_labram(ref), skip=["mask_token"])  # braindecode's Labram has none
    local = home / "neurofm" / "models" / "labram-base"
    source = json.loads((local / "config.json").read_text())["source"]
    assert source["file"] == "pytorch_model.bin" and source["licence"] is None
    assert "not stated in the files read" in (local / "README.md").read_text()


def test_offline_error_names_the_exact_path_and_placing_the_file_works(home, no_network):
    with pytest.raises(CheckpointError) as err:
        load_model("cbramod")
    message = str(err.value)
    manual = home / "neurofm" / "downloads" / "cbramod"
    assert f"place it by hand at {manual / 'model.safetensors'}" in message
    assert f"https://huggingface.co/{CBRAMOD}/resolve/main/model.safetensors" in message
    assert f"nor hf://{CBRAMOD} in the Hugging Face cache {home / 'hf'}" in message
    assert "offline" in message and "from_cbramod('<that file>')" in message
    ref = published("cbramod", home / "published")
    manual.mkdir(parents=True)
    shutil.copy(home / "published" / "model.safetensors", manual)
    same_weights(load_model("cbramod"), from_cbramod(ref))


def test_hf_hub_offline_alone_never_downloads(home, no_network, monkeypatch):
    monkeypatch.setenv("NEUROFM_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="neurofm is offline .*labram-base/model.safetensors"
                       r".*LaBraM/raw/main/checkpoints/labram-base\.pth.*from_labram"):  # fmt: skip
        load_model("labram-base")


def test_without_huggingface_hub(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(CheckpointError, match=r"needs huggingface_hub: pip install "
                       r"'neurofm\[hub\]'; or download .* place it by hand at .*cbramod/"
                       "model.safetensors"):  # fmt: skip
        load_model("cbramod")
    ref = published("cbramod", home / "published")
    manual = home / "neurofm" / "downloads" / "cbramod"
    manual.mkdir(parents=True)
    shutil.copy(home / "published" / "pytorch_model.bin", manual)
    same_weights(load_model("cbramod"), from_cbramod(ref))  # placed by hand: no hub needed


# ---------------------------------------------------------------------- online (downloader replaced)
def test_online_downloads_once_into_the_hub_cache(home, monkeypatch):
    """The first load downloads (safetensors first; this repo has only the pickle, so
    that), converts and caches; the second reads the neurofm checkpoint only."""
    import huggingface_hub
    from httpx2 import Request, Response
    from huggingface_hub.errors import RemoteEntryNotFoundError

    monkeypatch.setenv("NEUROFM_OFFLINE", "0")
    ref = published("cbramod", home / "published")
    calls = []

    def fake_download(repo_id, filename, *, cache_dir, **kwargs):
        calls.append(filename)
        if filename == "model.safetensors":
            url = f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
            raise RemoteEntryNotFoundError(
                "404", response=Response(404, request=Request("GET", url))
            )
        return str(hub_cache(Path(cache_dir), repo_id, home / "published", [filename]) / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    same_weights(load_model("cbramod"), from_cbramod(ref))
    assert calls == ["model.safetensors", "pytorch_model.bin", "README.md"]
    assert (home / "hf" / f"models--{CBRAMOD.replace('/', '--')}").is_dir()
    config = json.loads((home / "neurofm" / "models" / "cbramod" / "config.json").read_text())
    assert config["source"]["licence"] == "bsd-3-clause"
    load_model("cbramod")
    assert len(calls) == 3  # not again

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(CheckpointError, match=r"could not download hf://braindecode/labram-"
                       r"pretrained into .*Network is unreachable.*place it by hand at "
                       ".*labram-base/model.safetensors"):  # fmt: skip
        load_model("labram-base")


def test_models_lists_weights_status(home, capsys, no_network):
    from neurofm.cli import main

    assert main(["models", "--modality", "eeg"]) == 0
    out = capsys.readouterr().out
    assert "cbramod-base" in out.split("weights (load_model(name))")[0]
    assert f"cbramod                cbramod-base    downloadable hf://{CBRAMOD}" in out
    assert f"labram-base            eeg-base        downloadable hf://{LABRAM}" in out
    published("cbramod", home / "published")
    hub_cache(home / "hf", CBRAMOD, home / "published", ["model.safetensors"])
    load_model("cbramod")
    assert main(["models"]) == 0
    assert "cbramod                cbramod-base    cached" in capsys.readouterr().out
