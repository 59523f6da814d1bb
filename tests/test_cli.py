import subprocess
import sys

from neurofm.cli import main


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Tokens(B=12, S=64 units, N=10 patches, P=200 samples" in out
    assert "notch [60.0]" in out and "'Fc5.'->'FC5'" in out
    assert (tmp_path / "S001R03_tokens.png").stat().st_size > 10_000
    assert "encoder eeg-base (5.9M parameters" in out and "pooled (12, 200)" in out


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "eeg-huge" in out and "369.6M" in out and "fmri-base" in out


def test_info_reports_errors_cleanly(tmp_path):
    bad = tmp_path / "x.vmrk"
    bad.write_text("x")
    res = subprocess.run(
        [sys.executable, "-m", "neurofm", "info", str(bad)], capture_output=True, text=True
    )
    assert (
        res.returncode == 2
        and "BrainVision marker file" in res.stderr
        and "Traceback" not in res.stderr
    )


def test_import_does_not_need_braindecode():
    code = (
        "import sys, neurofm, neurofm.models; neurofm.tokenize; "
        "assert 'braindecode' not in sys.modules and 'huggingface_hub' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_info_on_a_recording_of_one_window(write_edf, tmp_path, capsys):
    # issue 12, item 15
    path = write_edf(["Fp1", "Fp2", "C3", "C4"], seconds=12.0)
    assert main(["info", str(path), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Tokens(B=1," in out and "patch starts (s) of window 0: [0.0, 1.0" in out
    assert (tmp_path / "rec_tokens.png").stat().st_size > 10_000
