import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared

import neurofm
from neurofm import Recipe, Tokens, collate
from neurofm.channels import PAD, UNK
from neurofm.errors import ConfigError, NeurofmError, SignalError
from neurofm.synthetic import eeg


def _raw(names, seconds=40, sfreq=200):
    return neurofm.read_eeg(
        eeg(len(names), int(seconds * sfreq), sfreq, line=None), sfreq=sfreq, ch_names=names
    )


def test_token_grid_shapes_and_times():
    tokens = neurofm.tokenize(
        _raw(["Fp1", "Cz", "O2"]), Recipe(notch=None, window_seconds=4, stride_seconds=2)
    )
    B, S, N, P = tokens.shape
    assert (S, N, P) == (3, 4, 200) and B == (40 - 4) // 2 + 1
    np.testing.assert_allclose(tokens.t[1].numpy(), [2, 3, 4, 5])
    assert (
        tokens.space.dtype == torch.long and tokens.mask.dtype == torch.bool and tokens.mask.all()
    )
    assert tokens.names[0] == ("Fp1", "Cz", "O2")
    np.testing.assert_allclose(
        tokens.pos[0, 1].numpy(), neurofm.channels.positions(["Cz"])[0], atol=1e-4
    )
    # overlapping windows hold the same samples where they overlap
    np.testing.assert_allclose(tokens.x[0, :, 2:], tokens.x[1, :, :2], atol=1e-6)


def test_iter_tokens_batches_equal_tokenize():
    raw = _raw(["Fp1", "Cz", "O2"], seconds=95)
    recipe = Recipe(notch=None, window_seconds=5)
    batches = list(neurofm.iter_tokens(raw, recipe, batch_size=4, chunk_seconds=7))
    assert [len(b) for b in batches] == [4, 4, 4, 4, 3]
    whole = neurofm.tokenize(raw, recipe)
    torch.testing.assert_close(collate(batches).x, whole.x, atol=1e-4, rtol=0)


def test_collate_mixed_montages():
    recipe = Recipe(notch=None, window_seconds=4)
    a = neurofm.tokenize(_raw(["Fp1", "Cz", "O2"]), recipe)[:2]
    b = neurofm.tokenize(
        _raw(["Fp1-F7", "F7-T7", "T7-P7", "P7-O1", "Xx1"]), Recipe(notch=None, window_seconds=8)
    )[:3]
    batch = collate([a, b])
    assert batch.shape == (5, 5, 8, 200)
    assert (
        not batch.mask[:2, 3:].any() and not batch.mask[:2, :, 4:].any()
    )  # padded units and patches
    assert (batch.space[:2, 3:] == PAD).all() and torch.isnan(batch.pos[:2, 3:]).all()
    assert (
        batch.space[2, 4] == UNK and torch.isnan(batch.pos[2, 4]).all()
    )  # unknown: no id, no position
    assert batch.mask[2:, :4].all() and batch.names[2][4] == "Xx1"
    with pytest.raises(NeurofmError, match="different lengths"):
        collate(
            [
                a,
                neurofm.tokenize(
                    _raw(["Cz"]), Recipe(notch=None, window_seconds=4, patch_seconds=0.5)
                ),
            ]
        )


def test_tokens_validation_and_indexing():
    x = torch.zeros(2, 3, 4, 5)
    ok = dict(x=x, space=torch.zeros(2, 3, dtype=torch.long), pos=torch.zeros(2, 3, 3), t=torch.zeros(2, 4),
              mask=torch.ones(2, 3, 4, dtype=torch.bool), names=[("a", "b", "c")] * 2)  # fmt: skip
    tokens = Tokens(**ok)
    assert (
        len(tokens[1]) == 1 and len(tokens[[0, 1]]) == 2 and tokens[0:1].names == [("a", "b", "c")]
    )
    with pytest.raises(NeurofmError, match=r"Tokens.mask has shape \(2, 3, 5\)"):
        Tokens(**{**ok, "mask": torch.ones(2, 3, 5, dtype=torch.bool)})
    with pytest.raises(NeurofmError, match="must be bool"):
        Tokens(**{**ok, "mask": torch.ones(2, 3, 4)})
    with pytest.raises(NeurofmError, match=r"\(B, S, N, P\)"):
        Tokens(**{**ok, "x": torch.zeros(2, 3, 4)})
    assert tokens.to("cpu", dtype=torch.bfloat16).x.dtype == torch.bfloat16


def test_tokens_validate_checks_values():
    # issue 12, item 11: values are checked in one place (Tokens.validate), off the constructor
    ok = dict(x=torch.zeros(1, 2, 3, 5), space=torch.full((1, 2), 7), pos=torch.zeros(1, 2, 3),
              t=torch.arange(3.0)[None], mask=torch.ones(1, 2, 3, dtype=torch.bool))  # fmt: skip
    assert Tokens(**ok).validate() is not None
    t = ok["t"].clone()
    t[0, 1] = float("nan")
    tokens = Tokens(**{**ok, "t": t})  # the constructor never reads values
    with pytest.raises(SignalError, match="Tokens.t holds NaN"):
        tokens.validate()
    x = ok["x"].clone()
    x[0, 1, 2, 0] = float("inf")
    with pytest.raises(SignalError, match="real tokens"):
        Tokens(**{**ok, "x": x}).validate()
    mask = ok["mask"].clone()
    mask[0, 1, 2] = False  # the same inf in padding: fine
    Tokens(**{**ok, "x": x, "mask": mask}).validate()
    pos = torch.full((1, 2, 3), float("nan"))  # unknown positions are NaN: fine
    Tokens(**{**ok, "pos": pos}).validate()


def test_tokenize_takes_a_recipe_dict():
    # issue 12, item 16: tokenize(raw, dict) was an AttributeError from inside the pipeline
    raw = _raw(["Fp1", "Cz", "O2"], seconds=20)
    fields = {"notch": None, "window_seconds": 4}
    torch.testing.assert_close(
        neurofm.tokenize(raw, fields).x, neurofm.tokenize(raw, Recipe(**fields)).x
    )
    with pytest.raises(ConfigError, match="window_secnds.*did you mean 'window_seconds'"):
        neurofm.tokenize(raw, {"window_secnds": 4})
    with pytest.raises(NeurofmError, match="must be a neurofm.Recipe or a dict"):
        neurofm.tokenize(raw, 200)
    with pytest.raises(NeurofmError, match="tokenize_fmri"):
        neurofm.tokenize(raw, neurofm.FMRIRecipe(t_r=0.72))


def test_plain_mne_raw_is_canonicalised_first():
    import mne

    x = eeg(2, 200 * 20, 200, line=None)
    raw = mne.io.RawArray(x, mne.create_info(["Fc5.", "EEG T3-REF"], 200.0, "eeg"), verbose="error")
    raw.set_montage(None)
    tokens = neurofm.tokenize(raw, Recipe(notch=None, window_seconds=4))
    assert tokens.names[0] == ("FC5", "T7") and (tokens.space > UNK).all()


def test_to_xarray():
    tokens = neurofm.tokenize(_raw(["Fp1", "Cz", "O2"]), Recipe(notch=None, window_seconds=4))
    da = tokens.to_xarray()
    assert da.dims == ("window", "channel", "patch", "sample") and list(da.channel.values) == [
        "Fp1",
        "Cz",
        "O2",
    ]
    assert float(da.mni_z.sel(channel="Cz")) > 80


def test_real_recording_tokens():
    raw = neurofm.read_eeg(shared("eeg/eegmmidb/S001R01.edf"))
    tokens = neurofm.tokenize(raw)
    assert tokens.shape == (6, 64, 10, 200) and tokens.mask.all()
    assert 0.05 < tokens.x.abs().median() < 2  # EEG of tens of microvolts in units of 100 uV
    assert (tokens.space > UNK).all()


def test_long_recording_constant_memory(tmp_path):
    """A 12-hour, 23-channel, 256 Hz EDF is tokenized under 1.5 GB of peak RSS."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "bench")!r})
        from preprocess import make_edf
        import neurofm
        path = make_edf(Path({str(tmp_path / "long.edf")!r}), 12.0)
        n = sum(len(b) for b in neurofm.iter_tokens(path, neurofm.Recipe(notch=60.0), batch_size=128))
        from neurofm.utils import peak_rss_mib  # not ru_maxrss: it would carry pytest's
        peak = peak_rss_mib()
        print(n, peak, path.stat().st_size / 2**20)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    n, peak_mib, size_mib = out.stdout.split()
    assert int(n) == 12 * 360 and float(size_mib) > 400
    assert float(peak_mib) < 1536, f"peak RSS {peak_mib} MiB"


def test_windows_are_a_plain_cut_of_the_prepared_signal():
    """windows.py cuts the Stream's output: each window is its samples, in patches."""
    from neurofm.preprocess import Stream

    raw = _raw(["Fp1", "Cz", "O2"], seconds=30)
    recipe = Recipe(window_seconds=4, stride_seconds=3)
    y = np.concatenate([b for _, b, _ in Stream(raw, recipe, chunk_seconds=7).blocks()], axis=1)
    tokens = neurofm.tokenize(raw, recipe, chunk_seconds=11, batch_size=3)
    W, step = recipe.window_len, recipe.stride_len
    assert len(tokens) == (y.shape[1] - W) // step + 1
    for b in range(len(tokens)):
        cut = y[:, b * step : b * step + W].reshape(3, recipe.window_patches, recipe.patch_len)
        np.testing.assert_allclose(tokens.x[b].numpy(), cut, atol=1e-5)
        np.testing.assert_allclose(tokens.t[b].numpy(), b * 3.0 + np.arange(4))


def test_patchify_splits_the_last_axis():
    from neurofm.tokens import patchify

    x = np.arange(24).reshape(2, 12)
    assert patchify(x, 4).shape == (2, 3, 4) and patchify(x, 4)[1, 2].tolist() == [20, 21, 22, 23]
    assert patchify(torch.zeros(5, 3, 600), 200).shape == (5, 3, 3, 200)


def test_tokenize_reads_arrays_with_the_readers_options():
    x = eeg(3, 200 * 20, 200, line=None)
    names = ["Fp1", "Cz", "O2"]
    recipe = Recipe(notch=None, window_seconds=4)
    direct = neurofm.tokenize(x, recipe, sfreq=200, ch_names=names)
    read = neurofm.tokenize(neurofm.read_eeg(x, sfreq=200, ch_names=names), recipe)
    torch.testing.assert_close(direct.x, read.x) and torch.testing.assert_close(
        direct.pos, read.pos
    )
    assert direct.names == read.names


def test_old_import_paths_still_work():
    # tokens.py is the seam only; the pipeline moved to windows.py and channels.py
    from neurofm.channels import channel_positions, space_ids
    from neurofm.tokens import channel_positions as cp
    from neurofm.tokens import iter_tokens, tokenize
    from neurofm.tokens import space_ids as si
    from neurofm.windows import iter_tokens as it
    from neurofm.windows import tokenize as tk
    from neurofm.windows import tokenize_fmri

    assert (iter_tokens, tokenize, si, cp) == (it, tk, space_ids, channel_positions)
    assert neurofm.io.tokenize_fmri is neurofm.io.fmri.tokenize_fmri is tokenize_fmri
    with pytest.raises(AttributeError):
        neurofm.tokens.no_such_name  # noqa: B018


def test_import_rules_of_the_seam():
    """tokens.py imports nothing from io/ or preprocess/; io/ imports neither tokens nor
    windows; preprocess/ imports nothing from io/ (module-level and function-level imports)."""
    import ast

    root = Path(neurofm.__file__).parent

    def imports(path):
        package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                yield from (a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(p for p in (base, node.module) if p)
                yield from (module, *(f"{module}.{a.name}" for a in node.names))

    def banned(path, prefixes):
        return [m for m in imports(path) if m.startswith(prefixes)]

    assert banned(root / "tokens.py", ("neurofm.io", "neurofm.preprocess", "neurofm.windows")) == []
    for path in (root / "io").rglob("*.py"):
        assert banned(path, ("neurofm.tokens", "neurofm.windows")) == [], path
    for path in (root / "preprocess").rglob("*.py"):
        assert banned(path, ("neurofm.io", "neurofm.tokens", "neurofm.windows")) == [], path
    assert (
        banned(root / "preprocess" / "recipe.py", ("neurofm.channels", "neurofm.preprocess.")) == []
    )


def test_tokenize_options_are_checked():
    raw = _raw(["Fp1", "Cz", "O2"], seconds=10)
    with pytest.raises(NeurofmError, match="did you mean 'Cz'"):
        neurofm.tokenize(raw, Recipe(notch=None, window_seconds=4), picks=["Fp1", "cz"])
    for bad in (0, 2.5, True):
        with pytest.raises(NeurofmError, match="batch_size"):
            next(neurofm.iter_tokens(raw, Recipe(notch=None, window_seconds=4), batch_size=bad))
    with pytest.raises(NeurofmError, match="did you mean 'fmri'"):
        neurofm.tokenize(raw, {"modality": "fMRi"})
    picked = neurofm.tokenize(raw, Recipe(notch=None, window_seconds=4), picks="O2")
    assert picked.names[0] == ("O2",)


def test_misspelt_options_are_refused_for_raw_and_arrays():
    """Reader options only apply to files: for a Raw or an array a typo must not vanish."""
    from neurofm.errors import EEGReadError
    from neurofm.synthetic import eeg

    x = eeg(3, 200 * 30, 200, line=None)
    with pytest.raises(EEGReadError, match=r"'chunk_second' \(did you mean 'chunk_seconds'\?\)"):
        neurofm.tokenize(x, sfreq=200, ch_names=["Cz", "C3", "C4"], chunk_second=5)
    raw = neurofm.read_eeg(x, sfreq=200, ch_names=["Cz", "C3", "C4"])
    with pytest.raises(EEGReadError, match=r"'bacth_size' \(did you mean 'batch_size'\?\)"):
        neurofm.tokenize(raw, bacth_size=1)
    assert neurofm.tokenize(raw, batch_size=1).shape[0] == 3
