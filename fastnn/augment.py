"""Mixing examples in training and averaging over flips at test time, on the device.

``Mixup`` blends pairs of examples and their targets (Zhang et al., 2018); the loss takes the soft
targets it makes (:class:`fastnn.losses.SoftmaxCrossEntropy`). ``flip_averaged_probabilities``
averages a network's class probabilities over each image and its mirror image. ``augment_images``
makes the random flips and shifts of training (a random crop of the image padded by ``shift``
pixels of the mean colour: the usual "random crop with padding" of CIFAR-10).

Like the math core, nothing here imports NumPy or CuPy.
"""

from __future__ import annotations

import math
import random
from typing import Any

from array_api_compat import device

from fastnn.backend import namespace
from fastnn.fused import fused_flip_shift
from fastnn.losses import one_hot, softmax

Array = Any


class Mixup:
    """``x' = lam * x + (1 - lam) * x[perm]``, ``t' = lam * t + (1 - lam) * t[perm]``, one
    ``lam ~ Beta(alpha, alpha)`` per batch, ``perm`` a random pairing of the batch's rows.

    ``lam`` is drawn on the host from ``seed`` (a Python number, so nothing is read back from the
    device); ``perm`` comes from the device generator given to each call.
    """

    def __init__(self, alpha: float, seed: int | None = 0):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"mixup alpha must be a finite number > 0, got {alpha!r}")
        self.alpha = float(alpha)
        self._host_rng = random.Random(seed)

    def __call__(self, x: Array, targets: Array, n_classes: int, rng: Any) -> tuple[Array, Array]:
        """Mixed inputs (batch, features) and target rows (batch, n_classes) for ``x`` and ``targets``
        (labels (batch,) or probability rows); ``rng`` is a :class:`fastnn.rng.DeviceRNG`."""
        xp = namespace(x)
        lam = self._host_rng.betavariate(self.alpha, self.alpha)
        rows = targets if targets.ndim == 2 else one_hot(targets, n_classes, x.dtype)
        partner = rng.permutation(x.shape[0])
        mixed_x = lam * x + (1.0 - lam) * xp.take(x, partner, axis=0)
        mixed_targets = lam * rows + (1.0 - lam) * xp.take(rows, partner, axis=0)
        return mixed_x, mixed_targets

    def get_state(self) -> list:
        """The host generator's state, JSON-able (a checkpoint's, for ``--resume``)."""
        version, internal, gauss_next = self._host_rng.getstate()
        return [version, list(internal), gauss_next]

    def set_state(self, state: list) -> None:
        """Continue from :meth:`get_state`'s state."""
        version, internal, gauss_next = state
        self._host_rng.setstate((version, tuple(internal), gauss_next))

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha})"


def hflip(x: Array) -> Array:
    """Mirror images left to right: ``x`` (batch, 3072) holds three 32x32 planes per row."""
    xp = namespace(x)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise ValueError(f"flips need rows of 32x32 colour images (3072 values), got shape {tuple(x.shape)}")
    images = xp.reshape(x, (x.shape[0], 3, 32, 32))
    return xp.reshape(xp.flip(images, axis=3), (x.shape[0], 3 * 32 * 32))


def flip_averaged_probabilities(network: Any, x: Array, batch_size: int = 2000) -> Array:
    """Class probabilities (batch, classes) averaged over each image and its mirror image:
    ``p = (softmax(f(x)) + softmax(f(hflip(x)))) / 2``, in evaluation mode, ``batch_size`` rows at a time."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    xp = namespace(x)
    parts = []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : min(start + batch_size, x.shape[0]), ...]
        parts.append(0.5 * (softmax(network.logits(batch)) + softmax(network.logits(hflip(batch)))))
    if not parts:
        return xp.zeros((0, network.n_classes), dtype=x.dtype, device=device(x))
    return xp.concat(parts)


def augment_images(x: Array, rng: Any, shift: int = 2) -> Array:
    """Random horizontal flips and random shifts of up to ``shift`` pixels of CIFAR rows, on the device.

    ``x`` is (batch, 3072): three 32x32 planes per row. Output pixel (r, c) of an image is input
    pixel (r + dy, c' + dx) with c' = c or 31 - c (flipped), dy, dx uniform in [-shift, shift], and 0
    where that falls outside the image; 0 is the mean colour, as the inputs are standardised per
    channel. Both are done by one gather with computed indices, the cheapest form on every backend.
    """
    xp = namespace(x)
    batch, dev = x.shape[0], device(x)
    flip = rng.uniform((batch,), dtype="float32") < 0.5
    dx = rng.integers(2 * shift + 1, (batch,)) - shift
    dy = rng.integers(2 * shift + 1, (batch,)) - shift
    compiled = fused_flip_shift(xp)  # the same pixels as one compiled loop (NumPy with numba)
    if compiled is not None:
        return compiled(x, flip, dy, dx)
    pixel = xp.arange(32, device=dev)
    cols = xp.where(flip[:, None], 31 - pixel[None, :], pixel[None, :]) + dx[:, None]  # (batch, 32)
    rows = pixel[None, :] + dy[:, None]
    inside = ((rows >= 0) & (rows < 32))[:, :, None] & ((cols >= 0) & (cols < 32))[:, None, :]  # (batch, 32, 32)
    # minimum/maximum, not clip: array-api-compat's clip for CuPy assigns through boolean masks, and
    # each of those reads a count back from the device
    source = xp.minimum(xp.maximum(rows, 0), 31)[:, :, None] * 32 + xp.minimum(xp.maximum(cols, 0), 31)[:, None, :]
    offsets = xp.arange(batch, device=dev)[:, None, None, None] * 3072 + xp.arange(3, device=dev)[:, None, None] * 1024
    index = xp.reshape(offsets + source[:, None, :, :], (-1,))  # (batch * 3072,) positions in x
    pixels = xp.reshape(xp.take(xp.reshape(x, (-1,)), index), (batch, 3, 32, 32))
    return xp.reshape(xp.where(inside[:, None, :, :], pixels, 0.0), (batch, 3072))


def check_augmentable(width: int) -> None:
    """Augmentation is for CIFAR-10's images: rows of 3 x 32 x 32 values."""
    if width != 3 * 32 * 32:
        raise ValueError(
            f"augmentation flips and shifts 32x32 colour images (3072 values), but the inputs have "
            f"{width}; turn it off (--no-augment, augment=False)"
        )
