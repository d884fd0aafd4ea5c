"""bench.stats.intervals: order-statistic median CI against hand-computed binomial cases, the adaptive-repeat Stopper, the
disturbed-cell detector, bootstrap ratio intervals, noise-floor calibration and verdicts; then the targets on
simulated cells (A/A flags <= 1 in 20; +10% flagged in every cell whose median is known to < 3%).

Several tests exist to catch a broken statistic (medians replaced by means, the floor ignored, intervals that
ignore the sample size, no drift in the floor, an unseeded bootstrap, 1-f instead of 1/(1+f), ...): each says
which mutation it catches. No torch, numpy + scipy only; the whole file runs in a few seconds.
"""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.stats import intervals as S
from bench.stats import verdicts as V

ROOT = Path(__file__).resolve().parent.parent


def lognormal(rng, n, sigma, level=1.0):
    return level * np.exp(rng.normal(0.0, sigma, n))


# ---- median_ci / relative_precision ----

def test_median_ci_hand_computed_binomial():
    # n=10: P(B<=1) = 11/1024 = 0.0107 <= 0.025 < P(B<=2) = 56/1024 = 0.0547, so k=1: (x_(2), x_(9)),
    # coverage 1 - 2*11/1024 = 0.9785.
    x = [7.0, 3.0, 9.0, 1.0, 10.0, 4.0, 8.0, 2.0, 6.0, 5.0]
    assert S.median_ci(x) == (2.0, 9.0)
    # n=20: P(B<=5) = 21700/2^20 = 0.0207 <= 0.025 < P(B<=6) = 0.0577: (x_(6), x_(15))
    assert S.median_ci(np.arange(1.0, 21.0)) == (6.0, 15.0)
    # n=6: 2 * 1/64 = 0.031 <= 0.05: (x_(1), x_(6)); n=5: 2 * 1/32 = 0.0625 > 0.05: no bounded interval
    assert S.median_ci([6, 1, 5, 2, 4, 3]) == (1.0, 6.0)
    assert S.median_ci([1, 2, 3, 4, 5]) == (-math.inf, math.inf)
    assert S.min_samples_for_ci(0.95) == 6 and S.min_samples_for_ci(0.99) == 8
    # n=15: P(B<=3) = 576/2^15 = 0.0176 <= 0.025 < P(B<=4) = 0.0592: (x_(4), x_(12))
    assert S.median_ci(np.arange(1.0, 16.0)) == (4.0, 12.0)
    assert math.isnan(S.median_ci([])[0])


def test_median_ci_matches_scipy_and_the_binomial_fallback(monkeypatch):
    import scipy.stats as st
    got = [S._ci_ranks(n, c) for n in range(1, 70) for c in (0.9, 0.95, 0.99)]
    monkeypatch.delattr(st, "quantile_test")  # older scipy: the binomial formula must agree exactly
    S._ci_ranks.cache_clear()
    try:
        assert [S._ci_ranks(n, c) for n in range(1, 70) for c in (0.9, 0.95, 0.99)] == got
    finally:
        S._ci_ranks.cache_clear()


def test_median_ci_coverage_and_width_follow_n():
    """Catches a CI that ignores the sample size (fixed ranks) or the confidence: coverage of the true median of
    an exponential (ln 2) is >= 95% at n=15 and n=60, and the interval narrows like 1/sqrt(n)."""
    rng = np.random.default_rng(3)
    for n in (15, 60):
        hits = widths = 0
        for _ in range(800):
            lo, hi = S.median_ci(rng.exponential(1.0, n))
            hits += lo <= math.log(2) <= hi
            widths += hi - lo
        assert 0.95 <= hits / 800 <= 0.995, (n, hits / 800)
        if n == 15:
            w15 = widths / 800
    assert 0.35 < (widths / 800) / w15 < 0.65  # theory: sqrt(15/60) = 0.5


def test_relative_precision_is_half_width_over_median():
    assert S.relative_precision(np.arange(1.0, 11.0)) == pytest.approx((9 - 2) / 2 / 5.5)
    assert S.relative_precision([1, 2, 3, 4, 5]) == math.inf
    assert S.relative_precision([]) == math.inf
    assert S.relative_precision([5.0] * 8) == 0.0


# ---- Stopper ----

def drive(stopper, rng, seconds, sigma, limit=1000):
    while True:
        x = seconds * math.exp(rng.normal(0, sigma))
        d = stopper.update({"e2e_ms": x * 1e3, "tpot_ms": x}, x)
        if d.stop or d.n >= limit:
            return d


def test_stopper_fast_cells_get_many_repeats_slow_stable_ones_few():
    rng = np.random.default_rng(0)
    fast_noisy = drive(S.Stopper(), rng, 0.01, 0.05)          # needs ~150 repeats for 1%: hits the cap
    fast_stable = drive(S.Stopper(), rng, 0.01, 0.005)
    slow_noisy = drive(S.Stopper(budget_s=60), rng, 15.0, 0.05)
    assert (fast_noisy.reason, fast_noisy.n) == ("max_repeats", 100)
    assert fast_stable.reason == "precision" and 6 <= fast_stable.n < 30
    assert all(p <= 0.01 for p in fast_stable.precision.values())
    assert (slow_noisy.reason, slow_noisy.n) == ("budget", 6)  # over budget after 4, but the CI needs 6
    assert slow_noisy.precision["e2e_ms"] > 0.01 and slow_noisy.elapsed_s > 60


def test_stopper_never_stops_before_min_and_tracks_every_metric():
    st = S.Stopper(budget_s=1.0)
    decisions = [st.update({"e2e_ms": 10.0, "tpot_ms": 1.0}, seconds=5.0) for _ in range(6)]
    assert [d.stop for d in decisions] == [False] * 5 + [True]
    assert decisions[-1].reason == "precision"  # identical samples: precision 0 on both, reached first
    # e2e precise, tpot not: keeps going
    st, rng = S.Stopper(budget_s=None), np.random.default_rng(1)
    for i in range(20):
        d = st.update({"e2e_ms": 100.0, "tpot_ms": float(rng.uniform(1, 3))}, 0.1)
    assert not d.stop and d.precision["e2e_ms"] == 0.0 and d.precision["tpot_ms"] > 0.01
    only_e2e = S.Stopper(metrics=("e2e_ms",))
    for i in range(6):
        d = only_e2e.update({"e2e_ms": 100.0, "tpot_ms": float(rng.uniform(1, 3))}, 0.1)
    assert d.stop and d.reason == "precision" and set(d.precision) == {"e2e_ms"}


def test_stopper_fixed_mode():
    st = S.Stopper.fixed(3)
    ds = [st.update({"e2e_ms": float(v)}, 0.01) for v in (10, 10, 10)]
    assert [d.stop for d in ds] == [False, False, True] and ds[-1].reason == "fixed"
    assert ds[-1].precision["e2e_ms"] == math.inf  # 3 repeats: no median CI, and it says so


# ---- disturbed ----

def decode_steps(n_steps, base_ms, period=128, burst=1, factor=5.0):
    """Per-step times of a quantized cache: every `period` steps, `burst` steps `factor`x slower."""
    steps = np.full(n_steps, base_ms)
    for start in range(period - 1, n_steps, period):
        steps[start:start + burst] *= factor
    return steps


def test_disturbed_quantized_cache_periodic_spikes_stay_clean():
    rng = np.random.default_rng(0)
    for burst, factor in ((1, 5.0), (4, 5.0), (2, 10.0)):
        steps = decode_steps(1023, 20.0, burst=burst, factor=factor)
        reps = [steps * math.exp(rng.normal(0, 0.02)) for _ in range(8)]
        e2e = [30.0 + s.sum() for s in reps]
        tpot = [s.mean() for s in reps]
        step_median = float(np.median(np.median(np.array(reps), axis=0)))  # rows keep per-position medians
        assert S.disturbed(e2e, tpot, step_median, 8.0, 8.4) == [], (burst, factor)


def test_disturbed_catches_the_22s_stall_and_names_it():
    why = S.disturbed([22800.0] * 6, [251.0] * 6, step_median_ms=22.8)
    assert len(why) == 1 and "11.01x the median decode step" in why[0]


def test_disturbed_spread_and_host_speed():
    rng = np.random.default_rng(2)
    for seed in range(5):  # the noisiest legitimate cells (10%) with an outlier stay clean at n=6 and n=30
        r = np.random.default_rng(seed)
        for n in (6, 30):
            x = lognormal(r, n, 0.10, 100.0)
            x[0] *= 3.0
            assert S.disturbed(x) == [], (seed, n)
    bimodal = np.concatenate([lognormal(rng, 6, 0.01, 100.0), lognormal(rng, 6, 0.01, 160.0)])
    assert any("spread" in w for w in S.disturbed(bimodal))
    assert any("host speed" in w for w in S.disturbed(lognormal(rng, 10, 0.01), launch_us_start=8.0,
                                                       launch_us_end=13.0))
    assert S.disturbed(lognormal(rng, 10, 0.01), launch_us_start=8.0, launch_us_end=10.0) == []
    assert S.disturbed([], None, None, None, None) == []


# ---- ratio_ci / classify / verdict ----

def test_ratio_is_of_medians_so_outliers_do_not_move_it():
    """Catches means in place of medians: 3 of 20 head repeats 10x slow must not move the ratio."""
    rng = np.random.default_rng(4)
    base = lognormal(rng, 20, 0.01, 100.0)
    head = base * 1.0
    head[[2, 9, 15]] *= 10.0
    ci = V.ratio_ci(base, head)
    assert ci.ratio == pytest.approx(np.median(head) / np.median(base))
    assert abs(ci.ratio - 1.0) < 0.02 and ci.hi < 1.1
    assert V.verdict(base, head, V.NoiseFloor(0.03, True, "test")).label == V.NOISE


def test_ratio_ci_is_deterministic_and_byte_identical():
    """Catches an unseeded bootstrap."""
    rng = np.random.default_rng(5)
    a, b = lognormal(rng, 12, 0.05), lognormal(rng, 9, 0.05, 1.1)
    one = json.dumps(V.verdict(a, b).__dict__, sort_keys=True)
    assert one == json.dumps(V.verdict(a.copy(), b.copy()).__dict__, sort_keys=True)
    assert V.ratio_ci(a, b, seed=1) != V.ratio_ci(a, b, seed=2)  # the seed is what makes it reproducible


def test_ratio_ci_width_follows_sample_size():
    """Catches an interval that ignores n: a +10% shift under 8% noise is not established by 3 repeats a side,
    is by 80; the interval narrows ~1/sqrt(n)."""
    rng = np.random.default_rng(6)
    floor = V.NoiseFloor(0.02, True, "test")
    small = (lognormal(rng, 3, 0.08, 100.0), lognormal(rng, 3, 0.08, 110.0))
    big = (lognormal(rng, 80, 0.08, 100.0), lognormal(rng, 80, 0.08, 110.0))
    assert V.verdict(*small, floor).label == V.NOISE
    assert V.verdict(*big, floor).label == V.SLOWER
    w = {n: np.mean([math.log(c.hi / c.lo) for c in (V.ratio_ci(lognormal(rng, n, 0.05), lognormal(rng, n, 0.05),
                                                                 seed=i) for i in range(8))]) for n in (10, 90)}
    assert 0.2 < w[90] / w[10] < 0.5  # theory sqrt(10/90) = 0.33


def test_ratio_ci_edge_cases_and_ties():
    assert V.ratio_ci([], [1.0, 2.0]).ratio is None
    assert V.verdict([], [1.0, 2.0]).label == V.NO_DATA
    one = V.ratio_ci([10.0], [12.0, 12.5])
    assert one.ratio == pytest.approx(1.225) and one.lo is None and "n_base=1" in one.note
    assert V.verdict([10.0], [12.0, 12.5]).label == V.NO_INTERVAL
    same = V.ratio_ci([10.0] * 6, [10.0] * 6)
    assert (same.ratio, same.lo, same.hi, same.note) == (1.0, 1.0, 1.0, "zero spread")
    assert V.verdict([10.0] * 6, [10.0] * 6).label == V.NOISE
    # integer-ms timings full of ties at n=6 (where BCa's jackknife degenerates): a finite interval
    tied = V.ratio_ci([10, 10, 10, 11, 10, 10], [11, 11, 11, 11, 12, 11])
    assert tied.lo is not None and tied.lo <= 1.1 <= tied.hi and math.isfinite(tied.lo)
    assert V.ratio_ci([10, float("nan"), 11], [10, 11, None]).n_base == 2


def test_classify_band_is_symmetric_in_log_space():
    """Catches 1-f in place of 1/(1+f), and a floor that is ignored."""
    f = 0.05
    assert V.classify(1.051, 1.2, f) == V.SLOWER and V.classify(1.049, 1.2, f) == V.NOISE
    assert V.classify(0.80, 0.951, f) == V.FASTER  # 1/1.05 = 0.9524; 1 - 0.05 = 0.95 would call it noise
    assert V.classify(0.80, 0.953, f) == V.NOISE
    assert V.classify(1.01, 1.03, f) == V.NOISE and V.classify(1.01, 1.03, 0.0) == V.SLOWER
    assert V.classify(1.06, 1.2, f, higher_is_worse=False) == V.FASTER  # throughput went up


def test_verdict_respects_floor_and_disturbed_and_marks_uncalibrated():
    rng = np.random.default_rng(7)
    base, head = lognormal(rng, 50, 0.002, 100.0), lognormal(rng, 50, 0.002, 102.0)
    assert V.verdict(base, head, V.NoiseFloor(0.01, True, "t")).label == V.SLOWER
    assert V.verdict(base, head, V.NoiseFloor(0.05, True, "t")).label == V.NOISE  # floor ignored -> slower
    clear = V.verdict(base, head * 1.5, V.NoiseFloor(0.01, True, "t"), head_disturbed=["host speed changed"])
    assert clear.label == V.DISTURBED and "head: host speed changed" in clear.note and clear.ratio > 1.4
    assert V.verdict(base, base, base_disturbed=["spread"]).label == V.DISTURBED
    v = V.verdict(base, head)
    assert v.floor == V.DEFAULT_FLOOR.floor and "uncalibrated" in v.note


# ---- NoiseFloor / calibrate ----

def test_noise_floor_serialises_and_default_is_marked():
    fl = V.calibrate([(lognormal(np.random.default_rng(i), 20, 0.01), lognormal(np.random.default_rng(i + 99), 20,
                                                                           0.01)) for i in range(10)], source="unit")
    d = json.loads(json.dumps(fl.to_dict()))
    assert V.NoiseFloor.from_dict({**d, "unknown": 1}) == fl
    assert d["calibrated"] and d["n_cells"] == 10 and d["quantile"] == 0.99 and d["source"] == "unit"
    assert not V.DEFAULT_FLOOR.calibrated and "uncalibrated" in V.DEFAULT_FLOOR.source
    assert V.calibrate([([1.0], [1.0])]) == V.DEFAULT_FLOOR


def test_calibrate_captures_between_run_drift():
    """Catches a floor built from within-run spread only: 30 cells with tight repeats (0.5%) whose medians drift
    3% between runs need a floor of several %, not of the within-run CI; no drift gives a small one."""
    rng = np.random.default_rng(8)

    def pairs(drift):
        return [(lognormal(rng, 30, 0.005, math.exp(rng.normal(0, drift))),
                 lognormal(rng, 30, 0.005, math.exp(rng.normal(0, drift)))) for _ in range(30)]
    drifting, quiet = V.calibrate(pairs(0.03)), V.calibrate(pairs(0.0))
    assert 0.03 < drifting.drift_sd < 0.07  # truth sqrt(2) * 3% = 4.2%
    assert drifting.floor > 0.06 and quiet.floor < 0.01


def test_calibrate_drift_estimate_is_not_swamped_by_noisy_cells():
    """Catches an unweighted moment estimate (mean of L^2 - s^2), which noisy cells swamp (it gives 0 for 2 of
    these 4 seeds): 20 precise cells (0.5-2% noise, 30-100 repeats), 20 noisy (8-10%, 6-9), 1% drift a run
    (1.41% on the ratio)."""
    for seed in range(4):
        rng, pairs = np.random.default_rng(seed), []
        for i in range(40):
            sigma, n = ((rng.uniform(0.005, 0.02), int(rng.integers(30, 100))) if i % 2 else
                        (rng.uniform(0.08, 0.10), int(rng.integers(6, 10))))
            pairs.append(tuple(lognormal(rng, n, sigma, math.exp(rng.normal(0, 0.01))) for _ in range(2)))
        fl = V.calibrate(pairs)
        assert 0.009 < fl.drift_sd < 0.025 and 0.015 < fl.floor < 0.06, (seed, fl)


# ---- the targets, on simulated cells ----

N_CELLS = 40
DRIFT_CELL, DRIFT_RUN = 0.007, 0.003  # per-run drift (lognormal sd) of each cell, and of the whole run:
# 0.76% a run, 1.1% on an A/A ratio: more than the ~0.5% standard error of a median measured to 1%.


def simulate_run(rng, secs, sigma, shift=1.0):
    """One run of every cell with adaptive repeats: lognormal noise sigma, 3% outliers (1.3-3x), drift."""
    g = rng.normal(0.0, DRIFT_RUN)
    out = []
    for t, s in zip(secs, sigma):
        level, st = t * shift * math.exp(g + rng.normal(0.0, DRIFT_CELL)), S.Stopper()
        while True:
            x = level * math.exp(rng.normal(0.0, s)) * (rng.uniform(1.3, 3.0) if rng.random() < 0.03 else 1.0)
            if st.update({"e2e_ms": x * 1e3}, x).stop:
                break
        out.append(np.array(st.samples["e2e_ms"]))
    return out


@pytest.fixture(scope="module", params=[0, 1, 2])
def world(request):
    """40 cells (20 ms - 20 s a repeat, 0.5-10% noise); runs: 2 for calibration, 2 for the A/A, 1 at +10%."""
    rng = np.random.default_rng(request.param)
    secs, sigma = np.exp(rng.uniform(math.log(0.02), math.log(20.0), N_CELLS)), rng.uniform(0.005, 0.10, N_CELLS)
    runs = {k: simulate_run(rng, secs, sigma) for k in ("cal1", "cal2", "a", "b")}
    runs["head"] = simulate_run(rng, secs, sigma, shift=1.10)
    floor = runs["floor"] = V.calibrate(list(zip(runs["cal1"], runs["cal2"])), source=f"sim seed {request.param}")
    runs["aa"] = [V.verdict(a, b, floor) for a, b in zip(runs["a"], runs["b"])]
    runs["shift"] = [(V.verdict(a, h, floor), max(S.relative_precision(a), S.relative_precision(h)))
                     for a, h in zip(runs["a"], runs["head"])]
    return runs


def test_aa_compare_flags_at_most_one_cell_in_twenty(world):
    flagged = [v for v in world["aa"] if v.label != V.NOISE]
    assert len(flagged) <= N_CELLS / 20, (world["floor"], flagged)
    assert all(V.classify(v.lo, v.hi, V.DEFAULT_FLOOR.floor) == V.NOISE for v in world["aa"])  # uncalibrated 5%


def test_aa_without_the_floor_would_flag_too_many(world):
    """The control: the same A/A compare with no floor (the interval alone) flags more than 1 in 20, so the
    A/A test above would catch a floor that is ignored."""
    assert sum(V.classify(v.lo, v.hi, 0.0) != V.NOISE for v in world["aa"]) > N_CELLS / 20


def test_plus_ten_percent_flagged_in_every_cell_known_to_3_percent(world):
    precise = [v for v, precision in world["shift"] if precision < 0.03]
    assert len(precise) >= N_CELLS // 2  # not vacuous
    assert [v for v in precise if v.label != V.SLOWER] == []


def test_simulated_clean_cells_are_not_disturbed(world):
    assert [S.disturbed(a) for a in world["a"] if S.disturbed(a)] == []


@pytest.mark.parametrize("path", sorted((ROOT / "bench" / "stats").glob("*.py")), ids=lambda p: p.name)
def test_statistics_import_only_numpy_scipy_and_stdlib(path):
    """The runner and the torch-free analysis side share the stats package: numpy, scipy, stdlib, itself."""
    tree = ast.parse(path.read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level], "relative import"
    own = {m for m in mods if m.startswith("bench")}
    assert all(m.startswith("bench.stats") for m in own), own  # nothing else of the package (no torch)
    assert {m.split(".")[0] for m in mods - own} <= {"__future__", "dataclasses", "functools", "math", "statistics",
                                                    "warnings", "typing", "itertools", "numpy", "scipy"}, mods
