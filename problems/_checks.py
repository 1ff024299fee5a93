"""Argument checks shared by the problem constructors; each raises ``ValueError`` naming the argument."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def check_size(name: str, n: Any, minimum: int = 3) -> int:
    """``n`` as a Python int ``>= minimum``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def check_time(name: str, t: Any) -> float:
    """``t`` as a finite float."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t):
        raise ValueError(f"{name} must be a finite real number, got {t!r}")
    return float(t)


def as_float_array(name: str, x: Any, shape: tuple[int, ...] | None, meaning: str) -> np.ndarray:
    """A finite float64 copy of ``x`` with exactly ``shape`` (any shape if None).

    ``meaning`` describes the entries in the error messages.
    """
    expected = "" if shape is None else f" of shape {shape}"
    try:
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be {meaning}, an array of real numbers{expected}") from err
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} must be {meaning}{expected}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} ({meaning}) must be finite, got {a}")
    return a


def check_nonnegative(name: str, a: np.ndarray, meaning: str) -> None:
    """Raise unless every entry of ``a`` is ``>= 0``."""
    if np.any(a < 0):
        raise ValueError(f"{name}: {meaning} must be >= 0, got minimum {a.min()}")
