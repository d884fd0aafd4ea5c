"""Decode-step figures of one setup: per-step decode latency, and MBU (the bandwidth floor over TPOT).

steps: small multiples, one panel per cached strategy, each with the uncached rows (use_cache=False: every step
recomputes the whole context) of the same attention path in grey dashes, all panels on one y scale: cached
against uncached reads inside each panel, strategies across panels. mbu: one bar per cell, like fig_setup's.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report import fmt
from bench.report.fig_setup import Drawn, bars, col, fit, flag, frame, holds_cache, not_ok, ordered, placeholder, setup_figure, title

SMOOTH_STEPS = 5   # rolling median over this many steps: one step is noisy
MAX_COLS = 4
CACHED, UNCACHED = "tab:blue", "0.45"
LOG_SPAN = 8.0     # step times spanning more than this factor go on a log y axis


def step_times(r) -> np.ndarray | None:
    """The row's per-step medians (ms), or None without them."""
    v = r.get("step_ms")
    if not isinstance(v, (list, tuple, np.ndarray)) or not len(v):
        return None
    x = np.array([fmt.num(s) for s in v], dtype=float)
    return x if np.isfinite(x).any() else None


def smooth(v: np.ndarray, k: int = SMOOTH_STEPS) -> np.ndarray:
    return pd.Series(v).rolling(k, center=True, min_periods=1).median().to_numpy()


def context(r, n: int) -> np.ndarray:
    """Tokens in context (per sequence) when each decode step ran: prompt_len + position + 1."""
    return fmt.num(r["prompt_len"]) + np.arange(n) + 1


def path_of(r, with_compile: bool = True) -> tuple:
    keys = ("attn", "sdpa_backend", "compile") if with_compile else ("attn", "sdpa_backend")
    return tuple(fmt.text(r.get(k)) for k in keys)


def partners(r, uncached: list) -> list:
    """The uncached rows of r's attention path: same compile switch where there is one, else any."""
    same = [u for u in uncached if path_of(u) == path_of(r)]
    return same or [u for u in uncached if path_of(u, False) == path_of(r, False)]


def left_out(rows: pd.DataFrame, drawn: set) -> str:
    """'not drawn: 16 unavailable, 1 OOM, 1 without per-step timings' (counts, fixed order)."""
    counts: dict[str, int] = {}
    for _, r in rows.iterrows():
        if r["label"] in drawn:
            continue
        why = fmt.STATUS_TEXT.get(r["status"], r["status"]) if r["status"] != "ok" else "without per-step timings"
        counts[why] = counts.get(why, 0) + 1
    order = ["OOM", "error", "unavailable", "without per-step timings"]
    parts = [f"{counts[k]} {k}" for k in sorted(counts, key=lambda k: (order.index(k) if k in order else 9, k))]
    return "not drawn: " + ", ".join(parts) if parts else ""


def steps(rows: pd.DataFrame, title_text: str, path: Path) -> Drawn:
    rows = ordered(rows)
    ok = [r for _, r in rows.iterrows() if r["status"] == "ok" and step_times(r) is not None]
    cached = [r for r in ok if holds_cache(r)]
    uncached = [r for r in ok if not holds_cache(r)]
    panels = cached or uncached  # a setup without cached rows still shows its uncached ones
    n = max(len(panels), 1)
    ncols = min(MAX_COLS, n)
    nrows = math.ceil(n / ncols)
    width = max(9.0, 3.3 * ncols + 0.9)
    fig = fmt.figure(width, 1.15 + 2.0 * nrows + 0.25 * (ncols < 3))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    drawn_labels = {r["label"] for r in panels} | {u["label"] for r in panels for u in partners(r, uncached)}
    gone = left_out(rows, drawn_labels)
    head = title(fig, f"Per-step decode latency: {title_text}\nblue: the panel's cached strategy; grey dashes: "
                 "use_cache=False on the same attention path (recomputes the whole context); dotted black line: the cached row's "
                 "bandwidth floor; rolling median over "
                 f"{SMOOTH_STEPS} steps; one y scale for all panels" + ("; no grey line: no uncached row on that path"
                 if any(not partners(r, uncached) for r in cached) else "") + (f"\n{gone}" if gone else ""), width)
    data = {"title": head, "panels": [], "left_out": gone}
    for ax, r in zip(axes, panels):
        lines = []
        others = partners(r, uncached) if holds_cache(r) else []
        for u in others:
            line(ax, u, UNCACHED, "--", lines)
        line(ax, r, CACHED if holds_cache(r) else UNCACHED, "-" if holds_cache(r) else "--", lines)
        dist = flag(r.get("disturbed"))
        ax.set_title(fmt.wrap(r["label"] + (" [disturbed]" if dist else ""), int(3.3 * 15)), fontsize=8,
                     color="tab:red" if dist else "black")
        if dist:
            ax.set_facecolor("#fff1f0")
        floor = fmt.num(r.get("bandwidth_floor_ms"))
        if floor > 0:  # the fastest this cache's step could read weights + KV at the measured bandwidth
            ax.axhline(floor, color="k", ls=":", lw=1.0)
        data["panels"].append({"label": r["label"], "disturbed": dist, "lines": lines,
                               "floor_ms": floor if floor > 0 else None})
    for i, ax in enumerate(axes[len(panels):], len(panels)):
        ax.set_visible(False)
        if i >= ncols:  # the panel above has no panel below it: it shows the x ticks
            axes[i - ncols].xaxis.set_tick_params(labelbottom=True)
    if not panels:
        axes[0].text(0.5, 0.5, "no per-step timings in these rows", ha="center", va="center",
                     transform=axes[0].transAxes)
    data["yscale"] = y_scale(axes[0], [y for p in data["panels"] for ln in p["lines"] for y in ln["y"]]
                             + [p["floor_ms"] for p in data["panels"] if p["floor_ms"]])
    fig.supxlabel("tokens in context per sequence (prompt + tokens generated so far)", fontsize=9)
    # two lines: one row of panels is shorter than the label on one line
    fig.supylabel("decode step time (ms)\n(median over repeats" + ("; log scale)" if data["yscale"] == "log" else ")"),
                  fontsize=9)
    return Drawn(fmt.save(fig, path), data)


def y_scale(ax, ys: list) -> str:
    """One y scale for every panel: linear from 0, or log when the step times span more than LOG_SPAN x
    (an offloaded cache beside the rest would otherwise flatten every other line onto the axis)."""
    y = np.asarray([v for v in ys if math.isfinite(v) and v > 0], dtype=float)
    if not y.size:
        return "linear"
    if y.max() / y.min() > LOG_SPAN:
        ax.set_yscale("log")
        ax.set_ylim(y.min() / 1.25, y.max() * 1.25)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        return "log"
    ax.set_ylim(0, 1.06 * y.max())
    return "linear"


def line(ax, r, color: str, style: str, lines: list) -> None:
    """Draw one row's smoothed step times and record them."""
    v = step_times(r)
    y = smooth(v)
    x = context(r, len(v))
    ax.plot(x, y, color=color, ls=style, lw=1.3 if style == "-" else 1.1)
    lines.append({"label": r["label"], "cached": holds_cache(r), "x": [float(a) for a in x],
                  "y": [float(b) for b in y]})


# ---------------------------------------------------------------- MBU

def mbu(rows: pd.DataFrame, title_text: str, path: Path) -> Drawn:
    rows, fig, axes, y, ok, dist = setup_figure(rows, 11.0)
    ax, m = axes[0], np.where(ok, col(rows, "mbu"), np.nan)
    bw = sorted({round(x) for x in col(rows, "bandwidth_gb_s") if math.isfinite(x)})
    bw_text = "not measured" if not bw else f"{bw[0]} GB/s" if len(bw) == 1 else f"{bw[0]}–{bw[-1]} GB/s"
    head = title(fig, f"Memory-bandwidth utilisation (MBU): {title_text}\nMBU = bandwidth floor / TPOT; floor = "
                 f"(weights + KV at the mean decode length) / measured copy bandwidth ({bw_text}); hatched = disturbed",
                 11.0)
    ends = bars(ax, y, m, m, m, "tab:purple", dist)  # no whiskers: MBU comes from one median
    ax.axvline(1.0, color="tab:red", ls="--", lw=1.0, label="MBU = 1: the step runs at the bandwidth floor")
    data = {"title": head, "rows": [t.get_text() for t in ax.get_yticklabels()], "bars": [], "placeholders": []}
    placed = not_ok(rows, ok, axes, y, data)
    for i, (_, r) in enumerate(rows.iterrows()):
        if ok[i] and math.isnan(m[i]):
            placed.append((None, placeholder(ax, y[i], "no MBU figure in this row")))
        elif ok[i]:
            data["bars"].append({"label": r["label"], "mbu": float(m[i]), "disturbed": dist[i]})
    ax.set_xlabel("MBU (bandwidth floor / measured time per output token; dimensionless)")
    frame(ax, [1.0, *ends], room=1.15)
    fig.legend(loc="outside lower center", fontsize=8)
    fit(fig, placed)
    return Drawn(fmt.save(fig, path), data)
