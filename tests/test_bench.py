"""``python -m bench --quick`` runs every backend present and writes a complete JSON file."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn.backend import get_backend

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None
# the same module run with ``import torch`` made to fail, as on a machine without PyTorch
WITHOUT_TORCH = "import runpy, sys; sys.modules['torch'] = None; runpy.run_module('bench', run_name='__main__')"


@pytest.mark.parametrize("torch_hidden", [False, True], ids=["as-installed", "torch-hidden"])
def test_quick_benchmark_writes_complete_json(tmp_path, torch_hidden):
    out = tmp_path / "bench.json"
    launch = [sys.executable, "-c", WITHOUT_TORCH] if torch_hidden else [sys.executable, "-m", "bench"]
    done = subprocess.run(
        [*launch, "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())

    settings, machine, backends = report["settings"], report["machine"], report["backends"]
    assert settings["parameters"] == 3072 * 1024 + 1024 + 1024 * 512 + 512 + 512 * 10 + 10
    for key in ("cpu", "cores", "threads", "numpy", "numpy_blas", "torch", "gpu", "python"):
        assert key in machine, key
    assert set(backends) == {"fastnn-numpy", "fastnn-cupy", "torch-cpu", "torch-cuda"}

    has_torch = HAS_TORCH and not torch_hidden
    assert backends["torch-cpu"].startswith("ok") == has_torch
    if not has_torch:
        assert "not installed" in backends["torch-cpu"]
        assert "not installed" in done.stdout

    rows = report["results"]
    ran = {label for label, state in backends.items() if state.startswith("ok")}
    assert "fastnn-numpy" in ran
    assert {r["backend"].split("[")[0] for r in rows} == ran
    for label in ran:
        assert sorted(r["batch_size"] for r in rows if r["backend"] == label) == sorted(settings["batch_sizes"])
    for r in rows:
        for key in ("median", "min", "max"):
            assert r["epoch_ms"][key] > 0
        assert r["epoch_ms"]["min"] <= r["epoch_ms"]["median"] <= r["epoch_ms"]["max"]
        assert r["images_per_s"] > 0 and r["gflops"] > 0
        assert math.isfinite(r["mean_loss"])
        peer = any(p["reference"] and p["device"] == r["device"] for p in rows)
        assert (r["ratio_to_torch"] is not None) == peer
    assert any("6 x parameters" in note for note in report["notes"])


def test_ablation_runs():
    """``python -m bench.ablation`` (each CPU speed-up undone in turn) still runs on today's code."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.ablation", "--steps", "1", "--repeats", "1", "--batch-size", "64"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for stage in ("baseline", "+no-input-grad", "+fused-adam", "+relu-mask", "+bias-in-place"):
        assert stage in done.stdout


def test_profile_times_every_phase_of_both_frameworks(tmp_path, capsys):
    from bench.profile import main
    from bench.torch_peer import torch
    from fastnn import kernels_cpu

    threads = kernels_cpu.threads()
    out = tmp_path / "profile.txt"
    assert main(["--steps", "1", "--batch-sizes", "8", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    for phase in ("gather (take)", "optimizer (Adam)", "product 0: x @ W + b", "bwd 2 Dense(1024, 512", "loss forward"):
        assert phase in printed
    assert ("PyTorch, Adam(fused=True), batch 8" in printed) == (torch is not None)
    assert kernels_cpu.threads() == threads  # the run's thread limit undone


def test_the_profile_alternates_the_frameworks_step_by_step():
    """A drift of the host's speed during the run then slows both columns alike."""
    from bench.profile import interleave

    calls = []
    interleave([lambda n: calls.append(f"fastnn {n}"), lambda n: calls.append(f"torch {n}")], 3)
    assert calls == ["fastnn 0", "torch 0", "torch 1", "fastnn 1", "fastnn 2", "torch 2"]


def test_layout_bench_times_both_layouts(capsys):
    from bench.layout import main

    assert main(["--repeats", "1", "--batch-sizes", "8", "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("(unset)")]
    assert len(rows) == 1 and float(rows[0].split()[-1]) > 0


def test_tf32_emulation_rounds_to_ten_mantissa_bits():
    from bench.tf32_effect import TF32Dense, to_tf32

    values = np.array([1.0001, 1 + 2**-10, 1 + 2**-11 + 2**-20, -3.0, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(to_tf32(values), [1.0, 1 + 2**-10, 1 + 2**-10, -3.0, 0.0])
    x = np.random.default_rng(0).normal(size=10_000).astype(np.float32)
    error = np.abs(to_tf32(x) - x) / np.abs(x)
    assert error.max() <= 2**-11 and error.mean() > 2**-14  # within half a TF32 step, and not a no-op
    assert np.all(np.frexp(to_tf32(x))[0] * 2**11 % 1 == 0)  # 1 + 10 bits of significand left
    layer = TF32Dense(4, 3, get_backend("cpu").rng(0))
    x4 = np.full((2, 4), 1.0001, dtype=np.float32)
    layer.params["W"] = np.ones((4, 3), dtype=np.float32)
    np.testing.assert_array_equal(layer.forward(x4), np.full((2, 3), 4.0, dtype=np.float32))


def test_overhead_bench_times_every_variant(capsys):
    from bench.overhead import main

    assert main(["--steps", "4", "--repeats", "1", "--hidden", "4"]) == 0
    out = capsys.readouterr().out
    for row in ("gather 1 (default here)", "gather 8", "uncached namespace"):
        assert row in out
    rows = [line for line in out.splitlines() if " us (" in line]
    assert len(rows) >= 3 and all(float(line.split(" us (")[0].split()[-1]) > 0 for line in rows)


def test_benchmarks_run_in_process_leave_the_thread_counts_as_they_were(tmp_path):
    """The benchmarks limit BLAS and PyTorch threads for their run only: a limit left behind would
    change the thread count, and with it the rounding of BLAS sums, of every test after them."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from bench.__main__ import main as bench_main
    from bench.overhead import main as overhead_main
    from bench.torch_peer import torch

    def counts():
        blas = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
        return blas, torch.get_num_threads() if torch is not None else None

    with threadpoolctl.threadpool_limits(limits=2):
        before = counts()
        assert overhead_main(["--steps", "2", "--repeats", "1", "--hidden", "4", "--threads", "1"]) == 0
        assert counts() == before
        assert bench_main(["--quick", "--threads", "1", "--out", str(tmp_path / "b.json")]) == 0
        assert counts() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-sizes", "0"], "argument --batch-sizes: 0 must be at least 1"),
        (["--hidden", "1024,x"], "argument --hidden: 'x' is not a whole number"),
        (["--steps", "-1"], "argument --steps: -1 must be at least 1"),
        (["--only", "bogus"], "--only: unknown runner(s) bogus; choose from fastnn-numpy"),
        (["--products", "mkl"], "argument --products: choose from onednn, numpy (got 'mkl')"),
        (["--torch-adam", ","], "argument --torch-adam: choose from default, foreach, fused (got ',')"),
        (["--out", "."], "argument --out: . is a folder; name a file in it"),
        (["--rows", "100", "--batch-sizes", "256"], "--rows 100 is less than one batch of 256"),
    ],
)
def test_bad_benchmark_options_are_refused_before_any_timing(capsys, args, message):
    from bench.__main__ import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


class _Clocked:
    """A runner whose epochs take what a script says: ``speed`` times the machine's slowness of the moment."""

    def __init__(self, label, framework, speed, machine, log, reference=False):
        self.label, self.framework, self.device, self.reference = label, framework, "cpu", reference
        self.speed, self.machine, self.log = speed, machine, log

    def setup(self, batch_size, weights):
        pass

    def epoch(self, rows):
        self.log.append(self.label)
        return self.speed * next(self.machine), 1.0

    def describe(self):
        return {}


def test_rounds_alternate_their_order_and_pair_fastnn_with_each_peer():
    from bench.harness import Workload, measure

    # the machine slows down 10% with every epoch run
    slowness = iter(1.1**i for i in range(100))
    log = []
    runners = [
        _Clocked("fastnn-numpy", "fastnn", 1.0, slowness, log),
        _Clocked("torch-cpu", "torch", 2.0, slowness, log, reference=True),
        _Clocked("torch-cpu[fused]", "torch", 1.0, slowness, log),
    ]
    results = measure(runners, Workload([4, 3, 2], rows=8), 4, 4, None)
    timed = log[3:]  # after one warm-up epoch each
    one_way = ["fastnn-numpy", "torch-cpu", "torch-cpu[fused]"]
    assert timed == (one_way + one_way[::-1]) * 2
    fastnn = next(r for r in results if r.framework == "fastnn")
    assert set(fastnn.paired_ratios) == {"torch-cpu", "torch-cpu[fused]"}
    # fastnn runs just before torch-cpu in even rounds and just after it in odd ones: 1/1.1 and 1.1 times
    # the true ratio 1/2 by turns, whose median is within 0.5% of it
    expected = sorted(1.1**k / 2.0 for k in (-1, 1, -1, 1))
    assert fastnn.paired_ratios["torch-cpu"] == pytest.approx((expected[1] + expected[2]) / 2)
    assert fastnn.paired_ratios["torch-cpu"] == pytest.approx(0.5, rel=0.005)
    assert all(not r.paired_ratios for r in results if r.framework == "torch")
    low, high = fastnn.paired_intervals["torch-cpu"]
    assert low <= fastnn.paired_ratios["torch-cpu"] <= high  # and within the rounds' ratios:
    assert min(expected) == pytest.approx(low) or min(expected) < low
    assert max(expected) == pytest.approx(high) or high < max(expected)


def test_the_median_interval_holds_the_median_and_narrows_with_more_rounds():
    from bench.harness import median_interval

    assert median_interval([1.02] * 7) == (1.02, 1.02)
    rng = np.random.default_rng(5)
    few, many = rng.normal(1.0, 0.03, size=10), rng.normal(1.0, 0.03, size=200)
    for sample in (few, many):
        low, high = median_interval(list(sample))
        assert sample.min() < low <= np.median(sample) <= high < sample.max()
        assert median_interval(list(sample)) == (low, high)  # seeded
    width = {len(sample): np.diff(median_interval(list(sample)))[0] for sample in (few, many)}
    # the median of n rounds of noise 0.03 is known to about 0.03 * 1.25 / sqrt(n): 0.0027 for 200
    assert 0.005 < width[200] < 0.02 and width[200] < width[10]


@pytest.mark.skipif(not HAS_TORCH, reason="the isolation that matters is PyTorch's: pip install torch")
def test_isolated_runners_train_the_same_workload_each_in_a_process_of_its_own(tmp_path):
    reports = {}
    for mode in ("together", "isolated"):
        out = tmp_path / f"{mode}.json"
        extra = ["--isolate"] if mode == "isolated" else []
        done = subprocess.run(
            [sys.executable, "-m", "bench", "--only", "fastnn-numpy,torch-cpu", "--batch-sizes", "64",
             "--quick", "--threads", "1", "--out", str(out), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        reports[mode] = json.loads(out.read_text())
    isolated = reports["isolated"]
    assert isolated["settings"]["isolate"] is True
    assert isolated["backends"]["torch-cpu"] == "ok: in a process of its own"
    processes = {label: info["process"] for label, info in isolated["runners"].items()}
    assert len({p["pid"] for p in processes.values()}) == 2
    # PyTorch's child loaded neither fastnn nor the OpenMP fastnn loads, but its wheel's own (if any)
    assert processes["torch-cpu"]["fastnn_imported"] is False
    assert all("torch" in path for path in processes["torch-cpu"]["openmp"])
    assert processes["fastnn-numpy"]["fastnn_imported"] is True
    # the same data, weights and loop in the children: the same losses as in one process
    losses = {mode: {r["backend"]: r["mean_loss"] for r in report["results"]} for mode, report in reports.items()}
    assert losses["isolated"]["fastnn-numpy"] == losses["together"]["fastnn-numpy"]
    assert losses["isolated"]["torch-cpu"] == pytest.approx(losses["together"]["torch-cpu"], rel=1e-5)


def test_a_child_that_cannot_build_its_runner_says_why_in_one_line():
    from bench.isolated import ChildFailed, ProcessRunner

    spec = {"framework": "fastnn", "device": "tpu", "threads": 1, "rows": 8, "sizes": [4, 3], "lr": 1e-3}
    with pytest.raises(ChildFailed) as failed:
        ProcessRunner(spec)
    assert "tpu" in str(failed.value) and "\n" not in str(failed.value)


@pytest.mark.parametrize("products", ["numpy", "onednn"])
def test_a_fastnn_child_waits_as_fastnn_train_would_with_its_products(products):
    from bench.harness import initial_weights
    from bench.isolated import ChildFailed, ProcessRunner
    from fastnn import kernels_onednn

    if products == "onednn" and not kernels_onednn.installed():
        pytest.skip("the [onednn] extra is not installed")
    spec = {"framework": "fastnn", "device": "cpu", "threads": 1, "rows": 8, "sizes": [4, 3], "lr": 1e-3}
    runner = ProcessRunner({**spec, "products": products})
    try:
        assert runner.backend == "numpy on the CPU"  # named before setup (build_isolated takes the GPU's name so)
        with pytest.raises(ChildFailed, match="before setup|has no attribute"):  # refused in a line; the child lives on
            runner.epoch(8)
        runner.setup(4, initial_weights(spec["sizes"]))
        seconds, loss = runner.epoch(8)
        assert seconds > 0 and math.isfinite(loss)
        info = runner.describe()
    finally:
        runner.close()
    # GNU OpenMP's policy is chosen when the child starts, from FASTNN_PRODUCTS, as for `fastnn train`
    wait = info["process"]["openmp_wait"]
    assert info["products"] == products
    assert ("sleep at once" in wait) == (products == "numpy"), wait


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the load meter reads Linux's /proc")
def test_the_load_meter_counts_its_children_as_its_own():
    from bench.report import LoadMeter

    # a child that burns 0.3 s of CPU time, then waits (alive, so that /proc still has its times)
    burn = "import sys, time\nwhile time.process_time() < 0.3: pass\nprint('done', flush=True)\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        meter, alone = LoadMeter([child.pid]), LoadMeter()
        assert child.stdout.readline() == "done\n"
        counted, uncounted = meter.result(), alone.result()
    finally:
        child.communicate("")
    assert counted["this_process_cores"] * counted["seconds"] >= 0.25  # the child's 0.3 s, less its start-up
    assert uncounted["this_process_cores"] * uncounted["seconds"] < 0.25  # this process only waited
