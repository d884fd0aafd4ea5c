"""Latency against memory for one setup, one point per ok row, the Pareto front marked.

x: memory as facts.memory counts it (GPU: device peak allocated + KV in host memory, a host part drawn as a
segment from the device peak; CPU: a cell's own peak RSS where rows carry it, else the KV bytes the cache holds,
labelled so: the worker's RSS is not a cell's). y: decode ms/token, the median with its interval
(selection.spread), and the row's bandwidth floor as a grey bar below it. The front is the clean rows (facts.clean)
that no other clean row beats on both: less memory and less time. Flagged rows are drawn hollow and never join it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report import facts, fmt, selection
from bench.report.fig_quality import place_labels
from bench.report.fig_setup import Drawn, title

LOG_SPAN = 8.0


def front(points: list[dict]) -> list[str]:
    """Labels of the Pareto-optimal clean points (least x, least y), by increasing x."""
    clean = sorted((p for p in points if p["clean"]), key=lambda p: (p["x"], p["y"], p["label"]))
    out, best = [], math.inf
    for p in clean:
        if p["y"] < best:
            out.append(p["label"])
            best = p["y"]
    return out


def axis(rows: pd.DataFrame) -> tuple[str, str, float]:
    """(how x is measured, its label, scale to its unit)."""
    gpu = (rows["device"] == "cuda").any()
    if gpu:
        return "memory", "memory: device peak allocated + KV in host memory", 1024.0
    if any(not math.isnan(facts.cell_rss_mib(r)) for r in rows.to_dict("records")):
        return "memory", "cell peak RSS", 1.0
    return "kv", "KV cache held (a CPU row has no per-cell memory figure)", 1.0


def tradeoff(rows: pd.DataFrame, title_text: str, path: Path) -> Drawn | None:
    ok = [r for r in rows.to_dict("records") if r["status"] == "ok" and not math.isnan(fmt.num(r.get("tpot_ms")))]
    kind, xname, scale = axis(rows)
    pts, gone = [], []
    for r in ok:
        mem = facts.memory(r)
        x = mem.mib if kind == "memory" else fmt.num(r.get("kv_cache_mib"))
        if math.isnan(x):
            gone.append(r["label"])
            continue
        sp = selection.spread(r, "tpot_ms")
        pts.append({"label": r["label"], "x": x, "device_mib": x - mem.host_mib, "host_mib": mem.host_mib,
                    "y": fmt.num(r["tpot_ms"]), "lo": sp.lo, "hi": sp.hi, "interval": sp.kind,
                    "floor_ms": fmt.num(r.get("bandwidth_floor_ms")), "clean": facts.clean(r),
                    "why": facts.why_not_clean(r)})
    if len(pts) < 2:
        return None
    pts.sort(key=lambda p: (p["x"], p["y"], p["label"]))
    best = set(front(pts))
    unit = "GiB" if scale > 1 and max(p["x"] for p in pts) > 4096 else "MiB"
    scale = 1024.0 if unit == "GiB" else 1.0
    width = 11.0
    fig = fmt.figure(width, 6.2)
    ax = fig.subplots()
    head = title(fig, f"Decode time vs memory: {title_text}\none point per ok row; ringed and joined: the "
                 "Pareto front (no clean row has both less memory and less time); hollow: flagged (disturbed or "
                 "below its bandwidth floor), never on the front; whiskers: the median's interval; grey bar: the "
                 "row's bandwidth floor" + (f"\nnot drawn, no memory figure: {', '.join(gone)}" if gone else ""), width)
    ys = [v for p in pts for v in (p["y"], p["lo"], p["hi"], p["floor_ms"]) if math.isfinite(v) and v > 0]
    log = max(ys) / min(ys) > LOG_SPAN
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    for p in pts:
        x = p["x"] / scale
        color = "tab:red" if p["label"] in best else "tab:blue"
        if p["host_mib"]:
            ax.plot([p["device_mib"] / scale, x], [p["y"], p["y"]], color="tab:purple", lw=2.5, alpha=0.6, zorder=1)
        err = [[max(p["y"] - p["lo"], 0)], [max(p["hi"] - p["y"], 0)]] if p["interval"] != "none" else None
        ax.errorbar([x], [p["y"]], yerr=err, fmt="o", ms=7, color=color, mfc=color if p["clean"] else "white",
                    capsize=2, lw=0.9, zorder=3)
        if math.isfinite(p["floor_ms"]):
            ax.plot([x], [p["floor_ms"]], marker="_", ms=14, mew=2.5, color="0.45", ls="none", zorder=2)
    fx = [p["x"] / scale for p in pts if p["label"] in best]
    fy = [p["y"] for p in pts if p["label"] in best]
    ax.step(fx, fy, where="post", color="tab:red", lw=1.2, ls="--", zorder=2)
    ax.scatter(fx, fy, s=180, facecolors="none", edgecolors="tab:red", lw=1.3, zorder=4)
    ax.set_xlabel(f"{xname} ({unit})")
    ax.set_ylabel("decode ms/token (median)" + ("; log scale" if log else ""))
    ax.margins(x=0.25, y=0.2)
    if not log:
        ax.set_ylim(bottom=0)
    xs = [p["x"] / scale for p in pts] + [p["device_mib"] / scale for p in pts if p["host_mib"]]
    lo, hi = min(xs), max(xs)
    pad = max((hi - lo) * 0.25, 0.05 * hi, 1e-9)  # rows a few bytes apart: a readable axis, not a 1e-5 offset
    ax.set_xlim(lo - pad, hi + pad)
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    if any(p["host_mib"] for p in pts):
        ax.plot([], [], color="tab:purple", lw=2.5, alpha=0.6, label="KV in host memory (from the device peak)")
    ax.plot([], [], marker="_", ms=14, mew=2.5, color="0.45", ls="none", label="bandwidth floor of the row")
    ax.plot([], [], "o", color="tab:red", label="on the Pareto front")
    ax.plot([], [], "o", color="tab:blue", label="clean, off the front")
    ax.plot([], [], "o", color="tab:blue", mfc="white", label="flagged: not ranked")
    fig.legend(loc="outside lower center", ncols=5, fontsize=8)
    texts = [p["label"] + ("" if p["clean"] else f" ({p['why']})") for p in pts]
    place_labels(fig, ax, np.array([p["x"] / scale for p in pts]), np.array([p["y"] for p in pts]), texts)
    data = {"title": head, "x": kind, "unit": unit, "yscale": "log" if log else "linear", "left_out": gone,
            "front": [p["label"] for p in pts if p["label"] in best], "points": [{**p, "front": p["label"] in best}
                                                                              for p in pts]}
    return Drawn(fmt.save(fig, path), data)
