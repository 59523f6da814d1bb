"""Offline mode: the cache first, never the network; placement instructions when missing."""

from __future__ import annotations

import socket

import pytest

from neurofm.cache import find_cached, is_offline, neurofm_home, obtain
from neurofm.errors import NeurofmError


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or name lookup in this test fails loudly (this test only)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"the network was touched: {args[1:]!r}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_the_argument_and_the_environment_variable(monkeypatch):
    monkeypatch.delenv("NEUROFM_OFFLINE", raising=False)
    assert not is_offline() and is_offline(True)
    for value in ("1", "true", "YES", " on "):
        monkeypatch.setenv("NEUROFM_OFFLINE", value)
        assert is_offline() and not is_offline(False)  # the argument wins
    for value in ("0", "false", "", "off"):
        monkeypatch.setenv("NEUROFM_OFFLINE", value)
        assert not is_offline() and is_offline(True)
    monkeypatch.setenv("NEUROFM_OFFLINE", "ture")
    with pytest.raises(NeurofmError, match="NEUROFM_OFFLINE value 'ture' .did you mean 'true'"):
        is_offline()


def test_neurofm_home(monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROFM_HOME", str(tmp_path / "home"))
    assert neurofm_home() == tmp_path / "home"
    monkeypatch.delenv("NEUROFM_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert neurofm_home() == tmp_path / "xdg" / "neurofm"


def test_offline_never_calls_the_downloader(tmp_path, no_network, monkeypatch):
    monkeypatch.setenv("NEUROFM_OFFLINE", "1")
    calls = []
    files = ["thing/a.nii.gz", "thing/labels.txt"]
    with pytest.raises(NeurofmError) as err:
        obtain("atlas 'x'", [tmp_path / "one", tmp_path / "two"], files, calls.append,
               fallback="pass the image")  # fmt: skip
    message = str(err.value)
    assert calls == [] and no_network == []
    assert f"place atlas 'x''s files by hand at {tmp_path / 'one' / files[0]}, " in message
    assert str(tmp_path / "one" / files[1]) in message and "pass the image" in message
    assert "NEUROFM_OFFLINE=1" in message
    # placed by hand (in any of the folders): found, still without the network
    for f in files:
        (tmp_path / "two" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "two" / f).write_text("x")
    assert obtain("atlas 'x'", [tmp_path / "one", tmp_path / "two"], files, calls.append) == (
        tmp_path / "two"
    )
    assert find_cached([tmp_path / "one"], files) is None and calls == [] and no_network == []


def test_online_downloads_once_into_the_first_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("NEUROFM_OFFLINE", raising=False)
    calls = []

    def download(folder):
        calls.append(folder)
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "f.txt").write_text("x")

    folders = [tmp_path / "a", tmp_path / "b"]
    assert obtain("w", folders, ["sub/f.txt"], download) == tmp_path / "a"
    assert obtain("w", folders, ["sub/f.txt"], download) == tmp_path / "a"
    assert calls == [tmp_path / "a"]

    def fails(folder):
        raise OSError("Network is unreachable")

    with pytest.raises(NeurofmError, match="could not download w into .*Network is unreachable"
                       r".*retry, or place w's files by hand at .*c/g.txt"):  # fmt: skip
        obtain("w", [tmp_path / "c"], ["g.txt"], fails)
    with pytest.raises(NeurofmError, match=r"did not leave \['g.txt'\]"):
        obtain("w", [tmp_path / "c"], ["g.txt"], lambda folder: None)
