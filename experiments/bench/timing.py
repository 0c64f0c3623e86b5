"""Wall times of calls, written once for every benchmark.

Every call is made to completion (``jax.block_until_ready`` on its result). The first
call of each function is timed apart (it compiles); then ``repeats`` timed calls are made,
interleaved across the functions so that a slow spell of the machine hits all of them
alike, stopping early (after at least two) once a function's timed calls have taken
``budget_s`` seconds. A benchmark reports the best (the least disturbed; what a
ratio of two implementations should use) or the median of the timed calls.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Any, Callable, Mapping

import jax


@dataclasses.dataclass
class Timing:
    """One function's times: ``first`` (the compiling call), ``times`` (the timed calls),
    and ``result`` (the last call's result)."""

    first: float
    times: list
    result: Any = None

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return float(statistics.median(self.times))


def _clocked(fn: Callable):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def time_calls(fns: Mapping[str, Callable[[], Any]], repeats: int,
               budget_s: float = math.inf) -> dict[str, Timing]:
    """``{name: Timing}`` of the zero-argument functions ``fns`` (module doc)."""
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    timings = {}
    for name, fn in fns.items():
        first, out = _clocked(fn)
        timings[name] = Timing(first, [], out)
    for k in range(repeats):
        for name, fn in fns.items():
            t = timings[name]
            if k >= 2 and sum(t.times) >= budget_s:
                continue
            seconds, t.result = _clocked(fn)
            t.times.append(seconds)
    return timings


def best_times(fns: Mapping[str, Callable[[], Any]], repeats: int,
               budget_s: float = math.inf) -> dict[str, float]:
    """``{name: best seconds}`` (module doc)."""
    return {name: t.best for name, t in time_calls(fns, repeats, budget_s).items()}


def best_time(fn: Callable[[], Any], repeats: int, budget_s: float = math.inf) -> float:
    """The best seconds of one function (module doc)."""
    return best_times({"fn": fn}, repeats, budget_s)["fn"]


def median_times(fns: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """``{name: median seconds}`` (module doc)."""
    return {name: t.median for name, t in time_calls(fns, repeats).items()}
