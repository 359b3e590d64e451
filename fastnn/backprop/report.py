"""The report of a trace as a list of blocks (headings, prose, tables of numbers, equations), built
once in the order of a paper solution and rendered three ways by ``fastnn.backprop.render``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastnn.backprop.notation import Notation
from fastnn.backprop.step import Trace


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class NumberTable:
    """Cells are finished strings; the columns in ``formulas`` hold arithmetic written out (may wrap)."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    formulas: tuple[int, ...] = ()


@dataclass(frozen=True)
class Equations:
    """``lhs = steps[0] = steps[1] = ...``, one step a line, as on paper.

    A step given as a tuple of pieces is one line on the terminal and one piece a line in LaTeX,
    where a line cannot wrap by itself.
    """

    lhs: str
    steps: list[str | tuple[str, ...]]


@dataclass(frozen=True)
class ChainRule:
    """The chain rule for one weight: the equations, and the value its own arithmetic gives."""

    blocks: list[Equations | Paragraph]
    gradient: float


def _z_numbers(tr: Trace, n: Notation, ell: int, j: int) -> str:
    """``w^l_{j,1} a^{l-1}_1 + ... + b^l_j`` with the numbers in."""
    layer = tr.problem.layers[ell - 1]
    terms = [n.times(n.num(w, True), n.num(a, True)) for w, a in zip(layer.weights[j - 1], tr.a[ell - 1])]
    return " + ".join(terms + [n.num(layer.biases[j - 1], True)])


def _delta_formula(n: Notation, ell: int | str, j: int | str, depth: int | str) -> str:
    """``delta^l_j`` in symbols: through ``y`` for the output layer, through ``delta^{l+1}`` below it.

    ``ell`` and ``depth`` may be symbols ("l", "L") for the general formula.
    """
    if ell == depth:
        y = n.act(ell, j, depth)
        return n.times(f"({y} - {n.t(j)})", y + n.one_minus(y))
    above = ell + 1 if isinstance(ell, int) else f"{ell}+1"
    a = n.act(ell, j, depth)
    return n.times(a + n.one_minus(a), n.sum("i") + n.w(above, "i", j) + " " + n.delta(above, "i"))


def _delta_numbers(tr: Trace, n: Notation, ell: int, j: int) -> str:
    """:func:`_delta_formula` with the numbers in."""
    a = tr.a[ell][j - 1]
    if ell == tr.depth:
        return n.times(f"({n.num(a)} - {n.num(tr.problem.target[j - 1], True)})", n.num(a), n.one_minus(n.num(a)))
    weights, deltas = tr.problem.layers[ell].weights[:, j - 1], tr.delta[ell + 1]
    paths = " + ".join(n.times(n.num(w, True), n.num(d, True)) for w, d in zip(weights, deltas))
    return n.times(n.num(a), n.one_minus(n.num(a)), n.brackets(paths))


def _split_sum(n: Notation, terms: list[str], tail: str) -> tuple[str, ...]:
    """``[term_1 + term_2 + ...]`` followed by ``tail``, one term a piece (see :class:`Equations`)."""
    left, right = n.big_brackets()
    pieces = [left + terms[0]] + [f"+ {term}" for term in terms[1:]]
    pieces[-1] += right + tail
    return tuple(pieces)


def chain_rule(tr: Trace, weight: tuple[int, int, int], n: Notation) -> ChainRule:
    """``dL/dw^l_{j,k}`` written out factor by factor, then with the numbers, then evaluated.

    Output layer (``l = L``): ``dL/dy_j * dy_j/dz^L_j * dz^L_j/dw^L_{j,k} = (y_j - t_j) y_j (1 - y_j) a^{L-1}_k``.
    Lower layers: a sum over the neurons ``i`` of layer ``l+1``, the paths from ``w`` to the loss,
    ``sum_i dL/dz^{l+1}_i * w^{l+1}_{i,j} * a^l_j (1 - a^l_j) * a^{l-1}_k``, where ``dL/dz^{l+1}_i`` is
    written out through ``y`` when ``l+1 = L`` and is ``delta^{l+1}_i`` otherwise (then the deltas
    from the output down to layer ``l+1`` follow, each with its numbers). The value is computed from
    the factors shown, not taken from :func:`trace`'s gradients; the update ``w - eta * dL/dw`` ends it.
    """
    ell, j, k = weight
    depth, a, eta = tr.depth, tr.a, tr.problem.learning_rate
    y, t = a[depth], tr.problem.target
    w_sym = n.w(ell, j, k)
    lhs = n.d("L", w_sym)
    a_in, a_in_sym = a[ell - 1][k - 1], n.act(ell - 1, k, depth)
    blocks = []
    if ell == depth:
        yj, tj, y_sym = y[j - 1], t[j - 1], n.act(depth, j, depth)
        gradient = (yj - tj) * yj * (1.0 - yj) * a_in
        steps = [
            n.times(n.d("L", y_sym), n.d(y_sym, n.z(depth, j)), n.d(n.z(depth, j), w_sym)),
            n.times(f"({y_sym} - {n.t(j)})", y_sym + n.one_minus(y_sym), a_in_sym),
            n.times(f"({n.num(yj)} - {n.num(tj, True)})", n.num(yj), n.one_minus(n.num(yj)), n.num(a_in, True)),
            n.num(gradient),
        ]
        blocks.append(Equations(lhs, steps))
    else:
        aj, a_sym = a[ell][j - 1], n.act(ell, j, depth)
        w_next = tr.problem.layers[ell].weights[:, j - 1]
        if ell + 1 == depth:
            y_sym, z_sym = n.act(depth, "i", depth), n.z(depth, "i")
            path_sym = [n.d("L", y_sym), n.d(y_sym, z_sym), n.d(z_sym, a_sym)]
            path_formula = [f"({y_sym} - {n.t('i')})", y_sym + n.one_minus(y_sym), n.w(depth, "i", j)]
            upstream = (y - t) * y * (1.0 - y)
            path_numbers = [
                n.times(f"({n.num(yi)} - {n.num(ti, True)})", n.num(yi), n.one_minus(n.num(yi)), n.num(w, True))
                for yi, ti, w in zip(y, t, w_next)
            ]
        else:
            z_sym = n.z(ell + 1, "i")
            path_sym = [n.d("L", z_sym), n.d(z_sym, a_sym)]
            path_formula = [n.delta(ell + 1, "i"), n.w(ell + 1, "i", j)]
            upstream = tr.delta[ell + 1]
            path_numbers = [n.times(n.num(d, True), n.num(w, True)) for d, w in zip(upstream, w_next)]
        paths = upstream * w_next
        gradient = float(np.sum(paths)) * aj * (1.0 - aj) * a_in
        steps = [
            n.sum("i") + n.times(*path_sym, n.d(a_sym, n.z(ell, j)), n.d(n.z(ell, j), w_sym)),
            n.sum("i") + n.times(*path_formula, a_sym + n.one_minus(a_sym), a_in_sym),
            _split_sum(n, path_numbers, n.times("", n.num(aj), n.one_minus(n.num(aj)), n.num(a_in, True))),
            n.times(n.brackets(" + ".join(n.num(p, True) for p in paths)), n.num(aj * (1.0 - aj)),
                    n.num(a_in, True)),
            n.num(gradient),
        ]
        blocks.append(Equations(lhs, steps))
        if ell + 1 < depth:  # the sum used delta^{l+1}: show where it comes from, from the output down
            blocks.append(Paragraph(f"where, from the output layer down to layer {n.math(str(ell + 1))}:"))
            blocks += [
                Equations(n.delta(upper, i), [_delta_formula(n, upper, i, depth), _delta_numbers(tr, n, upper, i),
                                              n.num(tr.delta[upper][i - 1])])
                for upper in range(depth, ell, -1) for i in range(1, len(tr.delta[upper]) + 1)
            ]
    old = tr.problem.layers[ell - 1].weights[j - 1, k - 1]
    blocks.append(Equations(
        f"{w_sym} {n.arrow} {w_sym} - {n.eta}{n.dot}{lhs}",
        [n.times(f"{n.num(old)} - {n.num(eta)}", n.num(gradient, True)), n.num(old - eta * gradient)],
    ))
    return ChainRule(blocks, gradient)


def _layer_title(ell: int, depth: int) -> str:
    return f"Layer {ell} ({'output' if ell == depth else 'hidden'})"


def _overview(tr: Trace, n: Notation) -> list:
    m, depth = n.math, tr.depth
    half = r"\frac{1}{2}" if n.latex else "1/2"
    logistic = r"\frac{1}{1 + e^{-z}}" if n.latex else "1/(1 + e^(-z))"
    w_ljk, b_lj = n.w("l", "j", "k"), n.b("l", "j")
    z_def = f"{n.z('l', 'j')} = {n.sum('k')}{w_ljk} {n.sym('a', 'l-1', 'k')} + {b_lj}"
    return [
        Heading(f"Backpropagation trace: one gradient step on a {'-'.join(map(str, tr.problem.sizes))} "
                "sigmoid network", 1),
        Paragraph(
            f"Convention: {m(w_ljk)} joins neuron {m('k')} of layer {m('l-1')} to neuron {m('j')} of layer "
            f"{m('l')}; {m(b_lj)} is the bias of neuron {m('j')} of layer {m('l')}. Layer 0 is the input "
            f"{m('x')}, layer {m(f'L = {depth}')} the output {m('y')}; neurons count from 1. In the file, "
            f"{n.code('layers[l-1].weights[j-1][k-1]')} is {m(w_ljk)}."
        ),
        Paragraph(
            f"Each neuron: {m(z_def)} and "
            f"{m(n.sym('a', 'l', 'j') + ' = ' + n.sigmoid(n.z('l', 'j')))}, with "
            f"{m(n.sigmoid('z') + ' = ' + logistic)}. Loss {m(f'L = {half} ' + n.sum('i') + '(y_i - t_i)^2')}, "
            f"learning rate {m(n.eta + ' = ' + n.num(tr.problem.learning_rate))}."
        ),
    ]


def _forward(tr: Trace, n: Notation) -> list:
    m, depth, problem = n.math, tr.depth, tr.problem
    blocks: list = [
        Heading("Forward pass"),
        NumberTable("Input (layer 0)", ["k", m(n.act(0, "k", depth))],
              [[str(k), m(n.num(v))] for k, v in enumerate(problem.x, start=1)]),
    ]
    for ell in range(1, depth + 1):
        z_sum = f"{n.sum('k')}{n.w(ell, 'j', 'k')} {n.act(ell - 1, 'k', depth)} + {n.b(ell, 'j')}"
        headers = ["j", m(f"{n.z(ell, 'j')} = {z_sum}"), m(n.z(ell, "j")),
                   m(f"{n.act(ell, 'j', depth)} = {n.sigmoid(n.z(ell, 'j'))}")]
        rows = [[str(j), m(_z_numbers(tr, n, ell, j)), m(n.num(tr.z[ell][j - 1])), m(n.num(tr.a[ell][j - 1]))]
                for j in range(1, len(tr.z[ell]) + 1)]
        if ell == depth:
            headers.append(m(n.t("j")))
            for row, target in zip(rows, problem.target):
                row.append(m(n.num(target)))
        blocks.append(NumberTable(_layer_title(ell, depth), headers, rows, formulas=(1,)))
    half = r"\frac{1}{2}" if n.latex else "1/2"
    squares = " + ".join(f"({n.num(yi)} - {n.num(ti, True)})^2" for yi, ti in zip(tr.a[depth], problem.target))
    blocks.append(Equations("L", [f"{half} {n.sum('i')}(y_i - t_i)^2", f"{half} {n.brackets(squares)}",
                                  n.num(tr.loss)]))
    return blocks


def _backward(tr: Trace, n: Notation) -> list:
    m, depth = n.math, tr.depth
    sigma_z = n.sigmoid("z")
    derivative = f"{n.sigmoid('z', prime=True)} = {n.times(sigma_z, n.one_minus(sigma_z))}"
    blocks: list = [
        Heading("Backward pass"),
        Paragraph(
            f"{m(n.delta('l', 'j') + ' = ' + n.d('L', n.z('l', 'j')))}, using {m(derivative)}; from the output "
            f"layer {m('L')} down: {m(n.delta('L', 'j') + ' = ' + _delta_formula(n, 'L', 'j', 'L'))} and "
            f"{m(n.delta('l', 'j') + ' = ' + _delta_formula(n, 'l', 'j', 'L'))} for {m('l < L')}."
        ),
    ]
    for ell in range(depth, 0, -1):
        rows = [[str(j), m(_delta_numbers(tr, n, ell, j)), m(n.num(tr.delta[ell][j - 1]))]
                for j in range(1, len(tr.delta[ell]) + 1)]
        headers = ["j", m(f"{n.delta(ell, 'j')} = {_delta_formula(n, ell, 'j', depth)}"), m(n.delta(ell, "j"))]
        blocks.append(NumberTable(_layer_title(ell, depth), headers, rows, formulas=(1,)))
    return blocks


def _update(tr: Trace, n: Notation) -> list:
    m, problem = n.math, tr.problem
    new_p = f"p - {n.eta}{n.dot}{n.d('L', 'p')}"
    blocks: list = [
        Heading("Gradients and updated parameters"),
        Paragraph(
            f"{m(n.d('L', n.w('l', 'j', 'k')) + ' = ' + n.delta('l', 'j') + ' ' + n.sym('a', 'l-1', 'k'))} and "
            f"{m(n.d('L', n.b('l', 'j')) + ' = ' + n.delta('l', 'j'))}; each parameter {m('p')} becomes "
            f"{m(new_p)} with {m(n.eta + ' = ' + n.num(problem.learning_rate))}."
        ),
    ]
    for ell, layer in enumerate(problem.layers, start=1):
        delta, a_in = tr.delta[ell], tr.a[ell - 1]
        rows = [[m(n.w(ell, j, k)), m(n.num(layer.weights[j - 1, k - 1])), m(n.num(tr.grad_w[ell][j - 1, k - 1])),
                 m(n.times(n.num(delta[j - 1]), n.num(a_in[k - 1], True))), m(n.num(tr.new_w[ell][j - 1, k - 1]))]
                for j in range(1, len(delta) + 1) for k in range(1, len(a_in) + 1)]
        rows += [[m(n.b(ell, j)), m(n.num(layer.biases[j - 1])), m(n.num(tr.grad_b[ell][j - 1])),
                  m(n.delta(ell, j)), m(n.num(tr.new_b[ell][j - 1]))]
                 for j in range(1, len(delta) + 1)]
        headers = ["p", "value", m(n.d("L", "p")), m(n.times(n.delta(ell, "j"), n.act(ell - 1, "k", tr.depth))),
                   m(new_p)]
        blocks.append(NumberTable(_layer_title(ell, tr.depth), headers, rows, formulas=(3,)))
    return blocks


def _chain(tr: Trace, weight: tuple[int, int, int], n: Notation) -> list:
    m, depth = n.math, tr.depth
    ell, j, k = weight
    w_sym, z_sym, a_sym = m(n.w(ell, j, k)), m(n.z(ell, j)), m(n.act(ell, j, depth))
    if ell == depth:
        path = f"through {z_sym} and {a_sym}"
    else:
        path = f"through {z_sym} and {a_sym}, then through every neuron {m('i')} of layer {ell + 1} that {a_sym} feeds"
    return [
        Heading(f"Chain rule for {w_sym}"),
        Paragraph(f"From {w_sym} to the loss {path}:"),
        *chain_rule(tr, weight, n).blocks,
    ]


def build_report(tr: Trace, weight: tuple[int, int, int], n: Notation) -> list:
    """The whole trace as blocks (headings, prose, tables, equations), in the order of a paper solution:
    conventions, forward pass and loss, backward pass (deltas), gradients and updates, the chain rule."""
    return _overview(tr, n) + _forward(tr, n) + _backward(tr, n) + _update(tr, n) + _chain(tr, weight, n)
