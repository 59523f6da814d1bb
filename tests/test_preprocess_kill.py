"""``kill -9`` of the ``neurofm preprocess`` parent alone leaves no pool worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
from test_corpus import _chbmit


def _alive(procs) -> list:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_killing_the_parent_kills_its_workers(tmp_path):
    # issue 12, item 3
    root = _chbmit(tmp_path / "chb", subjects=2, files=2, seconds=600.0)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"dataset: chbmit\nroot: {root}\nout: {tmp_path / 'out'}\n"
                      "workers: 2\nrecipe: {notch: 60.0}\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "neurofm", "preprocess", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    parent = psutil.Process(proc.pid)
    try:
        deadline = time.time() + 120
        workers = []
        while time.time() < deadline and proc.poll() is None:  # both workers at work
            workers = [c for c in parent.children(recursive=True) if "python" in c.name()]
            if len(workers) >= 2 and list((tmp_path / "out" / "shards").glob("*.partial")):
                break
            time.sleep(0.05)
        assert proc.poll() is None and len(workers) >= 2, "the workers never started"
        children = parent.children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its process group
        proc.wait()
        deadline = time.time() + 5
        while _alive(children) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(children), f"orphans: {[p.cmdline()[-3:] for p in _alive(children)]}"
    finally:
        try:  # whatever this test started (its own session), if it failed
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_workers_poll_for_their_parent_where_no_death_signal_exists():
    # issue 12, item 3: the portable fallback (a thread watching the parent's pid)
    code = ("import time; from neurofm.data.shards import _die_with_parent; "
            "_die_with_parent(-1); time.sleep(30)")  # fmt: skip
    start = time.time()
    res = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert res.returncode == 1 and time.time() - start < 25
