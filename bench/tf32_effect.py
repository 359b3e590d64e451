"""What TF32 does to accuracy, emulated on the CPU: ``python -m bench.tf32_effect``.

``fastnn train --tf32`` lets cuBLAS run float32 matrix products on TensorFloat-32 tensor cores: each
input is rounded to 10 mantissa bits (float32 has 23) and the products are summed in float32. This
script trains the default recipe on the real CIFAR-10 twice per seed, once in float32 and once with
every input of every matrix product (forward ``x @ W``, backward ``x.T @ dy`` and ``dy @ W.T``)
rounded to TF32 first, to the nearest value, with NumPy. It measures the arithmetic's effect on
test accuracy without a GPU; it cannot measure speed, which ``python -m bench --tf32`` does on one.

Writes a JSON file (``--out``) and prints a table; needs FASTNN_DATA_DIR (or ``--data-dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import numpy as np

from bench.harness import positive_int, writable_file
from fastnn.atomic import write_atomic
from fastnn.backend import get_backend
from fastnn.config import TrainConfig
from fastnn.data import DataError, load_cifar10, prepare
from fastnn.layers import Dense
from fastnn.train import Trainer, evaluate


def to_tf32(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to TF32's 10 mantissa bits (to nearest, ties away from zero), as float32."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


class TF32Dense(Dense):
    """Dense whose three matrix products see their inputs as TF32 tensor cores do."""

    def forward(self, x, training=False):
        self._x = x
        y = to_tf32(x) @ to_tf32(self.params["W"])
        y += self.params["b"]
        return y

    def backward(self, grad_out):
        g = to_tf32(grad_out)
        self.grads = {"W": to_tf32(self._x).T @ g, "b": np.sum(grad_out, axis=0)}
        return g @ to_tf32(self.params["W"]).T if self.input_grad else None


def train_once(config: TrainConfig, split, emulate_tf32: bool) -> dict:
    backend = get_backend("cpu")
    network = config.make_network(backend, split.x_train.shape[1], len(split.class_names))
    if emulate_tf32:
        for layer in network.layers:
            if type(layer) is Dense:
                layer.__class__ = TF32Dense
    started = time.perf_counter()
    trainer = Trainer(config, backend)
    trainer.fit(split.x_train, split.y_train, split.x_val, split.y_val, network=network)
    loss, accuracy = evaluate(network, split.x_test, split.y_test)
    return {
        "precision": "tf32 (emulated)" if emulate_tf32 else "float32",
        "seed": config.seed,
        "test_accuracy": accuracy,
        "test_loss": loss,
        "final_train_loss": trainer.history[-1].train_loss,
        "best_val_accuracy": max(r.val_accuracy for r in trainer.history),
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tf32_effect", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=seed_list, default=[0, 1, 2], help="comma-separated seeds; each trains both precisions"
    )
    parser.add_argument("--epochs", type=positive_int, default=TrainConfig().epochs)
    parser.add_argument("--data-dir", default=None, help="folder with cifar-10-python.tar.gz [env FASTNN_DATA_DIR]")
    parser.add_argument(
        "--out", type=writable_file, default=None, help="write the runs to this JSON file (the committed result: "
        "bench/results/tf32-emulated-cpu.json)"
    )
    args = parser.parse_args(argv)
    try:
        split = prepare(load_cifar10(args.data_dir))
    except DataError as exc:
        print(f"python -m bench.tf32_effect: {exc}", file=sys.stderr)
        return 2
    base = TrainConfig(device="cpu", epochs=args.epochs)
    runs = []
    for seed in args.seeds:
        for emulate in (False, True):
            run = train_once(dataclasses.replace(base, seed=seed), split, emulate)
            runs.append(run)
            print(f"seed {seed} {run['precision']:>16}: test {run['test_accuracy']:.2%} in {run['seconds']:.0f}s")
    summary = {}
    for precision in ("float32", "tf32 (emulated)"):
        accs = [r["test_accuracy"] for r in runs if r["precision"] == precision]
        summary[precision] = {"mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0}
        print(f"{precision:>16}: test accuracy {summary[precision]['mean']:.2%} ± {summary[precision]['std']:.2%}")
    report = {
        "command": " ".join(["python -m bench.tf32_effect", *(sys.argv[1:] if argv is None else argv)]),
        "config": base.to_dict(),
        "rounding": "each input of each matrix product rounded to 10 mantissa bits, to nearest (ties away)",
        "runs": runs,
        "summary": summary,
    }
    if args.out:
        write_atomic(args.out, json.dumps(report, indent=2).encode())
        print(f"wrote {args.out}")
    return 0


def seed_list(text: str) -> list[int]:
    """An argparse type: comma-separated seeds, whole numbers of 0 or more."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more seeds of 0 or more")
    return seeds


if __name__ == "__main__":
    raise SystemExit(main())
