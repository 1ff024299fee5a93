"""``TranslationError`` and the search for the line of user code that caused it.

This module must stay importable without JAX: ``dxdt.sensitivity`` exports
:class:`TranslationError` at import time.
"""

from __future__ import annotations

import linecache
import os
import re
import sys

import numpy as np

_SKIPPED_PACKAGES = ("numpy", "scipy", "jax", "jaxlib")
_INTERNAL_FILENAMES = ("<frozen ", "<__array_function__")


class TranslationError(Exception):
    """Raised when an in-place NumPy right-hand side cannot be translated to JAX.

    The message names the operation, the file and line of user code where it happened,
    and how to write that line so that it can be translated.
    """


def _skipped_dirs() -> tuple[str, ...]:
    """Directories whose frames are library code, not the user's ``f``."""
    dirs = [os.path.dirname(os.path.abspath(__file__)) + os.sep]
    for name in _SKIPPED_PACKAGES:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            dirs.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(dirs)


def _user_frame():
    """The innermost frame of user code, skipping dxdt.sensitivity, NumPy, SciPy and JAX."""
    skipped = _skipped_dirs()
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        internal = filename.startswith(_INTERNAL_FILENAMES)
        if not internal and not os.path.abspath(filename).startswith(skipped):
            return frame
        frame = frame.f_back
    return None


def user_source_line() -> str:
    """The source text of the line of user code being translated ('' if unavailable)."""
    frame = _user_frame()
    if frame is None:
        return ""
    return linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()


def user_location() -> str:
    """``"file:line in function: `source`"`` of the line of user code being translated.

    Frames of ``dxdt.sensitivity``, NumPy, SciPy and JAX are skipped, so the answer
    is the line of ``f`` (or of a helper it calls) that is being translated.
    """
    frame = _user_frame()
    if frame is None:
        return "an unknown line (no user frame on the stack)"
    filename, lineno = frame.f_code.co_filename, frame.f_lineno
    source = linecache.getline(filename, lineno).strip()
    where = f"{filename}:{lineno} in {frame.f_code.co_name}"
    return f"{where}: `{source}`" if source else where


def translation_error(operation: str, fix: str) -> TranslationError:
    """A :class:`TranslationError` for ``operation`` at the current line of user code.

    Parameters
    ----------
    operation : str
        What could not be translated, e.g. ``"float() of a traced value"``.
    fix : str
        How to write it instead, e.g. ``"Use np.exp instead of math.exp."``.
    """
    return TranslationError(f"{operation} at {user_location()}.\n  How to fix: {fix}")


_CONVERSION_FIXES = {
    "bool": "Branch with np.where(condition, a, b) (or np.maximum, np.minimum, np.clip) "
    "instead of Python if/while/and/or on array values; np.max(u), np.min(u), np.sort(u) "
    "instead of max(u), min(u), sorted(u).",
    "int": "Sizes and indices must not depend on u, p or t: derive them from shapes or "
    "constants, and select values with np.where or integer index arrays.",
    "float": "Keep values as arrays and use NumPy functions, e.g. np.sum(u) instead of "
    "math.fsum(u), np.exp(x) instead of float(np.exp(x)).",
    "hash": "Compute the value in f at every call instead of memoising it by t, u or p (the "
    "translated f is evaluated once per stage anyway).",
}


def conversion_error(kind: str, operation: str) -> TranslationError:
    """A :class:`TranslationError` for converting a traced value to a Python ``kind``."""
    fix = _CONVERSION_FIXES[kind]
    match = re.search(r"\bmath\.(\w+)", user_source_line())
    if kind == "float" and match and hasattr(np, match.group(1)):
        fix = f"Use np.{match.group(1)} instead of math.{match.group(1)}. " + fix
    return translation_error(f"{operation} on a value that depends on u, p or t", fix)
