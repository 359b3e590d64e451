"""Pool several runs of the benchmark: ``python -m bench.pool FILE.json FILE.json ...``.

One run's interval (:func:`bench.harness.median_interval`) says how well its rounds pin that run's
median, but on a shared host the same code's paired ratio also moves from one run to the next (a few
percent on the 2-core Xeon of ``bench/results/README.md``, more than one run's interval), so a claim
such as "no slower than PyTorch" needs several runs, made at different times. This pools the JSON
files of such runs: for each fastnn row, batch size and peer, the median of every round's paired
ratio from all the runs, and a 95% interval from a two-level bootstrap that draws the runs with
replacement and then the rounds within each drawn run, so that it widens with the spread between
runs and not only within them. With two or three runs that interval is rough (a bootstrap sees the
spread between runs only through the runs it has); it is still wider, and more honest, than
pretending the rounds of all runs came from one.

Only runs of the same set-up are pooled: the same workload and options, and the same CPU, libraries
and kernels (``OPENBLAS_CORETYPE``, ``ONEDNN_MAX_CPU_ISA``, PyTorch's instruction set); a file that
differs is refused, naming what differs. The number of rounds and the batch sizes may differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.harness import writable_file
from fastnn.atomic import write_atomic

# what must be the same in every pooled run (settings: the workload and options; machine: CPU, libraries, kernels)
SAME_SETTINGS = ("sizes", "activation", "optimizer", "lr", "dtype", "steps", "rows", "threads", "products",
                 "engines", "tf32", "isolate")  # fmt: skip
SAME_MACHINE = ("cpu", "cores", "numpy", "numpy_blas", "openblas_coretype", "update_engine", "products",
                "onednn_max_cpu_isa", "torch", "torch_blas", "torch_mkl_instructions", "torch_cpu_capability",
                "gpu")  # fmt: skip


class PoolError(ValueError):
    """A file that cannot be pooled, in one line."""


@dataclass
class Pooled:
    """The paired ratios of one fastnn row against one peer at one batch size, run by run."""

    backend: str
    peer: str
    batch_size: int
    runs: list[list[float]] = field(default_factory=list)  # each run's rounds' ratios, fastnn / peer

    @property
    def median(self) -> float:
        return statistics.median(r for run in self.runs for r in run)

    def interval(self, resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
        """95% interval of the pooled median: runs drawn with replacement, then rounds within each."""
        rng = np.random.default_rng(seed)
        runs = [np.asarray(run, dtype=np.float64) for run in self.runs]
        medians = np.empty(resamples)
        for i in range(resamples):
            drawn = [runs[j] for j in rng.integers(0, len(runs), size=len(runs))]
            medians[i] = np.median(np.concatenate([run[rng.integers(0, run.size, size=run.size)] for run in drawn]))
        low, high = np.percentile(medians, [2.5, 97.5])
        return float(low), float(high)


def verdict(low: float, high: float) -> str:
    """What an interval of fastnn's paired ratio says: "faster" below 1, "slower" above, else "level"."""
    if high < 1.0:
        return "faster"
    if low > 1.0:
        return "slower"
    return "level"


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise PoolError(f"{path}: cannot read it ({exc.strerror}); name a file `python -m bench --out` wrote") from None
    except json.JSONDecodeError:
        raise PoolError(f"{path}: not JSON; name a file `python -m bench --out` wrote") from None
    if not isinstance(data, dict) or not {"settings", "machine", "results"} <= data.keys():
        raise PoolError(f"{path}: not a benchmark result (no settings, machine and results); "
                        "name a file `python -m bench --out` wrote")  # fmt: skip
    return data


def setup(data: dict) -> dict:
    """What must match between pooled runs."""
    settings, machine = data["settings"], data["machine"]
    return {**{f"settings.{k}": settings.get(k) for k in SAME_SETTINGS},
            **{f"machine.{k}": machine.get(k) for k in SAME_MACHINE}}  # fmt: skip


def pool(paths: list[Path]) -> list[Pooled]:
    """The paired ratios of every fastnn row against every peer it was paired with, across ``paths``."""
    if not paths:
        raise PoolError("no files: name the JSON files of runs of the same set-up")
    first = None
    pooled: dict[tuple[str, str, int], Pooled] = {}
    for path in paths:
        data = load(path)
        this = setup(data)
        if first is None:
            first = (path, this)
        else:
            differ = [k for k in this if this[k] != first[1][k]]
            if differ:
                k = differ[0]
                raise PoolError(f"{path}: {k} is {this[k]!r}, but {first[0]} has {first[1][k]!r}; "
                                "pool only runs of the same set-up")  # fmt: skip
        rows = {(r["backend"], r["batch_size"]): r for r in data["results"]}
        for (backend, batch), row in rows.items():
            for peer in row.get("paired_ratios") or {}:
                other = rows.get((peer, batch))
                if other is None:
                    continue
                ours, theirs = row["epoch_ms"]["all"], other["epoch_ms"]["all"]
                entry = pooled.setdefault((backend, peer, batch), Pooled(backend, peer, batch))
                entry.runs.append([a / b for a, b in zip(ours, theirs)])
    if not pooled:
        raise PoolError("no fastnn row paired with a peer in these files (runs without PyTorch have none, and so do "
                        "files from before the benchmark recorded paired ratios); run `python -m bench` with PyTorch")
    return sorted(pooled.values(), key=lambda p: (p.batch_size, p.backend, p.peer))


def _runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


def report(entries: list[Pooled], paths: list[Path]) -> str:
    lines = [f"pooled from {_runs(len(paths))}: " + ", ".join(p.name for p in paths),
             "paired ratio = fastnn's epoch / the peer's of the same round; below 1: fastnn faster", ""]  # fmt: skip
    for e in entries:
        low, high = e.interval()
        each = ", ".join(f"{statistics.median(run):.3f}x ({len(run)})" for run in e.runs)
        rounds = sum(map(len, e.runs))
        lines.append(
            f"{e.backend} / {e.peer}, batch {e.batch_size}: pooled {e.median:.3f}x "
            f"(95% interval {low:.3f}-{high:.3f}, {rounds} rounds of {_runs(len(e.runs))}): {verdict(low, high)}"
        )
        lines.append(f"    each run's median (rounds): {each}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="JSON files written by `python -m bench --out`")
    parser.add_argument("--out", type=writable_file, help="also write the report to this text file")
    args = parser.parse_args(argv)
    try:
        text = report(pool(args.files), args.files)
    except PoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    if args.out:
        command = "python -m bench.pool " + " ".join(str(p) for p in args.files)
        write_atomic(args.out, (command + "\n" + text + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
