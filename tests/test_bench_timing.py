"""The benchmarks' shared timing (``experiments.bench.timing``): calls counted against a
fake clock, so the statistics are checked exactly."""

import pytest

from experiments.bench import timing


@pytest.fixture
def clock(monkeypatch):
    """``time.perf_counter`` advanced by hand: each call of a timed function adds its
    scripted duration, so every timing is known exactly."""
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    return now


def scripted(clock, durations, log, name):
    it = iter(durations)

    def fn():
        log.append(name)
        clock[0] += next(it)
        return name

    return fn


def test_first_call_apart_repeats_interleaved_best_and_median(clock):
    log = []
    fns = {"a": scripted(clock, [9.0, 3.0, 1.0, 2.0], log, "a"),
           "b": scripted(clock, [7.0, 4.0, 6.0, 5.0], log, "b")}
    t = timing.time_calls(fns, repeats=3)
    assert log == ["a", "b"] + ["a", "b"] * 3  # compiles first, then interleaved
    assert t["a"].first == 9.0 and t["a"].times == [3.0, 1.0, 2.0]
    assert t["a"].best == 1.0 and t["a"].median == 2.0 and t["b"].median == 5.0
    assert t["b"].result == "b"


def test_budget_stops_a_slow_function_after_two_timed_calls(clock):
    log = []
    fns = {"slow": scripted(clock, [1.0] + [10.0] * 5, log, "slow"),
           "fast": scripted(clock, [1.0] + [0.1] * 5, log, "fast")}
    t = timing.time_calls(fns, repeats=5, budget_s=15.0)
    assert len(t["slow"].times) == 2 and len(t["fast"].times) == 5
    assert timing.best_time(scripted(clock, [5.0, 2.0, 1.0], [], "x"), 2) == 1.0


def test_repeats_must_be_positive():
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        timing.time_calls({"a": lambda: None}, 0)
