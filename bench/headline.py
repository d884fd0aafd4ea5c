"""KV cache against no cache: the classic comparison, from the store's rows alone (no torch).

A dynamic-cache row and a no-cache row that agree on every other condition form a pair. From
each row's per-step medians (step_ms) the time to have generated k tokens is
ttft + sum(step_ms[:k-1]); the ratio of the two curves says how much the cache saves by token k.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .report import CELL, _f, _nat, _num, _save, setup_title, slug

FIGURE_MIN_TOKENS = 256          # shorter runs get a table row but no curve
MARKS = (100, 250, 500, 1000)    # tokens generated at which the table quotes the ratio
TAIL_STEPS = 20                  # the table's late step time: median of the last this many steps (one step is noisy)
NOTE = ("Pairs of a dynamic-cache row and a no-cache row (`use_cache=False`) with every other condition equal. "
        "time(k) = ttft_ms + the sum of the first k-1 per-step medians (step_ms): the time to have generated k "
        "tokens. ratio = no-cache time / cached time (above 1: the cache is faster). The last two columns are the "
        f"median step time over the last {TAIL_STEPS} steps. Without a cache each step recomputes the whole "
        "context, so its step time grows with the context; while a step is bound by kernel launches and host "
        "overhead rather than by arithmetic, that growth is hidden, and the ratio can fall below 1 when the "
        "cache's own per-step work costs more than the recomputation it saves.")


def cumulative_ms(row) -> np.ndarray | None:
    """time(k) for k = 1..new_tokens, or None without per-step timings."""
    steps = row["step_ms"]
    if not isinstance(steps, list) or not steps or math.isnan(_num(row["ttft_ms"])):
        return None
    return _num(row["ttft_ms"]) + np.concatenate([[0.0], np.cumsum([_num(v) for v in steps])])


def pairs(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per (dynamic, none) pair of equal conditions; columns suffixed _kv and _nokv."""
    key = [c for c in CELL if c != "cache"]
    kv, nokv = ok[ok["cache"] == "dynamic"], ok[ok["cache"] == "none"]
    if kv.empty or nokv.empty:
        return pd.DataFrame()
    cols = ["ttft_ms", "e2e_ms", "step_ms", "sdpa_backend_used"]
    m = kv[key + cols].merge(nokv[key + cols], on=key, suffixes=("_kv", "_nokv"))
    m["ratio"] = [_num(a) / _num(b) for a, b in zip(m["e2e_ms_nokv"], m["e2e_ms_kv"])]
    return m.sort_values(["model", "device", "dtype", "prompt_len", "new_tokens", "attn", "batch"],
                         key=lambda s: s.map(_nat), kind="stable").reset_index(drop=True)


def _side(p, side: str) -> dict:
    return {"ttft_ms": p[f"ttft_ms_{side}"], "step_ms": p[f"step_ms_{side}"]}


def ratio_at(p, k: int) -> float:
    a, b = cumulative_ms(_side(p, "nokv")), cumulative_ms(_side(p, "kv"))
    if a is None or b is None or k > len(a) or k > len(b):
        return math.nan
    return float(a[k - 1] / b[k - 1])


def _label(p) -> str:
    return f"{p['attn']}, batch {p['batch']}"


def plot(group: pd.DataFrame, title: str, path: Path) -> Path:
    fig = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_r = fig.subplots(1, 2)
    fig.suptitle(f"KV cache vs no cache: {title}\nsolid = dynamic cache, dashed = use_cache=False; "
                 "time to have generated k tokens from per-step medians")
    cmap = matplotlib.colormaps["tab10"]
    for i, (_, p) in enumerate(group.iterrows()):
        kv, nokv = cumulative_ms(_side(p, "kv")), cumulative_ms(_side(p, "nokv"))
        if kv is None or nokv is None:
            continue
        k = np.arange(1, min(len(kv), len(nokv)) + 1)
        color = cmap(i % cmap.N)
        ax_t.plot(np.arange(1, len(kv) + 1), kv / 1e3, color=color, label=_label(p) + ", cache")
        ax_t.plot(np.arange(1, len(nokv) + 1), nokv / 1e3, color=color, linestyle="--", label=_label(p) + ", no cache")
        ax_r.plot(k, nokv[: len(k)] / kv[: len(k)], color=color, label=_label(p))
    ax_t.set_xlabel("tokens generated (k)")
    ax_t.set_ylabel("time to have generated k tokens (s)")
    ax_t.legend(fontsize=7)
    ax_r.axhline(1.0, color="gray", linewidth=0.8)
    ax_r.set_xlabel("tokens generated (k)")
    ax_r.set_ylabel("no-cache time / cached time")
    ax_r.legend(fontsize=7)
    return _save(fig, path)


def table(pp: pd.DataFrame) -> list[str]:
    marks = [k for k in MARKS if (pp["new_tokens"].map(_num) >= k).any()]
    cols = (["model", "device", "dtype", "prompt", "new", "attn", "sdpa backend (cache / none)", "batch",
             "e2e cache (s)", "e2e no cache (s)", "ratio"] + [f"ratio @{k}" for k in marks]
            + [f"last {TAIL_STEPS} steps cache (ms)", f"last {TAIL_STEPS} steps no cache (ms)"])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, p in pp.iterrows():
        last = [float(np.median([_num(v) for v in s[-TAIL_STEPS:]])) if isinstance(s, list) and s else math.nan
                for s in (p["step_ms_kv"], p["step_ms_nokv"])]
        backends = f"{p['sdpa_backend_used_kv'] or '–'} / {p['sdpa_backend_used_nokv'] or '–'}"
        cells = [p["model"], p["device"], p["dtype"], p["prompt_len"], p["new_tokens"], p["attn"], backends,
                 p["batch"], _f(_num(p["e2e_ms_kv"]) / 1e3, 2), _f(_num(p["e2e_ms_nokv"]) / 1e3, 2),
                 _f(p["ratio"], 2) + "x"] + [_f(ratio_at(p, k), 2) for k in marks] + [_f(x, 2) for x in last]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return out


def section(ok: pd.DataFrame, out: Path) -> tuple[list[str], list[Path]]:
    """Markdown lines and figures of the cache-vs-no-cache comparison ([] when the store has no pair)."""
    pp = pairs(ok)
    if pp.empty:
        return [], []
    md = ["## KV cache vs no cache", "", NOTE, ""] + table(pp) + [""]
    images = []
    group_by = ["model", "weights", "device", "gpu", "dtype", "prompt_len", "new_tokens"]
    for key, g in pp.groupby(group_by, sort=True):
        s = dict(zip(group_by, key))
        if _num(s["new_tokens"]) < FIGURE_MIN_TOKENS:
            continue
        title = setup_title({**s, "batch": ", ".join(sorted(set(g["batch"]), key=_nat))})
        images.append(plot(g, title, out / f"kv_vs_nocache_{slug({**s, 'batch': 'all'})}.png"))
    md += [f"![{p.stem}]({p.name})" for p in images] + ([""] if images else [])
    return md, images
