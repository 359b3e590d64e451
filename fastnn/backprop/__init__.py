"""Backpropagation by hand, checked by machine: the full trace of one gradient step (assignment task 1).

What it is for: a small fully-connected network whose neurons all use the sigmoid, one input ``x``, one
target ``t``, the loss ``L = 1/2 * sum_i (y_i - t_i)^2`` and a learning rate ``eta``. It computes and
writes out every number a person computes on paper -- each neuron's ``z`` and activation, the loss,
each neuron's delta, the gradient of every weight and bias, the updated parameters ``w - eta * grad``
-- and, for one chosen weight, the chain rule with the numbers substituted. The trace renders as rich
text for the terminal, as Markdown or as LaTeX for a report.

What it is not: the training code (``fastnn.layers``, ``fastnn.network``). It runs on the host in
float64 with NumPy, one example and no batches, so that each number can be held against a hand
computation.

Read in this order: ``step.py`` (the math of one gradient step: the problem's numbers, the forward
and backward pass, the update), ``problem.py`` (reading a problem file, its limits, the example, a weight index),
``notation.py`` (how symbols and numbers are spelled), ``report.py`` (the trace as blocks, and the
chain rule for one weight), ``render.py`` (terminal, Markdown, LaTeX). The command is
``fastnn_cli.backprop`` (``fastnn backprop``). (The math is not in ``trace.py``: a submodule of that
name would be hidden by the function ``trace`` this package exports.)

Index convention (Nielsen's book): layer 0 is the input ``x``, layer ``L`` the output ``y``, neurons
are numbered from 1. ``w^l_{j,k}`` joins neuron ``k`` of layer ``l-1`` to neuron ``j`` of layer ``l``;
``b^l_j`` is the bias of neuron ``j`` of layer ``l``. In the input file ``layers[l-1]["weights"]`` is
the matrix ``W^l`` of shape ``(n_l, n_{l-1})``: ``weights[j-1][k-1] = w^l_{j,k}``, one row per neuron of
layer ``l``, so that ``z^l = W^l a^{l-1} + b^l``. In the code the layer index ``l`` is spelled ``ell``
(a lone ``l`` reads like ``1``), and per-layer values are dicts keyed by it: ``trace.z[ell]``.
"""

from fastnn.backprop.notation import Notation
from fastnn.backprop.problem import (
    CONVENTION,
    MAX_FILE_BYTES,
    MAX_LAYERS,
    MAX_PARAMETERS,
    dump_problem,
    example_problem,
    load_problem,
    parse_problem,
    parse_weight,
    problem_from_text,
)
from fastnn.backprop.render import render_latex, render_markdown, render_text
from fastnn.backprop.report import ChainRule, Equations, Heading, NumberTable, Paragraph, build_report, chain_rule
from fastnn.backprop.step import LayerParameters, Problem, ProblemError, Trace, loss, sigmoid, trace

__all__ = [
    "CONVENTION", "MAX_FILE_BYTES", "MAX_LAYERS", "MAX_PARAMETERS", "ChainRule", "Equations", "Heading",
    "LayerParameters", "Notation", "NumberTable", "Paragraph", "Problem", "ProblemError", "Trace", "build_report",
    "chain_rule", "dump_problem", "example_problem", "load_problem", "loss", "parse_problem", "parse_weight",
    "problem_from_text", "render_latex", "render_markdown", "render_text", "sigmoid", "trace",
]  # fmt: skip
