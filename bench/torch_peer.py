"""The PyTorch peer: the identical network and loop, written the way a PyTorch user would write it fast.

The data sits on the device as tensors; each epoch shuffles with ``torch.randperm`` on the device and
gathers batches with ``index_select``; gradients are dropped with ``zero_grad(set_to_none=True)``;
the loss and the number correct are summed on the device and read back once per epoch, as fastnn's
loop does. The optimizer is ``torch.optim.Adam`` with its default implementation for the device
(``--torch-adam`` picks another).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError:  # the peer is optional: pip install torch
    torch = None


def torch_status() -> str:
    """ "ok: <version>" or why the peer cannot run."""
    if torch is None:
        return "missing: PyTorch is not installed (pip install torch)"
    return f"ok: torch {torch.__version__}"


def cuda_status() -> str:
    if torch is None:
        return torch_status()
    if not torch.cuda.is_available():
        return "unavailable: this PyTorch build or machine has no CUDA device"
    return f"ok: {torch.cuda.get_device_name()}"


class TorchRunner:
    """PyTorch on ``device`` ("cpu" or "cuda"); ``adam`` is "default", "foreach" or "fused".

    The ``reference`` runner of a device is the one fastnn's ratios refer to; others are labelled
    with their Adam, e.g. ``torch-cpu[fused]``.
    """

    framework = "torch"

    def __init__(
        self,
        device: str,
        x: np.ndarray,
        y: np.ndarray,
        sizes: list[int],
        lr: float,
        adam: str = "default",
        reference: bool = True,
    ):
        self.torch_device = torch.device(device)
        self.label = f"torch-{device}" if reference else f"torch-{device}[{adam}]"
        self.reference = reference
        self.device = "gpu" if device == "cuda" else "cpu"
        self.sizes, self.lr, self.adam = sizes, lr, adam
        self.x = torch.from_numpy(x).to(self.torch_device)  # on the CPU this shares the host array
        self.y = torch.from_numpy(y).to(self.torch_device)
        self._sync()

    def _sync(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize()

    def setup(self, batch_size: int, weights: dict[str, np.ndarray]) -> None:
        self.batch_size = batch_size
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            linear = nn.Linear(n_in, n_out)
            with torch.no_grad():  # fastnn's W is (n_in, n_out); torch keeps (n_out, n_in)
                linear.weight.copy_(torch.from_numpy(weights[f"{2 * i}.W"].T))
                linear.bias.copy_(torch.from_numpy(weights[f"{2 * i}.b"]))
            layers.append(linear)
            if i < len(self.sizes) - 2:
                layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers).to(self.torch_device)
        options = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[self.adam]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, **options)
        self.generator = torch.Generator(device=self.torch_device).manual_seed(1)

    def epoch(self, rows: int) -> tuple[float, float]:
        x, y, model, optimizer = self.x, self.y, self.model, self.optimizer
        self._sync()
        started = time.perf_counter()
        order = torch.randperm(rows, device=self.torch_device, generator=self.generator)
        loss_sum = torch.zeros((), device=self.torch_device)
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        for start in range(0, rows, self.batch_size):
            index = order[start : start + self.batch_size]
            xb, yb = x.index_select(0, index), y.index_select(0, index)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss * index.shape[0]
                correct += (logits.argmax(1) == yb).sum()
        mean_loss = loss_sum.item() / rows
        self._sync()
        return time.perf_counter() - started, mean_loss

    def describe(self) -> dict[str, Any]:
        info = {"adam": self.adam, "reference": self.reference, "threads": torch.get_num_threads()}
        if self.torch_device.type == "cuda":
            info["tf32"] = torch.backends.cuda.matmul.allow_tf32
        return info
