import subprocess
import sys

import pytest

from neurofm.cli import main


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Tokens(B=12, S=64 units, N=10 patches, P=200 samples" in out
    assert "notch [60.0]" in out and "'Fc5.'->'FC5'" in out
    assert (tmp_path / "S001R03_tokens.png").stat().st_size > 10_000
    # the pretrained checkpoint shipped in the package, offline
    assert "encoder eeg-tiny.sample (eeg-tiny, 0.29M parameters" in out
    assert "pooled (12, 100)" in out


def test_models_lists_the_registry(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROFM_HOME", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "eeg-huge" in out and "369.6M" in out and "fmri-base" in out
    architectures, weights = out.split("weights (load_model(name))")
    assert "labram-base" not in architectures and "eeg-base" in architectures
    assert "labram-base            eeg-base        downloadable" in weights
    assert "eeg-tiny.sample        eeg-tiny        shipped" in weights
    assert "tokenizer-tiny.sample  tokenizer-tiny  shipped" in weights
    from neurofm.models import create_model, weights_folder

    create_model("eeg-tiny").save_pretrained(weights_folder("labram-base"))  # stands in
    assert main(["models", "--modality", "eeg"]) == 0
    assert "labram-base            eeg-base        cached" in capsys.readouterr().out
    assert main(["models", "--modality", "fmri"]) == 0
    assert "labram-base" not in capsys.readouterr().out


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


# ---------------------------------------------------------------------- issue 13
def _errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "pydantic" not in err and "ValidationError" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err
    return lines


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["models", "--modality", "eg"], ["modality: Input should be 'eeg' or 'fmri' (got 'eg'; "
                                          "did you mean 'eeg'?)"]),
        (["models", "modalty=eeg"], ["unknown ModelsOptions field 'modalty' (did you mean "
                                     "'modality'?)"]),
        (["info", "x.edf", "recpe.notch=50", "recipe.on_nan=mesk"],
         ["unknown InfoOptions field 'recpe' (did you mean 'recipe'?)",
          "recipe.on_nan: Input should be 'raise' or 'mask' (got 'mesk'; did you mean 'mask'?)"]),
        (["info", "x.edf", "--set", "recipe.sfrq=250"],
         ["recipe: unknown EEGRecipe field 'sfrq' (did you mean 'sfreq'?)"]),
        (["demo", "recipe.window_seconds=-1", "recipe.notch=atuo"],
         ["recipe.window_seconds: Input should be greater than 0 (got -1)",
          "recipe.notch: 'atuo' is not a line frequency"]),
        (["demo", "out=[1]"], ["out: Input should be a valid string (got [1])"]),
        (["models", "modality"], ["override 'modality' is not KEY=VALUE"]),
    ],
)  # fmt: skip
def test_every_verb_gives_one_line_per_problem_with_the_fix(argv, expected, capsys):
    assert main(argv) == 2
    lines = _errors(capsys)
    assert len(lines) == len(expected), lines
    for want in expected:
        assert sum(want in line for line in lines) == 1, (want, lines)
    assert all(line.startswith(f"error: neurofm {argv[0]}: ") or "KEY=VALUE" in line
               for line in lines)  # fmt: skip


def test_preprocess_yaml_and_overrides_give_one_line_per_problem(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: chbmt\nroot: x\nout: y\nworkrs: 2\ndtype: flaot16\n"
                   "recipe: {sfreq: 200, notch: 60}\n")  # fmt: skip
    assert main(["preprocess", str(cfg), "recipe.on_nan=mesk", "--workers", "0"]) == 2
    lines = _errors(capsys)
    assert all(line.startswith(f"error: {cfg}: ") for line in lines)
    for want in ("unknown CorpusConfig field 'workrs' (did you mean 'workers'?)",
                 "dtype: Input should be 'float16' or 'float32' (got 'flaot16'; did you mean 'float16'?)",
                 "recipe.on_nan: Input should be 'raise' or 'mask' (got 'mesk'; did you mean 'mask'?)",
                 "workers: Input should be greater than or equal to 1 (got '0')",
                 "invalid dataset 'chbmt' (did you mean 'chbmit'?)"):  # fmt: skip
        assert sum(want in line for line in lines) == 1, (want, lines)
    assert len(lines) == 5
    cfg.write_text("dataset: chbmit\nroot: x\nout: y\nrecipe: {sfreq: 200\n")
    assert main(["preprocess", str(cfg)]) == 2
    assert len(lines := _errors(capsys)) == 1 and "is not readable YAML" in lines[0]


def test_a_new_verb_plugs_into_the_same_path(tmp_path, capsys, monkeypatch):
    """How pretrain/finetune/evaluate/encode join: a config model and a function."""
    from neurofm import cli
    from neurofm.config import StrictConfig
    from neurofm.preprocess import Recipe

    class TrainConfig(StrictConfig):
        steps: int = 1
        lr: float = 1e-3
        recipe: Recipe = Recipe()

    ran = []
    monkeypatch.setattr(cli, "VERBS", dict(cli.VERBS))
    cli.verb("train", TrainConfig, "a test verb", config=True, flags=("steps",))(ran.append)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("steps: 3\nrecipe: {notch: 50}\n")
    assert main(["train", str(cfg), "lr=0.1", "--steps", "7", "--set", "recipe.sfreq=250"]) is None
    assert ran == [TrainConfig(steps=7, lr=0.1, recipe=Recipe(notch=50, sfreq=250))]
    assert main(["train", str(cfg), "lr=fast", "recipe.notch=atuo"]) == 2
    lines = _errors(capsys)
    assert len(lines) == 2 and all(line.startswith(f"error: {cfg}: ") for line in lines)
    assert {line.split(": ")[2] for line in lines} == {"lr", "recipe.notch"}


def test_overrides_may_follow_flags(tmp_path, capsys):
    """`neurofm VERB ARG --flag V key=value`: argparse alone rejects overrides after a flag."""
    from neurofm.cli import sample_path

    assert main(["info", str(sample_path()), "--out", str(tmp_path), "recipe.notch=50"]) == 0
    assert '"notch":50.0' in capsys.readouterr().out and list(tmp_path.glob("*.png"))
    with pytest.raises(SystemExit):  # anything else after a flag is still refused
        main(["info", str(sample_path()), "--out", str(tmp_path), "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err


def test_preprocess_part_and_merge_errors_name_the_fix(tmp_path, capsys):
    """`--part i/n` is checked before any work: one line, with the fix."""
    from neurofm.data import CorpusConfig
    from neurofm.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: chbmit\nroot: x\nout: y\n")
    for args, words in ((["--part", "3/2"], "part: '3/2': there are only 2 parts"),
                        (["--part", "0/2"], "--array=1-2"),
                        (["--part", "a/b"], "'a/b' is not i/n with whole numbers"),
                        (["--part", "/"], "only inside a SLURM array job"),
                        (["--part", "1/2", "--merge"], "not both"),
                        (["--merge", "--overwrite"], "rerun the parts with --overwrite")):  # fmt: skip
        assert main(["preprocess", str(cfg), *args]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {cfg}: ") and words in err[0], err
    with pytest.raises(ConfigError, match="part: '1/2/3' is not i/n"):
        CorpusConfig(dataset="chbmit", root="x", out="y", part="1/2/3")
    assert CorpusConfig(dataset="chbmit", root="x", out="y", part=" 2 / 3 ").part == "2/3"
