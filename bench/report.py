"""`python -m bench report [store=PATH] [out=DIR]`: markdown + figures from the results store alone.

Reads rows only (pandas + matplotlib, never torch/transformers), so a report can be rebuilt
anywhere. Output is byte-for-byte reproducible: fixed rcParams, no PNG timestamps, sorted
ordering and fixed number formats everywhere.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .store import load

# Conditions shared by every bar of one figure, and those that tell strategies apart within it.
SETUP = ("model", "weights", "device", "gpu", "dtype", "batch", "prompt_len", "new_tokens")
STRATEGY = ("cache", "nbits", "quant_backend", "residual_length", "q_group_size", "axis_key", "axis_value",
            "attn", "sdpa_backend", "compile", "seed")
CELL = SETUP + STRATEGY  # a row's cell: same values = same measurement, repeated
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
COLD_NOTE = ("cold_e2e_ms is the first warm-up call: it includes compilation, plan building and allocator "
             "growth, and is kept apart from the timed repeats (ttft/tpot/e2e are medians of those).")


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


# ---------------------------------------------------------------- markdown

TABLE = ("strategy", "status", "attn_used", "sdpa_backend_used", "compiled", "ttft_ms", "tpot_ms", "e2e_ms",
         "decode_tok_s", "cold_e2e_ms", "weights_mib", "kv_cache_mib", "kv_theory_mib", "peak_mem_mib")


def _cell(r, col: str) -> str:
    if col in ("ttft_ms", "tpot_ms"):
        return _spread(r, col[:-3])
    if col == "compiled":
        return {"True": "yes", "False": "no"}.get(_s(r[col]), "–")
    if col.endswith(("_ms", "_mib")):
        return _f(r[col])
    if col == "decode_tok_s":
        return _f(r[col], 1)
    return _md(r[col])


def _table(rows: pd.DataFrame, cols) -> list[str]:
    head = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return head + ["| " + " | ".join(_cell(r, c) for c in cols) + " |" for _, r in rows.iterrows()]


def _conditions(df: pd.DataFrame) -> list[str]:
    out = ["## Conditions", ""]
    for c in ("gpu", "driver", "torch", "transformers", "cuda", "cudnn"):
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


def _setup_section(s: dict, rows: pd.DataFrame, superseded: pd.DataFrame, images: list[str]) -> list[str]:
    out = [f"## {setup_title(s)}", ""]
    if s["weights"] == "random":
        out += [f"> {RANDOM_NOTE}", ""]
    out += _table(rows, TABLE) + [""]
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
    else:
        out += ["No ok rows in this setup: nothing plotted.", ""]
    return out


def write_report(store="results", out="plots") -> list[Path]:
    """Write report.md and three figures per setup into `out`; returns the paths written, sorted."""
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
                images = []
                if len(ok):
                    images = [plot_latency(ok, title, out / f"latency_{sl}.png"),
                              plot_memory(ok, title, s["device"], out / f"memory_{sl}.png"),
                              plot_steps(ok, title, int(s["prompt_len"] or 0), out / f"step_latency_{sl}.png")]
                    written += images
                sup = superseded[superseded["_key"].isin(set(ok["_key"]))]
                md += _setup_section(s, rows, sup, [p.name for p in images])
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
