"""The method interface shared by all explicit Runge-Kutta solvers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._tableau import ButcherTableau


@dataclass(frozen=True)
class AbstractRungeKutta:
    """An explicit Runge-Kutta method defined entirely by its :class:`ButcherTableau`.

    Contract for a new method (one small module per method):

    1. define a module-level ``ButcherTableau`` constant from the original paper,
       coefficients as exact fractions or 17 significant digits, cited;
    2. subclass ``AbstractRungeKutta`` with ``tableau`` set to it, as a frozen
       dataclass without fields (methods compare equal by type, so compiled solves
       can be cached on them);
    3. give the reference in the class docstring.

    Every backend (the NumPy executor, the JAX backend) reads only the tableau.
    """

    tableau: ClassVar[ButcherTableau]

    @property
    def order(self) -> int:
        """Order of the propagated solution."""
        return self.tableau.order

    @property
    def adaptive(self) -> bool:
        """Whether the method has an embedded error estimate (adaptive stepping)."""
        return self.tableau.adaptive

    @property
    def dense_vectors(self) -> int:
        """State-sized vectors a step of the JAX dense output keeps: ``y0``, ``y1`` and the
        stages."""
        return self.tableau.total_stages + 2

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
