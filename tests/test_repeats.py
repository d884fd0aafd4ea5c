"""bench.run.repeats: adaptive repeats and the second look at a disturbed cell, with calls of known timings."""
from __future__ import annotations

import itertools

import pytest

from bench.run import repeats
from bench.measure.clock import Timing


@pytest.fixture(autouse=True)
def steady_host(monkeypatch):
    """The host-speed probe reads a fixed value: a parallel test loading this host must not disturb these series
    (the one test about the probe sets its own)."""
    monkeypatch.setattr(repeats, "launch_us", lambda device: 2.0)


def calls(e2e_values, steps=(1.0,) * 9):
    """A stand-in for a timed generate() call: each call takes the next e2e from the list (ms)."""
    it = itertools.cycle(e2e_values)

    def call():
        e = next(it)
        return Timing(e2e_ms=e, ttft_ms=e - sum(steps) * e / 10, step_ms=[s * e / 10 for s in steps], produced=10), None
    return call


def test_a_steady_cell_stops_at_its_precision(make_cfg):
    cfg = make_cfg("model=tiny-gpt2", "repeats=auto", "precision=0.01", "max_repeats=50")
    s = repeats.measure(calls([10.0, 10.01, 9.99, 10.02, 9.98]), cfg, "cpu", lambda: None)
    assert s.stop_reason == "precision" and not s.disturbed and s.remeasured == 0
    row = repeats.summarise(s, batch=1)
    assert row["precision"] <= 0.01 and row["repeats"] == len(row["e2e_samples_ms"]) >= 6


def test_a_cell_that_disagrees_with_itself_is_measured_again_then_flagged(make_cfg):
    """Half the calls on another speed (a host that changed under it): re-measured once, still bimodal, flagged."""
    cfg = make_cfg("model=tiny-gpt2", "repeats=8")
    before = []
    s = repeats.measure(calls([10.0, 25.0]), cfg, "cpu", lambda: before.append(1))
    assert s.remeasured == repeats.REMEASURE == 1 and len(before) == 2  # the peak counters reset per series
    row = repeats.summarise(s, batch=1)
    assert row["disturbed"] is True and "spread" in row["disturbed_why"]
    assert len(row["e2e_samples_ms"]) == 8  # the second series, whole: the first is not mixed in


def test_a_disturbed_first_series_that_settles_is_clean(make_cfg):
    cfg = make_cfg("model=tiny-gpt2", "repeats=8")
    series = iter([[10.0, 25.0]] * 4 + [[10.0]] * 8)  # 8 calls at two speeds, then 8 at one
    values = itertools.chain.from_iterable(series)

    def call():
        e = next(values)
        return Timing(e2e_ms=e, ttft_ms=e / 10, step_ms=[e / 10] * 9, produced=10), None

    s = repeats.measure(call, cfg, "cpu", lambda: None)
    assert s.remeasured == 1 and not s.disturbed


@pytest.mark.parametrize("fixed", [1, 3])
def test_fixed_repeats_are_exactly_that(make_cfg, fixed):
    s = repeats.measure(calls([10.0, 30.0, 10.0]), make_cfg("model=tiny-gpt2", f"repeats={fixed}"), "cpu", lambda: None)
    assert len(s.timings) == fixed and s.stop_reason == "fixed"


@pytest.mark.parametrize("how, flagged", [("auto", False), ("8", True)])
def test_a_moved_launch_probe_alone_disturbs_only_calls_that_did_not_agree(make_cfg, monkeypatch, how, flagged):
    """The host probe ran 2x slower at the end than at the start: with calls that met the precision target it
    changed nothing measurable (seen on the H200: 0.1% precision, probe 12.9 -> 6.8 us); without the target
    met it is a sign of a disturbed cell."""
    probes = itertools.cycle([10.0, 20.0])
    monkeypatch.setattr(repeats, "launch_us", lambda device: next(probes))
    cfg = make_cfg("model=tiny-gpt2", f"repeats={how}", *(["precision=0.01"] if how == "auto" else []))
    s = repeats.measure(calls([10.0, 10.01, 9.99]), cfg, "cpu", lambda: None)
    assert bool(s.disturbed) is flagged


def test_timed_calls_run_without_the_garbage_collector_and_restore_it(make_cfg):
    seen = []

    def call():
        import gc
        seen.append(gc.isenabled())
        return Timing(e2e_ms=10.0, ttft_ms=1.0, step_ms=[1.0] * 9, produced=10), None

    import gc
    assert gc.isenabled()
    repeats.measure(call, make_cfg("model=tiny-gpt2", "repeats=3"), "cpu", lambda: None)
    assert seen == [False, False, False] and gc.isenabled()
