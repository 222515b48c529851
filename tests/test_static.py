"""The code checks every change must pass, run as tests so `python -m pytest` is the one command."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tg_testing import ROOT

PACKAGES = ["gateway", "router", "compiler"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    out = run("ruff", "check", *PACKAGES, "tests", "bench")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_mypy_is_clean_on_the_packages():
    out = run("mypy", *PACKAGES)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
