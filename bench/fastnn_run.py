"""fastnn as the benchmark runs it: the product's own batch loop, ``fastnn.train.train_epoch``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fastnn import kernels_cpu
from fastnn.network import Network
from fastnn.optimizers import Adam
from fastnn.train import train_epoch


class FastnnRunner:
    """fastnn on one backend (``fastnn.backend.Backend``), the data put on its device once."""

    framework = "fastnn"
    reference = False

    def __init__(
        self,
        backend: Any,
        x: np.ndarray,
        y: np.ndarray,
        sizes: list[int],
        lr: float,
        seed: int,
        tf32: bool = False,
        engine: str | None = None,
        products: str | None = None,
    ):
        self.backend, self.sizes, self.lr, self.seed = backend, sizes, lr, seed
        self.tf32 = backend.set_tf32(tf32) and tf32  # as `fastnn train --tf32` does; False off the GPU
        # the CPU optimizer kernels' engine (fastnn.kernels_cpu), set around each of this runner's epochs
        self.engine = engine
        # the library of the CPU's matrix products (fastnn.kernels_cpu.products), set around each epoch too
        self.products = products
        chosen = ",".join(c for c in (engine, products) if c)
        self.label = f"fastnn-{backend.name}" + (f"[{chosen}]" if chosen else "")
        self.device = "gpu" if backend.name == "cupy" else "cpu"
        self.x = backend.asarray(x, "float32")
        self.y = backend.asarray(y, "int64")
        backend.synchronize()

    def setup(self, batch_size: int, weights: dict[str, np.ndarray]) -> None:
        self.batch_size = batch_size
        self.network = Network(self.sizes, "relu", backend=self.backend, seed=self.seed)
        self.network.load_state_dict(weights)
        self.optimizer = Adam()
        self.rng = self.backend.rng(self.seed + 1)

    def epoch(self, rows: int) -> tuple[float, float]:
        b = self.backend
        x, y = self.x[:rows], self.y[:rows]
        b.synchronize()
        previous = kernels_cpu.set_engine(self.engine) if self.engine else None
        previous_products = kernels_cpu.set_products(self.products) if self.products else None
        started = time.perf_counter()
        loss_sum, _correct = train_epoch(
            self.network,
            self.optimizer,
            x,
            y,
            batch_size=self.batch_size,
            lr=self.lr,
            rng=self.rng,
            gather=b.gather_batches,  # as the product's Trainer does
        )
        mean_loss = float(loss_sum) / rows  # the one read-back of an epoch, as the Trainer does it
        b.synchronize()
        seconds = time.perf_counter() - started
        if previous:
            kernels_cpu.set_engine(previous)
        if previous_products:
            kernels_cpu.set_products(previous_products)
        return seconds, mean_loss

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": self.backend.describe(),
            "adam": "fused" if self.optimizer.fused else "formula",
        }
        if self.backend.name == "numpy":
            info["update_engine"] = self.engine or kernels_cpu.engine()
            info["products"] = self.products or kernels_cpu.products()
        if self.backend.name == "cupy":
            pool = self.backend.xp.get_default_memory_pool()
            info["memory_pool_bytes"] = {"used": pool.used_bytes(), "held": pool.total_bytes()}
            info["tf32"] = self.tf32
        return info
