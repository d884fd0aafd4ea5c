"""`python -m bench report [store=PATH] [out=DIR]`: markdown + figures from the results store alone.

Reads rows only (pandas + matplotlib, never torch/transformers), so a report can be rebuilt
anywhere. Output is byte-for-byte reproducible: fixed rcParams, no PNG timestamps, sorted
ordering and fixed number formats everywhere.
"""
from __future__ import annotations

import hashlib
import math
import re
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from .record import CELL_KEYS
from .store import load

# Conditions shared by every bar of one figure, and those that tell strategies apart within it.
SETUP = ("model", "weights", "device", "gpu", "dtype", "batch", "prompt_len", "new_tokens")
STRATEGY = tuple(k for k in CELL_KEYS if k not in SETUP)  # cache and its settings, attention, compile, seed
CELL = SETUP + STRATEGY  # a row's cell: same values = same measurement, repeated
# Rows of different models that agree on all of these are one architecture comparison (by kv_heads).
ARCH_GROUP = tuple(c for c in CELL if c != "model")
KV_TOLERANCE = 0.05
SMOOTH_STEPS = 5  # rolling-median window for per-step latency
ARGS = {"store": "results", "out": "plots"}
ARG_HELP = "store=PATH out=DIR"

# Pinned so the PNG bytes depend on the rows only, not on a user's matplotlibrc.
RC = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs everywhere
    "font.size": 9,
    "axes.titlesize": 9,
    "figure.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "svg.hashsalt": "kvbench",
    "path.simplify": False,
}
RANDOM_NOTE = ("Random weights: the real architecture and tensor shapes with randomly initialised parameters. "
               "Timings and memory are those of the real model; the generated text is meaningless, and since "
               "new_tokens is forced every row decodes the same length.")
MBU_NOTE = ("MBU (memory-bandwidth utilisation) = bandwidth_floor_ms / tpot_ms: the bandwidth floor is the time a "
            "decode step would take if it did nothing but read the weights and the KV cache (at the mean decode "
            "length) once at the measured device copy bandwidth; 1 means the step runs at that floor. A step "
            "that only reads can move bytes faster than a copy (which reads and writes), so a value a little above "
            "1 means the step beat the copy, not the hardware. At small batch and short context a model is bound "
            "by kernel launches and host overhead, not by memory traffic, and sits far below 1.")
QUALITY_NOTE = ("Quality against KV memory: x is the KV bytes a strategy saves against the full-precision dynamic "
                "cache of this setup (from kv_cache_mib; 100% = no cache kept, negative = more than dynamic), y is "
                "ppl_delta (perplexity through the cache minus the dynamic cache's, same attention; 0 = no loss) "
                "and, in the second panel, greedy agreement with the dynamic cache's tokens; marker colour is "
                "decode throughput. Points that coincide share one label, which gives each one's throughput.")
COLD_NOTE = ("cold_e2e_ms is the first warm-up call: it includes compilation, plan building and allocator "
             "growth, and is kept apart from the timed repeats (ttft/tpot/e2e are medians of those). "
             "cold_x = cold_e2e_ms / e2e_ms: how many steady calls the first one cost; cold_e2e_ms - e2e_ms is the "
             "one-off cost (for compiled rows, mostly compile time). A cell pays the cold start only for shapes and "
             "kernels no earlier cell of the same process had used.")


# ---------------------------------------------------------------- values and labels

def _s(v) -> str:
    """Canonical text of a condition value: equal conditions compare equal whatever pandas did to them."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _nat(v: str):
    """Sort key: numbers by value, text by text, numbers first."""
    try:
        x = float(v)
        return (0, x if math.isfinite(x) else 0.0, v)
    except ValueError:
        return (1, 0.0, v)


def _f(v, nd: int = 2) -> str:
    x = _num(v)
    return "–" if math.isnan(x) else f"{x:.{nd}f}"


def _spread(r, name: str) -> str:
    """median (p10–p90) of one timing."""
    med = _f(r[f"{name}_ms"])
    if med == "–" or math.isnan(_num(r[f"{name}_p10_ms"])):
        return med
    return f"{med} ({_f(r[f'{name}_p10_ms'])}–{_f(r[f'{name}_p90_ms'])})"


def _md(v) -> str:
    """Safe inside a markdown table cell."""
    return _s(v).replace("|", "\\|").replace("\n", " ").strip() or "–"


def strategy_label(r) -> str:
    cache = r["cache"] + (f" int{r['nbits']} ({r['quant_backend']})" if r["cache"] == "quantized" else "")
    cache += f" ({r['block_size']}-token blocks)" if r["cache"] == "paged" and r.get("block_size", "") != "" else ""
    attn = r["attn"] + (f"[{r['sdpa_backend']}]" if r["sdpa_backend"] not in ("", "auto") else "")
    return f"{cache} / {attn}" + (" / compile off" if r["compile"] == "off" else "")


def setup_title(s: dict) -> str:
    w = "RANDOM WEIGHTS" if s["weights"] == "random" else f"{s['weights']} weights"
    dev = s["device"] + (f" ({s['gpu']})" if s["gpu"] else "")
    return (f"{s['model']}, {w}, {dev}, {s['dtype']}, batch {s['batch']}, "
            f"prompt {s['prompt_len']} tok, {s['new_tokens']} new tok")


def slug(s: dict) -> str:
    raw = "_".join([s["model"], s["weights"], s["device"], s["gpu"] or "nogpu", s["dtype"],
                    f"b{s['batch']}", f"p{s['prompt_len']}", f"n{s['new_tokens']}"])
    return re.sub(r"[^a-z0-9._]+", "-", raw.lower()).strip("-")


def kv_mismatch(r) -> float | None:
    """Relative KV cache vs theory difference, or None when either figure is missing."""
    kv, th = _num(r["kv_cache_mib"]), _num(r["kv_theory_mib"])
    if math.isnan(kv) or math.isnan(th):
        return None
    if th == 0:
        return 0.0 if kv == 0 else math.inf
    return (kv - th) / th


# ---------------------------------------------------------------- selecting rows

LOADED = ("weights", "gpu", "dtype")  # known only once a model has loaded
PLACE_BY = ("model", "device", "batch", "prompt_len", "new_tokens")


def _place_unloaded(df: pd.DataFrame) -> None:
    """A row written without a loaded model (its worker crashed, or the planner refused the cell) lacks
    the loaded dtype and GPU. Show it in the one setup of its model and lengths that has them, if exactly
    one does (or, among several, exactly one in its own run); otherwise it keeps a setup of its own.
    Display only: the store keeps what was written."""
    loaded = df[df["dtype"] != ""]
    for i in df.index[df["dtype"] == ""]:
        r = df.loc[i]
        same = loaded[(loaded[list(PLACE_BY)] == r[list(PLACE_BY)]).all(axis=1)]
        if r["weights"] not in ("", "auto"):
            same = same[same["weights"] == r["weights"]]
        setups = same[list(LOADED)].drop_duplicates()
        if len(setups) > 1:  # e.g. the model ran in fp16 and fp32: the run's own loaded rows decide
            setups = same[same["run_id"] == r["run_id"]][list(LOADED)].drop_duplicates()
        if len(setups) == 1:
            df.loc[i, list(LOADED)] = setups.iloc[0].values


def select(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(all rows normalised, shown, superseded, not_ok), each oldest first.

    shown: per cell the newest ok row, or for cells that never succeeded their newest row.
    superseded: older ok rows of a shown cell. not_ok: every non-ok row, listed so nothing is hidden.
    """
    df = df.copy()
    for c in CELL:
        df[c] = df[c].map(_s)
    df["_ts"] = pd.to_datetime(df["timestamp"], utc=True, errors="coerce", format="ISO8601")
    df = df.sort_values(["_ts", "run_id"], kind="stable", na_position="first")  # oldest first
    _place_unloaded(df)
    df["strategy"] = df.apply(strategy_label, axis=1)
    df["_key"] = [tuple(v) for v in df[list(CELL)].values]
    ok = df[df["status"] == "ok"]
    newest_ok = ok.drop_duplicates(list(CELL), keep="last")
    superseded = ok.drop(newest_ok.index)
    never_ok = df[~df["_key"].isin(set(newest_ok["_key"]))].drop_duplicates(list(CELL), keep="last")
    shown = pd.concat([newest_ok, never_ok])
    # Two cells of one setup with the same label (e.g. different seeds): tell them apart by cell id.
    dup = shown.duplicated(list(SETUP) + ["strategy"], keep=False)
    shown.loc[dup, "strategy"] = shown.loc[dup, "strategy"] + " [" + shown.loc[dup, "cell_id"].map(_s) + "]"
    return df, shown, superseded, df[df["status"] != "ok"]


# ---------------------------------------------------------------- figures

def _figure(n_rows: int, ncols: int, title: str, width: float = 12.0) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, 2.0 + 0.38 * max(n_rows, 2)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, sharey=ncols > 1, squeeze=False)[0]
    fig.suptitle(title)
    return fig, list(axes)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _col(rows: pd.DataFrame, name: str) -> np.ndarray:
    return np.array([_num(v) for v in rows[name]], dtype=float)


def plot_latency(rows: pd.DataFrame, title: str, path: Path) -> Path:
    fig, axes = _figure(len(rows), 3, f"Latency: {title}\nbars: median of timed repeats, whiskers: p10–p90")
    y = np.arange(len(rows))
    for ax, name, label in ((axes[0], "ttft", "time to first token, TTFT (ms)"),
                            (axes[1], "tpot", "time per output token, TPOT (ms)")):
        med, lo, hi = _col(rows, f"{name}_ms"), _col(rows, f"{name}_p10_ms"), _col(rows, f"{name}_p90_ms")
        err = np.clip(np.nan_to_num(np.vstack([med - lo, hi - med])), 0, None)
        ax.barh(y, med, xerr=err, color="tab:blue" if name == "ttft" else "tab:orange", capsize=3)
        ax.set_xlabel(label)
    axes[2].barh(y, _col(rows, "decode_tok_s"), color="tab:green")
    axes[2].set_xlabel("decode throughput (tokens/s, all sequences)")
    axes[0].set_yticks(y, list(rows["strategy"]))
    axes[0].set_ylabel("strategy")
    axes[0].invert_yaxis()  # table order, top to bottom
    return _save(fig, path)


def plot_memory(rows: pd.DataFrame, title: str, device: str, path: Path) -> Path:
    peak = "CUDA peak allocated" if device == "cuda" else "process peak RSS"
    fig, (ax,) = _figure(len(rows), 1, f"Memory at peak: {title}", width=10.0)
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for name, label, color in (("weights_mib", "weights", "tab:gray"), ("kv_cache_mib", "KV cache", "tab:blue"),
                               ("other_peak_mib", "other (activations, workspace, ...)", "tab:orange")):
        # Negative 'other' (RSS noise) would draw backwards; the total is printed at the bar end anyway.
        v = np.clip(np.nan_to_num(_col(rows, name)), 0, None)
        ax.barh(y, v, left=left, label=label, color=color)
        left += v
    theory = _col(rows, "kv_theory_mib")
    if not np.isnan(theory).all():
        ax.plot(np.nan_to_num(_col(rows, "weights_mib")) + theory, y, "kD", markersize=6,
                label="KV theory (weights + kv_theory_mib)")
    for yi, total in zip(y, _col(rows, "peak_mem_mib")):
        if not math.isnan(total):
            ax.annotate(f"{total:.1f}", (total, yi), xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_yticks(y, list(rows["strategy"]))
    ax.invert_yaxis()
    ax.set_xlabel(f"{peak} (MiB) = weights + KV cache + other")
    ax.set_ylabel("strategy")
    ax.margins(x=0.08)  # room for the totals printed at the bar ends
    fig.legend(loc="outside lower center", ncols=4, fontsize=8)  # below the axes: never covers a bar
    return _save(fig, path)


def plot_steps(rows: pd.DataFrame, title: str, prompt_len: int, path: Path) -> Path:
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    fig.suptitle(f"Per-step decode latency: {title}\n"
                 f"rolling median over {SMOOTH_STEPS} steps; dashed = no KV cache (recomputes the whole context)")
    cmap = matplotlib.colormaps["tab10" if len(rows) <= 10 else "tab20"]
    drawn = 0
    for i, (_, r) in enumerate(rows.iterrows()):
        steps = r["step_ms"]
        if not isinstance(steps, list) or not steps:
            continue
        ms = pd.Series([_num(v) for v in steps], dtype=float).rolling(SMOOTH_STEPS, center=True, min_periods=1).median()
        x = prompt_len + np.arange(len(ms)) + 1
        uncached = r["cache"] == "none"
        ax.plot(x, ms, linestyle="--" if uncached else "-", linewidth=2.0 if uncached else 1.4, color=cmap(i % cmap.N),
                label=r["strategy"] + (" (uncached)" if uncached else ""))
        drawn += 1
    ax.set_xlabel("tokens in context (prompt + generated so far)")
    ax.set_ylabel("decode step time (ms, median over repeats)")
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no per-step timings in these rows", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def _g(v) -> str:
    """Short number for an annotation: three significant digits."""
    x = _num(v)
    return "–" if math.isnan(x) else f"{x:.3g}"


def _bandwidth(rows: pd.DataFrame) -> str:
    """The measured copy bandwidth of these rows, one figure or the range (measured once per process)."""
    bw = sorted({round(x) for x in _col(rows, "bandwidth_gb_s") if not math.isnan(x)})
    if not bw:
        return "not measured"
    return f"{bw[0]} GB/s" if len(bw) == 1 else f"{bw[0]}–{bw[-1]} GB/s (measured per process)"


def plot_mbu(rows: pd.DataFrame, title: str, path: Path) -> Path:
    fig, (ax,) = _figure(len(rows), 1, f"Memory-bandwidth utilisation (MBU): {title}\n"
                         f"floor = (weights + KV at the mean decode length) / measured copy bandwidth "
                         f"{_bandwidth(rows)}", width=12.0)
    y = np.arange(len(rows))
    mbu = _col(rows, "mbu")
    hi = max(1.0, float(np.nanmax(mbu)))
    ax.barh(y, np.nan_to_num(mbu), color="tab:purple")
    ax.axvline(1.0, color="tab:red", linestyle="--", linewidth=1.2, label="at the bandwidth floor (MBU = 1)")
    for yi, m, floor, tpot in zip(y, mbu, _col(rows, "bandwidth_floor_ms"), _col(rows, "tpot_ms")):
        if math.isnan(m):
            ax.annotate("no MBU", (0, yi), xytext=(3, 0), textcoords="offset points", va="center", color="gray")
            continue
        text = f"{m:.3f}: floor {_g(floor)} ms / measured {_g(tpot)} ms"
        inside = m > 0.55 * hi  # long bars carry their text inside, so the axis can stop at max(1, max mbu)
        ax.annotate(text, (m, yi), xytext=(-3 if inside else 3, 0), textcoords="offset points", va="center",
                    ha="right" if inside else "left", color="white" if inside else "black", fontsize=8)
    ax.set_xlim(0, hi * 1.02)  # 2% past max(1, max mbu): the MBU = 1 line clear of the frame
    ax.set_yticks(y, list(rows["strategy"]))
    ax.invert_yaxis()
    ax.set_xlabel("MBU = bandwidth floor / measured time per output token (TPOT)")
    ax.set_ylabel("strategy")
    fig.legend(loc="outside lower center", fontsize=8)
    return _save(fig, path)


def _kv_baseline(ok: pd.DataFrame, r) -> float:
    """kv_cache_mib of the dynamic cache this row is measured against: same attention path where there is one."""
    best, best_score = math.nan, -1
    for _, d in ok[ok["cache"] == "dynamic"].iterrows():  # rows come sorted by strategy: ties go to the first
        kv = _num(d["kv_cache_mib"])
        score = sum(d[c] == r[c] for c in ("attn", "sdpa_backend", "compile", "seed"))
        if not math.isnan(kv) and score > best_score:
            best, best_score = kv, score
    return best


def quality_points(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per ok strategy: kv_saved_pct vs the dynamic cache (NaN without one), ppl_delta, agreement, tok/s."""
    out = []
    for _, r in ok.iterrows():
        kv, base = _num(r["kv_cache_mib"]), _kv_baseline(ok, r)
        saved = (1 - kv / base) * 100 if not math.isnan(kv) and not math.isnan(base) and base > 0 else math.nan
        out.append({"strategy": r["strategy"], "kv_saved_pct": saved, "kv_cache_mib": kv, "ppl": _num(r["ppl"]),
                    "ppl_delta": _num(r["ppl_delta"]), "agreement": _num(r["agreement"]),
                    "decode_tok_s": _num(r["decode_tok_s"])})
    return pd.DataFrame(out, columns=["strategy", "kv_saved_pct", "kv_cache_mib", "ppl", "ppl_delta", "agreement", "decode_tok_s"])


def _label_points(fig: Figure, ax, xs, ys, labels, details) -> None:
    """Label each point without overlaps: points within a few pixels share one (multi-line) label, each line
    with its `details` (the marker on top hides the others' colour), and each label takes the first of a fixed
    list of offsets that covers no other label or marker (deterministic)."""
    fig.draw_without_rendering()  # settle the layout so data -> pixel positions are final
    renderer = fig.canvas.get_renderer()
    pix = ax.transData.transform(np.column_stack([xs, ys]))
    groups: list[tuple[np.ndarray, int, list[str]]] = []
    for i, (p, lab, det) in enumerate(zip(pix, labels, details)):
        for g in groups:
            if np.hypot(*(g[0] - p)) < 6:
                g[2].append((lab, det))
                break
        else:
            groups.append((p, i, [(lab, det)]))
    taken = [Bbox.from_extents(p[0] - 7, p[1] - 7, p[0] + 7, p[1] + 7) for p in pix]  # the markers
    frame = ax.get_window_extent(renderer)
    offsets = [(7, 0, "left", "center"), (-7, 0, "right", "center"), (0, 8, "center", "bottom"),
               (0, -8, "center", "top")]
    for dy in (14, -14, 28, -28, 42, -42):
        offsets += [(7, dy, "left", "center"), (-7, dy, "right", "center")]
    for p, i, labs in groups:
        text = labs[0][0] if len(labs) == 1 else "\n".join(f"{lab} ({det})" for lab, det in labs)
        place = None
        for dx, dy, ha, va in offsets:  # tried without a leader line: its extent would cover the own marker
            a = ax.annotate(text, (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=7)
            box = a.get_window_extent(renderer)
            a.remove()
            fits = (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                    and not any(box.overlaps(t) for t in taken))
            if fits or place is None:  # nothing fits: the first offset, overlapping
                place = (dx, dy, ha, va, box)
                if fits:
                    break
        dx, dy, ha, va, box = place
        ax.annotate(text, (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=7,
                    arrowprops=dict(arrowstyle="-", color="0.5", lw=0.6, shrinkA=0, shrinkB=4) if abs(dy) > 8 else None)
        taken.append(box)


def plot_quality(points: pd.DataFrame, title: str, x: str, x_label: str, path: Path) -> Path:
    """x: 'kv_saved_pct' (vs the dynamic cache), or 'kv_cache_mib' for a setup without a dynamic-cache row."""
    fig = Figure(figsize=(12, 5.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharex=True)
    fig.suptitle(f"Quality vs KV memory{' saved' if x == 'kv_saved_pct' else ''}: {title}\n"
                 "one point per strategy; marker colour = decode throughput (tokens/s); quality baseline = dynamic cache")
    tok = points["decode_tok_s"].to_numpy(dtype=float)
    finite = tok[~np.isnan(tok)]
    norm = Normalize(float(finite.min()), float(finite.max())) if len(finite) else Normalize(0, 1)
    if norm.vmin == norm.vmax:
        norm = Normalize(norm.vmin * 0.9, norm.vmax * 1.1 + 1e-9)
    cmap = matplotlib.colormaps["viridis"]
    panels = ((axes[0], "ppl_delta", "ppl_delta = ppl − ppl of the dynamic cache (lower is better, 0 = no loss)", 1.0),
              (axes[1], "agreement", "greedy tokens equal to the dynamic cache's (%)", 100.0))
    for ax, col, ylabel, scale in panels:
        pts = points[~points[col].isna() & ~points[x].isna()]
        xs, y = pts[x].to_numpy(dtype=float), pts[col].to_numpy(dtype=float) * scale
        t = pts["decode_tok_s"].to_numpy(dtype=float)
        has = ~np.isnan(t)
        ax.axhline(0.0 if col == "ppl_delta" else 100.0, color="k", linewidth=0.8, linestyle="--")
        if x == "kv_saved_pct":
            ax.axvline(0.0, color="k", linewidth=0.8, linestyle=":")
        ax.scatter(xs[has], y[has], c=t[has], cmap=cmap, norm=norm, s=70, edgecolors="k", linewidths=0.6, zorder=3)
        if (~has).any():
            ax.scatter(xs[~has], y[~has], c="lightgray", s=70, edgecolors="k", linewidths=0.6, zorder=3,
                       label="no throughput figure")
            ax.legend(fontsize=7, loc="lower left")
        ax.set_xlabel(x_label)
        ax.set_ylabel(ylabel)
        ax.margins(x=0.3, y=0.25)  # room for the labels inside the axes
        if col == "agreement":  # a share: keep 100% in view and the axis from stretching over tiny differences
            ax.set_ylim(min(45.0, float(np.min(y)) - 8) if len(y) else 45.0, 108.0)
        if not len(pts):
            ax.text(0.5, 0.5, f"no row with both {col} and {x}", ha="center", va="center", transform=ax.transAxes)
    cb = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), shrink=0.9, aspect=40)
    cb.set_label("marker colour: decode throughput (tokens/s, all sequences)")
    for ax, col, _, scale in panels:
        pts = points[~points[col].isna() & ~points[x].isna()]
        if len(pts):
            _label_points(fig, ax, pts[x].to_numpy(dtype=float), pts[col].to_numpy(dtype=float) * scale,
                          list(pts["strategy"]), [f"{_g(t)} tok/s" for t in pts["decode_tok_s"]])
    return _save(fig, path)


# ---------------------------------------------------------------- architectures side by side

ARCH_TABLE = ("model", "kv_heads", "kv_cache_mib", "kv_theory_mib", "kib_per_token", "tpot_ms", "decode_tok_s",
              "peak_mem_mib")
ARCH_NOTE = ("Same conditions, different models: one bar per model, ordered by KV heads (most first; 1 = MQA, one "
             "key/value head shared by every query head). KiB per cached token = kv_cache_mib × 1024 / (batch × "
             "(prompt_len + new_tokens − 1)), the tokens the cache holds after generation.")


def _kv_heads(v) -> float:
    x = _num(v)
    return x if not math.isnan(x) and x > 0 else math.nan


def architecture_groups(shown: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Ok rows whose conditions other than the model agree and that span >= 2 distinct kv_heads values.

    Each group's rows (rows without kv_heads left out) come sorted by kv_heads descending, then model; groups
    in the order of their shared conditions.
    """
    ok = shown[shown["status"] == "ok"].copy()
    ok["_kvh"] = [_kv_heads(v) for v in ok["kv_heads"]]
    ok = ok[ok["_kvh"].notna()]
    out = []
    for key, rows in ok.groupby(list(ARCH_GROUP), sort=True):
        if rows["_kvh"].nunique() < 2:
            continue
        rows = rows.sort_values(["_kvh", "model"], ascending=[False, True], kind="stable")
        out.append((dict(zip(ARCH_GROUP, key)), rows))
    return out


def arch_title(s: dict) -> str:
    w = "RANDOM WEIGHTS" if s["weights"] == "random" else f"{s['weights']} weights"
    dev = s["device"] + (f" ({s['gpu']})" if s["gpu"] else "")
    strat = strategy_label(s) + (f", seed {s['seed']}" if s["seed"] not in ("", "0") else "")
    return (f"{w}, {dev}, {s['dtype']}, batch {s['batch']}, prompt {s['prompt_len']} tok, "
            f"{s['new_tokens']} new tok, {strat}")


def arch_slug(s: dict) -> str:
    """Every shared condition that has a value, in a fixed order: distinct groups get distinct names."""
    tag = {"nbits": "int", "block_size": "bs", "residual_length": "r", "q_group_size": "g", "axis_key": "ak",
           "axis_value": "av", "batch": "b", "prompt_len": "p", "new_tokens": "n", "seed": "s"}
    parts = [s["weights"], s["device"], s["gpu"] or "nogpu", s["dtype"]]
    for c in ("batch", "prompt_len", "new_tokens") + tuple(c for c in STRATEGY if c not in ("compile", "seed")):
        if s[c] != "":
            parts.append(tag.get(c, "") + s[c])
    parts += [f"compile-{s['compile'] or 'none'}", f"s{s['seed'] or 'none'}"]
    return re.sub(r"[^a-z0-9._]+", "-", "_".join(parts).lower()).strip("-")


def _cached_tokens(r) -> float:
    n = _num(r["batch"]) * (_num(r["prompt_len"]) + _num(r["new_tokens"]) - 1)
    return n if n > 0 else math.nan


def _kib_per_token(r) -> float:
    return _num(r["kv_cache_mib"]) * 1024 / _cached_tokens(r)


def _heads_label(k: float) -> str:
    return f"{int(k)} (MQA)" if k == 1 else f"{int(k)}"


def plot_architectures(rows: pd.DataFrame, title: str, path: Path) -> Path:
    fig = Figure(figsize=(12, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_kv, ax_t = fig.subplots(1, 2)
    fig.suptitle(f"Architectures side by side (by KV heads): {title}\n"
                 "left: KV cache held after generation; right: time per output token (median, p10–p90 whiskers), "
                 "decode throughput above the bars")
    x = np.arange(len(rows))
    ticks = [f"{_heads_label(k)}\n{m}" for k, m in zip(rows["_kvh"], rows["model"])]
    kv, theory = _col(rows, "kv_cache_mib"), _col(rows, "kv_theory_mib")
    ax_kv.bar(x, np.nan_to_num(kv), color="tab:blue", label="kv_cache_mib (measured)")
    if not np.isnan(theory).all():
        ax_kv.plot(x, theory, "kD", markersize=6, label="kv_theory_mib")
    for xi, v, th in zip(x, kv, theory):
        top = np.nanmax([0.0, v, th])  # above the bar and the theory marker
        ax_kv.annotate("–" if math.isnan(v) else f"{v:.2f} MiB", (xi, top), xytext=(0, 6),
                       textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax_kv.set_ylabel("KV cache (MiB)")
    ax_kv.legend(fontsize=8, loc="upper right")
    med, lo, hi = _col(rows, "tpot_ms"), _col(rows, "tpot_p10_ms"), _col(rows, "tpot_p90_ms")
    err = np.clip(np.nan_to_num(np.vstack([med - lo, hi - med])), 0, None)
    ax_t.bar(x, np.nan_to_num(med), yerr=err, color="tab:orange", capsize=4)
    for xi, top, tok in zip(x, np.nan_to_num(med) + err[1], _col(rows, "decode_tok_s")):
        ax_t.annotate("–" if math.isnan(tok) else f"{_g(tok)} tok/s", (xi, top), xytext=(0, 4),
                      textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax_t.set_ylabel("time per output token, TPOT (ms)")
    # from 0, with room above the tallest bar, marker or whisker for the values printed there
    ax_kv.set_ylim(0, 1.15 * max(1e-9, float(np.nanmax(np.concatenate([[0.0], kv, theory])))))
    ax_t.set_ylim(0, 1.12 * max(1e-9, float(np.max(np.nan_to_num(med) + err[1]))))
    for ax in (ax_kv, ax_t):
        ax.set_xticks(x, ticks, fontsize=8, rotation=0 if len(rows) <= 6 else 30)
        ax.set_xlabel("KV heads / model")
        ax.grid(axis="x", visible=False)
    return _save(fig, path)


def _arch_cell(r, col: str) -> str:
    if col == "kv_heads":
        return _heads_label(r["_kvh"])
    if col == "kib_per_token":
        return _f(_kib_per_token(r))
    if col == "model":
        return _md(r[col])
    return _cell(r, col)


def _ratio(a: float, b: float) -> str:
    return "–" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}×"


def arch_caption(rows: pd.DataFrame) -> str:
    """What the rows show, computed: KV bytes and decode time between the most and the fewest KV heads."""
    big, small = rows.iloc[0], rows.iloc[-1]
    hb, hs = big["_kvh"], small["_kvh"]
    kvb, kvs = _num(big["kv_cache_mib"]), _num(small["kv_cache_mib"])
    tb, ts = _num(big["tpot_ms"]), _num(small["tpot_ms"])
    heads = hb / hs
    parts = [f"From {int(hb)} KV heads ({_md(big['model'])}) to {int(hs)} ({_md(small['model'])}), "
             f"{heads:.2f}× fewer"]
    if not (math.isnan(kvb) or math.isnan(kvs)):
        parts.append(f"the KV cache goes from {kvb:.2f} to {kvs:.2f} MiB ({_ratio(kvb, kvs)} less)")
    if not (math.isnan(tb) or math.isnan(ts)):
        parts.append(f"time per output token from {tb:.2f} to {ts:.2f} ms ({_ratio(tb, ts)} "
                     + ("less)" if ts <= tb else "more)"))
    text = ", ".join(parts[:1]) + (": " + "; ".join(parts[1:]) if len(parts) > 1 else "") + "."
    if not (math.isnan(kvb) or math.isnan(kvs) or kvs == 0):
        kv_r = kvb / kvs
        if abs(kv_r / heads - 1) <= KV_TOLERANCE:
            text += f" KV bytes scale with KV heads (within {KV_TOLERANCE:.0%})"
        else:
            text += f" KV bytes do not scale with KV heads ({kv_r:.2f}× for {heads:.2f}× the heads)"
        if not (math.isnan(tb) or math.isnan(ts) or ts == 0):
            tr = tb / ts
            text += (f"; decode time does not fall with them ({tr:.2f}×)" if tr <= 1
                     else f"; decode time only partly ({tr:.2f}×)" if tr < kv_r
                     else f"; decode time as much or more ({tr:.2f}×)")
        text += "."
        wb, ws = _num(big["weights_mib"]), _num(small["weights_mib"])
        if not (math.isnan(wb) or math.isnan(ws)):
            text += (f" A decode step reads the weights as well as the cache: weights + KV is {wb + kvb:.1f} vs "
                     f"{ws + kvs:.1f} MiB ({_ratio(wb + kvb, ws + kvs)}), weights alone {wb:.1f} vs {ws:.1f} MiB.")
    per_head = [_num(r["kv_cache_mib"]) / r["_kvh"] for _, r in rows.iterrows() if not math.isnan(_num(r["kv_cache_mib"]))]
    if len(per_head) >= 2 and min(per_head) > 0 and max(per_head) / min(per_head) - 1 > KV_TOLERANCE:
        text += (f" **KV bytes per KV head differ by more than {KV_TOLERANCE:.0%} between these models "
                 f"({min(per_head):.2f}–{max(per_head):.2f} MiB): they differ in more than their KV heads "
                 "(layers, head size), so this is not a like-for-like comparison.**")
    return text


def _arch_section(groups: list[tuple[dict, pd.DataFrame]], images: list[str]) -> list[str]:
    out = ["## Architectures side by side", "", ARCH_NOTE, ""]
    for (s, rows), img in zip(groups, images):
        out += [f"### {arch_title(s)}", ""]
        head = ["| " + " | ".join(ARCH_TABLE).replace("kib_per_token", "KiB per cached token") + " |",
                "|" + "---|" * len(ARCH_TABLE)]
        out += head + ["| " + " | ".join(_arch_cell(r, c) for c in ARCH_TABLE) + " |" for _, r in rows.iterrows()]
        out += ["", arch_caption(rows), "", f"![{Path(img).stem}]({img})", ""]
    return out


# ---------------------------------------------------------------- markdown

TABLE = ("strategy", "status", "attn_used", "sdpa_backend_used", "compiled", "ttft_ms", "tpot_ms", "e2e_ms",
         "decode_tok_s", "cold_e2e_ms", "cold_x", "weights_mib", "kv_cache_mib", "kv_theory_mib", "peak_mem_mib")
# Appended to a setup's table only where some row of that setup has a value (keeps tables narrow).
OPTIONAL = ("kv_quantized_share", "mbu", "ppl", "ppl_delta", "agreement", "first_divergence")
QUALITY = ("ppl", "ppl_delta", "agreement", "first_divergence")  # real weights only


def table_columns(s: dict, rows: pd.DataFrame) -> tuple[str, ...]:
    extra = [c for c in OPTIONAL if any(_s(v) != "" for v in rows[c])
             and not (c in QUALITY and s["weights"] == "random")]
    return TABLE + tuple(extra)


def _cell(r, col: str) -> str:
    if col in ("ttft_ms", "tpot_ms"):
        return _spread(r, col[:-3])
    if col == "compiled":
        return _compiled(r)
    if col.endswith(("_ms", "_mib")):
        return _f(r[col])
    if col == "decode_tok_s":
        return _f(r[col], 1)
    if col == "cold_x":  # first call over a steady one
        x = _num(r["cold_e2e_ms"]) / _num(r["e2e_ms"])
        return "–" if math.isnan(x) else f"{x:.1f}x"
    if col == "mbu":
        return _f(r[col], 3)
    if col == "ppl":
        return _f(r[col])
    if col == "ppl_delta":
        x = _num(r[col])
        return "–" if math.isnan(x) else f"{x:+.3f}"
    if col in ("agreement", "kv_quantized_share"):
        x = _num(r[col])
        return "–" if math.isnan(x) else f"{x:.1%}"
    return _md(r[col])


def _compiled(r) -> str:
    """yes / no, and 'partly' where dynamo broke the graph or gave up recompiling: such a row ran partly eager."""
    said = {"True": "yes", "False": "no"}.get(_s(r["compiled"]), "–")
    breaks, limit = _num(r.get("graph_breaks")), _num(r.get("recompile_limit_hits"))
    notes = ([f"{breaks:.0f} graph break{'s' * (breaks != 1)}"] if breaks > 0 else []) + \
        (["recompile limit hit"] if limit > 0 else [])
    return f"partly ({', '.join(notes)})" if said == "yes" and notes else said


def _table(rows: pd.DataFrame, cols) -> list[str]:
    head = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return head + ["| " + " | ".join(_cell(r, c) for c in cols) + " |" for _, r in rows.iterrows()]


def _conditions(df: pd.DataFrame) -> list[str]:
    out = ["## Conditions", ""]
    for c in ("gpu", "cpu", "driver", "torch", "transformers", "cuda", "cudnn", "cuda_alloc_conf"):
        vals = sorted({_s(v) for v in df[c]} - {""})
        out.append(f"- {c}: {', '.join(vals) if vals else '–'}")
    shas = [_s(v) for v in df.sort_values(["_ts", "run_id"], kind="stable")["git_sha"]]
    shas = [s for s in shas if s]
    if shas:
        n = len(set(shas))
        out.append(f"- git_sha: {shas[0]}" + (f" … {shas[-1]} ({n} distinct, oldest … newest row)" if n > 1 else ""))
    else:
        out.append("- git_sha: –")
    ts = sorted(_s(v) for v in df["timestamp"] if _s(v))
    out.append(f"- rows: {len(df)} in {df['run_id'].nunique()} run(s)" + (f", {ts[0]} … {ts[-1]}" if ts else ""))
    return out + [""]


def _setup_section(s: dict, rows: pd.DataFrame, superseded: pd.DataFrame, images: list[str],
                   notes: list[str] = ()) -> list[str]:
    out = [f"## {setup_title(s)}", ""]
    if s["weights"] == "random":
        out += [f"> {RANDOM_NOTE}", ""]
    out += _table(rows, table_columns(s, rows)) + [""]
    flagged = [(r["strategy"], m, r) for _, r in rows.iterrows() if (m := kv_mismatch(r)) is not None and abs(m) > KV_TOLERANCE]
    if flagged:
        out.append(f"**KV cache differs from theory by more than {KV_TOLERANCE:.0%}:** " + "; ".join(
            f"{lab} ({_f(r['kv_cache_mib'])} vs {_f(r['kv_theory_mib'])} MiB, "
            + ("theory 0" if math.isinf(m) else f"{m:+.0%}") + ")" for lab, m, r in flagged))
    else:
        out.append(f"KV cache within {KV_TOLERANCE:.0%} of theory for every row that has both figures.")
    out.append("")
    if len(superseded):
        labels = sorted(set(rows.loc[rows["_key"].isin(set(superseded["_key"])), "strategy"]))
        out += [f"Several runs measured {', '.join(labels)}: the newest ok row (by timestamp) is shown and plotted; "
                f"{len(superseded)} older row(s) left out.", ""]
    out += [COLD_NOTE, ""]
    if images:
        out += [f"![{Path(i).stem}]({i})" for i in images]
        out += ["", f"Per-step latency is smoothed with a rolling median over {SMOOTH_STEPS} steps; x is the number "
                    "of tokens in context when the step ran. Memory bars stack to peak_mem_mib "
                    f"({'CUDA max allocated' if s['device'] == 'cuda' else 'process peak RSS'}).", ""]
        for n in notes:
            out += [n, ""]
    else:
        out += ["No ok rows in this setup: nothing plotted.", ""]
    return out


def _quality_figure(s: dict, ok: pd.DataFrame, title: str, path: Path) -> tuple[Path, str] | None:
    """The quality trade-off figure and its caption, for real-weight setups with any ppl; else None."""
    if s["weights"] == "random" or all(_s(v) == "" for v in ok["ppl"]):
        return None
    pts = quality_points(ok)
    if pts["kv_saved_pct"].notna().any():
        x, x_label = "kv_saved_pct", "KV cache bytes saved vs the dynamic cache (%, from kv_cache_mib)"
        caption = QUALITY_NOTE
    else:
        x, x_label = "kv_cache_mib", "KV cache held (MiB; no dynamic-cache row in this setup to compare with)"
        caption = QUALITY_NOTE.replace("x is the KV bytes a strategy saves against the full-precision dynamic "
                                       "cache of this setup (from kv_cache_mib; 100% = no cache kept, negative = "
                                       "more than dynamic)", "x is kv_cache_mib (this setup has no dynamic-cache "
                                       "row to measure savings against)")
    has_quality = pts["ppl_delta"].notna() | pts["agreement"].notna()
    left = sorted(set(pts.loc[~has_quality | pts[x].isna(), "strategy"]))
    base = sorted({round(p - d, 2) for p, d in zip(pts["ppl"], pts["ppl_delta"]) if not (math.isnan(p) or math.isnan(d))})
    if base:
        caption += (" Dynamic-cache perplexity: " + ", ".join(f"{b:.2f}" for b in base)
                    + (" (one per attention path)." if len(base) > 1 else "."))
    if left:
        caption += f" Not in the figure (no quality figures or no KV size): {', '.join(left)}."
    return plot_quality(pts, title, x, x_label, path), caption


def write_report(store="results", out="plots") -> list[Path]:
    """Write report.md and the figures of each setup into `out`; returns the paths written, sorted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = load(store)
    md = ["# kvbench report", ""]
    written: list[Path] = []
    if df.empty:
        md += ["No rows in the store.", ""]
    else:
        df, shown, superseded, not_ok = select(df)
        md += ["Only rows with status ok are plotted; rows that are not ok are listed at the end. Where several "
               "runs measured the same cell, the newest ok row by timestamp is used.", ""]
        md += _conditions(df)
        with matplotlib.rc_context():
            matplotlib.rcdefaults()  # inside the context: restored on exit
            matplotlib.rcParams.update(RC)
            for key, rows in shown.groupby(list(SETUP), sort=True):
                s = dict(zip(SETUP, key))
                rows = rows.sort_values("strategy", kind="stable")
                ok = rows[rows["status"] == "ok"]
                sl, title = slug(s), setup_title(s)
                images, notes = [], []
                if len(ok):
                    images = [plot_latency(ok, title, out / f"latency_{sl}.png"),
                              plot_memory(ok, title, s["device"], out / f"memory_{sl}.png"),
                              plot_steps(ok, title, int(s["prompt_len"] or 0), out / f"step_latency_{sl}.png")]
                    if any(_s(v) != "" for v in ok["mbu"]):
                        images.append(plot_mbu(ok, title, out / f"mbu_{sl}.png"))
                        notes.append(f"MBU bars: {MBU_NOTE} Measured copy bandwidth: {_bandwidth(ok)}.")
                    quality = _quality_figure(s, ok, title, out / f"quality_{sl}.png")
                    if quality:
                        images.append(quality[0])
                        notes.append(quality[1])
                    written += images
                sup = superseded[superseded["_key"].isin(set(ok["_key"]))]
                md += _setup_section(s, rows, sup, [p.name for p in images], notes)
            from . import headline  # it builds on this module's helpers

            lines, images = headline.section(shown[shown["status"] == "ok"], out)
            md += lines
            written += images
            groups = architecture_groups(shown)
            if groups:
                images, used = [], set()
                for s, rows in groups:
                    sl = arch_slug(s)
                    if sl in used:  # names that only differ in characters the slug drops
                        sl += "-" + hashlib.sha1(repr(sorted(s.items())).encode()).hexdigest()[:6]
                    used.add(sl)
                    images.append(plot_architectures(rows, arch_title(s), out / f"architectures_{sl}.png"))
                written += images
                md += _arch_section(groups, [p.name for p in images])
        md += ["## Rows not ok (not plotted)", ""]
        if not_ok.empty:
            md += ["None.", ""]
        else:
            nk = not_ok.sort_values(["model", "weights", "device", "strategy", "_ts", "run_id"], kind="stable")
            md += _table(nk, ("model", "weights", "device", "cache", "attn", "strategy", "status", "error",
                              "run_id", "timestamp")) + [""]
    path = out / "report.md"
    path.write_text("\n".join(md).rstrip("\n") + "\n")
    return sorted(written + [path])


def main(argv: list[str] | None = None) -> int:
    args = dict(ARGS)
    for a in sys.argv[1:] if argv is None else argv:
        k, sep, v = a.partition("=")
        if not sep or k not in args:
            print(f"error: bad argument {a!r} (key=value); allowed keys: {ARG_HELP}", file=sys.stderr)
            return 2
        args[k] = v
    paths = write_report(**args)
    print(f"report: {len(paths)} files in {args['out']} (open {Path(args['out']) / 'report.md'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
