"""The README's library example runs as printed and prints the accuracies the README quotes for it,
within the tolerance the README states for another machine.

It trains 3072-512-10 for three epochs on the real CIFAR-10 (FASTNN_DATA_DIR, set by .ci/run).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from _util import REAL_DATA, needs_real_data, readme_tolerance

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_real_data


def _library_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## As a library", 1)[1].split("\n## ", 1)[0]


def test_library_example_prints_the_quoted_accuracies(tmp_path):
    section = _library_section()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    quoted = re.search(r"printed validation\s+accuracies of ([\d.]+)%, ([\d.]+)% and ([\d.]+)%", section)
    assert quoted, "the README no longer quotes the example's output"

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "FASTNN_DATA_DIR": REAL_DATA, "OPENBLAS_NUM_THREADS": "2"},  # as measured: 2 cores
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = re.findall(r"epoch (\d): validation accuracy ([\d.]+)%", done.stdout)
    assert [int(epoch) for epoch, _ in printed] == [1, 2, 3], done.stdout
    # another CPU's BLAS kernels round sums otherwise, and so move the last digits (README: Results)
    print(done.stdout, "quoted:", quoted.groups())  # shown by pytest -rP
    for (_, accuracy), expected in zip(printed, quoted.groups()):
        assert abs(float(accuracy) - float(expected)) <= readme_tolerance(), (done.stdout, quoted.group(0))
