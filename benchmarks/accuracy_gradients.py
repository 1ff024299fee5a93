"""How accurate are gradients through each method, as multiples of the requested rtol?

Not a timing: the error of the primal solve and of the gradient by each strategy
(forward sensitivities, the interpolating and the checkpoint adjoint), measured against
a Tsit5 solve and forward-mode gradient at ``rtol = 1e-12``, ``atol = 1e-14``. The error
is ``max |x - ref| / max |ref|`` over the final state (primal) or the gradient of the
weighted loss ``sum(w * u(t1))`` with ``w_i = cos(i + 0.3)``, divided by ``rtol``.
``--scale c`` multiplies that loss by ``c`` (and the gradient by ``1/c`` before the
comparison): the relative error should not depend on ``c`` (the adjoint is solved for
unit cotangents; a loss scaled by 1e-9 once had its cotangents all below ``atol``).

Problems: ``heat_1d(32)`` (linear, diffusive), ``brusselator(8)`` (stiff, nonlinear),
``fitzhugh_nagumo()`` and ``lotka_volterra()`` (non-stiff, long spans), all with their
default parameters. A strategy that fails is recorded as ``failed``.

Run: ``.venv/bin/python benchmarks/accuracy_gradients.py [--rtol 1e-7] [--scale 1e-9]``;
writes ``benchmarks/results/accuracy_gradients.json`` (``accuracy_gradients_scale<c>.json``
with ``--scale``).
"""

from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("DXDT_CACHE", "0")

import numpy as np  # noqa: E402
from _common import RESULTS_DIR, format_table, write_json  # noqa: E402

import dxdt  # noqa: E402
from dxdt import SolverError  # noqa: E402
from dxdt import sensitivity as sens  # noqa: E402
from dxdt.solvers import RKC, RKL2, ROCK2, ROCK4, Tsit5  # noqa: E402

STRATEGIES = (("forward", "interpolating"), ("reverse", "interpolating"), ("reverse", "checkpoint"))
REFERENCE = dict(rtol=1e-12, atol=1e-14)


def problems() -> dict:
    return {"heat_1d(32)": dxdt.problems.heat_1d(n=32), "brusselator(8)": dxdt.problems.brusselator(n=8),
            "fitzhugh_nagumo": dxdt.problems.fitzhugh_nagumo(), "lotka_volterra": dxdt.problems.lotka_volterra()}


def relative(x, ref) -> float:
    return float(np.max(np.abs(x - ref)) / np.max(np.abs(ref)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtol", type=float, default=1e-7)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the loss by this")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rtol, atol, scale = args.rtol, args.rtol * 1e-2, args.scale
    out = args.out or str(RESULTS_DIR / ("accuracy_gradients.json" if scale == 1.0
                                         else f"accuracy_gradients_scale{scale:g}.json"))
    records, rows = [], []
    for name, prob in problems().items():
        w = np.cos(np.arange(prob.u0.size) + 0.3).reshape(prob.u0.shape)

        def loss(u, w=w):
            return np.sum(w * u[-1])

        def scaled_loss(u, w=scale * w):
            return np.sum(w * u[-1])

        saveat = [prob.tspan[1]]
        u_ref = dxdt.solve(prob, Tsit5(), saveat=saveat, **REFERENCE).u[-1]
        g_ref = sens.gradient(loss, prob, Tsit5(), saveat=saveat, mode="forward", **REFERENCE)
        for method in (Tsit5(), ROCK4(), ROCK2(), RKC(), RKL2()):
            record = {"problem": name, "method": type(method).__name__, "rtol": rtol}
            try:
                u = dxdt.solve(prob, method, saveat=saveat, rtol=rtol, atol=atol, max_steps=10**6).u[-1]
                record["primal"] = relative(u, u_ref) / rtol
            except SolverError:
                record["primal"] = None
            for mode, adjoint in STRATEGIES:
                key = f"{mode}/{adjoint}"
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        g = sens.gradient(scaled_loss, prob, method, saveat=saveat, rtol=rtol, atol=atol,
                                          mode=mode, adjoint=adjoint, max_steps=10**6) / scale
                    record[key] = relative(g, g_ref) / rtol
                    record[key + " warned"] = bool(caught)
                except SolverError:
                    record[key] = None
            records.append(record)

            def cell(value, warned=False):
                return "failed" if value is None else f"{value:.3g}" + (" (w)" if warned else "")
            rows.append([name, record["method"], cell(record["primal"])]
                        + [cell(record[f"{m}/{a}"], record.get(f"{m}/{a} warned", False)) for m, a in STRATEGIES])
            print(format_table(rows[-1:], ["problem", "method", "primal", *(f"{m}/{a}" for m, a in STRATEGIES)]
                               ).splitlines()[-1], flush=True)
    print()
    print(f"error / rtol at rtol = {rtol:g}, atol = {atol:g}, loss scaled by {scale:g} ((w): the operator warned)")
    print(format_table(rows, ["problem", "method", "primal", *(f"{m}/{a}" for m, a in STRATEGIES)]))
    path = write_json(out, records, benchmark="accuracy_gradients", settings={"rtol": rtol, "atol": atol, "scale": scale})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
