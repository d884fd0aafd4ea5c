"""Base vs head: one figure of head/base ratios, one line per matched cell, grouped by setup.

Each cell: its ratio of medians (marker) and bootstrap interval (bar) on a log axis centred on 1, over the noise
band [1/(1+f), 1+f] (shaded); colour and marker by verdict; the ratio, interval and verdict in a column right
of the axis. Height grows with the cells; past ROWS_PER_PAGE lines the figure continues on further pages
(<stem>_2.png, ...), setup headers repeated, every page on the same x axis.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from bench.report import fmt
from bench.report.fig_setup import Drawn, title

# verdict -> (colour, marker, filled)
STYLE = {"slower": ("#d62728", ">", True), "faster": ("#1f77b4", "<", True), "within noise": ("0.45", "o", True),
         "disturbed": ("#9467bd", "X", True), "no interval": ("#ff7f0e", "o", False), "no data": ("0.6", "", False)}
ORDER = tuple(STYLE)
ROWS_PER_PAGE = 70
TICKS = (0.1, 0.2, 0.25, 1 / 3, 0.5, 2 / 3, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0)


def lines_of(cells: pd.DataFrame) -> list[tuple]:
    """('header', setup) and ('cell', row) in display order: setups in first-seen order, cells as given."""
    out = []
    for setup in dict.fromkeys(cells["setup"]):
        out.append(("header", setup))
        out += [("cell", r) for _, r in cells[cells["setup"] == setup].iterrows()]
    return out


def pages(items: list[tuple], per_page: int = ROWS_PER_PAGE) -> list[list[tuple]]:
    """Split into pages of at most per_page lines; a page that starts inside a setup repeats its header."""
    out, cur, setup = [], [], None
    for kind, v in items:
        if len(cur) >= per_page or (kind == "header" and len(cur) >= per_page - 1):
            out.append(cur)
            cur = [] if kind == "header" else [("header", f"{setup} (continued)")]
        cur.append((kind, v))
        setup = v if kind == "header" else setup
    return out + [cur] if cur else out


def limits(cells: pd.DataFrame, floor: float) -> tuple[float, float]:
    """x limits symmetric in log space around 1, covering every ratio, interval end and the band."""
    vals = np.concatenate([cells[c].to_numpy(dtype=float) for c in ("ratio", "lo", "hi")] + [[1 + floor]])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    m = max(float(np.max(np.abs(np.log(vals)))), math.log(1.1)) * 1.15
    return math.exp(-m), math.exp(m)


def tick_text(t: float) -> str:
    return {1 / 3: "1/3", 2 / 3: "2/3"}.get(t, f"{t:g}")


def value_text(r) -> str:
    ratio, lo, hi = (fmt.num(r.get(c)) for c in ("ratio", "lo", "hi"))
    if math.isnan(ratio):
        return r["verdict"]
    iv = f" [{lo:.3f}–{hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"×{ratio:.3f}{iv} {r['verdict']}"


def ratios(cells: pd.DataFrame, floor: float, calibrated: bool, title_text: str, path: Path) -> Drawn:
    """cells: setup, label, ratio, lo, hi (NaN: no interval), verdict. Returns the first page; data['pages']
    lists every page's path and data['cells'] every cell with the page and line it is drawn on."""
    cells = cells.reset_index(drop=True)
    xlim = limits(cells, floor) if len(cells) else (1 / 1.5, 1.5)
    band = (1 / (1 + floor), 1 + floor)
    data = {"floor": floor, "calibrated": calibrated, "band": list(band), "xlim": list(xlim), "cells": [],
            "pages": []}
    paths = []
    for n, page in enumerate(pages(lines_of(cells)) or [[]], 1):
        p = path if n == 1 else path.with_name(f"{path.stem}_{n}{path.suffix}")
        present = [v for v in ORDER if v in set(cells["verdict"])] if len(cells) else []
        paths.append(page_figure(page, n, floor, calibrated, title_text, xlim, band, p, data, present))
    data["pages"] = [str(p) for p in paths]
    return Drawn(paths[0], data)


def page_figure(page, n, floor, calibrated, title_text, xlim, band, path, data, present) -> Path:
    width = 12.0
    fig = fmt.figure(width, 1.9 + 0.24 * max(len(page), 3))
    ax = fig.subplots()
    how = "calibrated from A/A pairs" if calibrated else "default, UNCALIBRATED"
    head = title(fig, f"Head / base: {title_text}" + (f" (page {n})" if n > 1 else "") + "\nratio of medians "
                 f"(marker) with its bootstrap interval (bar; a 95% CI where both sides have >= 6 calls); shaded: noise band ×{band[0]:.3f}–×{band[1]:.3f} "
                 f"(floor {floor:.1%}, {how}); a change counts only when its whole interval leaves the band", width)
    data.setdefault("titles", []).append(head)
    ax.axvspan(*band, color="0.9", lw=0, zorder=0)
    ax.axvline(1.0, color="0.3", lw=0.8, zorder=1)
    y = np.arange(len(page), dtype=float)
    labels = []
    for yi, (kind, v) in zip(y, page):
        if kind == "header":
            labels.append("")
            ax.text(0.005, yi, fmt.wrap(v, 150), transform=ax.get_yaxis_transform(), ha="left", va="center",
                    fontsize=8, fontweight="bold", bbox={"fc": "white", "ec": "none", "pad": 1.0}, zorder=5)
            ax.axhline(yi + 0.5, color="0.6", lw=0.6)
            continue
        labels.append(fmt.text(v["label"]))
        draw_cell(ax, yi, v, xlim)
        data["cells"].append({"setup": v["setup"], "label": v["label"], "ratio": fmt.num(v["ratio"]),
                              "lo": fmt.num(v["lo"]), "hi": fmt.num(v["hi"]), "verdict": v["verdict"],
                              "page": n, "line": int(yi), "text": value_text(v)})
    ax.set_xscale("log")
    ax.set_xlim(*xlim)
    ticks = [t for t in TICKS if xlim[0] <= t <= xlim[1]]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ticks, [tick_text(t) for t in ticks])
    rows = [(yi, lab) for yi, (kind, _), lab in zip(y, page, labels) if kind == "cell"]
    ax.set_yticks([yi for yi, _ in rows], [lab for _, lab in rows], fontsize=8)
    ax.set_ylim(max(len(page), 1) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("head / base (ratio of medians, log scale; 1 = unchanged; above 1: head higher)")
    handles = [Line2D([], [], color=STYLE[v][0], marker=STYLE[v][1] or "s", ls="-", lw=1.6, ms=7,
                      mfc=STYLE[v][0] if STYLE[v][2] else "white", label=v) for v in present if STYLE[v][1]]
    handles.append(Patch(color="0.9", label=f"noise band (±{floor:.1%}, {how})"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return fmt.save(fig, path)


def draw_cell(ax, y: float, r, xlim) -> None:
    color, marker, filled = STYLE.get(r["verdict"], ("k", "o", True))
    ratio, lo, hi = (fmt.num(r.get(c)) for c in ("ratio", "lo", "hi"))
    if math.isfinite(lo) and math.isfinite(hi):
        ax.plot([max(lo, xlim[0]), min(hi, xlim[1])], [y, y], color=color, lw=2.2, solid_capstyle="butt", zorder=3)
    if math.isfinite(ratio) and ratio > 0:
        ax.plot([ratio], [y], marker=marker or "o", ms=7, color=color, mfc=color if filled else "white",
                mec=color, zorder=4, ls="none")
    t = ax.text(1.01, y, value_text(r), transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=7.5,
                color=color if r["verdict"] != "within noise" else "0.2",
                fontweight="bold" if r["verdict"] in ("slower", "faster") else "normal")
    t.set_in_layout(True)
