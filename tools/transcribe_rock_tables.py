"""Transcribe the published ROCK2 and ROCK4 coefficient tables into ``solvers/_rock_tables.py``.

The tables are the data of Abdulle & Medovikov's Fortran codes rock2.f and rock4.f, as
reproduced in OrdinaryDiffEq.jl (``lib/OrdinaryDiffEqStabilizedRK/src/rkc_tableaus_rock2.jl``
and ``rkc_tableaus_rock4.jl``). This script reads those two Julia files as text, takes every
number as written, checks the shapes and that every degree's stability polynomial agrees
with ``exp(z)`` to the method's order (the embedded ROCK4 method to order 3), and writes
the data module. Run from the repository root::

    python tools/transcribe_rock_tables.py path/to/rkc_tableaus_rock2.jl \\
        path/to/rkc_tableaus_rock4.jl [--commit SHA]

References
----------
A. Abdulle, A. A. Medovikov, "Second order Chebyshev methods based on orthogonal
polynomials", Numer. Math. 90 (2001) 1-18.
A. Abdulle, "Fourth order Chebyshev methods with recurrence relation", SIAM J. Sci.
Comput. 23 (2002) 2041-2054.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np

NUMBER = re.compile(r"-?\d+\.\d+(?:[eE][+-]?\d+)?")
ORDER_TOLERANCE = 1e-12  # |Taylor coefficient of R_s - 1/k!|, k <= order (data: ~1e-14)
OUTPUT = Path(__file__).resolve().parent.parent / "solvers" / "_rock_tables.py"
WIDTH = 99


def block(text: str, name: str) -> str:
    """The bracketed value of ``name = (...)`` or ``name = [...]``, brackets included."""
    match = re.search(rf"\b{name}\s*=\s*([\[(])", text)
    if match is None:
        raise ValueError(f"no '{name} =' in the Julia source")
    depth = 0
    for i in range(match.start(1), len(text)):
        depth += text[i] in "(["
        depth -= text[i] in ")]"
        if depth == 0:
            return text[match.start(1): i + 1]
    raise ValueError(f"'{name}' is not closed")


def numbers(text: str) -> list[float]:
    return [float(x) for x in NUMBER.findall(text)]


def rows(text: str, width: int, name: str) -> list[tuple[float, ...]]:
    """The tuples of a Julia vector of tuples, each of ``width`` numbers."""
    found = [tuple(numbers(t)) for t in re.findall(r"\(([^()]*)\)", text[1:-1])]
    bad = [i for i, row in enumerate(found) if len(row) != width]
    if bad:
        raise ValueError(f"{name}: row {bad[0]} has {len(found[bad[0]])} numbers, not {width}")
    return found


def degrees_of(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", block(text, "ms")[1:-1])]


def split_recurrence(recf: list[float], degrees: list[int], name: str) -> list[tuple[float, ...]]:
    """``recf`` holds, per degree ``m``, ``mu_1`` then ``(mu_j, kappa_j)``, ``j = 2..m``."""
    needed = sum(2 * m - 1 for m in degrees)
    if len(recf) != needed:
        raise ValueError(f"{name}: recf has {len(recf)} numbers, the degrees need {needed}")
    out, i = [], 0
    for m in degrees:
        out.append(tuple(recf[i: i + 2 * m - 1]))
        i += 2 * m - 1
    return out


def _series_mul(a, b):
    return np.convolve(a, b)[: len(a)]


def recurrence_series(coefficients, terms: int):
    """Taylor coefficients in ``z`` of the last stage of the recurrence on ``y' = z y``."""
    z = np.zeros(terms)
    z[1] = 1.0
    one = np.zeros(terms)
    one[0] = 1.0
    y_prev, y = one, one + coefficients[0] * z
    for mu, kappa in zip(coefficients[1::2], coefficients[2::2]):
        y_prev, y = y, mu * _series_mul(z, y) + (1.0 + kappa) * y - kappa * y_prev
    return y, z


def check_order(series, order: int, what: str) -> None:
    worst = max(abs(series[k] - 1.0 / math.factorial(k)) for k in range(order + 1))
    if not worst <= ORDER_TOLERANCE:
        raise ValueError(f"{what}: R(z) differs from exp(z) by {worst:.2e} up to z^{order}")


def rock2_tables(text: str) -> dict:
    degrees = degrees_of(text)
    sigma, tau = numbers(block(text, "fp1")), numbers(block(text, "fp2"))
    if not len(sigma) == len(tau) == len(degrees):
        raise ValueError("ROCK2: fp1, fp2 and ms differ in length")
    recurrence = split_recurrence(numbers(block(text, "recf")), degrees, "ROCK2")
    for m, coefficients, s1, s2 in zip(degrees, recurrence, sigma, tau):
        y, z = recurrence_series(coefficients, 3)
        finish = np.array([1.0, 2.0 * s1, s1 * s1 + s1 * s2])
        check_order(_series_mul(y, finish), 2, f"ROCK2 degree {m}")
    return dict(ROCK2_DEGREES=tuple(degrees), ROCK2_FINISH=tuple(zip(sigma, tau)),
                ROCK2_RECURRENCE=tuple(recurrence))


def rock4_tables(text: str) -> dict:
    degrees = degrees_of(text)
    finish_a = rows(block(text, "fpa"), 6, "fpa")
    finish_b = rows(block(text, "fpb"), 4, "fpb")
    finish_e = rows(block(text, "fpbe"), 5, "fpbe")
    if not len(finish_a) == len(finish_b) == len(finish_e) == len(degrees):
        raise ValueError("ROCK4: fpa, fpb, fpbe and ms differ in length")
    recurrence = split_recurrence(numbers(block(text, "recf")), degrees, "ROCK4")
    for m, coefficients, a, b, e in zip(degrees, recurrence, finish_a, finish_b, finish_e):
        y, z = recurrence_series(coefficients, 5)
        a21, a31, a32, a41, a42, a43 = a
        k1 = _series_mul(z, y)
        k2 = _series_mul(z, y + a21 * k1)
        k3 = _series_mul(z, y + a31 * k1 + a32 * k2)
        k4 = _series_mul(z, y + a41 * k1 + a42 * k2 + a43 * k3)
        u = y + b[0] * k1 + b[1] * k2 + b[2] * k3 + b[3] * k4
        embedded = y + e[0] * k1 + e[1] * k2 + e[2] * k3 + e[3] * k4 + e[4] * _series_mul(z, u)
        check_order(u, 4, f"ROCK4 degree {m}")
        check_order(embedded, 3, f"ROCK4 degree {m}, embedded method")
    return dict(ROCK4_DEGREES=tuple(degrees), ROCK4_FINISH_A=tuple(finish_a),
                ROCK4_FINISH_B=tuple(finish_b), ROCK4_FINISH_B_EMBEDDED=tuple(finish_e),
                ROCK4_RECURRENCE=tuple(recurrence))


def format_value(value, indent: int = 4) -> str:
    """A tuple of numbers (or of tuples of numbers) whose items sit ``indent`` columns in,
    wrapped at ``WIDTH`` columns."""
    close = " " * (indent - 4) + ")"
    if value and isinstance(value[0], tuple):
        inner = "".join(" " * indent + format_value(row, indent + 4) + ",\n" for row in value)
        return "(\n" + inner + close
    items = [repr(v) for v in value]
    one_line = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if len(one_line) + indent <= WIDTH:
        return one_line
    lines, line = [], ""
    for item in items:
        if line and indent + len(line) + len(item) + 2 > WIDTH:
            lines.append(" " * indent + line.rstrip())
            line = ""
        line += item + ", "
    lines.append(" " * indent + line.rstrip())
    return "(\n" + "\n".join(lines) + "\n" + close


HEADER = '''"""Published coefficient tables of ROCK2 and ROCK4 (generated: do not edit by hand).

Abdulle & Medovikov's data (the DATA statements of the Fortran codes rock2.f and rock4.f),
as reproduced in OrdinaryDiffEq.jl{commit},
``lib/OrdinaryDiffEqStabilizedRK/src/rkc_tableaus_rock2.jl`` and ``rkc_tableaus_rock4.jl``;
written by ``tools/transcribe_rock_tables.py``, which parsed every number as printed there
and checked that each degree's stability polynomial agrees with ``exp(z)`` to the method's
order.

Per degree ``m`` (index ``i`` of ``*_DEGREES``): ``*_RECURRENCE[i]`` holds ``mu_1`` and then
the pairs ``(mu_j, kappa_j)``, ``j = 2..m``, of
``Y_j = h mu_j f(Y_{{j-1}}) + (1 + kappa_j) Y_{{j-1}} - kappa_j Y_{{j-2}}``. ROCK2 (``s = m + 2``
stages): ``ROCK2_FINISH[i] = (sigma, tau)`` of its two finishing stages. ROCK4
(``s = m + 4``): ``ROCK4_FINISH_A[i] = (a21, a31, a32, a41, a42, a43)`` and
``ROCK4_FINISH_B[i] = (b1, b2, b3, b4)`` of the four finishing stages,
``ROCK4_FINISH_B_EMBEDDED[i] = (b^1, .., b^4, b^5)`` of the embedded third-order method
(``b^5`` weights ``f(u_{{n+1}})``).

References
----------
A. Abdulle, A. A. Medovikov, "Second order Chebyshev methods based on orthogonal
polynomials", Numer. Math. 90 (2001) 1-18.
A. Abdulle, "Fourth order Chebyshev methods with recurrence relation", SIAM J. Sci.
Comput. 23 (2002) 2041-2054.
"""

# fmt: off
'''


def write(tables: dict, path: Path, commit: str | None) -> None:
    text = HEADER.format(commit=f" (commit {commit[:12]})" if commit else "")
    for name, value in tables.items():
        text += f"{name} = {format_value(value)}\n"
    path.write_text(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rock2", type=Path, help="rkc_tableaus_rock2.jl")
    parser.add_argument("rock4", type=Path, help="rkc_tableaus_rock4.jl")
    parser.add_argument("--commit", help="OrdinaryDiffEq.jl commit the files come from")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    tables = {**rock2_tables(args.rock2.read_text()), **rock4_tables(args.rock4.read_text())}
    write(tables, args.output, args.commit)
    for method in ("ROCK2", "ROCK4"):
        degrees = tables[f"{method}_DEGREES"]
        print(f"{method}: {len(degrees)} degrees, m = {degrees[0]}..{degrees[-1]}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
