"""``fastnn backprop``: the trace of one backpropagation step through a small sigmoid network (task 1)."""

import io
import sys
from pathlib import Path

import click
from rich.console import Console

from fastnn.atomic import write_atomic
from fastnn.backprop import (
    MAX_FILE_BYTES,
    MAX_PARAMETERS,
    ProblemError,
    dump_problem,
    example_problem,
    load_problem,
    parse_problem,
    parse_weight,
    problem_from_text,
    render_latex,
    render_markdown,
    render_text,
    trace,
)


class BadInput(click.ClickException):
    """A one-line ``Error: ...`` and exit code 2, like click's own usage errors, without a traceback."""

    exit_code = 2


def _check_encoding(text: str) -> None:
    """Refuse, before anything is printed, output that standard output's encoding cannot carry (the
    trace's Greek letters under PYTHONIOENCODING=ascii), rather than fail half-way with a traceback."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError as err:
        raise click.ClickException(
            f"standard output's encoding ({encoding}) cannot write {err.object[err.start]!r}; "
            "set PYTHONIOENCODING=utf-8, or use --format markdown, or write to a file with --out"
        ) from None


def _write(text: str, out: Path | None) -> None:
    if out is None:
        _check_encoding(text)
        click.echo(text, nl=False)
        return
    try:
        write_atomic(out, text.encode("utf-8"))  # whole, or the old file untouched
    except OSError as err:
        raise BadInput(f"cannot write --out {out}: {err.strerror or err}") from None


@click.command("backprop", short_help="One backpropagation step, every number written out (task 1).")
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--example", is_flag=True, help="Print an example problem file (JSON) for the assignment and exit.")
@click.option("--hidden", type=click.IntRange(1, MAX_PARAMETERS), default=2, show_default=True,
              help="Neurons in the hidden layer of --example.")
@click.option("--weight", "weight_spec", default="1,1,1", show_default=True, metavar="L,J,K",
              help='The weight whose chain rule is written out: "l,j,k" or "w^l_{j,k}", 1-based.')
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "latex"]), default="text",
              show_default=True, help="text: tables on the terminal; markdown or latex: for a report.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@click.option("--digits", type=click.IntRange(1, 17), default=6, show_default=True,
              help="Significant digits of every number shown.")
def backprop(file: Path | None, example: bool, hidden: int, weight_spec: str, fmt: str, out: Path | None,
             digits: int) -> None:
    """Trace one step of backpropagation through a small fully-connected sigmoid network.

    Prints every forward value (z and activation of each neuron), the loss L = 1/2 sum_i (y_i - t_i)^2,
    every delta, the gradient of every weight and bias, the updated parameters w - lr * dL/dw, and
    the chain rule for one weight (--weight) with the numbers substituted.

    FILE is a .json or .toml file ("-" reads JSON from standard input). Keys starting with "_" are
    comments. The schema, for a 3-2-2 network:

    \b
      {"x": [0.5, 0.5, 0.1], "target": [0.9, 0.1], "learning_rate": 0.1,
       "layers": [{"weights": [[w111, w112, w113], [w121, w122, w123]], "biases": [b11, b12]},
                  {"weights": [[w211, w212], [w221, w222]], "biases": [b21, b22]}]}

    In TOML the same keys, each layer a [[layers]] table. The trace is for following by hand: at
    most 10,000 weights and biases, 20 layers, a learning rate > 0 and a file of 1 MiB.

    Index convention: w^l_{j,k} joins neuron k of layer l-1 to neuron j of layer l; layer 0 is the
    input x; neurons count from 1. So layers[l-1].weights has one row per neuron of layer l and one
    column per neuron of layer l-1, and weights[j-1][k-1] is w^l_{j,k} (w112 above is w^1_{1,2}).
    If your figure numbers the weights the other way round (from j to k), swap j and k.

    \b
    Examples:
      fastnn backprop --example > net.json    # then put the figure's weights in
      fastnn backprop net.json
      fastnn backprop net.json --weight 2,1,2
      fastnn backprop net.json --format markdown --out trace.md
    """
    if example:
        if file is not None or fmt != "text":
            raise BadInput("--example prints an example problem file and nothing else; drop FILE and --format with it")
        document = example_problem(hidden)
        try:
            parse_problem(document)  # within the size limit
        except ProblemError as err:
            raise BadInput(f"--hidden {hidden}: {err}") from None
        _write(dump_problem(document), out)
        return
    if file is None:
        raise BadInput("give a problem FILE (.json or .toml), or --example to print one")
    try:
        if str(file) == "-":
            problem = problem_from_text(sys.stdin.read(MAX_FILE_BYTES + 1), "json", "standard input")
        else:
            problem = load_problem(file)
    except ProblemError as err:
        raise BadInput(str(err)) from None
    try:
        weight = parse_weight(weight_spec, problem)
    except ProblemError as err:
        raise BadInput(f"--weight: {err}") from None

    try:
        result = trace(problem)
    except ProblemError as err:
        raise BadInput(str(err)) from None
    if fmt == "markdown":
        _write(render_markdown(result, weight, digits), out)
    elif fmt == "latex":
        _write(render_latex(result, weight, digits), out)
    elif out is None:
        terminal = Console()
        rendered = io.StringIO()
        render_text(result, weight, Console(file=rendered, width=terminal.width), digits)
        _check_encoding(rendered.getvalue())
        render_text(result, weight, terminal, digits)
    else:
        text = io.StringIO()
        render_text(result, weight, Console(file=text, width=120), digits)
        _write(text.getvalue(), out)
