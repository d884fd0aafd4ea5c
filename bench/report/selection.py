"""Which rows a report or a compare shows: one row per cell, by bench.store.identity, shared by both.

`prepare` gives every row its display label and identity key; `pick` keeps, per cell, the newest ok row
(older ok rows are superseded and stay out) and, for cells that never ran ok, their newest row (listed as
not ok); `setups` groups cells that share model, weights, device, machine (the GPU, or the CPU model on a CPU), dtype,
batch and lengths. `prepare` also gives every row one status of one vocabulary (`status`; what the row stored is
kept as `status_stored`): a failure whose message says the device ran out of memory is `oom` whichever way the
run filed it.
A row written without a loaded model (a crashed worker) lacks the loaded dtype: it joins the one setup of its
model and lengths that has it, or stays in the not-ok list, never a setup of its own.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.store import identity
from bench.report.fmt import nat, num, text

SETUP = ("model", "weights", "device", "gpu", "machine", "dtype", "batch", "prompt_len", "new_tokens")
TIMINGS = ("e2e_ms", "ttft_ms", "tpot_ms")
LOADED = ("weights", "gpu", "machine", "dtype")
PLACE_BY = ("model", "device", "batch", "prompt_len", "new_tokens")


OOM = re.compile(r"out of memory|OutOfMemoryError|more than available memory", re.I)


def status(r) -> str:
    """The row's status in one vocabulary (ok, unavailable, oom, error): an error whose message says the device
    ran out of memory (PyTorch's OutOfMemoryError, continuous batching's 'Memory footprint ... is more than
    available memory') is an `oom`, as the same failure is where the runner caught it itself."""
    s = text(r.get("status"))
    return "oom" if s == "error" and OOM.search(text(r.get("error"))) else s


def machine(r) -> str:
    """What ran the row: the GPU's name, or 'CPU: <model>' ('CPU (model not recorded)' for old rows). Rows of
    different machines are never ranked against each other."""
    if text(r.get("device")) == "cuda":
        return text(r.get("gpu")) or "GPU (name not recorded)"
    cpu = text(r.get("cpu"))
    return f"CPU: {cpu}" if cpu else "CPU (model not recorded)"


def label(r) -> str:
    """What tells cells of one setup apart: strategy, attention path, SDPA backend, compile."""
    attn = text(r.get("attn")) + (f"[{r['sdpa_backend']}]" if text(r.get("sdpa_backend")) not in ("", "auto") else "")
    return f"{text(r.get('strategy')) or text(r.get('cache'))} / {attn}" + (" / compile off" if r.get("compile") == "off" else "")


def _place_unloaded(df: pd.DataFrame) -> None:
    """Give a row without a loaded dtype the loaded conditions of the one setup of its model and lengths that
    has them (or, among several, the one its own run loaded). Display only: the store keeps what was written."""
    unknown = df["dtype"].isin(["", "auto"]) | df["weights"].isin(["", "auto"])  # as requested, not as loaded
    loaded = df[~unknown]
    for i in df.index[unknown]:
        r = df.loc[i]
        same = loaded[(loaded[list(PLACE_BY)] == r[list(PLACE_BY)]).all(axis=1)]
        for c in ("weights", "dtype"):
            if r[c] not in ("", "auto"):
                same = same[same[c] == r[c]]
        found = same[list(LOADED)].drop_duplicates()
        if len(found) > 1:
            found = same[same["run_id"] == r["run_id"]][list(LOADED)].drop_duplicates()
        if len(found) == 1:
            df.loc[i, list(LOADED)] = found.iloc[0].values


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with canonical condition text, oldest first, a `label`, `_key` (the cell) and `_key_nogpu`."""
    df = df.copy()
    cond = sorted(set(identity.BASE_KEYS) | set(identity.LEGACY_SETTING_KEYS)
                  | {k for ks in df.get("strategy_keys", pd.Series(dtype=object)) if isinstance(ks, list) for k in ks})
    for c in [*cond, "status", "run_id", "timestamp", "strategy", "error"]:
        if c not in df.columns:
            df[c] = None
        df[c] = df[c].map(text)
    df["_ts"] = pd.to_datetime(df["timestamp"], utc=True, errors="coerce", format="ISO8601")
    df = df.sort_values(["_ts", "run_id"], kind="stable", na_position="first")
    df["status_stored"] = df["status"]
    df["status"] = [status(r) for r in df.to_dict("records")]
    df["machine"] = [machine(r) for r in df.to_dict("records")]
    _place_unloaded(df)
    df["label"] = [label(r) for _, r in df.iterrows()]
    rows = df.to_dict("records")
    df["_key"] = [identity.cell_key(r) for r in rows]
    df["_key_nogpu"] = [identity.cell_key(r, without=("gpu",)) for r in rows]
    return df


@dataclass
class Picked:
    shown: pd.DataFrame        # per cell: the newest ok row, else (never ok) the newest row; placed rows only
    superseded: pd.DataFrame   # every other row: older rows of a cell, failures a later ok row replaced
    not_ok: pd.DataFrame       # the cells' latest rows that are not ok, unplaced ones included

    @property
    def unplaced(self) -> pd.DataFrame:
        """Not-ok rows without the loaded conditions a setup needs (their worker died before loading)."""
        return self.not_ok[~self.not_ok.index.isin(self.shown.index)]


def pick(df: pd.DataFrame, key: str = "_key") -> Picked:
    """key: '_key' (a cell) or '_key_nogpu' (a cell whatever GPU ran it, for comparing GPUs)."""
    newest_ok = df[df["status"] == "ok"].drop_duplicates(key, keep="last")
    never_ok = df[~df[key].isin(set(newest_ok[key]))].drop_duplicates(key, keep="last")
    latest = pd.concat([newest_ok, never_ok])
    placed = ~(latest["dtype"].isin(["", "auto"]) | latest["weights"].isin(["", "auto"]))
    return Picked(shown=latest[placed], superseded=df.drop(index=latest.index),
                  not_ok=latest[latest["status"] != "ok"])


def setups(shown: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """(setup conditions, its rows sorted by label), setups in natural order."""
    out = []
    for k, rows in shown.groupby(list(SETUP), sort=False):
        out.append((dict(zip(SETUP, k)), rows.sort_values("label", kind="stable")))
    return sorted(out, key=lambda t: tuple(nat(t[0][c]) for c in SETUP))


def varying(rows: pd.DataFrame, columns) -> list[str]:
    """The columns whose value differs between these rows (shown per row, never as a header)."""
    return [c for c in columns if c in rows.columns and rows[c].map(text).nunique() > 1]


# ---------------------------------------------------------------- raw samples

def _recover(p10: float, p50: float, p90: float, n: int) -> list[float] | None:
    """The n samples behind numpy's linear p10/p50/p90, where n (1-3) makes that exact (schema-1 rows)."""
    if n == 1:
        return [p50]
    if n == 2:
        d = (p90 - p10) / 0.8
        return [p10 - 0.1 * d, p10 - 0.1 * d + d]
    if n == 3:
        return [(p10 - 0.2 * p50) / 0.8, p50, (p90 - 0.2 * p50) / 0.8]
    return None


def samples(r, metric: str) -> tuple[list[float] | None, str]:
    """(each timed call's value of metric, where they came from): 'raw' for rows that keep them, 'recovered'
    for schema-1 rows of 1-3 repeats (p10/p50/p90 determine them exactly), else (None, why)."""
    raw = r.get(f"{metric[:-3]}_samples_ms")
    if isinstance(raw, (list, tuple, np.ndarray)) and len(raw):
        return [float(x) for x in raw], "raw"
    p10, p50, p90 = (num(r.get(f"{metric[:-3]}_{q}_ms")) for q in ("p10", "p50", "p90"))
    p50 = num(r.get(metric)) if math.isnan(p50) else p50
    n = int(num(r.get("repeats"))) if not math.isnan(num(r.get("repeats"))) else 0
    if not any(math.isnan(x) for x in (p10, p50, p90)) and 1 <= n <= 3:
        return _recover(p10, p50, p90, n), "recovered"
    return None, f"no raw samples (schema-1 row of {n} repeats)" if n else "no samples"


@dataclass(frozen=True)
class Spread:
    """How far a row's timed calls spread around its median, and what that interval is: 'ci' (the 95% interval
    of the median from >= 6 raw samples, bench.stats.intervals.median_ci), 'minmax' (2-5 samples: their min and
    max), 'p10p90' (an old row of more calls that kept only its p10 and p90), 'none' (one call, or nothing)."""
    lo: float
    hi: float
    kind: str
    n: int

    def name(self) -> str:
        """What the interval is, in words: '95% CI of the median, 12 calls', 'min–max of 3 calls', ..."""
        return {"ci": f"95% CI of the median, {self.n} calls", "minmax": f"min–max of {self.n} calls",
                "p10p90": f"p10–p90 of {self.n} calls (an old row: no raw samples)",
                "none": f"{self.n} call{'s' * (self.n != 1)}, no interval" if self.n else "no samples"}[self.kind]

    def text(self, fmt) -> str:
        """'[lo–hi] (what it is)', or '(n calls, no interval)'."""
        if self.kind == "none":
            return f"({self.name()})"
        return f"[{fmt(self.lo)}–{fmt(self.hi)}] ({self.name()})"


def spread(r, metric: str) -> Spread:
    """The interval a row's samples give its median of `metric` (Spread says which kind it is)."""
    from bench.stats import intervals

    vals, _ = samples(r, metric)
    n = len(vals) if vals else int(num(r.get("repeats"))) if not math.isnan(num(r.get("repeats"))) else 0
    if vals and len(vals) >= intervals.min_samples_for_ci():
        lo, hi = intervals.median_ci(vals)
        return Spread(lo, hi, "ci", len(vals))
    if vals and len(vals) > 1:
        return Spread(min(vals), max(vals), "minmax", len(vals))
    lo, hi = num(r.get(f"{metric[:-3]}_p10_ms")), num(r.get(f"{metric[:-3]}_p90_ms"))
    if not (math.isnan(lo) or math.isnan(hi)) and n > 1:
        return Spread(lo, hi, "p10p90", n)
    med = num(r.get(metric))
    return Spread(med, med, "none", n)


def interval(r, metric: str) -> tuple[float, float]:
    """(lo, hi) shown as whiskers: `spread` (a point at the median where there is no interval)."""
    s = spread(r, metric)
    return s.lo, s.hi
