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


def judge(b: dict, h: dict, floor: verdicts.NoiseFloor) -> tuple[verdicts.Verdict, str]:
    bs, bfrom = selection.samples(b, "e2e_ms")
    hs, hfrom = selection.samples(h, "e2e_ms")
    v = verdicts.verdict(bs or [], hs or [], floor, base_disturbed=_why(b), head_disturbed=_why(h) + host_moved(b, h))
    return v, bfrom if bfrom == hfrom else f"base {bfrom}, head {hfrom}"
