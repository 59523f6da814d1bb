"""The dev-environment check: a broken braindecode import is one clear failure (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNDEFINED = "undefined symbol: torch_exception_get_what_without_backtrace"


def fake_braindecode(tmp_path, body: str) -> dict:
    """An environment whose ``import braindecode`` runs ``body`` (shadowing the real one)."""
    pkg = tmp_path / "shadow" / "braindecode"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NEUROFM_REQUIRE_BASELINES")}
    env["PYTHONPATH"] = os.pathsep.join([str(pkg.parent), env.get("PYTHONPATH", "")])
    return env


def test_the_lock_environment_imports_braindecode():
    from neurofm.devcheck import braindecode_problem

    assert braindecode_problem() is None


def test_devcheck_names_the_mismatch_and_the_fix(tmp_path):
    env = fake_braindecode(tmp_path, f"raise OSError('libtorchaudio.so: {UNDEFINED}')")
    run = subprocess.run(
        [sys.executable, "-m", "neurofm.devcheck"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 1
    assert "torch/torchaudio mismatch" in run.stderr
    assert "make lock" in run.stderr and "requirements/dev.lock" in run.stderr
    assert UNDEFINED in run.stderr


def test_pytest_stops_once_with_the_cause_not_six_tracebacks(tmp_path):
    """The whole test run stops at start-up with one message, whatever CI says."""
    env = fake_braindecode(tmp_path, f"raise OSError('libtorchaudio.so: {UNDEFINED}')")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "test_devcheck.py"), "-k", "lock_environment"],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 3, out
    assert "dev environment check failed" in out and "torch/torchaudio mismatch" in out
    assert "Traceback" not in out and "passed" not in out


def test_missing_braindecode_fails_in_ci_and_skips_elsewhere(tmp_path):
    env = fake_braindecode(tmp_path, "raise ModuleNotFoundError(\"No module named 'torchaudio'\")")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            str(ROOT / "tests" / "test_devcheck.py"), "-k", "names_the_mismatch"]  # fmt: skip
    ci = subprocess.run(args, env={**env, "CI": "true"}, capture_output=True, text=True, cwd=ROOT)
    assert ci.returncode == 3 and "braindecode is not installed" in ci.stdout + ci.stderr
    local = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    assert local.returncode == 0, local.stdout + local.stderr
