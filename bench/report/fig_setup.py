"""Figures of one setup, one row per cell: latency and memory (MBU: fig_steps, beside the per-step times).

Every cell keeps its row: a cell that did not run ok is a labelled placeholder (status and a short reason), a
disturbed cell's bars are hatched and say so, and a condition that differs between the rows of a setup (e.g.
PYTORCH_CUDA_ALLOC_CONF) is written under that row's label. Each function returns `Drawn(path, data)`:
`data` holds what was drawn (values per bar, placeholders with their status), so tests need no image diffs.
Deterministic: rows in label order, fixed formats, no PNG metadata (fmt.save).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.container import BarContainer
from matplotlib.transforms import blended_transform_factory

from bench.report import facts, fmt, selection

# Conditions written under a row's label where they differ between the rows of a setup. For the allocator
# setting '' is itself a condition (PyTorch's defaults); for versions '' only means a row that never loaded.
VARY = {"cuda_alloc_conf": "PYTORCH_CUDA_ALLOC_CONF", "torch": "torch", "transformers": "transformers"}
EMPTY_IS_A_VALUE = ("cuda_alloc_conf",)
HATCH = "////"
TIMING_NOTE = ("whiskers: the interval each value names over its calls (CI: 95% CI of the median, >= 6 calls; "
               "min–max of 2–5 calls; p10–p90 of an old row); rerun ±: the e2e interval a rerun in other processes "
               "sees (rows timed in rounds); hatched = disturbed (the calls disagreed with themselves)")
KIND = {"ci": "CI", "minmax": "min–max", "p10p90": "p10–p90", "none": "no interval"}


@dataclass(frozen=True)
class Drawn:
    path: Path
    data: dict


# ---------------------------------------------------------------- shared by the figure modules

def flag(v) -> bool:
    """A boolean column as read back (bool, 'True', None, NaN): True only for a true value."""
    return fmt.text(v) in ("True", "true", "1")


def holds_cache(r) -> bool:
    """False only for rows that recompute the whole context every step (use_cache=False)."""
    return fmt.text(r.get("holds_cache")) not in ("False", "false", "0")


def ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """Label order (cell id breaks ties), whatever order the rows came in."""
    keys = [c for c in ("label", "cell_id") if c in rows.columns]
    return rows.sort_values(keys, kind="stable", key=lambda s: s.map(fmt.text)) if len(rows) else rows


def finite_max(values, default: float = math.nan) -> float:
    """The largest finite value, or default (no all-NaN warnings)."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else default


def col(rows: pd.DataFrame, name: str) -> np.ndarray:
    vals = rows[name] if name in rows.columns else [None] * len(rows)
    return np.array([fmt.num(v) for v in vals], dtype=float)


def notes(rows: pd.DataFrame) -> list[list[str]]:
    """Per row, the VARY conditions that differ within these rows, as 'name: value'."""
    out: list[list[str]] = [[] for _ in range(len(rows))]
    for c, name in VARY.items():
        vals = [fmt.text(v) for v in rows[c]] if c in rows.columns else [""] * len(rows)
        seen = set(vals) if c in EMPTY_IS_A_VALUE else set(vals) - {""}
        if len(seen) > 1:
            for i, v in enumerate(vals):
                if v:
                    out[i].append(f"{name}: {v}")
    return out


def row_labels(rows: pd.DataFrame, timing: bool = True) -> list[str]:
    """Label, the conditions that differ within the setup, and (timing figures) a disturbed mark."""
    out = []
    for (_, r), extra in zip(rows.iterrows(), notes(rows)):
        dist = [" [disturbed]"] if timing and r["status"] == "ok" and flag(r.get("disturbed")) else []
        out.append("\n".join([r["label"] + "".join(dist), *extra]))
    return out


def reason(r, limit: int = 90) -> str:
    """'OOM: CUDA out of memory': the status and the first clause of the error, cut to fit."""
    status = fmt.STATUS_TEXT.get(r["status"], r["status"])
    why = fmt.text(r.get("error")).strip().splitlines()[0] if fmt.text(r.get("error")).strip() else ""
    for sep in ("; ", ". "):
        why = why.split(sep)[0]
    if why.split(":")[0].endswith("Error") and ":" in why:  # 'OutOfMemoryError: CUDA out of ...'
        why = why.split(":", 1)[1].strip()
    t = f"{status}: {why}" if why else status
    return t if len(t) <= limit else t[: limit - 1] + "…"


def placeholder(ax, y: float, text: str):
    """A grey band across the row with the status text where the bar would be (cut to the panel by `fit`)."""
    ax.axhspan(y - 0.42, y + 0.42, color="0.92", lw=0, zorder=0)
    t = ax.text(0.01, y, text, transform=blended_transform_factory(ax.transAxes, ax.transData), ha="left",
                va="center", fontsize=7.5, style="italic", color="0.25")
    t.set_in_layout(False)
    return t


def fit(fig, placed: list) -> None:
    """Cut each (entry, text) placeholder to its panel once the layout is final; entry['text'] = what shows."""
    fig.draw_without_rendering()
    r = fig.canvas.get_renderer()
    for entry, t in placed:
        right = t.axes.get_window_extent(r).x1 - 4
        s = t.get_text()
        while len(s) > 6 and t.get_window_extent(r).x1 > right:
            s = s[:-2].rstrip() + "…"
            t.set_text(s)
        if entry is not None:
            entry["text"] = s


def title(fig, text: str, width_in: float) -> str:
    """The suptitle, wrapped to the figure's width; returns the text drawn."""
    wrapped = fmt.wrap(text, int(width_in * 12))
    fig.suptitle(wrapped)
    return wrapped


def height(n: int, base: float = 1.9) -> float:
    return base + 0.3 * max(n, 2) + 0.12 * (n > 12) * (n - 12)


def bars(ax, y, vals, lo, hi, color, disturbed, unit: str = "", text_at=None, after=None) -> list[float]:
    """Horizontal bars with whiskers (lo/hi NaN: none), hatched where disturbed, the value after each bar (or
    after text_at, a marker further right) and after it `after[i]`. Returns the right ends so the caller can
    leave room."""
    v = np.nan_to_num(vals)
    err = np.clip(np.nan_to_num(np.vstack([vals - lo, hi - vals])), 0, None)
    drawn = ax.barh(y, v, xerr=err if (err > 0).any() else None, color=color, capsize=2, error_kw={"lw": 0.9})
    ends = []
    at = np.full(len(y), np.nan) if text_at is None else np.asarray(text_at, dtype=float)
    tails = after if after is not None else [""] * len(y)
    for patch, yi, x, e, d, a, tail in zip(drawn, y, vals, err[1], disturbed, at, tails):
        if d:
            patch.set_hatch(HATCH)
            patch.set_facecolor("white")
            patch.set_edgecolor(color)
        if math.isnan(x):
            continue
        ends.append(x + e)
        ax.annotate(fmt.sig(x) + unit + (" disturbed" if d else "") + tail, (finite_max([x + e, a]), yi), xytext=(5, 0),
                    textcoords="offset points", va="center", fontsize=7, color="0.15")
    return ends


def bar_patches(ax) -> list:
    """The bars `bars` drew in ax, in row order."""
    return list(next(c for c in ax.containers if isinstance(c, BarContainer)))


def frame(ax, ends, room: float = 1.28) -> None:
    ax.set_xlim(0, room * max([1e-9, *ends]))
    ax.grid(axis="y", visible=False)


def setup_figure(rows: pd.DataFrame, width: float, ncols: int = 1, timing: bool = True, **kw):
    """(rows in label order, figure, panels sharing one y: a row per cell top to bottom, y, ok, disturbed)."""
    rows = ordered(rows)
    n = len(rows)
    fig = fmt.figure(width, height(n) + 0.4 * (not timing))
    axes = list(fig.subplots(1, ncols, sharey=True, squeeze=False, **kw)[0])
    y = np.arange(n, dtype=float)
    axes[0].set_yticks(y, row_labels(rows, timing), fontsize=8)
    axes[0].set_ylim(max(n, 1) - 0.5, -0.5)
    ok = (rows["status"] == "ok").to_numpy()
    dist = [bool(o) and flag(v) for o, v in zip(ok, rows["disturbed"] if "disturbed" in rows else [None] * n)]
    return rows, fig, axes, y, ok, dist


def not_ok(rows: pd.DataFrame, ok, axes, y, data: dict) -> list:
    """Placeholders for the rows that did not run ok: status and reason in the first panel, status in the others."""
    placed = []
    for i, (_, r) in enumerate(rows.iterrows()):
        if not ok[i]:
            data["placeholders"].append({"label": r["label"], "status": r["status"]})
            placed += [(data["placeholders"][-1] if j == 0 else None,
                        placeholder(ax, y[i], reason(r) if j == 0 else fmt.STATUS_TEXT.get(r["status"], r["status"])))
                       for j, ax in enumerate(axes)]
    return placed


# ---------------------------------------------------------------- latency

def latency(rows: pd.DataFrame, title_text: str, path: Path) -> Drawn:
    """TTFT, TPOT (whiskers: selection.spread, its kind after the value; the row's bandwidth floor as a black
    tick) and decode tok/s (whiskers from TPOT's), one row per cell."""
    rows, fig, axes, y, ok, dist = setup_figure(rows, 13.0, 3)
    head = title(fig, f"Latency: {title_text}\nbars: median of the timed calls; {TIMING_NOTE}; black tick: the "
                 "row's bandwidth floor; grey rows: did not run ok", 13.0)
    spreads = {m: [selection.spread(r, m) if o else None for o, (_, r) in zip(ok, rows.iterrows())]
               for m in ("ttft_ms", "tpot_ms")}
    iv = {m: np.array([(sp.lo, sp.hi) if sp else (math.nan, math.nan) for sp in v], dtype=float).reshape(len(rows), 2)
          for m, v in spreads.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        tok_iv = col(rows, "batch")[:, None] * 1000 / iv["tpot_ms"][:, ::-1]  # tok/s = batch * 1000 / tpot
    floor = np.where(ok, col(rows, "bandwidth_floor_ms"), np.nan)
    below = [bool(o) and facts.below_floor(r) for o, (_, r) in zip(ok, rows.iterrows())]
    kind = lambda m: [f"  {KIND[sp.kind]}, n={sp.n}" if sp else "" for sp in spreads[m]]  # noqa: E731
    # rows measured in rounds also say the interval a rerun in other processes sees (their e2e `precision`)
    rerun = [f"; rerun ±{r['precision']:.0%}" if o and _rounds(r) and isinstance(r.get("precision"), float)
             and math.isfinite(r["precision"]) else "" for o, (_, r) in zip(ok, rows.iterrows())]
    panels = (("ttft_ms", iv["ttft_ms"], "time to first token, TTFT (ms)", "tab:blue",
               [k + x for k, x in zip(kind("ttft_ms"), rerun)]),
              ("tpot_ms", iv["tpot_ms"], "time per output token, TPOT (ms)", "tab:orange",
               [k + ("  BELOW FLOOR" if b else "") for k, b in zip(kind("tpot_ms"), below)]),
              ("decode_tok_s", tok_iv, "decode throughput (tokens/s, all sequences)", "tab:green", None))
    data = {"title": head, "rows": [t.get_text() for t in axes[0].get_yticklabels()], "bars": [], "placeholders": []}
    vals = {}
    for ax, (name, ci, xlabel, color, tail) in zip(axes, panels):
        vals[name] = np.where(ok, col(rows, name), np.nan)
        at = floor if name == "tpot_ms" else None
        ends = bars(ax, y, vals[name], ci[:, 0], ci[:, 1], color, dist, text_at=at, after=tail)
        if name == "tpot_ms" and np.isfinite(floor).any():
            ax.plot(floor, y, ls="none", marker="|", ms=14, mew=2.2, color="k",
                    label="bandwidth floor: (weights + KV) / measured copy bandwidth")
            ends += list(floor[np.isfinite(floor)])
        frame(ax, ends, room=1.75 if tail else 1.28)
        ax.set_xlabel(xlabel)
    for i, (_, r) in enumerate(rows.iterrows()):
        if ok[i]:
            hatched = all(bar_patches(ax)[i].get_hatch() == HATCH for ax in axes)  # as drawn
            data["bars"].append({"label": r["label"], "disturbed": dist[i], "hatched": hatched,
                                 "floor_ms": float(floor[i]), "below_floor": below[i],
                                 "interval": spreads["tpot_ms"][i].kind, **{
                name: {"value": float(vals[name][i]), "lo": float(ci[i, 0]), "hi": float(ci[i, 1])}
                for name, ci, *_ in panels}})
    axes[0].set_ylabel("strategy / attention")
    if np.isfinite(floor).any():
        legend(fig, axes, ncols=1)
    fit(fig, not_ok(rows, ok, axes, y, data))
    return Drawn(fmt.save(fig, path), data)


def _rounds(r) -> bool:
    """Whether a row was timed in rounds in separate processes (schema 3), so its precision is a rerun's."""
    try:
        return int(r.get("rounds") or 0) >= 1 and bool(r.get("precision_basis"))
    except (TypeError, ValueError):
        return False


def legend(fig, axes, ncols: int) -> None:
    """One legend below the panels, never over data: bars first, then markers, in drawing order."""
    found = [(h, lab) for ax in axes for h, lab in zip(*ax.get_legend_handles_labels())]
    found = sorted(found, key=lambda hl: not hasattr(hl[0], "patches"))  # stable: bar containers first
    fig.legend([h for h, _ in found], [lab for _, lab in found], loc="outside lower center", ncols=ncols, fontsize=8)
