"""Timing statistics of one cell: the median's CI, adaptive repeats (Stopper), disturbed cells.

Repeats are skewed and outlier-prone, so everything is about the MEDIAN (an order-statistic CI). Comparing two
cells lives in bench.stats.verdicts. Pure numpy + scipy, deterministic."""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
from scipy import stats as _st

MAX_IQR_OVER_MEDIAN = 0.25  # disturbed() thresholds: why these values, see its docstring
MAX_TPOT_OVER_STEP = 1.5
MAX_LAUNCH_CHANGE = 1.5


def finite_samples(samples) -> np.ndarray:
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
    x = np.sort(finite_samples(samples))
    if x.size == 0:
        return (math.nan, math.nan)
    ranks = _ci_ranks(int(x.size), float(confidence))
    return (-math.inf, math.inf) if ranks is None else (float(x[ranks[0]]), float(x[ranks[1]]))


def relative_precision(samples, confidence: float = 0.95) -> float:
    """Half-width of median_ci over the median, (hi - lo) / 2 / median; inf when the CI is unbounded, there are
    no samples or the median is not positive."""
    x = np.sort(finite_samples(samples))
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

def speed_change(a: Optional[float], b: Optional[float]) -> float:
    """How far apart two readings of the host's launch probe are (>= 1, either way); nan where one is missing."""
    if not (a and b and a > 0 and b > 0):
        return float("nan")
    return max(a, b) / min(a, b)


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
    e2e = finite_samples(e2e_samples)
    if e2e.size >= 3:
        q25, med, q75 = np.percentile(e2e, [25, 50, 75])
        if med > 0 and (q75 - q25) / med > max_iqr_over_median:
            why.append(f"e2e spread too wide: IQR/median {(q75 - q25) / med:.2f} > {max_iqr_over_median:g}")
    tpot = finite_samples(tpot_samples)
    if tpot.size and step_median_ms is not None and step_median_ms > 0:
        r = float(np.median(tpot)) / step_median_ms
        if r > max_tpot_over_step:
            why.append(f"tpot {float(np.median(tpot)):.4g} ms is {r:.2f}x the median decode step "
                       f"{step_median_ms:.4g} ms (> {max_tpot_over_step:g}x): stalls during decode")
    r = speed_change(launch_us_start, launch_us_end)
    if r > max_launch_change:
        why.append(f"host speed changed: launch probe {launch_us_start:.3g} -> {launch_us_end:.3g} us "
                   f"({r:.2f}x > {max_launch_change:g}x)")
    return why
