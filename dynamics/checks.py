"""Argument checks shared by the whole package (tasks, models, specs, observables).

Every check raises ``ValueError`` naming the field, the value and what is allowed, e.g.
``n_train must be a positive int, got 0``. Booleans are not ints here (``True`` is not a
width), and NumPy scalars count as the Python numbers they hold.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """An integer that is not a bool (NumPy integers included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """A real number that is not a bool (NumPy floats and ints included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``int(value)`` if it is an int ``>= minimum``."""
    if not is_int(value) or value < minimum:
        allowed = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> float:
    """``float(value)`` if it is a finite real number in the given range."""
    ok = is_real(value)
    if ok:
        value = float(value)
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        span = " and ".join(s for s in (lo, hi) if s)
        allowed = "a finite real number" + (f" {span}" if span else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices) -> Any:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, (str, bool, int)) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_finite(name: str, array: np.ndarray) -> None:
    """No NaN or inf in a float array."""
    if array.size and np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
