"""Rounds in separate processes, the rerun interval, racing under a budget, and the verdict on reproducibility.

The statistics are checked on simulated runs whose truth is known (between-process spread, a shift); the
scheduler with a fake worker whose timings are known, so the tests run in seconds without a model.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.run import rounds as merge_rounds
from bench.run import schedule
from bench.run.record import conditions
from bench.run.worker import Outcome
from bench.stats import racing
from bench.stats import reproducibility as repro
from bench.stats import verdicts
from tests.conftest import compose_cfg


# ---- the rerun interval ------------------------------------------------------------------------------------

def simulate_run(rng, truth, sd_between, rounds=2, calls=8, sd_within=0.01):
    """One run: per cell, `rounds` processes, each with its own speed factor, each timing `calls` calls."""
    rows = []
    for t in truth:
        row = None
        for r in range(1, rounds + 1):
            proc = t * math.exp(rng.normal(0, sd_between))
            samples = list(proc * np.exp(rng.normal(0, sd_within, calls)))
            new = {"status": "ok", "e2e_samples_ms": samples, "tpot_samples_ms": samples, "ttft_samples_ms": samples,
                   "batch": 1, "new_tokens": 4, "precision": 0.01}
            row = merge_rounds.first(new, r) if row is None else merge_rounds.merge(row, new, r)
        rows.append(row)
    merge_rounds.settle(rows)
    return rows


def test_interval_covers_the_true_median_at_its_confidence():
    """Over many simulated runs, the 95% interval of a cell's median holds the truth about 95% of the time."""
    rng = np.random.default_rng(1)
    truth = list(np.linspace(5, 50, 20))
    hits = total = 0
    for _ in range(60):
        for t, row in zip(truth, simulate_run(rng, truth, sd_between=0.04)):
            lo, hi = row["e2e_ms"] / (1 + row["precision"]), row["e2e_ms"] * (1 + row["precision"])
            hits += lo <= t <= hi
            total += 1
    assert 0.92 <= hits / total <= 0.995, hits / total


def test_noisy_cells_among_quiet_ones_keep_their_coverage():
    """A run mixes host-bound cells (8% between processes) with quiet ones (1%), 3 rounds each (the default): the
    moderated interval must not lend the noisy ones the quiet ones' precision (about 89% coverage in this mix)."""
    rng = np.random.default_rng(4)
    hits = {0.01: [0, 0], 0.08: [0, 0]}
    spec = [(0.01, 10.0)] * 14 + [(0.08, 3.0)] * 6
    for _ in range(60):
        rows = [simulate_run(rng, [t], sd_between=sd, rounds=3)[0] for sd, t in spec]
        merge_rounds.settle(rows)
        for (sd, t), r in zip(spec, rows):
            lo, hi = r["e2e_ms"] / (1 + r["precision"]), r["e2e_ms"] * (1 + r["precision"])
            hits[sd][0] += lo <= t <= hi
            hits[sd][1] += 1
    assert hits[0.08][0] / hits[0.08][1] >= 0.85, hits
    assert hits[0.01][0] / hits[0.01][1] >= 0.90, hits


def test_interval_of_one_process_alone_would_not_cover():
    """The calls of one process are far tighter than what changes between processes: precision_within is not
    the interval a rerun sees (the reason rounds exist)."""
    rng = np.random.default_rng(2)
    rows = simulate_run(rng, [10.0] * 20, sd_between=0.05)
    assert all(r["precision"] > 2 * r["precision_within"] for r in rows)
    assert all(r["rounds"] == 2 and len(r["round_e2e_ms"]) == 2 and r["sample_round"] == [1] * 8 + [2] * 8 for r in rows)


def test_moderated_spread_and_prior():
    run = repro.pooled([[10, 10.5], [20, 19], [5, 5.1]])
    assert run is not None and 0 < run.df <= repro.MAX_PRIOR_DF
    one = repro.moderated([10.0], run)
    assert one.sd == run.sd and one.basis.startswith("1 round")
    none = repro.moderated([10.0], None)
    assert none.sd == repro.PRIOR_SD and "assumed" in none.basis
    own = repro.moderated([10, 10, 10, 10, 10.0], run)  # a steady cell, shrunk toward the run but below it
    assert 0 < own.sd < run.sd
    assert repro.half_width(repro.Spread(0.02, 1e9, ""), 4) == pytest.approx(math.expm1(1.959964 * 0.01), rel=1e-4)


# ---- comparing two runs --------------------------------------------------------------------------------------

def _measured(row):
    return verdicts.Measured(tuple(row["round_e2e_ms"]), row["run_sd_rel"], row["run_sd_df"])


@pytest.mark.parametrize("rounds", [3, 4])
def test_aa_runs_are_rarely_flagged_and_a_10pct_shift_always_is_where_precise(rounds):
    """Simulated runs mixing quiet (1%) and host-bound (8%) cells between processes: identical code is flagged in
    at most 1 cell in 20, and a 10% shift is flagged in every cell whose stated precision is under 3%."""
    rng = np.random.default_rng(3)
    spec = [(0.01, t) for t in np.linspace(5, 40, 14)] + [(0.08, t) for t in np.linspace(1, 3, 6)]
    flagged = shifted_missed = precise = 0
    for _ in range(20):
        runs = [[simulate_run(rng, [t * f], sd_between=sd, rounds=rounds)[0] for sd, t in spec] for f in (1, 1, 1.1)]
        for rows in runs:
            merge_rounds.settle(rows)
        for ra, rb, rc in zip(*runs):
            flagged += verdicts.rerun_verdict(_measured(ra), _measured(rb)).label != verdicts.NOISE
            if ra["precision"] < 0.03 and rc["precision"] < 0.03:
                precise += 1
                shifted_missed += verdicts.rerun_verdict(_measured(ra), _measured(rc)).label != verdicts.SLOWER
    assert flagged / (20 * len(spec)) <= 0.05, flagged
    assert precise >= 50 and shifted_missed == 0, (precise, shifted_missed)


def test_rerun_verdict_states_what_it_could_detect_and_disturbed_wins():
    tight = verdicts.rerun_verdict(verdicts.Measured((10, 10.1, 9.9), 0.01, 20), verdicts.Measured((10.5, 10.6, 10.4), 0.01, 20))
    assert tight.label == verdicts.SLOWER and tight.lo > 1 and "reproducibility" in tight.basis
    assert 0 < tight.detectable < 0.05
    loose = verdicts.rerun_verdict(verdicts.Measured((10, 11), 0.05, 20), verdicts.Measured((10.5, 11.5), 0.05, 20))
    assert loose.label == verdicts.NOISE and loose.lo < 1 < loose.hi and loose.detectable > tight.detectable
    v = verdicts.rerun_verdict(verdicts.Measured((10, 10), 0.01, 20), verdicts.Measured((20, 20), 0.01, 20),
                               head_disturbed=["x"])
    assert v.label == verdicts.DISTURBED


def test_compare_judges_rows_with_rounds_on_their_reproducibility():
    from bench.report import verdict

    base = {"e2e_ms": 10.0, "round_e2e_ms": [9.9, 10.1, 10.0], "run_sd_rel": 0.01, "run_sd_df": 20.0, "disturbed": False}
    head = dict(base, e2e_ms=10.6, round_e2e_ms=[10.5, 10.7, 10.6])
    v, frm = verdict.judge(base, head, verdicts.DEFAULT_FLOOR)  # 6%, rounds 1% apart: beyond noise
    assert frm == "rounds" and v.label == verdicts.SLOWER
    old = {"e2e_ms": 10.0, "e2e_samples_ms": [10.0, 10.1, 9.9, 10.0, 10.05, 9.95], "disturbed": False}
    new = dict(old, e2e_ms=11.0, e2e_samples_ms=[11.0, 11.1, 10.9, 11.0, 11.05, 10.95])
    v, frm = verdict.judge(old, new, verdicts.DEFAULT_FLOOR)
    assert v.label == verdicts.SLOWER and "reproducibility unknown" in v.basis and v.detectable is not None


# ---- racing --------------------------------------------------------------------------------------------------

def test_racing_eliminates_only_cells_clearly_behind():
    q = "setup"
    e = [racing.Entry("a", q, 10.0, 0.01), racing.Entry("b", q, 10.2, 0.01), racing.Entry("c", q, 20.0, 0.01),
         racing.Entry("d", "other", 30.0, 0.01)]
    places = racing.standings(e)
    assert places == {"a": racing.LEADER, "b": racing.CONTENDER, "c": racing.BEHIND, "d": racing.LEADER}
    assert not racing.decided(e, places, q) and racing.decided(e, places, "other")
    a = racing.answer(e, places, q)
    assert a.winner.key == "a" and a.runner_up.key == "b" and not a.decided and a.lo < a.ratio < a.hi
    # sharper estimates decide it; an eliminated cell stays behind even if a later figure would not say so
    e2 = [racing.Entry("a", q, 10.0, 0.001), racing.Entry("b", q, 10.2, 0.001), racing.Entry("c", q, 10.0, 0.5)]
    places2 = racing.standings(e2, out={"c": racing.BEHIND})
    assert places2["b"] == racing.BEHIND and places2["c"] == racing.BEHIND and racing.decided(e2, places2, q)


# ---- the scheduler, with a fake worker -----------------------------------------------------------------------

TRUTH = {"none": 30.0, "dynamic": 10.0, "static": 10.3, "quantized": 40.0}


class FakeWorker:
    made: list = []
    seconds = 0.5

    def __init__(self, env=None):
        self.env, self.rng = env or {}, np.random.default_rng(len(FakeWorker.made))
        self.factor = math.exp(self.rng.normal(0, 0.01))  # this process's speed
        self.ran: list = []
        FakeWorker.made.append(self)

    def run(self, cfg, run_id, skip=frozenset(), first=True):
        self.ran.append(cfg.cache.name)
        row = conditions(cfg, "cpu").as_row()
        t = TRUTH[cfg.cache.name] * self.factor
        samples = list(t * np.exp(self.rng.normal(0, 0.002, 8)))
        row.update(run_id=run_id, status="ok", weights="random", dtype="float32", e2e_samples_ms=samples,
                   ttft_samples_ms=[s / 4 for s in samples], tpot_samples_ms=[s / 4 for s in samples],
                   e2e_ms=float(np.median(samples)), ttft_ms=t / 4, tpot_ms=t / 4, repeats=8, precision=0.002,
                   decode_tok_s=1.0)
        return Outcome(row, self.seconds)

    def stop(self, graceful=False):
        pass


@pytest.fixture
def fake(monkeypatch):
    FakeWorker.made, FakeWorker.seconds = [], 0.5
    monkeypatch.setattr(schedule, "Worker", FakeWorker)
    return FakeWorker


def _run(plan, caches=("none", "dynamic", "static", "quantized")):
    cfgs = [compose_cfg("model=tiny-llama", f"cache={c}") for c in caches]
    written, lines = [], []
    s = schedule.Schedule(cfgs, "run-x", plan, written.append, lines.append)
    return s.run(), written, lines


def test_every_cell_gets_its_rounds_in_fresh_processes_alternating_order(fake):
    rows, written, lines = _run(schedule.Plan(rounds=3))
    assert [r["rounds"] for r in rows] == [3, 3, 3, 3]
    assert [w.ran for w in fake.made] == [["none", "dynamic", "static", "quantized"],
                                          ["quantized", "static", "dynamic", "none"],
                                          ["none", "dynamic", "static", "quantized"]]
    assert all(r["precision_basis"].startswith("3 rounds") and r["rounds_stop"] == "planned" for r in rows)
    assert len(lines) == 4 and len(written) >= 4 * 3  # one line per cell; the row rewritten after every round


def test_a_budget_races_slow_cells_out_and_decides(fake):
    rows, _, lines = _run(schedule.Plan(rounds=2, budget_s=60))
    by = {r["cache"]: r for r in rows}
    assert by["none"]["rounds"] == 1 and by["quantized"]["rounds"] == 1  # 3-4x behind after the first pass
    assert by["none"]["rounds_stop"] == "behind" and by["none"]["race"] == racing.BEHIND
    assert by["dynamic"]["rounds"] >= 2 and by["static"]["rounds"] >= 2  # contenders refined
    assert by["dynamic"]["race"] == racing.LEADER
    answer = [ln for ln in lines if ln.startswith("answer")]
    assert len(answer) == 1 and "dynamic" in answer[0] and "static" in answer[0]


def test_a_budget_that_cannot_take_another_round_stops_after_the_first_pass(fake):
    fake.seconds = 100.0  # each cell-round takes 100 s: a second round would overrun a 60 s budget
    rows, _, _ = _run(schedule.Plan(rounds=2, budget_s=60))
    by = {r["cache"]: r for r in rows}
    assert all(r["rounds"] == 1 for r in rows)
    assert by["dynamic"]["rounds_stop"] == "budget" and by["static"]["rounds_stop"] == "budget"
    assert by["none"]["rounds_stop"] == "behind"


def test_a_cell_is_disturbed_when_most_of_its_rounds_were():
    def rnd(disturbed):
        s = [10.0, 10.1, 9.9]
        return {"status": "ok", "e2e_samples_ms": s, "tpot_samples_ms": s, "ttft_samples_ms": s, "batch": 1,
                "new_tokens": 4, "disturbed": disturbed, "disturbed_why": "spread" if disturbed else ""}
    one = merge_rounds.merge(merge_rounds.merge(merge_rounds.first(rnd(False)), rnd(True), 2), rnd(False), 3)
    assert (one["disturbed"], one["disturbed_rounds"]) == (False, 1) and "round 2: spread" in one["disturbed_why"]
    two = merge_rounds.merge(merge_rounds.merge(merge_rounds.first(rnd(True)), rnd(True), 2), rnd(False), 3)
    assert (two["disturbed"], two["disturbed_rounds"]) == (True, 2)
