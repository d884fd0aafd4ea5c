"""`python -m bench compare BASE HEAD [out=plots] [metrics=a,b] [min_change=0.02]`: what changed between two row sets.

BASE and HEAD are each a store (a directory of run files, or one .jsonl file), or a store narrowed by filters:
`STORE@key=value[@key=value...]`, where key is any column (run_id, git_sha, gpu, torch, transformers, model,
cache, ...) and a bare `STORE@abc123` means `git_sha=abc123`. git_sha and run_id match by prefix (short shas,
`-dirty` suffixes), every other column by its exact text (`results@gpu=NVIDIA H100 80GB HBM3`, `results@batch=8`).

Matching. A cell is its conditions: model, weights, dtype, device, batch, prompt_len, new_tokens and the strategy
(cache, nbits, quant_backend, residual_length, q_group_size, axis_key, axis_value, attn, sdpa_backend, compile,
seed): record.CELL_KEYS plus dtype. Environment columns (gpu, driver, torch, transformers, git_sha, host, ...) are
not part of it: comparing two GPUs or two library versions is the point. Each side uses, per cell, its newest ok
row (by timestamp, then run_id). Cells with an ok row on one side only are listed as unmatched, with what the
other side has (nothing, or its newest row's status); rows that are not ok are listed per side. Nothing is dropped.

Noise rule, per matched cell and metric (ratio = head / base, change = ratio - 1):
- ttft_ms, tpot_ms, e2e_ms carry the median and p10/p90 of the timed repeats. decode_tok_s takes its interval from
  tpot's (tok/s = batch * 1000 / tpot_ms, so [batch*1000/tpot_p90, batch*1000/tpot_p10]); e2e_tok_s from e2e's
  (batch * new_tokens * 1000 / e2e_ms). A timing changed when the p10-p90 intervals of base and head do not
  overlap AND |change| > min_change (default 2%). A row without p10/p90 counts as a zero-width interval at its
  median, so only the threshold applies to it.
- Memory has no spread. A byte count (kv_cache_mib, kv_host_mib, weights_mib) changed when |change| > 1% and
  |head - base| > 1 KiB; an allocator or process peak (peak_mem_mib, peak_reserved_mib, other_peak_mib, noisier,
  on CPU the process peak RSS) when |change| > 1% and |head - base| > 1 MiB. From or to zero counts as a change
  once past the absolute floor.
- ppl (when rows carry it): changed when |change| > 1%.
Verdicts: timings slower/faster, throughput faster/slower, memory bigger/smaller, ppl worse/better; else
'within noise'; 'no data' when either side lacks the figure.

Output in `out`: compare.md and, per setup, compare_tpot_ms_<slug>.png and compare_peak_mem_mib_<slug>.png (base
vs head bars per strategy), for those two metrics when selected. Old compare_*.png files in `out` are removed first
so no stale figure survives. Reads rows only (pandas + matplotlib, never torch); output is byte-identical for
identical inputs: report.py's pinned rcParams, no PNG timestamps, everything sorted, fixed number formats.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from .record import CELL_KEYS
from .report import RC, SETUP, _figure, _md, _nat, _num, _place_unloaded, _s, _save, setup_title, slug, strategy_label
from .store import load

SETUP_KEYS = tuple(k for k in SETUP if k != "gpu")  # a figure/table: model, weights, device, dtype, lengths
STRATEGY_KEYS = tuple(k for k in CELL_KEYS if k not in SETUP_KEYS)  # what tells cells of a setup apart
COND = SETUP_KEYS + STRATEGY_KEYS  # a cell: CELL_KEYS + dtype, no environment column
ENV = ("gpu", "cpu", "driver", "cuda", "cuda_alloc_conf", "torch", "transformers", "quanto", "flash_attn", "python",
       "git_sha")
PREFIX_KEYS = ("git_sha", "run_id")  # filters that match by prefix

# metric -> (rule, label when head is higher, label when head is lower)
METRICS = {
    "ttft_ms": ("interval", "slower", "faster"),
    "tpot_ms": ("interval", "slower", "faster"),
    "e2e_ms": ("interval", "slower", "faster"),
    "decode_tok_s": ("interval", "faster", "slower"),
    "e2e_tok_s": ("interval", "faster", "slower"),
    "peak_mem_mib": ("peak", "bigger", "smaller"),
    "peak_reserved_mib": ("peak", "bigger", "smaller"),
    "other_peak_mib": ("peak", "bigger", "smaller"),
    "kv_cache_mib": ("bytes", "bigger", "smaller"),
    "kv_host_mib": ("bytes", "bigger", "smaller"),
    "weights_mib": ("bytes", "bigger", "smaller"),
    "ppl": ("quality", "worse", "better"),
}
DEFAULT_METRICS = ("ttft_ms", "tpot_ms", "e2e_ms", "decode_tok_s", "peak_mem_mib", "kv_cache_mib")
OPTIONAL_METRICS = ("ppl",)  # added to the default when either side has a value
PLOT_METRICS = ("tpot_ms", "peak_mem_mib")
MIN_CHANGE = 0.02        # timings: relative change that can count, once the intervals are apart
MEM_REL = 0.01           # memory: relative change that counts ...
MEM_ABS_MIB = {"bytes": 1.0 / 1024, "peak": 1.0}  # ... when the absolute change is also beyond this
QUALITY_REL = 0.01
NOISE = "within noise"
NO_DATA = "no data"
FORM = ("BASE and HEAD: STORE (a directory or .jsonl file) or STORE@key=value[@key=value] "
        "(e.g. results@git_sha=abc123, results@run_id=ID, results@abc123)")
ARG_HELP = f"compare BASE HEAD [out=DIR] [metrics={','.join(DEFAULT_METRICS)}] [min_change={MIN_CHANGE}]"


class CompareError(ValueError):
    """Bad input: the message is one line saying what is wrong and what is allowed."""


# ---------------------------------------------------------------- selecting a side

def parse_spec(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """'STORE@k=v@abc' -> ('STORE', [('k', 'v'), ('git_sha', 'abc')]). A store path may itself hold '@'."""
    if not spec:
        raise CompareError(f"empty BASE/HEAD; {FORM}")
    if Path(spec).exists() or "@" not in spec:
        return spec, []
    cuts = [i for i, ch in enumerate(spec) if ch == "@"]
    at = next((i for i in cuts if Path(spec[:i]).exists()), cuts[0])  # shortest existing store prefix
    store, filters = spec[:at], []
    for term in spec[at + 1:].split("@"):
        key, eq, value = term.partition("=")
        key, value = (key.strip(), value) if eq else ("git_sha", term)
        if not key or not value:
            raise CompareError(f"bad filter {term!r} in {spec!r}; {FORM}")
        filters.append((key, value))
    return store, filters


def select_side(spec: str, side: str = "base") -> pd.DataFrame:
    """The rows `spec` names; CompareError (one line) when the store is missing/empty or a filter matches nothing."""
    store, filters = parse_spec(spec)
    if not store or not Path(store).exists():
        raise CompareError(f"{side} store {store!r} not found; {FORM}")
    df = load(store)
    if df.empty:
        raise CompareError(f"{side} store {store!r} has no rows; {FORM}")
    keys = sorted(c for c in df.columns if c != "step_ms")
    for key, value in filters:
        if key not in df.columns or key == "step_ms":
            raise CompareError(f"{side} filter {key}={value!r}: unknown column {key!r}; use one of "
                               f"{', '.join(keys)} (or STORE@SHA for a git_sha prefix)")
        text = df[key].map(_s)
        hit = text.str.startswith(value) if key in PREFIX_KEYS else text == value
        if not hit.any():
            seen = sorted(set(text) - {""})
            shown = ", ".join(seen[:5]) + (f" (+{len(seen) - 5} more)" if len(seen) > 5 else "")
            raise CompareError(f"{side} {spec!r} matches no rows: {key}={value!r} is not in {store!r} "
                               f"(its {key} values: {shown or 'none'})")
        df = df[hit]
    return df.reset_index(drop=True)


# ---------------------------------------------------------------- matching cells

def _natkey(key: tuple) -> tuple:
    return tuple(_nat(v) for v in key)


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Conditions as canonical text, oldest row first (timestamp, then run_id, then file order)."""
    df = df.copy()
    for c in set(COND) | set(ENV) | {"run_id", "status", "error", "timestamp"}:
        if c not in df.columns:
            df[c] = None
    for c in (*COND, "gpu"):
        df[c] = df[c].map(_s)
    df["_ts"] = pd.to_datetime(df["timestamp"], utc=True, errors="coerce", format="ISO8601")
    df["_run"] = df["run_id"].map(_s)
    df = df.sort_values(["_ts", "_run"], kind="stable", na_position="first")
    _place_unloaded(df)  # a crashed worker's row joins its setup, as in the report
    df["_key"] = [tuple(v) for v in df[list(COND)].values] if len(df) else []
    return df


def _newest_ok(df: pd.DataFrame) -> dict:
    ok = df[df["status"] == "ok"]
    return {r["_key"]: r for _, r in ok.drop_duplicates(list(COND), keep="last").iterrows()}


def _newest_any(df: pd.DataFrame) -> dict:
    return {r["_key"]: r for _, r in df.drop_duplicates(list(COND), keep="last").iterrows()}


def _labels(keys) -> dict:
    """key -> strategy label, unique within its setup (colliding labels get the differing conditions appended)."""
    base = {k: strategy_label(dict(zip(COND, k))) for k in keys}
    groups: dict = {}
    for k, lab in base.items():
        groups.setdefault((k[:len(SETUP_KEYS)], lab), []).append(k)
    out = dict(base)
    for (_, lab), ks in groups.items():
        if len(ks) > 1:
            differ = [i for i in range(len(SETUP_KEYS), len(COND)) if len({k[i] for k in ks}) > 1]
            for k in ks:
                out[k] = lab + " [" + ", ".join(f"{COND[i]}={k[i] or '–'}" for i in differ) + "]"
    return out


def short_setup(s: dict) -> str:
    return (f"{s['model']} ({s['weights']} weights), {s['device']} {s['dtype']}, "
            f"b{s['batch']} p{s['prompt_len']} n{s['new_tokens']}")


def _setup(key: tuple) -> dict:
    return dict(zip(SETUP_KEYS, key[:len(SETUP_KEYS)]))


# ---------------------------------------------------------------- the noise rule

def _interval(r, metric: str, value: float) -> tuple[float, float]:
    """(lo, hi) of one side's repeats; zero-width at the value when the row has no spread."""
    lo = hi = math.nan
    if metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
        lo, hi = _num(r.get(f"{metric[:-3]}_p10_ms")), _num(r.get(f"{metric[:-3]}_p90_ms"))
    elif metric in ("decode_tok_s", "e2e_tok_s"):
        src = "tpot" if metric == "decode_tok_s" else "e2e"
        scale = _num(r.get("batch")) * 1000.0 * (1.0 if metric == "decode_tok_s" else _num(r.get("new_tokens")))
        p10, p90 = _num(r.get(f"{src}_p10_ms")), _num(r.get(f"{src}_p90_ms"))
        if p10 > 0 and p90 > 0:
            lo, hi = scale / p90, scale / p10  # faster steps = more tokens/s: the ends swap
    if math.isnan(lo) or math.isnan(hi):
        return value, value
    return min(lo, hi), max(lo, hi)


def verdict(metric: str, base: float, head: float, b_iv=None, h_iv=None, min_change: float = MIN_CHANGE) -> str:
    """The label of one comparison under the noise rule in the module docstring."""
    rule, up, down = METRICS[metric]
    if math.isnan(base) or math.isnan(head):
        return NO_DATA
    if head == base:
        return NOISE
    rel = math.inf if base == 0 else abs(head - base) / abs(base)
    if rule == "interval":
        (blo, bhi), (hlo, hhi) = b_iv or (base, base), h_iv or (head, head)
        changed = (bhi < hlo or hhi < blo) and rel > min_change
    elif rule in MEM_ABS_MIB:
        changed = rel > MEM_REL and abs(head - base) > MEM_ABS_MIB[rule]
    else:
        changed = rel > QUALITY_REL
    return (up if head > base else down) if changed else NOISE


def _ratio(base: float, head: float) -> float:
    if math.isnan(base) or math.isnan(head):
        return math.nan
    if base == 0:
        return 1.0 if head == 0 else math.inf
    return head / base


def resolve_metrics(metrics, *dfs: pd.DataFrame) -> list[str]:
    if metrics:
        bad = [m for m in metrics if m not in METRICS]
        if bad:
            raise CompareError(f"unknown metric {', '.join(bad)}; metrics=a,b,... from {', '.join(METRICS)}")
        return list(dict.fromkeys(metrics))
    extra = [m for m in OPTIONAL_METRICS if any(m in d.columns and d[m].map(_num).notna().any() for d in dfs)]
    return list(DEFAULT_METRICS) + extra


# ---------------------------------------------------------------- comparing

class _Match:
    """Both sides prepared, their newest ok row per cell, matched and unmatched cell keys (sorted) and labels."""

    def __init__(self, base_df: pd.DataFrame, head_df: pd.DataFrame):
        self.base, self.head = _prepare(base_df), _prepare(head_df)
        self.base_ok, self.head_ok = _newest_ok(self.base), _newest_ok(self.head)
        self.base_any, self.head_any = _newest_any(self.base), _newest_any(self.head)
        keys = set(self.base_any) | set(self.head_any)
        self.label = _labels(keys)
        order = lambda k: (_natkey(k[:len(SETUP_KEYS)]), self.label[k])  # noqa: E731
        self.matched = sorted(set(self.base_ok) & set(self.head_ok), key=order)
        self.only_base = sorted(set(self.base_ok) - set(self.head_ok), key=order)
        self.only_head = sorted(set(self.head_ok) - set(self.base_ok), key=order)
        self.setups = sorted({k[:len(SETUP_KEYS)] for k in keys}, key=_natkey)
        self.order = order

    def cell(self, k) -> str:
        return f"{short_setup(_setup(k))} | {self.label[k]}"


def _compare(m: _Match, metrics: list[str], min_change: float) -> pd.DataFrame:
    rows = []
    for k in m.matched:
        b, h = m.base_ok[k], m.head_ok[k]
        for metric in metrics:
            bv, hv = _num(b.get(metric)), _num(h.get(metric))
            biv, hiv = _interval(b, metric, bv), _interval(h, metric, hv)
            v = verdict(metric, bv, hv, biv, hiv, min_change)
            ratio = _ratio(bv, hv)
            rows.append({"cell": m.cell(k), **dict(zip(COND, k)), "strategy": m.label[k], "metric": metric,
                         "base": bv, "head": hv, "ratio": ratio, "change": ratio - 1.0,
                         "base_lo": biv[0], "base_hi": biv[1], "head_lo": hiv[0], "head_hi": hiv[1],
                         "verdict": v, "changed": v not in (NOISE, NO_DATA),
                         "base_run_id": _s(b.get("run_id")), "head_run_id": _s(h.get("run_id"))})
    cols = ["cell", *COND, "strategy", "metric", "base", "head", "ratio", "change", "base_lo", "base_hi",
            "head_lo", "head_hi", "verdict", "changed", "base_run_id", "head_run_id"]
    df = pd.DataFrame(rows, columns=cols)
    df["changed"] = df["changed"].astype(bool)  # also when empty: a boolean mask, not a column list
    return df


def compare(base_df: pd.DataFrame, head_df: pd.DataFrame, metrics=None, min_change: float = MIN_CHANGE) -> pd.DataFrame:
    """One row per matched cell and metric: cell, the conditions, strategy, metric, base, head, ratio (head/base),
    change, base_lo/base_hi/head_lo/head_hi (the intervals used), verdict, changed, base_run_id, head_run_id.
    Sorted by setup, strategy, then metric in the order given. Unmatched cells are not in it (see `unmatched`)."""
    return _compare(_Match(base_df, head_df), resolve_metrics(metrics, base_df, head_df), min_change)


def unmatched(base_df: pd.DataFrame, head_df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(cells with an ok row only in base, cells with an ok row only in head), as `cell` labels, sorted."""
    m = _Match(base_df, head_df)
    return [m.cell(k) for k in m.only_base], [m.cell(k) for k in m.only_head]


# ---------------------------------------------------------------- markdown

def _v(x: float, ref: float | None = None) -> str:
    """Fixed decimals chosen by magnitude (of `ref` when given, so an interval reads like its median)."""
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "inf"
    a = abs(x if ref is None else ref)
    return f"{x:.1f}" if a >= 100 else f"{x:.2f}" if a >= 1 or a == 0 else f"{x:.4f}"


def _value(r, side: str) -> str:
    v, lo, hi = r[side], r[f"{side}_lo"], r[f"{side}_hi"]
    if METRICS[r["metric"]][0] == "interval" and not math.isnan(v) and (lo != v or hi != v):
        return f"{_v(v)} ({_v(lo, v)}–{_v(hi, v)})"
    return _v(v)


def _ratio_text(x: float) -> str:
    return "–" if math.isnan(x) else "inf" if math.isinf(x) else f"{x:.3f}"


def _change_text(x: float) -> str:
    return "–" if math.isnan(x) else "inf" if math.isinf(x) else f"{x:+.1%}"


def _verdict_text(r) -> str:
    return f"**{r['verdict']}**" if r["changed"] else r["verdict"]


def _vals(df: pd.DataFrame, col: str) -> list[str]:
    return sorted({_s(v) for v in df[col]} - {""}) if col in df.columns else []


def _rule_text(min_change: float) -> list[str]:
    return [
        "## Noise rule", "",
        "Cells are matched by their conditions (model, weights, dtype, device, batch, prompt/new tokens, cache and "
        "its settings, attention, SDPA backend, compile, seed), not by environment (gpu, torch, transformers, "
        "git_sha): each side uses its newest ok row per cell. ratio = head / base.", "",
        f"- **ttft_ms, tpot_ms, e2e_ms**: changed when the p10–p90 intervals of the timed repeats do not overlap "
        f"**and** the change exceeds {min_change:.0%}. decode_tok_s takes its interval from tpot's "
        "(tok/s = batch × 1000 / tpot_ms), e2e_tok_s from e2e's. A row without p10/p90 is a point at its median.",
        f"- **memory** (no spread): byte counts (kv_cache_mib, kv_host_mib, weights_mib) changed when the change "
        f"exceeds {MEM_REL:.0%} and 1 KiB; peaks (peak_mem_mib, peak_reserved_mib, other_peak_mib) when it exceeds "
        f"{MEM_REL:.0%} and {MEM_ABS_MIB['peak']:.0f} MiB.",
        f"- **ppl**: changed when the change exceeds {QUALITY_REL:.0%}.",
        "- Verdicts: slower/faster, bigger/smaller, worse/better; otherwise *within noise*; *no data* when a side "
        "lacks the figure. Intervals are shown as median (p10–p90).", ""]


def _span(d: pd.DataFrame) -> str:
    ts = sorted(_s(v) for v in d["timestamp"] if _s(v))
    return "–" if not ts else ts[0] if ts[0] == ts[-1] else f"{ts[0]} … {ts[-1]}"


def _launch(d: pd.DataFrame) -> str:
    """The median host time per launched op over a side's rows: a launch-bound cell's time follows it."""
    v = pd.to_numeric(d["launch_us"], errors="coerce").dropna()
    return "–" if v.empty else f"{v.median():.2f} ({v.min():.2f}–{v.max():.2f})"


def _conditions(m: _Match, base_spec: str, head_spec: str) -> list[str]:
    out = ["## Conditions", "", "| | base | head |", "|---|---|---|",
           f"| selection | `{_md(base_spec)}` | `{_md(head_spec)}` |"]
    for c in ENV:
        out.append(f"| {c} | {_md(', '.join(_vals(m.base, c)))} | {_md(', '.join(_vals(m.head, c)))} |")
    for name, fn in (("runs", lambda d: str(d["_run"].nunique())),
                     ("rows (ok)", lambda d: f"{len(d)} ({int((d['status'] == 'ok').sum())})"),
                     ("timestamps", _span), ("launch_us (median; host speed)", _launch)):
        out.append(f"| {name} | {_md(fn(m.base))} | {_md(fn(m.head))} |")
    out.append(f"| cells with an ok row | {len(m.base_ok)} | {len(m.head_ok)} |")
    out.append("")
    differ = [c for c in ENV if _vals(m.base, c) != _vals(m.head, c)]
    out.append(f"Environment differs in: {', '.join(differ)}." if differ else "Same environment on both sides.")
    for side, d in (("base", m.base), ("head", m.head)):
        gpus = {_s(v) for v in d["gpu"]}
        if len(gpus) > 1:
            out.append(f"\n**{side} mixes {len(gpus)} GPUs** ({', '.join(sorted(g or 'none' for g in gpus))}): each "
                       "cell uses its newest ok row whichever GPU ran it; add @gpu=NAME to pick one.")
    return out + [""]


def _summary(delta: pd.DataFrame, m: _Match) -> list[str]:
    changed = delta.loc[delta["changed"].astype(bool)]
    counts = changed["verdict"].value_counts()
    parts = [f"{int(counts[v])} {v}" for v in sorted(counts.index)]
    out = ["## Summary", "",
           f"- matched cells: {len(m.matched)}; only in base: {len(m.only_base)}; only in head: {len(m.only_head)}",
           f"- changes beyond noise: {len(changed)}" + (f" ({', '.join(parts)})" if parts else ""), ""]
    if len(changed):
        out += ["| setup | strategy | metric | base | head | head/base | change | verdict |",
                "|---|---|---|---|---|---|---|---|"]
        for _, r in changed.iterrows():
            s = dict(zip(SETUP_KEYS, (r[c] for c in SETUP_KEYS)))
            out.append(f"| {_md(short_setup(s))} | {_md(r['strategy'])} | {r['metric']} | {_value(r, 'base')} | "
                       f"{_value(r, 'head')} | {_ratio_text(r['ratio'])} | {_change_text(r['change'])} | "
                       f"{_verdict_text(r)} |")
        out.append("")
    return out


def _gpu_text(m: _Match, skey: tuple) -> str:
    def gpus(d):
        rows = d[[k[:len(SETUP_KEYS)] == skey for k in d["_key"]]] if len(d) else d
        return "+".join(_vals(rows, "gpu"))
    b, h = gpus(m.base), gpus(m.head)
    return b if b == h else f"{b or 'no gpu'} vs {h or 'no gpu'}"


def _setup_section(title: str, rows: pd.DataFrame, images: list[str]) -> list[str]:
    out = [f"## {title}", ""]
    if rows.empty:
        out += ["No cell of this setup has an ok row on both sides (see unmatched cells below).", ""]
    else:
        out += ["| strategy | metric | base | head | head/base | change | verdict |", "|---|---|---|---|---|---|---|"]
        for _, r in rows.iterrows():
            out.append(f"| {_md(r['strategy'])} | {r['metric']} | {_value(r, 'base')} | {_value(r, 'head')} | "
                       f"{_ratio_text(r['ratio'])} | {_change_text(r['change'])} | {_verdict_text(r)} |")
        out.append("")
    if images:
        out += [f"![{Path(i).stem}]({i})" for i in images] + [""]
    return out


def _unmatched_section(m: _Match) -> list[str]:
    out = ["## Unmatched cells", ""]
    for side, keys, other, other_any in (("base", m.only_base, "head", m.head_any),
                                         ("head", m.only_head, "base", m.base_any)):
        out += [f"### Only in {side} (no ok row in {other})", ""]
        if not keys:
            out += ["None.", ""]
            continue
        out += [f"| setup | strategy | {other} has |", "|---|---|---|"]
        for k in keys:
            r = other_any.get(k)
            what = "absent" if r is None else f"{_s(r['status'])}: {_s(r['error'])[:200]}".rstrip(": ")
            out.append(f"| {_md(short_setup(_setup(k)))} | {_md(m.label[k])} | {_md(what)} |")
        out.append("")
    return out


def _not_ok_section(m: _Match) -> list[str]:
    out = ["## Rows not ok", ""]
    rows = []
    for side, d in (("base", m.base), ("head", m.head)):
        for _, r in d[d["status"] != "ok"].iterrows():
            rows.append((side, m.order(r["_key"]), _s(r["timestamp"]), r["_run"], r))
    if not rows:
        return out + ["None on either side.", ""]
    out += ["| side | setup | strategy | status | error | run_id | timestamp |", "|---|---|---|---|---|---|---|"]
    for side, _, ts, run, r in sorted(rows, key=lambda t: t[:4]):
        out.append(f"| {side} | {_md(short_setup(_setup(r['_key'])))} | {_md(m.label[r['_key']])} | "
                   f"{_md(r['status'])} | {_md(_s(r['error'])[:200])} | {_md(run)} | {_md(ts)} |")
    return out + [""]


# ---------------------------------------------------------------- figures

PLOT_LABEL = {"tpot_ms": "time per output token, TPOT (ms); whiskers p10–p90",
              "peak_mem_mib": "peak memory (MiB): CUDA max allocated, CPU process peak RSS"}


def plot_pair(keys: list, m: _Match, delta: pd.DataFrame, metric: str, title: str, path: Path) -> Path:
    """Base and head bars per strategy (union of ok cells of the setup; a missing side draws no bar)."""
    fig, (ax,) = _figure(len(keys), 1, f"base vs head, {metric}: {title}", width=10.0)
    y = np.arange(len(keys), dtype=float)
    h = 0.38
    labels = []
    ends_of: dict = {k: [] for k in keys}  # bar and whisker ends: the note goes right of them
    for side, sign, color, rows in (("base", -1, "tab:gray", m.base_ok), ("head", 1, "tab:blue", m.head_ok)):
        vals, err = [], []
        for k in keys:
            r = rows.get(k)
            v = math.nan if r is None else _num(r.get(metric))
            lo, hi = (v, v) if r is None else _interval(r, metric, v)
            vals.append(v)
            ends_of[k] += [v, hi]
            err.append((max(v - lo, 0.0), max(hi - v, 0.0)) if not math.isnan(v) else (0.0, 0.0))
        vals_a = np.array(vals, dtype=float)
        e = np.nan_to_num(np.array(err, dtype=float).T)
        ax.barh(y + sign * h / 2, np.nan_to_num(vals_a), height=h, color=color, label=side,
                xerr=e if METRICS[metric][0] == "interval" else None, capsize=2)
    verdicts = {(r["cell"]): r for _, r in delta[delta["metric"] == metric].iterrows()}
    for yi, k in zip(y, keys):
        r = verdicts.get(m.cell(k))
        if r is not None:
            note = f"×{_ratio_text(r['ratio'])} {r['verdict']}"
        else:
            note = "base only" if k in m.base_ok else "head only"
        ends = [x for x in ends_of[k] if not math.isnan(x)]
        ax.annotate(note, (max(ends, default=0.0), yi), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7, fontweight="bold" if r is not None and r["changed"] else "normal")
        labels.append(m.label[k])
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(PLOT_LABEL.get(metric, metric))
    ax.set_ylabel("strategy")
    ax.margins(x=0.25)  # room for the notes right of the bars
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------- writing

def write_compare(base: str, head: str, out="plots", metrics=None, min_change: float = MIN_CHANGE) -> list[Path]:
    """Select both sides, compare, write compare.md and the figures into `out`; returns the paths written, sorted.
    Raises CompareError (one line) for a missing/empty store, a bad filter or a filter that matches nothing."""
    base_df, head_df = select_side(base, "base"), select_side(head, "head")
    metrics = resolve_metrics(metrics, base_df, head_df)
    m = _Match(base_df, head_df)
    delta = _compare(m, metrics, min_change)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in sorted(out.glob("compare_*.png")):
        old.unlink()
    md = ["# kvbench compare", "",
          f"base `{_md(base)}` vs head `{_md(head)}`: metrics {', '.join(metrics)}.", ""]
    md += _summary(delta, m)
    md += _conditions(m, base, head)
    md += _rule_text(min_change)
    written: list[Path] = []
    plot_metrics = [p for p in PLOT_METRICS if p in metrics]
    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # inside the context: restored on exit
        matplotlib.rcParams.update(RC)
        for skey in m.setups:
            s = {**_setup(skey), "gpu": _gpu_text(m, skey)}
            title = setup_title(s)
            rows = delta[[tuple(v) == skey for v in delta[list(SETUP_KEYS)].values]] if len(delta) else delta
            plotted = sorted((k for k in set(m.base_ok) | set(m.head_ok) if k[:len(SETUP_KEYS)] == skey), key=m.order)
            images = []
            if plotted:
                for metric in plot_metrics:
                    images.append(plot_pair(plotted, m, delta, metric, title, out / f"compare_{metric}_{slug(s)}.png"))
            written += images
            md += _setup_section(title, rows, [p.name for p in images])
    md += _unmatched_section(m)
    md += _not_ok_section(m)
    path = out / "compare.md"
    path.write_text("\n".join(md).rstrip("\n") + "\n")
    return sorted(written + [path])


def parse_args(argv: list[str]) -> dict:
    """BASE HEAD [out=DIR] [metrics=a,b] [min_change=F] -> kwargs of write_compare; CompareError when malformed."""
    opts = {"out": "plots", "metrics": None, "min_change": MIN_CHANGE}
    pos = []
    for a in argv:
        k, eq, v = a.partition("=")
        if eq and "@" not in a and "/" not in k and not Path(a).exists():
            if k not in opts:
                raise CompareError(f"unknown option {a!r}; usage: {ARG_HELP}")
            if k == "metrics":
                v = [x.strip() for x in v.split(",") if x.strip()]
                if not v:
                    raise CompareError(f"metrics= is empty; usage: {ARG_HELP}")
                resolve_metrics(v)
            elif k == "min_change":
                try:
                    v = float(v.rstrip("%")) / (100 if v.endswith("%") else 1)
                except ValueError:
                    v = math.nan
                if not 0 <= v < 1:
                    raise CompareError(f"min_change={a.partition('=')[2]!r} must be a fraction in [0, 1) such as "
                                       f"0.02 or 2%; usage: {ARG_HELP}")
            elif k == "out" and not v:
                raise CompareError(f"out= is empty; usage: {ARG_HELP}")
            opts[k] = v
        else:
            pos.append(a)
    if len(pos) != 2:
        raise CompareError(f"expected BASE and HEAD, got {len(pos)} ({', '.join(map(repr, pos)) or 'none'}); "
                           f"usage: {ARG_HELP}; {FORM}")
    return {"base": pos[0], "head": pos[1], **opts}


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else list(argv))
        paths = write_compare(**args)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = Path(args["out"]) / "compare.md"
    print(f"compare: {len(paths)} files in {args['out']} (open {md})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
