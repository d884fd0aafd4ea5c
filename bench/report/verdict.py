"""The one verdict on a pair of rows (base, head of one cell): every report, compare and PR comment asks here.

It reads the rows' raw samples (bench.report.selection.samples), the disturbed flags, and the host's launch probe;
the statistics are bench.stats.verdicts'.
"""
from __future__ import annotations

import math

from bench.report import selection
from bench.report.fmt import text
from bench.stats import intervals, verdicts


def _why(r: dict) -> list[str]:
    return [w for w in text(r.get("disturbed_why")).split("; ") if w] if r.get("disturbed") is True else []


def _host_us(r: dict) -> float:
    """The host's launch probe over a row's cell: the geometric mean of its start and end readings (nan: none)."""
    x = [float(v) for v in (r.get("launch_us"), r.get("launch_end_us")) if v is not None and float(v) > 0]
    return math.sqrt(x[0] * x[-1]) if x else math.nan


def host_moved(b: dict, h: dict) -> list[str]:
    """Base and head on the same kind of machine whose host ran at different speeds (the launch probe apart by
    more than a cell may drift within itself): a timing change there is the host's, not the code's. Across
    GPU or CPU models the host is part of what is compared, and this says nothing."""
    if text(b.get("gpu")) != text(h.get("gpu")) or text(b.get("cpu")) != text(h.get("cpu")):
        return []
    x, y = _host_us(b), _host_us(h)
    r = intervals.speed_change(x, y)
    if not r > intervals.MAX_LAUNCH_CHANGE:
        return []
    return [f"host speed differed from base's: launch probe {x:.3g} us in base, {y:.3g} in head "
            f"({r:.2f}x > {intervals.MAX_LAUNCH_CHANGE:g}x)"]


def measured(r: dict, metric: str = "e2e_ms") -> verdicts.Measured | None:
    """A row's round medians of `metric` with its run's spread between processes, where it has them (schema 3;
    the run's spread is that of e2e, the figure its rounds were raced on)."""
    col = r.get(f"round_{metric[:-3]}_ms")
    rounds = [float(v) for v in (col if isinstance(col, list) else []) if v]
    sd, df = r.get("run_sd_rel"), r.get("run_sd_df")
    if not rounds or not isinstance(sd, float) or not isinstance(df, (int, float)) or not math.isfinite(sd):
        return None
    return verdicts.Measured(tuple(rounds), float(sd), float(df))


def judge(b: dict, h: dict, floor: verdicts.NoiseFloor, metric: str = "e2e_ms") -> tuple[verdicts.Verdict, str]:
    """The verdict on head against base for one cell and one timing (e2e_ms, the whole call, or tpot_ms, a decode
    step): against both rows' measured reproducibility where they have it (rounds in separate processes), else
    against the noise floor (and the verdict says so)."""
    mb, mh = measured(b, metric), measured(h, metric)
    why_b, why_h = _why(b), _why(h) + host_moved(b, h)
    if mb is not None and mh is not None:
        return verdicts.rerun_verdict(mb, mh, base_disturbed=why_b, head_disturbed=why_h), "rounds"
    bs, bfrom = selection.samples(b, metric)
    hs, hfrom = selection.samples(h, metric)
    v = verdicts.verdict(bs or [], hs or [], floor, base_disturbed=why_b, head_disturbed=why_h)
    return v, bfrom if bfrom == hfrom else f"base {bfrom}, head {hfrom}"
