"""The timed calls of one cell: adaptive repeats, raw samples, and a second look at a disturbed cell.

repeats=auto times calls until the 95% interval of the median e2e and tpot is within `precision` of it, or
the cell's budget is spent (bench.stats.intervals.Stopper); repeats=N times exactly N. The host's launch speed is
probed before and after. A cell whose repeats disagree with themselves (bench.stats.intervals.disturbed) is measured
once more from scratch; if it still disagrees, the row says so and why.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from bench.stats import intervals
from bench.measure.memory import launch_us

REMEASURE = 1  # a disturbed cell is measured again this many times before it is flagged
ROUND_MIN_REPEATS = 3  # timed calls of one round at least (its median); one process alone needs 6 for an interval


@dataclass
class Series:
    timings: list = field(default_factory=list)   # measure.Timing of each timed call
    stop_reason: str = ""
    precision: float = float("nan")               # reached, for e2e (relative half-width of the median's interval)
    launch_us: float = float("nan")
    launch_end_us: float = float("nan")
    disturbed: list = field(default_factory=list)  # reasons; empty when clean
    remeasured: int = 0
    last_out: object = None                        # the last call's output (its cache is counted)
    start_bytes: Optional[int] = None              # memory in use right before the timed calls (reset_peak's)


def stopper(cfg) -> intervals.Stopper:
    if cfg.repeats == "auto":
        # The cell's budget is shared by its planned rounds: each round's process gets its part. With rounds, the
        # interval comes from the spread between processes, so a round needs only a few calls for its median.
        return intervals.Stopper(precision=cfg.precision, max_repeats=cfg.max_repeats,
                                 min_repeats=ROUND_MIN_REPEATS if cfg.rounds > 1 else None,
                                 budget_s=cfg.cell_budget_s / max(cfg.rounds, 1), metrics=("e2e_ms", "tpot_ms"))
    return intervals.Stopper.fixed(cfg.repeats)


def untraced(call: Callable):
    """One timed call with Python's cyclic garbage collector off, as timeit does: a full collection of a heap
    holding torch, transformers and inductor takes tens of ms and would land in whichever call it hit."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        return call()
    finally:
        if was_on:
            gc.enable()


def _once(call: Callable, cfg, device: str) -> Series:
    s = Series(launch_us=launch_us(device))
    stop = stopper(cfg)
    while True:
        s.last_out = None  # the previous call's cache is freed before the next allocates
        t0 = time.perf_counter()
        timing, s.last_out = untraced(call)
        s.timings.append(timing)
        d = stop.update({"e2e_ms": timing.e2e_ms, "tpot_ms": timing.tpot_ms}, time.perf_counter() - t0)
        if d.stop:
            s.stop_reason, s.precision = d.reason, d.precision.get("e2e_ms", float("nan"))
            break
    s.launch_end_us = launch_us(device)
    step = float(np.median([np.median(t.step_ms) for t in s.timings if t.step_ms])) if s.timings[0].step_ms else None
    why = intervals.disturbed([t.e2e_ms for t in s.timings], [t.tpot_ms for t in s.timings], step,
                          s.launch_us, s.launch_end_us)
    if s.stop_reason == "precision":  # the calls agree to the target: a moved launch probe alone disturbed nothing
        why = [w for w in why if not w.startswith("host speed changed")]
    s.disturbed = why
    return s


def measure(call: Callable, cfg, device: str, before_timed: Callable[[], Optional[int]]) -> Series:
    """Time `call` (returns (Timing, output)) as cfg asks; `before_timed` runs right before each series
    (it resets the peak-memory counters and returns the bytes in use then)."""
    s = None
    for attempt in range(REMEASURE + 1):
        s = None  # a discarded series' last cache must not sit in memory while the next is measured
        start = before_timed()
        s = _once(call, cfg, device)
        s.remeasured, s.start_bytes = attempt, start
        if not s.disturbed:
            break
    return s


def summarise(s: Series, batch: int) -> dict:
    """Medians, raw samples and per-position step medians of a series, as row columns."""
    e2e = [t.e2e_ms for t in s.timings]
    ttft = [t.ttft_ms for t in s.timings]
    tpot = [t.tpot_ms for t in s.timings]
    med = {k: float(np.median(v)) for k, v in (("e2e_ms", e2e), ("ttft_ms", ttft), ("tpot_ms", tpot))}
    n = s.timings[0].produced
    return {
        **med,
        "e2e_samples_ms": [round(v, 4) for v in e2e], "ttft_samples_ms": [round(v, 4) for v in ttft],
        "tpot_samples_ms": [round(v, 5) for v in tpot],
        "decode_tok_s": batch * 1000.0 / med["tpot_ms"], "e2e_tok_s": batch * n * 1000.0 / med["e2e_ms"],
        "step_ms": [round(v, 4) for v in np.median(np.array([t.step_ms for t in s.timings]), axis=0).tolist()],
        "repeats": len(s.timings), "stop_reason": s.stop_reason,
        "precision": None if not np.isfinite(s.precision) else float(s.precision),
        "launch_us": s.launch_us, "launch_end_us": s.launch_end_us,
        "disturbed": bool(s.disturbed), "disturbed_why": "; ".join(s.disturbed), "remeasured": s.remeasured,
    }
