"""``python -m bench.pool``: the paired ratios of several benchmark runs of one set-up, pooled."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.harness import median_interval
from bench.pool import PoolError, pool, verdict

ROOT = Path(__file__).resolve().parents[1]


def _run(path, ratios, batch=256, coretype=None, steps=None):
    """A benchmark result as `python -m bench --out` writes it: fastnn paired with torch-cpu, round by round."""
    peer = [1000.0 + 10 * i for i in range(len(ratios))]
    ours = [r * p for r, p in zip(ratios, peer)]
    document = {
        "settings": {"sizes": [3072, 1024, 512, 10], "steps": steps, "rows": 50000, "threads": 2, "isolate": True},
        "machine": {"cpu": "a CPU", "cores": 2, "openblas_coretype": coretype},
        "results": [
            {"backend": "fastnn-numpy", "batch_size": batch, "epoch_ms": {"all": ours},
             "paired_ratios": {"torch-cpu": 0.0}},  # fmt: skip
            {"backend": "torch-cpu", "batch_size": batch, "epoch_ms": {"all": peer}, "paired_ratios": {}},
        ],
    }
    path.write_text(json.dumps(document))
    return path


def _noisy(center, n, seed):
    return list(center + 0.01 * np.random.default_rng(seed).standard_normal(n))


def test_runs_that_agree_pool_into_a_narrow_interval_on_their_side_of_one(tmp_path):
    files = [_run(tmp_path / f"{i}.json", _noisy(0.95, 30, i)) for i in range(3)]
    (entry,) = pool(files)
    assert (entry.backend, entry.peer, entry.batch_size) == ("fastnn-numpy", "torch-cpu", 256)
    assert [len(run) for run in entry.runs] == [30, 30, 30]
    low, high = entry.interval()
    assert low < entry.median < high < 1.0
    assert abs(entry.median - 0.95) < 0.01
    assert verdict(low, high) == "faster"


def test_the_interval_widens_with_the_spread_between_runs(tmp_path):
    # each run pins its own median tightly, but the runs disagree: one run's interval would claim too much
    apart = [_run(tmp_path / f"{i}.json", _noisy(center, 30, i)) for i, center in enumerate((0.96, 1.0, 1.04))]
    (entry,) = pool(apart)
    low, high = entry.interval()
    rounds_only = median_interval([r for run in entry.runs for r in run])
    assert high - low > 2 * (rounds_only[1] - rounds_only[0])
    assert low < 1.0 < high and verdict(low, high) == "level"
    behind = [_run(tmp_path / f"b{i}.json", _noisy(1.05, 30, i)) for i in range(2)]
    assert verdict(*pool(behind)[0].interval()) == "slower"


def test_batch_sizes_are_pooled_apart_and_may_differ_between_runs(tmp_path):
    files = [_run(tmp_path / "a.json", [0.9] * 5, batch=256), _run(tmp_path / "b.json", [1.1] * 7, batch=1024),
             _run(tmp_path / "c.json", [0.92] * 5, batch=256)]  # fmt: skip
    entries = pool(files)
    assert [(e.batch_size, len(e.runs)) for e in entries] == [(256, 2), (1024, 1)]
    assert entries[0].median == pytest.approx(0.91)
    assert entries[1].median == pytest.approx(1.1)


@pytest.mark.parametrize(
    "other, message",
    [
        ({"coretype": "Haswell"}, "machine.openblas_coretype is 'Haswell', but"),
        ({"steps": 20}, "settings.steps is 20, but"),
    ],
)
def test_runs_of_another_set_up_are_refused_in_one_line(tmp_path, capsys, other, message):
    files = [_run(tmp_path / "a.json", [1.0] * 3), _run(tmp_path / "b.json", [1.0] * 3, **other)]
    with pytest.raises(PoolError, match=message):
        pool(files)
    command = [sys.executable, "-m", "bench.pool", *map(str, files)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and "same set-up" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_file_that_is_no_benchmark_result_is_refused_in_one_line(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    (tmp_path / "y.txt").write_text("not json")
    for name, message in (("x.json", "not a benchmark result"), ("y.txt", "not JSON"), ("z.json", "cannot read it")):
        with pytest.raises(PoolError, match=message):
            pool([tmp_path / name])


def test_the_report_is_written_whole_with_its_command(tmp_path):
    files = [_run(tmp_path / f"{i}.json", _noisy(1.0, 10, i)) for i in range(2)]
    out = tmp_path / "pooled.txt"
    done = subprocess.run([sys.executable, "-m", "bench.pool", *map(str, files), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("python -m bench.pool ") and done.stdout.strip() in text
    assert "fastnn-numpy / torch-cpu, batch 256: pooled" in text and "20 rounds of 2 runs" in text
