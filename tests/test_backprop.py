"""``fastnn backprop``: its numbers against a hand computation and finite differences, its CLI end to end."""

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fastnn import backprop as bp

try:
    from fastnn_cli.backprop import backprop
except ModuleNotFoundError:  # not installed: the folder cli/ is the package fastnn_cli
    from cli.backprop import backprop

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "backprop_assignment.json"

# The 2-2-2 network of Matt Mazur, "A Step by Step Backpropagation Example" (2015), in our convention:
# his w1..w4 are w^1_{1,1}, w^1_{1,2}, w^1_{2,1}, w^1_{2,2}; w5..w8 are w^2_{1,1}, w^2_{1,2}, w^2_{2,1}, w^2_{2,2}.
MAZUR = {
    "x": [0.05, 0.10],
    "target": [0.01, 0.99],
    "learning_rate": 0.5,
    "layers": [
        {"weights": [[0.15, 0.20], [0.25, 0.30]], "biases": [0.35, 0.35]},
        {"weights": [[0.40, 0.45], [0.50, 0.55]], "biases": [0.60, 0.60]},
    ],
}


def random_problem(sizes, seed):
    """A network with the given layer sizes, weights of order 1, inputs and targets in (0, 1)."""
    rng = np.random.default_rng(seed)
    layers = [
        {"weights": rng.normal(0, 1, (n_out, n_in)).tolist(), "biases": rng.normal(0, 0.5, n_out).tolist()}
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    ]
    x, target = rng.uniform(0, 1, sizes[0]).tolist(), rng.uniform(0.05, 0.95, sizes[-1]).tolist()
    return bp.parse_problem({"x": x, "target": target, "learning_rate": 0.1, "layers": layers})


def central_difference(problem, ell, index, *, bias=False, h=1e-3):
    """dL/dp by the fourth-order central difference, for one weight (``index`` = (j-1, k-1)) or bias (j-1).

    ``(L(p - 2h) - 8 L(p - h) + 8 L(p + h) - L(p + 2h)) / 12h``: its error, ``h^4`` times a fifth
    derivative plus rounding ``eps * L / h``, stays near 1e-13, so that 1e-8 relative is a real check.
    """

    def loss_with(step):
        layers = list(problem.layers)
        weights, biases = layers[ell - 1].weights.copy(), layers[ell - 1].biases.copy()
        (biases if bias else weights)[index] += step
        layers[ell - 1] = bp.LayerParameters(weights, biases)
        return bp.loss(replace(problem, layers=tuple(layers)))

    return (loss_with(-2 * h) - 8 * loss_with(-h) + 8 * loss_with(h) - loss_with(2 * h)) / (12 * h)


# ---------------------------------------------------------------------------------------------- numbers


def test_a_network_worked_out_by_hand():
    x1, x2, t1, t2, eta = 0.05, 0.10, 0.01, 0.99, 0.5
    w111, w112, w121, w122, b11, b12 = 0.15, 0.20, 0.25, 0.30, 0.35, 0.35
    w211, w212, w221, w222, b21, b22 = 0.40, 0.45, 0.50, 0.55, 0.60, 0.60

    def s(v):
        return 1 / (1 + math.exp(-v))

    z11, z12 = w111 * x1 + w112 * x2 + b11, w121 * x1 + w122 * x2 + b12
    a11, a12 = s(z11), s(z12)
    z21, z22 = w211 * a11 + w212 * a12 + b21, w221 * a11 + w222 * a12 + b22
    y1, y2 = s(z21), s(z22)
    loss = 0.5 * ((y1 - t1) ** 2 + (y2 - t2) ** 2)
    d21, d22 = (y1 - t1) * y1 * (1 - y1), (y2 - t2) * y2 * (1 - y2)
    d11 = a11 * (1 - a11) * (w211 * d21 + w221 * d22)
    d12 = a12 * (1 - a12) * (w212 * d21 + w222 * d22)
    # dL/dw^1_{1,1} along both paths, written the long way round
    g111 = ((y1 - t1) * y1 * (1 - y1) * w211 + (y2 - t2) * y2 * (1 - y2) * w221) * a11 * (1 - a11) * x1

    tr = bp.trace(bp.parse_problem(MAZUR))
    close = {"rtol": 1e-12, "atol": 0}
    np.testing.assert_allclose(tr.z[1], [z11, z12], **close)
    np.testing.assert_allclose(tr.a[1], [a11, a12], **close)
    np.testing.assert_allclose(tr.z[2], [z21, z22], **close)
    np.testing.assert_allclose(tr.a[2], [y1, y2], **close)
    assert tr.loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(tr.delta[2], [d21, d22], **close)
    np.testing.assert_allclose(tr.delta[1], [d11, d12], **close)
    np.testing.assert_allclose(tr.grad_w[2], [[d21 * a11, d21 * a12], [d22 * a11, d22 * a12]], **close)
    np.testing.assert_allclose(tr.grad_w[1], [[d11 * x1, d11 * x2], [d12 * x1, d12 * x2]], **close)
    np.testing.assert_allclose(tr.grad_b[1], [d11, d12], **close)
    assert tr.grad_w[1][0, 0] == pytest.approx(g111, rel=1e-12)
    assert tr.new_w[1][0, 0] == pytest.approx(w111 - eta * g111, rel=1e-12)
    np.testing.assert_allclose(tr.new_b[2], [b21 - eta * d21, b22 - eta * d22], **close)


def test_the_published_numbers_of_the_worked_example():
    """The values printed in Mazur's post, to the digits it prints them."""
    tr = bp.trace(bp.parse_problem(MAZUR))
    np.testing.assert_allclose(tr.a[1], [0.593269992, 0.596884378], atol=1e-9)
    np.testing.assert_allclose(tr.a[2], [0.75136507, 0.772928465], atol=1e-8)
    assert tr.loss == pytest.approx(0.298371109, abs=1e-9)
    np.testing.assert_allclose(tr.new_w[2], [[0.35891648, 0.408666186], [0.511301270, 0.561370121]], atol=1e-8)
    np.testing.assert_allclose(tr.new_w[1], [[0.149780716, 0.19956143], [0.24975114, 0.29950229]], atol=1e-8)


@pytest.mark.parametrize(("sizes", "seed"), [([3, 2, 2], 0), ([4, 3, 3, 2], 1), ([2, 1], 2)])
def test_every_gradient_matches_central_differences(sizes, seed):
    problem = random_problem(sizes, seed)
    tr = bp.trace(problem)
    for ell, layer in enumerate(problem.layers, start=1):
        numeric_w = np.array([[central_difference(problem, ell, (j, k)) for k in range(layer.weights.shape[1])]
                              for j in range(layer.weights.shape[0])])
        numeric_b = np.array([central_difference(problem, ell, j, bias=True) for j in range(len(layer.biases))])
        np.testing.assert_allclose(tr.grad_w[ell], numeric_w, rtol=1e-8, atol=1e-11)
        np.testing.assert_allclose(tr.grad_b[ell], numeric_b, rtol=1e-8, atol=1e-11)
        np.testing.assert_allclose(tr.new_w[ell], layer.weights - 0.1 * tr.grad_w[ell], rtol=0, atol=0)
        np.testing.assert_allclose(tr.new_b[ell], layer.biases - 0.1 * tr.grad_b[ell], rtol=0, atol=0)


@pytest.mark.parametrize(("sizes", "seed"), [([3, 2, 2], 0), ([4, 3, 3, 2], 1), ([2, 1], 2)])
def test_the_chain_rule_written_out_adds_up_to_the_gradient(sizes, seed):
    problem = random_problem(sizes, seed)
    tr = bp.trace(problem)
    for ell, layer in enumerate(problem.layers, start=1):
        for j, k in np.ndindex(layer.weights.shape):
            chain = bp.chain_rule(tr, (ell, j + 1, k + 1), bp.Notation("text", 17))
            assert chain.gradient == pytest.approx(tr.grad_w[ell][j, k], rel=1e-12, abs=1e-15)
            assert float(chain.blocks[0].steps[-1]) == pytest.approx(tr.grad_w[ell][j, k], rel=1e-12, abs=1e-15)


def test_the_chain_rule_for_a_deep_weight_lists_the_deltas_it_uses():
    tr = bp.trace(random_problem([4, 3, 3, 2], 1))
    chain = bp.chain_rule(tr, (1, 2, 3), bp.Notation("text"))
    lhs = [block.lhs for block in chain.blocks if isinstance(block, bp.Equations)]
    assert lhs[0] == "∂L/∂w^1_{2,3}"
    assert lhs[1:6] == ["δ^3_1", "δ^3_2", "δ^2_1", "δ^2_2", "δ^2_3"]
    assert "Σ_i ∂L/∂z^2_i · ∂z^2_i/∂a^1_2 · ∂a^1_2/∂z^1_2 · ∂z^1_2/∂w^1_{2,3}" in chain.blocks[0].steps[0]
    assert lhs[-1].startswith("w^1_{2,3} ←")


def test_sigmoid_saturates_without_overflow():
    with np.errstate(all="raise"):
        np.testing.assert_allclose(bp.sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0])


def test_toml_and_json_give_the_same_problem(tmp_path):
    toml = tmp_path / "net.toml"
    toml.write_text(
        'x = [0.05, 0.10]\ntarget = [0.01, 0.99]\nlearning_rate = 0.5\n_note = "ignored"\n'
        "[[layers]]\nweights = [[0.15, 0.20], [0.25, 0.30]]\nbiases = [0.35, 0.35]\n"
        "[[layers]]\nweights = [[0.40, 0.45], [0.50, 0.55]]\nbiases = [0.60, 0.60]\n"
    )
    assert bp.loss(bp.load_problem(toml)) == bp.loss(bp.parse_problem(MAZUR))


@pytest.mark.parametrize("spec", ["1,2,1", "w^1_{2,1}", " 1, 2, 1 ", "w1_{2,1}"])
def test_weight_index_spellings(spec):
    assert bp.parse_weight(spec, bp.parse_problem(MAZUR)) == (1, 2, 1)


# ---------------------------------------------------------------------------------------------- CLI


def run(*args, stdin=None):
    return CliRunner().invoke(backprop, list(args), input=stdin, env={"COLUMNS": "160"})


def test_example_is_the_committed_file_and_parses():
    result = run("--example")
    assert result.exit_code == 0, result.output
    assert result.output == EXAMPLE.read_text()
    document = json.loads(result.output)
    assert "PLACEHOLDER" in document["_note"]
    problem = bp.parse_problem(document)
    assert problem.sizes == [3, 2, 2]
    assert problem.x.tolist() == [0.5, 0.5, 0.1] and problem.target.tolist() == [0.9, 0.1]
    assert problem.learning_rate == 0.1
    assert bp.parse_problem(json.loads(run("--example", "--hidden", "4").output)).sizes == [3, 4, 2]


def test_example_then_trace_end_to_end(tmp_path):
    net = tmp_path / "net.json"
    net.write_text(run("--example").output)
    result = run(str(net))
    assert result.exit_code == 0, result.output
    for heading in ["Forward pass", "Backward pass", "Gradients and updated parameters", "Chain rule for w^1_{1,1}",
                    "w^l_{j,k} joins neuron k of layer l-1 to neuron j of layer l"]:
        assert heading in result.output
    assert "Traceback" not in result.output


def printed_gradient(output, name):
    """The value at the end of the chain rule for ``name``, and the gradient column of its table row."""
    chain = output.split(f"Chain rule for {name}")[1]
    final = re.search(r"^\s+= (\S+)\s*$", chain.split(f"{name} ←")[0].split("∂L/∂" + name + " =")[1], re.M)
    row = re.search(rf"^\s*{re.escape(name)}\s+(\S+)\s+(\S+)\s", output, re.M)
    return float(final.group(1)), float(row.group(2))


@pytest.mark.parametrize("weight", ["1,1,1", "w^1_{2,3}", "2,1,2"])
def test_printed_gradient_matches_finite_differences_to_six_digits(tmp_path, weight):
    net = tmp_path / "net.json"
    net.write_text(run("--example").output)
    result = run(str(net), "--weight", weight)
    assert result.exit_code == 0, result.output
    ell, j, k = bp.parse_weight(weight, bp.load_problem(net))
    numeric = central_difference(bp.load_problem(net), ell, (j - 1, k - 1))
    for value in printed_gradient(result.output, f"w^{ell}_{{{j},{k}}}"):
        assert f"{value:.6g}" == f"{numeric:.6g}"


def test_more_digits_on_request(tmp_path):
    net = tmp_path / "net.json"
    net.write_text(json.dumps(MAZUR))
    result = run(str(net), "--digits", "12")
    numeric = central_difference(bp.load_problem(net), 1, (0, 0))
    for value in printed_gradient(result.output, "w^1_{1,1}"):
        assert value == pytest.approx(numeric, rel=1e-9)


@pytest.mark.parametrize(("fmt", "markers"), [
    ("markdown", ["## Forward pass", r"\frac{\partial L}{\partial w^{1}_{1,1}} &=", "| $w^{1}_{1,1}$ |", "$$"]),
    ("latex", [r"\subsection*{Forward pass}", r"\begin{align*}", r"\begin{tabular}",
               r"\frac{\partial L}{\partial w^{1}_{1,1}} &="]),
])
def test_report_formats_to_stdout_and_to_a_file(tmp_path, fmt, markers):
    net = tmp_path / "net.json"
    net.write_text(json.dumps(MAZUR))
    result = run(str(net), "--format", fmt)
    assert result.exit_code == 0, result.output
    for marker in markers:
        assert marker in result.output
    assert "0.298371" in result.output  # the loss
    out = tmp_path / f"trace.{fmt}"
    assert run(str(net), "--format", fmt, "--out", str(out)).output == ""
    assert out.read_text() == result.output


def test_text_to_a_file_and_json_from_stdin(tmp_path):
    out = tmp_path / "trace.txt"
    result = run("-", "--out", str(out), stdin=json.dumps(MAZUR))
    assert result.exit_code == 0, result.output
    assert "Chain rule for w^1_{1,1}" in out.read_text()


def test_a_failed_write_keeps_the_old_out_file(tmp_path, monkeypatch):
    import os

    net, out = tmp_path / "net.json", tmp_path / "trace.md"
    net.write_text(json.dumps(MAZUR))
    out.write_text("an earlier trace")

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    for fmt in ("markdown", "text"):
        result = run(str(net), "--format", fmt, "--out", str(out))
        assert result.exit_code == 2
        assert result.output == f"Error: cannot write --out {out}: No space left on device\n"
        assert out.read_text() == "an earlier trace"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_numbers_that_overflow_are_a_one_line_error(tmp_path):
    huge = good()
    huge["x"] = [1.5e308] * len(huge["x"])
    huge["layers"][0]["weights"] = [[1.0] * len(huge["x"]) for _ in huge["layers"][0]["weights"]]  # sums pass 1.8e308
    net = tmp_path / "net.json"
    net.write_text(json.dumps(huge))
    result = run(str(net))
    assert result.exit_code == 2
    assert result.output.startswith("Error: the numbers overflow double precision") and result.output.count("\n") == 1


def test_example_refuses_options_it_would_ignore(tmp_path):
    for args in (["--example", "--format", "latex"], ["--example", str(tmp_path / "net.json")]):
        result = run(*args)
        assert result.exit_code == 2
        assert "--example prints an example problem file and nothing else" in result.output


def good():
    return json.loads(json.dumps(MAZUR))


def without(key):
    document = good()
    del document[key]
    return document


def edited(path, value):
    document = good()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


@pytest.mark.parametrize(("text", "suffix", "expected"), [
    (json.dumps(without("target")), ".json", "missing key target"),
    (json.dumps(without("learning_rate")), ".json", "missing key learning_rate"),
    (json.dumps({**good(), "learning-rate": 0.1}), ".json", "unknown key learning-rate"),
    (json.dumps(edited(["layers", 0, "weights"], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])), ".json",
     "layers[0].weights has 3 columns but layer 0 (x) has 2 neurons"),
    (json.dumps(edited(["layers", 1, "weights"], [[0.1], [0.2]])), ".json",
     "layers[1].weights has 1 column but layer 1 (layers[0]) has 2 neurons"),
    (json.dumps(edited(["layers", 0, "biases"], [0.1])), ".json", "layers[0].biases has 1 number but"),
    (json.dumps(edited(["target"], [0.5])), ".json", "target has 1 number but the last layer has 2 neurons"),
    (json.dumps(edited(["layers", 0, "weights"], [[0.1, 0.2], [0.3]])), ".json", "layers[0].weights[1] has 1"),
    (json.dumps(edited(["x"], [0.05, "a lot"])), ".json", "x[1] is 'a lot', not a number"),
    (json.dumps(edited(["learning_rate"], True)), ".json", "learning_rate is True, not a number"),
    (json.dumps(edited(["layers", 0], {"weights": [[1, 2]]})), ".json", "missing key layers[0].biases"),
    (json.dumps(edited(["layers"], [])), ".json", "layers must be a non-empty list"),
    (json.dumps([1, 2]), ".json", "must be an object with the keys x, target"),
    ('{"x": [0.5,', ".json", "not valid JSON"),
    ("x = [0.5\n", ".toml", "not valid TOML"),
    ("x: [0.5]", ".yaml", "unknown file type '.yaml'"),
])
def test_bad_files_give_one_line_and_exit_code_2(tmp_path, text, suffix, expected):
    path = tmp_path / f"net{suffix}"
    path.write_text(text)
    result = run(str(path))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert expected in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "expected"), [
    (["--weight", "3,1,1"], "there is no layer 3"),
    (["--weight", "1,3,1"], "neuron j=3 does not exist"),
    (["--weight", "w^1_{1,9}"], "neuron k=9 does not exist"),
    (["--weight", "first"], "not of the form l,j,k"),
    ([], None),
])
def test_bad_weight_index_or_missing_file(tmp_path, args, expected):
    net = tmp_path / "net.json"
    net.write_text(json.dumps(MAZUR))
    result = run(str(net), *args) if args else run()
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert (expected or "give a problem FILE") in result.output
    assert run(str(tmp_path / "absent.json")).output.startswith("Error: cannot read")


# ----------------------------------------------------------------------------------------- bad input


def _one_line(result, code):
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    return result.output


@pytest.mark.parametrize(
    "text, message",
    [
        (json.dumps({**MAZUR, "learning_rate": int("9" * 401)}), "learning_rate is a whole number too large"),
        ("[" * 100_000, "standard input nests lists or tables too deeply"),
        (json.dumps(MAZUR).replace("0.05", "9" * 5000), "standard input cannot be read (Exceeds the limit"),
        (json.dumps({**MAZUR, "learning_rate": -1}), "learning_rate is -1: write a number > 0"),
        (json.dumps({**MAZUR, "learning_rate": 0}), "learning_rate is 0: write a number > 0"),
        (" " * (bp.MAX_FILE_BYTES + 1), "standard input is larger than 1 MiB"),
    ],
    ids=["401-digits", "nested", "5000-digits", "negative-lr", "zero-lr", "large"],
)
def test_bad_problem_files_are_one_line_errors(text, message):
    assert message in _one_line(run("-", stdin=text), 2)


def test_networks_beyond_the_size_limit_are_refused(tmp_path):
    # 101 x 100 weights and 100 biases, 10,200 in all: the first size past the limit.
    wide = {"x": [0.5] * 100, "target": [0.5] * 100, "learning_rate": 0.1,
            "layers": [{"weights": [[0.1] * 100] * 100, "biases": [0.1] * 100}]}  # fmt: skip
    assert "the network has 10,100 weights and biases" in _one_line(run("-", stdin=json.dumps(wide)), 2)
    deep = {**MAZUR, "layers": [{"weights": [[0.1, 0.1], [0.1, 0.1]], "biases": [0.1, 0.1]}] * 21}
    assert "layers has 21 entries; a trace is for at most 20 layers" in _one_line(run("-", stdin=json.dumps(deep)), 2)
    big = tmp_path / "net.json"
    big.write_text(json.dumps(MAZUR) + " " * bp.MAX_FILE_BYTES)
    assert f"{big} is larger than 1 MiB" in _one_line(run(str(big)), 2)
    assert "--hidden 2000: the network has 12,002 weights" in _one_line(run("--example", "--hidden", "2000"), 2)
    assert run("--example", "--hidden", "1000").exit_code == 0
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"at most {bp.MAX_PARAMETERS:,} weights and biases, {bp.MAX_LAYERS} layers" in " ".join(readme.split())


def test_an_output_encoding_without_the_symbols_is_a_one_line_error(tmp_path):
    problem = tmp_path / "net.json"
    problem.write_text(json.dumps(MAZUR))
    ascii_runner = CliRunner(charset="ascii")
    result = ascii_runner.invoke(backprop, [str(problem)], env={"COLUMNS": "160"})
    assert "encoding (ascii) cannot write" in _one_line(result, 1)
    assert "PYTHONIOENCODING=utf-8" in result.output
    for args in (["--example"], [str(problem), "--format", "markdown"]):
        assert ascii_runner.invoke(backprop, args).exit_code == 0
