"""How far a cell's median moves when it is measured again in another process: intervals from rounds.

A round is one worker process timing a cell (its median over the calls it made). Processes differ (address
layout, allocator state, thread placement, the host's other work), so the calls of one process under-state what a
rerun sees. The spread between round medians is taken on the log scale (a relative spread), pooled over the cells
of a run, and moderated per cell: each cell's own estimate is shrunk toward the run's in proportion to the
degrees of freedom behind each (Smyth's moderated variance, limma's empirical Bayes: the prior's degrees of freedom
come from how much the cells' variances differ beyond what their own few rounds explain), so two rounds per cell
are enough. The interval of a
cell's median is then median x exp(+-t * sd / sqrt(rounds)). A cell with one round takes the pooled spread of its
run, or PRIOR_SD where no cell of the run has two rounds, and says so in its basis.

Pure numpy + scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats as _st

PRIOR_SD = 0.10     # relative sd of a round median between processes, assumed where nothing was measured
PRIOR_DF = 2.0      # the weight of the pooled spread in a cell's moderated estimate, in degrees of freedom


@dataclass(frozen=True)
class Spread:
    """The between-process spread of round medians: relative sd (log scale) and its degrees of freedom."""
    sd: float
    df: float
    basis: str


def log_medians(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v) and v > 0], dtype=float)
    return np.log(x)


def pooled(cells: Sequence[Sequence[float]]) -> Optional[Spread]:
    """The run's spread from every cell with >= 2 rounds (None if there is none): the prior of the moderated
    estimate, with its degrees of freedom fitted to the cells' own variances (prior_fit)."""
    var, df = [], []
    for c in cells:
        x = log_medians(c)
        if x.size >= 2:
            var.append(float(((x - x.mean()) ** 2).sum()) / (x.size - 1))
            df.append(x.size - 1)
    if not df:
        return None
    s2, d0 = prior_fit(np.array(var), np.array(df, dtype=float))
    return Spread(math.sqrt(s2), d0, f"pooled over the run's {len(df)} cells of >= 2 rounds (prior df {d0:.3g})")


MAX_PRIOR_DF = 50.0  # beyond this the cells share one spread; more would claim a precision no run has


def _trigamma_inverse(y: float) -> float:
    """x with trigamma(x) = y (Newton's method on 1/x, as limma does)."""
    from scipy.special import polygamma

    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = float(polygamma(1, x))
        step = tri * (1.0 - tri / y) / float(polygamma(2, x))
        x += step
        if -step / x < 1e-8:
            break
    return x


def prior_fit(var: np.ndarray, df: np.ndarray) -> tuple[float, float]:
    """(s0^2, d0) of the scaled inverse-chi-square prior of the cells' variances (limma's fitFDist, moments of log
    variances). d0 is capped at MAX_PRIOR_DF; with one cell, or variances no more different than their own df
    explain, the cap is used."""
    from scipy.special import digamma, polygamma

    z = np.log(np.maximum(var, 1e-12))
    e = z - digamma(df / 2) + np.log(df / 2)
    emean = float(e.mean())
    if e.size < 2:
        return float(np.mean(var)), min(float(df.sum()), MAX_PRIOR_DF)
    evar = float(((e - emean) ** 2).sum() / (e.size - 1) - np.mean(polygamma(1, df / 2)))
    d0 = MAX_PRIOR_DF if evar <= 0 else min(2.0 * _trigamma_inverse(evar), MAX_PRIOR_DF)
    s2 = math.exp(emean + float(digamma(d0 / 2)) - math.log(d0 / 2))
    return s2, d0


def moderated(rounds: Sequence[float], run: Optional[Spread], prior_sd: float = PRIOR_SD,
              prior_df: float = PRIOR_DF) -> Spread:
    """One cell's spread: its own rounds' variance and the run's prior, weighted by their degrees of freedom
    (the prior of PRIOR_SD where no cell of the run has 2 rounds)."""
    base = run if run is not None else Spread(prior_sd, prior_df, f"assumed {prior_sd:.0%} (no cell of the run had 2 rounds)")
    x = log_medians(rounds)
    if x.size < 2:
        return Spread(base.sd, base.df, f"1 round; spread {base.basis}")
    own_df = x.size - 1
    own = float(((x - x.mean()) ** 2).sum()) / own_df
    var = (own_df * own + base.df * base.sd ** 2) / (own_df + base.df)
    if own > var:  # a cell visibly noisier than its run keeps its own spread: shrinking it would under-cover
        return Spread(math.sqrt(own), own_df + base.df, f"{x.size} rounds in separate processes, its own spread "
                                                        "(above the run's)")
    return Spread(math.sqrt(var), own_df + base.df, f"{x.size} rounds in separate processes, moderated by the run's spread")


def half_width(spread: Spread, rounds: int, confidence: float = 0.95) -> float:
    """Relative half-width of the interval of a cell's median over `rounds` rounds: exp(t * sd / sqrt(k)) - 1."""
    if rounds < 1 or not math.isfinite(spread.sd):
        return math.inf
    t = float(_st.t.ppf(0.5 + confidence / 2, spread.df)) if spread.df > 0 else math.inf
    return math.expm1(t * spread.sd / math.sqrt(rounds))


def interval(median: float, spread: Spread, rounds: int, confidence: float = 0.95) -> tuple[float, float]:
    """The interval of a cell's median as a rerun of the same code would see it."""
    h = math.log1p(half_width(spread, rounds, confidence))
    return median * math.exp(-h), median * math.exp(h)


def estimate_sd(spread: Spread, rounds: int) -> float:
    """Relative sd of a cell's median over `rounds` rounds (log scale): what one run's figure varies by."""
    return spread.sd / math.sqrt(max(rounds, 1))


def behind(cell: tuple[float, float], leader: tuple[float, float], confidence: float = 0.95) -> bool:
    """Whether a cell (median, estimate sd) is slower than the leader's beyond noise at `confidence`
    (one-sided normal test on the log ratio)."""
    (m, s), (ml, sl) = cell, leader
    if not (m > 0 and ml > 0):
        return False
    z = float(_st.norm.ppf(confidence))
    return math.log(m / ml) - z * math.sqrt(s ** 2 + sl ** 2) > 0
