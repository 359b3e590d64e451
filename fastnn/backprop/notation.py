"""Writing it down: how symbols and numbers are spelled on the terminal and in LaTeX (Markdown uses
the LaTeX spelling of mathematics)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Notation:
    """How symbols and numbers are spelled: ``style`` is "text" (terminal), "markdown" or "latex".

    Markdown and LaTeX share the LaTeX spelling of mathematics; they differ only in :meth:`code`.
    """

    style: str = "text"
    digits: int = 6

    @property
    def latex(self) -> bool:
        return self.style != "text"

    def sym(self, base: str, layer: int | str | None, sub: str) -> str:
        """``base^layer_sub``, e.g. ``w^1_{1,2}`` (plain) or ``w^{1}_{1,2}`` (LaTeX)."""
        def script(mark: str, text: str) -> str:
            return f"{mark}{text}" if len(text) == 1 and not self.latex else f"{mark}{{{text}}}"

        return base + ("" if layer is None else script("^", str(layer))) + script("_", sub)

    def w(self, ell: int | str, j: int | str, k: int | str) -> str:
        return self.sym("w", ell, f"{j},{k}")

    def b(self, ell: int | str, j: int | str) -> str:
        return self.sym("b", ell, str(j))

    def z(self, ell: int | str, j: int | str) -> str:
        return self.sym("z", ell, str(j))

    def delta(self, ell: int | str, j: int | str) -> str:
        return self.sym(r"\delta" if self.latex else "δ", ell, str(j))

    def act(self, ell: int | str, j: int | str, depth: int | str) -> str:
        """The activation of neuron ``j`` of layer ``l``, called ``x_j`` for the input, ``y_j`` for the output."""
        if ell == 0:
            return self.sym("x", None, str(j))
        return self.sym("y", None, str(j)) if ell == depth else self.sym("a", ell, str(j))

    def t(self, j: int | str) -> str:
        return self.sym("t", None, str(j))

    def d(self, top: str, bottom: str) -> str:
        """The partial derivative of ``top`` by ``bottom``."""
        if self.latex:
            return rf"\frac{{\partial {top}}}{{\partial {bottom}}}"
        return f"∂{top}/∂{bottom}"

    @property
    def dot(self) -> str:
        return r" \cdot " if self.latex else " · "

    @property
    def eta(self) -> str:
        return r"\eta" if self.latex else "η"

    @property
    def arrow(self) -> str:
        return r"\leftarrow" if self.latex else "←"

    def sum(self, index: str) -> str:
        return rf"\sum_{{{index}}} " if self.latex else f"Σ_{index} "

    def brackets(self, inside: str) -> str:
        return rf"\left[{inside}\right]" if self.latex else f"[{inside}]"

    def big_brackets(self) -> tuple[str, str]:
        """Brackets that may open and close on different lines."""
        return (r"\Bigl[", r"\Bigr]") if self.latex else ("[", "]")

    def sigmoid(self, arg: str, prime: bool = False) -> str:
        name = (r"\sigma" if self.latex else "σ") + ("'" if prime else "")
        return f"{name}({arg})"

    def code(self, text: str) -> str:
        """A piece of the input file inside prose."""
        return {"markdown": f"`{text}`", "latex": rf"\texttt{{{text}}}"}.get(self.style, text)

    def math(self, text: str) -> str:
        """Inline mathematics inside prose or a table cell."""
        return f"${text}$" if self.latex else text

    def num(self, value: float, factor: bool = False) -> str:
        """``value`` to ``digits`` significant digits; in parentheses if it is a negative ``factor``."""
        text = f"{value:.{self.digits}g}"
        if self.latex and "e" in text:
            mantissa, exponent = text.split("e")
            text = rf"{mantissa} \cdot 10^{{{int(exponent)}}}"
        return f"({text})" if factor and value < 0 else text

    def times(self, *factors: str) -> str:
        return self.dot.join(factors)

    def one_minus(self, text: str) -> str:
        return f"(1 - {text})"
