"""The report's three renderings: rich text on the terminal, Markdown, LaTeX."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fastnn.backprop.notation import Notation
from fastnn.backprop.report import Equations, Heading, NumberTable, Paragraph, build_report
from fastnn.backprop.step import Trace


def render_text(tr: Trace, weight: tuple[int, int, int], console: Console, digits: int = 6) -> None:
    """Print the trace on a rich ``console``: rules for headings, tables, equations one step a line."""
    for block in build_report(tr, weight, Notation("text", digits)):
        if isinstance(block, Heading):
            console.print()
            if block.level == 1:
                console.rule(Text(block.text, style="bold"))
            else:
                console.print(Text(block.text, style="bold underline"))
        elif isinstance(block, Paragraph):
            console.print(Text(block.text))
        elif isinstance(block, NumberTable):
            console.print(Text(block.title, style="italic"))
            table = Table(box=box.SIMPLE_HEAD, padding=(0, 1))
            for i, header in enumerate(block.headers):
                formula = i in block.formulas
                table.add_column(Text(header), justify="left" if formula else "right", no_wrap=not formula)
            for row in block.rows:
                table.add_row(*(Text(cell) for cell in row))
            console.print(table)
        else:
            indent = " " * len(block.lhs)
            for i, step in enumerate(block.steps):
                step = " ".join(step) if isinstance(step, tuple) else step
                console.print(Text(f"{block.lhs if i == 0 else indent} = {step}"), soft_wrap=True)
            console.print()


def _markdown(blocks: list) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, NumberTable):
            lines = [f"**{block.title}**", "", "| " + " | ".join(block.headers) + " |",
                     "|" + "|".join("---" for _ in block.headers) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        else:
            out.append("$$\n" + _aligned(block, "aligned") + "\n$$")
    return "\n\n".join(out) + "\n"


def _aligned(block: Equations, environment: str) -> str:
    lines = []
    for i, step in enumerate(block.steps):
        first, *rest = step if isinstance(step, tuple) else (step,)
        lines += [f"{block.lhs if i == 0 else ''} &= {first}"] + [rf"&\qquad {piece}" for piece in rest]
    return f"\\begin{{{environment}}}\n" + " \\\\\n".join(lines) + f"\n\\end{{{environment}}}"


def _latex(blocks: list) -> str:
    out = ["% fastnn backprop trace; needs \\usepackage{amsmath}"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(("\\section*{" if block.level == 1 else "\\subsection*{") + block.text + "}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, NumberTable):
            columns = "l" * len(block.headers)
            body = [" & ".join(block.headers) + " \\\\ \\hline"] + [" & ".join(row) + " \\\\" for row in block.rows]
            out.append(f"\\begin{{center}}\n\\textit{{{block.title}}}\\\\[2pt]\n\\begin{{tabular}}{{{columns}}}\n"
                       + "\n".join(body) + "\n\\end{tabular}\n\\end{center}")
        else:
            out.append(_aligned(block, "align*"))
    return "\n\n".join(out) + "\n"


def render_markdown(tr: Trace, weight: tuple[int, int, int], digits: int = 6) -> str:
    """The trace as Markdown, mathematics in ``$...$`` and ``$$...$$`` (GitHub, pandoc, Jupyter)."""
    return _markdown(build_report(tr, weight, Notation("markdown", digits)))


def render_latex(tr: Trace, weight: tuple[int, int, int], digits: int = 6) -> str:
    """The trace as a LaTeX fragment to ``\\input`` into a report (uses amsmath's ``align*``)."""
    return _latex(build_report(tr, weight, Notation("latex", digits)))
