"""The Python user's path: `pip install` tether beside Panel in a fresh venv, then
`tether serve` with no `--python`, and both layers work in a real Chromium.

The wheel is built by the same `pip install .` a user runs (maturin, from pyproject.toml).
`MATURIN_PEP517_ARGS=--profile dev` only makes it reuse the suite's debug build instead of
compiling a release one; what is packaged, installed and found is the same.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, Tether
from test_catalog import PICK_A, expect_plot, open_catalog, select_and_plot, session_id, shot, shown, wait_for_plot

INSTALL_TIMEOUT = 900  # seconds: a wheel build plus Panel's dependencies from the pip cache


@pytest.fixture(scope="module")
def venv():
    home = Path(tempfile.mkdtemp(prefix="tether-e2e-pip-"))
    v = home / "v"
    subprocess.run([sys.executable, "-m", "venv", str(v)], check=True, timeout=120)
    env = dict(os.environ, MATURIN_PEP517_ARGS="--profile dev")
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [str(v / "bin" / "python"), "-m", "pip", "install", "--quiet", str(ROOT), "panel", "holoviews",
         "-c", str(ROOT / "requirements.txt")],
        env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )
    assert done.returncode == 0, f"pip install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    yield v
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def pip_tether(venv, artifacts):
    workdir = Path(tempfile.mkdtemp(prefix="tether-e2e-pipwd-"))
    server = Tether(workdir, artifacts / "tether-pip.log", binary=venv / "bin" / "tether", python=None)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_10_pip_install_serves_with_the_venvs_python(new_context, pip_tether, venv):
    assert (venv / "bin" / "tether").is_file(), "pip put no tether on the venv's PATH"
    log = pip_tether.log_since_start()
    assert "the Python tether is installed beside" in log and str(venv / "bin" / "python") in log, log[-2000:]
    ctx = new_context("pip")
    page = open_catalog(ctx, pip_tether.url)
    select_and_plot(page, PICK_A)
    before = session_id(page)
    # Live reattach: a tab closed and opened again is the same live session.
    page.close()
    pip_tether.wait_no_tabs()
    page = open_catalog(ctx, pip_tether.url)
    wait_for_plot(page, PICK_A, timeout=10_000)
    assert session_id(page) == before
    # Restore: after a restart, a fresh session with the plot drawn again.
    page.close()
    url = pip_tether.restart()
    page = open_catalog(ctx, url)
    wait_for_plot(page, PICK_A, timeout=10_000)
    assert session_id(page) != before
    assert shown(page) == expect_plot(PICK_A)
    shot(page, "10-pip-restored")
