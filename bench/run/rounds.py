"""A cell's row over its rounds: each round's row (one worker process) merged into the one row the store keeps.

Samples of every round are kept in order with the round they came from (sample_round); the medians are over all
timed calls; the interval (precision) is the one a rerun sees, from the spread of the round medians between
processes (bench.stats.reproducibility), not from the calls of one process (precision_within).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from bench.stats import reproducibility as repro

TIMES = ("e2e_ms", "ttft_ms", "tpot_ms")
PEAKS = ("peak_mem_mib", "peak_reserved_mib", "peak_rss_cell_mib", "other_peak_mib")
FIRST_ROUND_ONLY = ("ppl", "ppl_delta", "agreement", "first_divergence", "quality_tokens", "sdpa_backend_used",
                    "cold_e2e_ms", "launch_us", "bandwidth_gb_s", "bandwidth_floor_ms")


def _median(v) -> Optional[float]:
    x = [float(a) for a in v if a is not None and math.isfinite(a)]
    return float(np.median(x)) if x else None


def first(row: dict, round_no: int = 1) -> dict:
    """A cell's row after its first round."""
    row = dict(row)
    if row.get("status") != "ok":
        return row
    row["precision_within"] = row.get("precision")
    row["rounds"] = 1
    row["round_e2e_ms"] = [_median(row.get("e2e_samples_ms") or [])]
    row["round_tpot_ms"] = [_median(row.get("tpot_samples_ms") or [])]
    row["sample_round"] = [round_no] * len(row.get("e2e_samples_ms") or [])
    row["disturbed_rounds"] = int(bool(row.get("disturbed")))
    if row.get("disturbed"):
        row["disturbed_why"] = f"round {round_no}: {row.get('disturbed_why')}"
    return row


def merge(prev: dict, new: dict, round_no: int) -> dict:
    """The cell's row with one more round; a failed round leaves the row ok with a note."""
    if prev.get("status") != "ok":
        return first(new, round_no)
    if new.get("status") != "ok":
        out = dict(prev)
        note = f"round {round_no} {new.get('status')}: {new.get('error')}"
        out["error"] = "; ".join(x for x in (prev.get("error"), note) if x)
        out["rounds_stop"] = "round failed"
        return out
    out = dict(new)  # the latest round's conditions, environment and memory counts
    for k in FIRST_ROUND_ONLY:
        if prev.get(k) is not None:
            out[k] = prev[k]
    out["rounds"] = prev.get("rounds", 1) + 1
    for t in TIMES:
        out[f"{t[:-3]}_samples_ms"] = list(prev.get(f"{t[:-3]}_samples_ms") or []) + list(new.get(f"{t[:-3]}_samples_ms") or [])
        out[t] = _median(out[f"{t[:-3]}_samples_ms"])
    out["sample_round"] = list(prev.get("sample_round") or []) + [round_no] * len(new.get("e2e_samples_ms") or [])
    out["round_e2e_ms"] = list(prev.get("round_e2e_ms") or []) + [_median(new.get("e2e_samples_ms") or [])]
    out["round_tpot_ms"] = list(prev.get("round_tpot_ms") or []) + [_median(new.get("tpot_samples_ms") or [])]
    out["repeats"] = len(out["e2e_samples_ms"])
    batch, n = out.get("batch") or 1, out.get("new_tokens") or 1
    out["decode_tok_s"] = batch * 1000.0 / out["tpot_ms"] if out["tpot_ms"] else None
    out["e2e_tok_s"] = batch * n * 1000.0 / out["e2e_ms"] if out["e2e_ms"] else None
    floor = out.get("bandwidth_floor_ms")
    out["mbu"] = floor / out["tpot_ms"] if floor and out["tpot_ms"] else None
    if prev.get("step_ms") and new.get("step_ms") and len(prev["step_ms"]) == len(new["step_ms"]):
        k = out["rounds"]  # the running mean of the rounds' per-position medians
        out["step_ms"] = [round((a * (k - 1) + b) / k, 4) if a is not None and b is not None else None
                          for a, b in zip(prev["step_ms"], new["step_ms"])]
    for k in PEAKS:
        vals = [v for v in (prev.get(k), new.get(k)) if v is not None]
        out[k] = max(vals) if vals else None
    within = [v for v in (prev.get("precision_within"), new.get("precision")) if v is not None]
    out["precision_within"] = max(within) if within else None
    out["warmup_s"] = max(v for v in (prev.get("warmup_s"), new.get("warmup_s"), 0.0) if v is not None)
    why = [w for w in (prev.get("disturbed_why"), f"round {round_no}: {new.get('disturbed_why')}"
                       if new.get("disturbed") else "") if w]
    # A cell is disturbed when most of its rounds were; a minority of disturbed rounds is named here and shows in
    # the rerun interval, which their medians widen.
    out["disturbed_rounds"] = (prev.get("disturbed_rounds") or 0) + int(bool(new.get("disturbed")))
    out["disturbed"] = out["disturbed_rounds"] * 2 > out["rounds"]
    out["disturbed_why"] = "; ".join(why)
    out["remeasured"] = (prev.get("remeasured") or 0) + (new.get("remeasured") or 0)
    notes = [x for x in (prev.get("error"), new.get("error")) if x]
    out["error"] = "; ".join(dict.fromkeys(notes))
    return out


def settle(rows: list[dict], confidence: float = 0.95, same_process: bool = False) -> Optional[repro.Spread]:
    """Set every ok row's rerun interval from its rounds and the run's pooled spread; returns that spread."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("round_e2e_ms")]
    run = repro.pooled([r["round_e2e_ms"] for r in ok])
    for r in ok:
        s = repro.moderated(r["round_e2e_ms"], run)
        r["run_sd_rel"], r["run_sd_df"] = (run.sd, run.df) if run is not None else (repro.PRIOR_SD, repro.PRIOR_DF)
        k = len([v for v in r["round_e2e_ms"] if v])
        r["round_sd_rel"] = s.sd
        r["precision"] = repro.half_width(s, k, confidence)
        r["precision_basis"] = s.basis + (" (isolate=false: rounds in one process)" if same_process else "")
    return run
