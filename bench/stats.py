"""Timing statistics: median CIs, adaptive repeats, disturbed cells, noise floor, one verdict per cell.

Repeats are skewed and outlier-prone, so everything is about the MEDIAN: an order-statistic CI; base vs head as a
ratio of medians with a percentile-bootstrap interval; a change only when that whole interval leaves the noise
band [1/(1+f), 1+f], which covers what the interval cannot see: drift BETWEEN runs, larger than the spread within
a run on shared machines. f comes from A/A pairs (calibrate), else DEFAULT_FLOOR, marked uncalibrated. Pure
numpy + scipy, deterministic: the same samples give byte-identical results."""
from __future__ import annotations

import dataclasses
import functools
import statistics
import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import stats as _st

SLOWER, FASTER, NOISE, NO_DATA, DISTURBED, NO_INTERVAL = (
    "slower", "faster", "within noise", "no data", "disturbed", "no interval")
MAX_IQR_OVER_MEDIAN = 0.25  # disturbed() thresholds: why these values, see its docstring
MAX_TPOT_OVER_STEP = 1.5
MAX_LAUNCH_CHANGE = 1.5


def _clean(samples) -> np.ndarray:
    """Finite float samples as a 1-D array (None/NaN/inf dropped)."""
    x = np.asarray([] if samples is None else samples, dtype=float).ravel()
    return x[np.isfinite(x)]


def min_samples_for_ci(confidence: float = 0.95) -> int:
    """Fewest samples whose order-statistic median CI is bounded: 2 * 0.5**n <= 1 - confidence (6 at 95%)."""
    return int(math.ceil(math.log2(2.0 / (1.0 - confidence)) - 1e-12))


@functools.lru_cache(maxsize=4096)
def _ci_ranks(n: int, confidence: float) -> Optional[tuple[int, int]]:
    """0-based ranks (k, n-1-k) of the median CI for n samples; None when unbounded."""
    if hasattr(_st, "quantile_test"):  # scipy >= 1.11: its exact interval, applied to the ranks themselves
        ci = _st.quantile_test(np.arange(n, dtype=float), p=0.5).confidence_interval(confidence)
        return None if math.isnan(ci.low) or math.isnan(ci.high) else (int(ci.low), int(ci.high))
    alpha = (1.0 - confidence) / 2.0  # largest k with P(Binom(n, 1/2) <= k) <= alpha
    k = int(_st.binom.ppf(alpha, n, 0.5))
    k -= int(_st.binom.cdf(k, n, 0.5) > alpha)
    return None if k < 0 else (k, n - 1 - k)


def median_ci(samples, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median: order statistics (x_(k+1), x_(n-k)) (1-based), k the largest count
    with P(Binom(n, 1/2) <= k) <= (1 - confidence)/2 (scipy.stats.quantile_test's exact interval; coverage >=
    confidence for any continuous distribution). (-inf, inf) when no such k (n < 6 at 95%); (nan, nan) if empty."""
    x = np.sort(_clean(samples))
    if x.size == 0:
        return (math.nan, math.nan)
    ranks = _ci_ranks(int(x.size), float(confidence))
    return (-math.inf, math.inf) if ranks is None else (float(x[ranks[0]]), float(x[ranks[1]]))


def relative_precision(samples, confidence: float = 0.95) -> float:
    """Half-width of median_ci over the median, (hi - lo) / 2 / median; inf when the CI is unbounded, there are
    no samples or the median is not positive."""
    x = np.sort(_clean(samples))
    ranks = _ci_ranks(int(x.size), float(confidence)) if x.size else None
    if ranks is None:
        return math.inf
    med = (x[(x.size - 1) // 2] + x[x.size // 2]) / 2.0
    return float((x[ranks[1]] - x[ranks[0]]) / 2.0 / med) if med > 0 else math.inf


# ---- adaptive repeats ----

@dataclass(frozen=True)
class StopDecision:
    """After a repeat: stop?, why ('precision' | 'budget' | 'max_repeats' | 'fixed'; '' while going on), repeats
    so far, relative precision reached per tracked metric, seconds spent."""
    stop: bool
    reason: str
    n: int
    precision: dict
    elapsed_s: float


@dataclass
class Stopper:
    """Decides after each timed repeat whether to time another.

    Stops at the first of: every tracked metric's relative_precision <= `precision` ('precision'); the next
    repeat, predicted to take the median repeat time so far, would end past `budget_s` ('budget');
    `max_repeats` ('max_repeats'). Never before `min_repeats` (default: fewest samples with a median CI, 6 at
    95%), whatever the budget. Fast cells thus get many repeats, slow stable ones few. `Stopper.fixed(n)` times
    exactly n (reason 'fixed'). `metrics` None tracks every metric passed to update()."""
    precision: Optional[float] = 0.01
    min_repeats: Optional[int] = None
    max_repeats: int = 100
    budget_s: Optional[float] = 60.0
    confidence: float = 0.95
    metrics: Optional[tuple] = None
    samples: dict = field(default_factory=dict)
    seconds: list = field(default_factory=list)

    def __post_init__(self):
        n = min_samples_for_ci(self.confidence) if self.min_repeats is None else self.min_repeats
        self.min_repeats = max(1, min(n, self.max_repeats))

    @classmethod
    def fixed(cls, n: int, **kw) -> "Stopper":
        """Exactly n timed repeats: no precision target, no budget."""
        return cls(precision=None, min_repeats=n, max_repeats=n, budget_s=None, **kw)

    def update(self, values: Mapping[str, float], seconds: float) -> StopDecision:
        """Record one repeat (metric -> value, and the wall seconds it took) and decide."""
        for k, v in values.items():
            self.samples.setdefault(k, []).append(float(v))
        self.seconds.append(float(seconds))
        return self.decision()

    def decision(self) -> StopDecision:
        n, spent = len(self.seconds), float(sum(self.seconds))
        names = self.metrics if self.metrics is not None else tuple(sorted(self.samples))
        prec = {k: relative_precision(self.samples.get(k, ()), self.confidence) for k in names}
        reason = ""
        if n >= self.max_repeats:
            reason = "fixed" if self.precision is None and self.budget_s is None else "max_repeats"
        elif n >= self.min_repeats:
            if self.precision is not None and all(p <= self.precision for p in prec.values()):
                reason = "precision"
            elif self.budget_s is not None and spent + statistics.median(self.seconds) > self.budget_s:
                reason = "budget"
        return StopDecision(bool(reason), reason, n, prec, spent)


# ---- disturbed cells ----

def disturbed(e2e_samples, tpot_samples=None, step_median_ms: Optional[float] = None,
              launch_us_start: Optional[float] = None, launch_us_end: Optional[float] = None, *,
              max_iqr_over_median: float = MAX_IQR_OVER_MEDIAN, max_tpot_over_step: float = MAX_TPOT_OVER_STEP,
              max_launch_change: float = MAX_LAUNCH_CHANGE) -> list[str]:
    """Why this cell's timing cannot be trusted ([] = clean). A missing input skips its check.

    - spread: IQR/median of e2e > 0.25 (n >= 3). Lognormal noise of sigma s gives IQR/median ~ 1.35 s, so 0.25 is
      s ~ 0.19, twice the noisiest legitimate cells (~10%); it fires when >= 1/4 of the repeats ran at another
      speed, not on single outliers (the median absorbs those). Periodic strategies cannot widen it: every
      repeat contains the same periodic steps.
    - stalls: median tpot (mean decode step) > 1.5x the median decode step. A period-P pattern of m steps k times
      slower lifts mean/median by m(k-1)/P: a quantized cache re-quantizing every 128 steps with one 5x step
      gives 1.03, even 8 such steps 1.25. In the stored rows this ratio is <= 1.14 for every quantized,
      offloaded and paged cell; 1.5 takes stalls worth half of the decode (22.8 ms steps with tpot 251 ms is
      11x). It does fire on recompiles inside the timed region (static+compile rows: 1.6-2.0x): not steady state.
    - host speed: the launch_us probe moved by > 1.5x either way between start and end. Cells of one run differ
      by up to ~1.4x (p10-p90) on shared VMs; 1.5x within one cell means its median mixes two machine speeds.
    """
    why = []
    e2e = _clean(e2e_samples)
    if e2e.size >= 3:
        q25, med, q75 = np.percentile(e2e, [25, 50, 75])
        if med > 0 and (q75 - q25) / med > max_iqr_over_median:
            why.append(f"e2e spread too wide: IQR/median {(q75 - q25) / med:.2f} > {max_iqr_over_median:g}")
    tpot = _clean(tpot_samples)
    if tpot.size and step_median_ms is not None and step_median_ms > 0:
        r = float(np.median(tpot)) / step_median_ms
        if r > max_tpot_over_step:
            why.append(f"tpot {float(np.median(tpot)):.4g} ms is {r:.2f}x the median decode step "
                       f"{step_median_ms:.4g} ms (> {max_tpot_over_step:g}x): stalls during decode")
    if launch_us_start and launch_us_end and launch_us_start > 0 and launch_us_end > 0:
        r = max(launch_us_start, launch_us_end) / min(launch_us_start, launch_us_end)
        if r > max_launch_change:
            why.append(f"host speed changed: launch probe {launch_us_start:.3g} -> {launch_us_end:.3g} us "
                       f"({r:.2f}x > {max_launch_change:g}x)")
    return why


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
    b, h = _clean(base), _clean(head)
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
    """One timing verdict for a cell: head/base ratio, its interval (None when none), label, and why."""
    ratio: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    label: str
    floor: float = 0.0
    n_base: int = 0
    n_head: int = 0
    note: str = ""


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
    return Verdict(ci.ratio, ci.lo, ci.hi, label, floor.floor, ci.n_base, ci.n_head, note)
