"""Range checks of the optimizers' swept (float) hyperparameters, by name.

A swept value is a real, finite number; the names below also have a range. Names not
listed (a factory's own floats, e.g. adafactor's ``decay_rate``) are only checked to be
finite reals: their ranges are the factory's business.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

# name -> (lower, lower included, upper, upper included, how the range reads)
_POSITIVE = (0.0, False, math.inf, False, "> 0")
_NON_NEGATIVE = (0.0, True, math.inf, False, ">= 0")
_DECAY_RATE = (0.0, True, 1.0, False, "in [0, 1)")
_FRACTION = (0.0, True, 1.0, True, "in [0, 1]")

RANGES = {
    "lr": _POSITIVE,
    "clip_norm": _POSITIVE,
    "gradient_noise": _NON_NEGATIVE,
    "eps": _NON_NEGATIVE,
    "eps_root": _NON_NEGATIVE,
    "momentum": _DECAY_RATE,
    "b1": _DECAY_RATE,
    "b2": _DECAY_RATE,
    "beta": _DECAY_RATE,
    "adam_b1": _DECAY_RATE,
    "adam_b2": _DECAY_RATE,
    "weight_decay": _NON_NEGATIVE,
    "weight_decay_rate": _NON_NEGATIVE,
    "adam_weight_decay": _NON_NEGATIVE,
    "warmup_steps": _NON_NEGATIVE,
    "decay_steps": _NON_NEGATIVE,
    "warmup_fraction": _FRACTION,
    "decay_fraction": _FRACTION,
    "final_lr_fraction": _FRACTION,
}

# lengths in steps that may not exceed the run
STEP_LENGTHS = ("warmup_steps", "decay_steps")


def check(values: Mapping[str, Any], steps: int | None = None) -> None:
    """Raise a ``ValueError`` naming the first value out of its range; with ``steps``,
    also the lengths in steps longer than the run."""
    for name, v in values.items():
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite real number, got {v!r}")
        if name in RANGES:
            low, low_in, high, high_in, text = RANGES[name]
            above = v >= low if low_in else v > low
            below = v <= high if high_in else v < high
            if not (above and below):
                raise ValueError(f"{name} must be {text}, got {v!r}")
        if steps is not None and name in STEP_LENGTHS and v > steps:
            raise ValueError(f"{name} must be <= steps={steps}, got {v!r}")
