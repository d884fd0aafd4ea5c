"""Throughput against batch, and what the card holds: one figure per family (a machine, model, dtype and lengths
measured at two or more batches).

Top: decode tok/s against batch, one line per strategy / attention (hollow: a flagged row, never ranked); a
cell that ran out of memory is a red x at the foot of the panel at its batch, one that failed otherwise a grey +.
Bottom (GPU): peak allocated against batch, measured (solid) and the planner's prediction the row carries
(`peak_predicted_mib`, dashed, hollow), under the card's capacity (bench.config.gpus), with each OOM drawn on
that line. x is log2: batches double.
"""
from __future__ import annotations

import math

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.transforms import ScaledTranslation, blended_transform_factory

from bench.config import gpus
from bench.report import facts, fmt
from bench.report.fig_setup import Drawn, title

LOG_SPAN = 8.0
FAMILY = ("machine", "model", "weights", "device", "gpu", "dtype", "prompt_len", "new_tokens")


def families(shown: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """(family conditions, its rows) for every family measured at two or more batches, in natural order."""
    out = []
    for key, rows in shown.groupby(list(FAMILY), sort=False):
        if rows["batch"].nunique() >= 2:
            out.append((dict(zip(FAMILY, key)), rows))
    return sorted(out, key=lambda t: tuple(fmt.nat(t[0][c]) for c in FAMILY))


def family_slug(s: dict) -> str:
    return fmt.slug(s["model"], s["weights"], s["device"], fmt.machine_slug(s), s["dtype"], "ball",
                    f"p{s['prompt_len']}", f"n{s['new_tokens']}")


def family_title(s: dict) -> str:
    w = "RANDOM WEIGHTS" if s["weights"] == "random" else f"{s['weights']} weights"
    return f"{s['model']}, {w}, {fmt.machine_text(s)}, {s['dtype']}, prompt {s['prompt_len']} + {s['new_tokens']} new tokens"


def capacity(rows: pd.DataFrame) -> tuple[str, float] | None:
    gpu = fmt.text(rows["gpu"].iloc[0]) if (rows["device"] == "cuda").all() else ""
    return gpus.capacity(gpu) if gpu else None


def throughput(rows: pd.DataFrame, s: dict, path: Path) -> Drawn:
    cap = capacity(rows)
    labels = sorted(set(rows["label"]))
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    color = {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}
    width = 11.0
    fig = fmt.figure(width, 8.2 if cap else 5.4)
    axes = list(np.ravel(fig.subplots(2 if cap else 1, 1, sharex=True, squeeze=False)))
    cap_text = f"; bottom: peak allocated against the card's {cap[1]:.1f} GiB ({cap[0]})" if cap else ""
    head = title(fig, f"Throughput against batch: {family_title(s)}\ntop: decode tok/s (hollow: flagged, "
                 f"not ranked); x at the foot: out of memory, +: failed otherwise, in the strategy's colour{cap_text}"
                 + ("; x on the capacity line: out of memory" if cap else ""), width)
    data = {"title": head, "capacity_gib": cap[1] if cap else None, "lines": [], "oom": [], "failed": [],
            "peaks": []}
    foot = blended_transform_factory(axes[0].transData, axes[0].transAxes)
    stacked, at_cap = {}, {}  # failures per batch, stacked so that none hides another
    batches = sorted({fmt.num(b) for b in rows["batch"]})
    for lab in labels:
        g = rows[rows["label"] == lab].assign(_b=lambda d: d["batch"].map(fmt.num)).sort_values("_b")
        ok = [r for r in g.to_dict("records") if r["status"] == "ok" and fmt.num(r.get("decode_tok_s")) > 0]
        if ok:
            b, t = [r["_b"] for r in ok], [fmt.num(r["decode_tok_s"]) for r in ok]
            axes[0].plot(b, t, color=color[lab], lw=1.3)
            for r, x, y in zip(ok, b, t):
                axes[0].plot([x], [y], "o", ms=6, color=color[lab], mfc=color[lab] if facts.clean(r) else "white")
            data["lines"].append({"label": lab, "batch": b, "decode_tok_s": t,
                                  "flagged": [not facts.clean(r) for r in ok]})
        for r in g.to_dict("records"):
            if r["status"] in ("oom", "error"):
                oom = r["status"] == "oom"
                k = stacked.setdefault(r["_b"], [0])
                axes[0].plot([r["_b"]], [0.0], ls="none", marker="x" if oom else "+", ms=9, mew=2.2, color=color[lab],
                             transform=foot + ScaledTranslation(0, (8 + 11 * k[0]) / 72, fig.dpi_scale_trans),
                             clip_on=False)
                k[0] += 1
                data["oom" if oom else "failed"].append({"label": lab, "batch": r["_b"]})
                if cap and oom:
                    j = at_cap.setdefault(r["_b"], [0])
                    axes[1].plot([r["_b"]], [cap[1]], ls="none", marker="x", ms=9, mew=2.2, color=color[lab],
                                 transform=axes[1].transData + ScaledTranslation((j[0] - 1) * 9 / 72, 0,
                                                                                 fig.dpi_scale_trans))
                    j[0] += 1
        if cap:
            peaks(axes[1], g, color[lab], lab, data)
    tok = [v for ln in data["lines"] for v in ln["decode_tok_s"]]
    log = bool(tok) and max(tok) / min(tok) > LOG_SPAN
    if log:  # the slow caches would lie flat on the axis beside the fast ones
        axes[0].set_yscale("log")
        axes[0].set_ylim(min(tok) / 4, max(tok) * 1.6)
    else:
        axes[0].set_ylim(0, max(tok, default=1.0) * 1.15)
    data["yscale"] = "log" if log else "linear"
    axes[0].set_ylabel("decode tok/s (all sequences)" + ("; log scale" if log else ""))
    if cap:
        axes[1].axhline(cap[1], color="k", lw=1.2)
        axes[1].annotate(f"capacity {cap[1]:.1f} GiB", (0.01, cap[1]), xycoords=("axes fraction", "data"),
                         xytext=(0, -4), textcoords="offset points", va="top", fontsize=8)
        axes[1].set_ylabel("peak allocated (GiB)")
        axes[1].set_ylim(0, cap[1] * 1.12)
    ax = axes[-1]
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, tick_labels(batches))
    ax.minorticks_off()
    ax.set_xlim(batches[0] / 1.4, batches[-1] * 1.4)
    ax.set_xlabel("batch (sequences per call)")
    handles = [matplotlib.lines.Line2D([], [], color=color[lab], lw=2, label=lab) for lab in labels]
    if cap:
        handles += [matplotlib.lines.Line2D([], [], color="0.3", ls="-", marker="o", label="measured peak"),
                    matplotlib.lines.Line2D([], [], color="0.3", ls="--", marker="o", mfc="white",
                                            label="planner's predicted peak, as its run recorded it")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    return Drawn(fmt.save(fig, path), data)


def peaks(ax, g: pd.DataFrame, c, lab: str, data: dict) -> None:
    ok = [r for r in g.to_dict("records") if r["status"] == "ok"]
    meas = [(r["_b"], fmt.num(r.get("peak_mem_mib")) / 1024) for r in ok if fmt.num(r.get("peak_mem_mib")) > 0]
    pred = [(fmt.num(r["batch"]), fmt.num(r.get("peak_predicted_mib")) / 1024) for r in g.to_dict("records")
            if fmt.num(r.get("peak_predicted_mib")) > 0]
    if meas:
        ax.plot(*zip(*meas), "-o", color=c, ms=5, lw=1.2)
    if pred:
        ax.plot(*zip(*pred), "--o", color=c, ms=5, lw=1.0, mfc="white")
    for b, v in meas:
        data["peaks"].append({"label": lab, "batch": b, "peak_gib": v, "kind": "measured"})
    for b, v in pred:
        data["peaks"].append({"label": lab, "batch": b, "peak_gib": v, "kind": "predicted"})


def tick_labels(batches, apart: float = 0.09) -> list[str]:
    """A label per batch (ascending), left out where it would overlap a neighbour on the log axis (closer than
    `apart` in log10, e.g. a bisected boundary at 127, 133, 136, 140); kept from the largest down, so the
    largest batch is always labelled."""
    out, kept = [""] * len(batches), None
    for i in range(len(batches) - 1, -1, -1):
        b = batches[i]
        if kept is None or math.log10(kept / b) >= apart:
            out[i], kept = fmt.text(int(b)) if float(b).is_integer() else fmt.sig(b), b
    return out
