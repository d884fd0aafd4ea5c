"""Comparing two cells: one verdict from the ratio of medians, its bootstrap interval and a noise floor.

Base vs head is a ratio of medians with a percentile-bootstrap interval; a change only when that whole interval
leaves the noise band [1/(1+f), 1+f], which covers what the interval cannot see: drift BETWEEN runs, larger than
the spread within a run on shared machines. f comes from A/A pairs (calibrate), else DEFAULT_FLOOR, marked
uncalibrated. Pure numpy + scipy, deterministic: the same samples give byte-identical results."""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import stats as _st

from bench.stats.intervals import finite_samples

SLOWER, FASTER, NOISE, NO_DATA, DISTURBED, NO_INTERVAL = (
    "slower", "faster", "within noise", "no data", "disturbed", "no interval")


# ---- comparison ----

@dataclass(frozen=True)
class RatioCI:
    """median(head)/median(base) and its bootstrap interval; lo/hi None when there is none (note says why)."""
    ratio: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    n_base: int
    n_head: int
    note: str = ""


def _median_ratio(base, head, axis=-1):
    return np.median(head, axis=axis) / np.median(base, axis=axis)


def ratio_ci(base, head, confidence: float = 0.95, seed: int = 0, n_resamples: int = 2000) -> RatioCI:
    """median(head) / median(base) with a percentile-bootstrap interval: scipy.stats.bootstrap, the two samples
    resampled independently, rng = default_rng(seed), so byte-identical across runs.

    Percentile, not BCa: BCa's acceleration is a jackknife of the median, degenerate with small n and ties (NaN
    intervals, DegenerateDataWarning); the percentile interval is transformation-respecting (the same in log
    space), defined for any n >= 2 and, in simulation, covers ~95-97% from n = 6 to 100 with outliers. No
    interval when a side has < 2 samples (note says so); identical samples give a zero-width one."""
    b, h = finite_samples(base), finite_samples(head)
    if b.size == 0 or h.size == 0 or np.median(b) <= 0 or np.median(h) <= 0:
        return RatioCI(None, None, None, b.size, h.size, "no samples" if not (b.size and h.size) else "median <= 0")
    r = float(_median_ratio(b, h))
    if b.size < 2 or h.size < 2:
        return RatioCI(r, None, None, b.size, h.size, f"no interval: n_base={b.size}, n_head={h.size} (need >= 2)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _st.bootstrap((b, h), _median_ratio, n_resamples=n_resamples, vectorized=True, paired=False,
                            confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return RatioCI(r, None, None, b.size, h.size, "no interval: bootstrap failed")
    return RatioCI(r, lo, hi, b.size, h.size, "zero spread" if lo == hi else "")


# ---- noise floor ----

@dataclass(frozen=True)
class NoiseFloor:
    """Relative noise band f: a change must put its whole ratio interval outside [1/(1+f), 1+f].

    Estimator (calibrate). Per A/A cell: L = log ratio of medians, s = its within-run standard error (ratio_ci
    log half-width / z). Drift between runs is what L varies by beyond s: drift_sd^2 is the Paule-Mandel root of
    sum L^2/(s^2 + t^2) = n_cells (mean held at 0, so a shift of a whole run counts as drift; noisy cells weigh
    little). An A/A cell is flagged when |L| > F + z s with L ~ N(0, drift_sd^2 + s^2); F solves mean
    P(flagged) = 1 - quantile over the calibration cells (quantile 0.99), f = exp(F) - 1 >= min_floor. A moment
    fit of 20-50 cells is far steadier than their empirical 99% quantile (= the calibration's worst cell)."""
    floor: float
    calibrated: bool
    source: str
    n_cells: int = 0
    quantile: Optional[float] = None
    confidence: float = 0.95
    min_floor: float = 0.0
    drift_sd: Optional[float] = None
    median_abs_log_ratio: Optional[float] = None

    def to_dict(self) -> dict:
        """Plain JSON-safe dict (json.dumps(floor.to_dict())); from_dict reads it back, ignoring unknown keys."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "NoiseFloor":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


# 5%: above the 1-3.5% floors calibrate() gives for 0.5-1% drift a run in simulation; the old 2% rule flagged
# 3-22 cells per A/A compare on shared machines. Always reported as uncalibrated.
DEFAULT_FLOOR = NoiseFloor(floor=0.05, calibrated=False, source="default (uncalibrated)")


def _root(f, hi: float) -> float:
    """Root in [0, hi] of a decreasing f by bisection; 0 when f(0) <= 0."""
    lo = 0.0
    if f(lo) <= 0:
        return 0.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return hi


def calibrate(pairs: Sequence[tuple], quantile: float = 0.99, confidence: float = 0.95, min_floor: float = 0.005,
              source: str = "", seed: int = 0) -> NoiseFloor:
    """NoiseFloor from A/A pairs: (samples_run1, samples_run2) of the same code and cell from two separate runs.
    Leave out disturbed cells; pool several run pairs when whole runs drift (one pair sees one such shift).
    Pairs without an interval are skipped; none usable gives DEFAULT_FLOOR. Estimator: see NoiseFloor."""
    z = float(_st.norm.ppf(0.5 + confidence / 2.0))
    L, s = [], []
    for a, b in pairs:
        ci = ratio_ci(a, b, confidence, seed)
        if ci.lo is not None and ci.lo > 0:
            L.append(math.log(ci.ratio))
            s.append((math.log(ci.hi) - math.log(ci.lo)) / (2.0 * z))
    if not L:
        return DEFAULT_FLOOR
    L, s = np.array(L), np.array(s)
    s2 = np.maximum(s, 1e-6) ** 2  # Paule-Mandel: sum L^2 / (s^2 + t^2) = n, decreasing in t^2
    drift2 = _root(lambda t2: float(np.sum(L ** 2 / (s2 + t2))) - L.size, float(np.max(L ** 2)) + 1e-12)
    sd = np.sqrt(drift2 + s2)
    F = _root(lambda F: float(np.mean(2.0 * _st.norm.sf((F + z * s) / sd))) - (1.0 - quantile), 1.0)
    return NoiseFloor(floor=max(math.expm1(F), min_floor), calibrated=True, source=source or "A/A pairs",
                      n_cells=int(L.size), quantile=quantile, confidence=confidence, min_floor=min_floor,
                      drift_sd=math.sqrt(drift2), median_abs_log_ratio=float(np.median(np.abs(L))))


# ---- verdicts ----

@dataclass(frozen=True)
class Verdict:
    """One timing verdict for a cell: head/base ratio, its interval (None when none), label, and why.
    `detectable` is the smallest change (relative) this pair could have called a change; `basis` says what the
    judgement rests on: the cells' measured reproducibility, or a noise floor where that is unknown."""
    ratio: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    label: str
    floor: float = 0.0
    n_base: int = 0
    n_head: int = 0
    note: str = ""
    detectable: Optional[float] = None
    basis: str = ""


# ---- verdicts against measured reproducibility ----

JUDGE_CONFIDENCE = 0.99  # a change is called at 99%: one A/A cell in 100 is flagged when spreads are right


@dataclass(frozen=True)
class Measured:
    """One side of a cell: the medians of its rounds (one worker process each) and the spread its run measured
    over all its cells (the prior: relative sd of a round median between processes, and its degrees of freedom)."""
    rounds: tuple
    prior_sd: float
    prior_df: float


def rerun_verdict(base: Measured, head: Measured, *, base_disturbed: Sequence[str] = (),
                  head_disturbed: Sequence[str] = (), confidence: float = JUDGE_CONFIDENCE,
                  higher_is_worse: bool = True) -> Verdict:
    """head vs base judged on what changes between processes: a t-test of the two sides' log round medians, whose
    variance is the cell's own (both sides' rounds) moderated by the runs' prior (bench.stats.reproducibility),
    at `confidence`, two-sided. A disturbed side is 'disturbed', never a clean verdict."""
    xb = np.log([v for v in base.rounds if v and v > 0])
    xh = np.log([v for v in head.rounds if v and v > 0])
    if not (xb.size and xh.size):
        return Verdict(None, None, None, NO_DATA, note="no rounds on a side", basis="reproducibility")
    own_df = xb.size + xh.size - 2
    ss = float(((xb - xb.mean()) ** 2).sum() + ((xh - xh.mean()) ** 2).sum())
    d0 = min(base.prior_df, head.prior_df)
    var = (ss + d0 * (base.prior_sd ** 2 + head.prior_sd ** 2) / 2) / (own_df + d0)
    se = math.sqrt(var * (1 / xb.size + 1 / xh.size))
    t = float(_st.t.ppf(0.5 + confidence / 2.0, own_df + d0))
    d = float(xh.mean() - xb.mean())
    lo, hi, detect = math.exp(d - t * se), math.exp(d + t * se), math.expm1(t * se)
    reasons = [f"base: {r}" for r in base_disturbed] + [f"head: {r}" for r in head_disturbed]
    if reasons:
        label = DISTURBED
    else:
        up, down = (SLOWER, FASTER) if higher_is_worse else (FASTER, SLOWER)
        label = up if lo > 1 else down if hi < 1 else NOISE
    basis = (f"measured reproducibility: {xb.size} + {xh.size} rounds in separate processes, spread "
             f"{math.sqrt(var):.1%} per round, {confidence:.0%}")
    return Verdict(math.exp(d), lo, hi, label, 0.0, int(xb.size), int(xh.size), "; ".join(reasons), detect, basis)


def classify(lo: float, hi: float, floor: float, higher_is_worse: bool = True) -> str:
    """'slower'/'faster' when [lo, hi] lies wholly above 1+floor or below 1/(1+floor) (symmetric in log
    space), else 'within noise'. With higher_is_worse=False (a throughput) the labels swap."""
    up, down = (SLOWER, FASTER) if higher_is_worse else (FASTER, SLOWER)
    if math.log(lo) > math.log1p(floor):
        return up
    if math.log(hi) < -math.log1p(floor):
        return down
    return NOISE


def verdict(base, head, floor: Optional[NoiseFloor] = None, *, base_disturbed: Sequence[str] = (),
            head_disturbed: Sequence[str] = (), higher_is_worse: bool = True, seed: int = 0) -> Verdict:
    """One label for head vs base, first that applies: 'no data' (a side without samples); 'disturbed' (a side
    has disturbed() reasons: never shown as a clean change or no-change); 'no interval' (a side with one
    sample); classify() of ratio_ci's interval against the floor (DEFAULT_FLOOR when None, noted)."""
    floor = floor or DEFAULT_FLOOR
    ci = ratio_ci(base, head, floor.confidence, seed)
    reasons = [f"base: {r}" for r in base_disturbed] + [f"head: {r}" for r in head_disturbed]
    if ci.ratio is None:
        label, note = NO_DATA, ci.note
    elif reasons:
        label, note = DISTURBED, "; ".join(reasons)
    elif ci.lo is None:
        label, note = NO_INTERVAL, ci.note
    else:
        label, note = classify(ci.lo, ci.hi, floor.floor, higher_is_worse), ci.note
    if not floor.calibrated:
        note = "; ".join(x for x in (note, f"floor {floor.floor:.1%} uncalibrated") if x)
    detect = None
    if ci.lo is not None and ci.ratio:  # the change whose interval would just clear the floor
        detect = math.expm1(math.log1p(floor.floor) + (math.log(ci.hi) - math.log(ci.lo)) / 2)
    basis = (f"reproducibility unknown (calls of one process per side): interval within the runs against the "
             f"{floor.floor:.0%} floor ({'calibrated' if floor.calibrated else 'uncalibrated'})")
    return Verdict(ci.ratio, ci.lo, ci.hi, label, floor.floor, ci.n_base, ci.n_head, note, detect, basis)
