"""fastnn: fully-connected neural networks written once against an array namespace ``xp``.

NumPy runs it on the CPU, CuPy on an NVIDIA GPU, and ``array-api-strict`` on a simulated device
that makes GPU-only mistakes fail on a laptop. See ``fastnn.backend`` for the one place where the
namespace is chosen.
"""

__version__ = "0.1.0"
