"""Datasets, read on the host as NumPy arrays. Only CIFAR-10 for now (``fastnn.data.cifar10``)."""

from fastnn.data.cifar10 import (
    CLASS_NAMES,
    Cifar10Raw,
    Cifar10Split,
    DataError,
    data_dir,
    load_cifar10,
    prepare,
)

__all__ = ["CLASS_NAMES", "Cifar10Raw", "Cifar10Split", "DataError", "data_dir", "load_cifar10", "prepare"]
