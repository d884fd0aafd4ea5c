"""Figures across cells: KV cache vs no cache (pairs of rows), and architectures side by side (by KV heads).

A pair is a reference row (`reference`: the dynamic cache) and an uncached row (`holds_cache` false:
use_cache=False) that agree on every other condition. time(k) = ttft + the first k-1 per-step medians: the
time to have generated k tokens; the ratio no-cache / cache says what the cache saves by token k.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from bench.store import identity
from bench.report import fmt, margins, selection
from bench.report.fig_setup import Drawn, bars, col, flag, holds_cache, title

PAIR_KEY = (*(k for k in identity.BASE_KEYS if k != "cache"), "machine")
PAIR_SIDE = ("label", "ttft_ms", "e2e_ms", "step_ms", "disturbed", "sdpa_backend_used")
GROUP = ("model", "weights", "device", "gpu", "machine", "dtype", "prompt_len", "new_tokens")
PATH = ("attn", "sdpa_backend", "compile")
FIGURE_MIN_TOKENS = 16  # shorter pairs get a table row but no curve
PAIRS_NOTE = ("Pairs of a reference-cache row and a use_cache=False row with every other condition equal, the same "
              "machine included. Two ratios, each printed as defined here: **e2e ratio** = median whole-call time "
              "without the cache ÷ with it, with the interval and verdict of `bench.report.verdict.judge` (above 1: "
              "the cache is faster); **steps ratio** = the same for time(k) at the last token, where time(k) = TTFT + "
              "the first k−1 per-step medians: the figures' curves and their end labels. They differ because a sum "
              "of per-step medians is not the median of whole calls. Without a cache each step recomputes the whole "
              "context, so its step time grows with the context; while steps are bound by launches and host "
              "overhead that growth is hidden and the ratios can stay below 1.")
ARCH_NOTE = ("Same conditions, different models, ordered by KV heads (most first; 1 = MQA). KiB per cached token = "
             "kv_cache_mib × 1024 / (batch × (prompt_len + new_tokens − 1)).")


@dataclass(frozen=True)
class Section:
    """Markdown lines (heading, note, table, image links) and the figures written."""
    lines: list
    paths: list


def pairs(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (reference, uncached) pair of ok rows with equal conditions: PAIR_KEY columns, the PAIR_SIDE
    columns suffixed _kv and _nokv, and ratio = e2e no cache / e2e cache. Sorted naturally."""
    ok = rows[rows["status"] == "ok"]
    kv = ok[[flag(r.get("reference")) and holds_cache(r) for _, r in ok.iterrows()]]
    nokv = ok[[not holds_cache(r) for _, r in ok.iterrows()]]
    cols = [f"{c}_{s}" for s in ("kv", "nokv") for c in (*PAIR_SIDE, "row")]
    if kv.empty or nokv.empty:
        return pd.DataFrame(columns=[*PAIR_KEY, *cols, "ratio", "steps_ratio"])
    side = lambda d: pd.DataFrame({**{k: [fmt.text(v) for v in d[k]] for k in PAIR_KEY},  # noqa: E731
                                   **{c: list(d[c]) if c in d else [None] * len(d) for c in PAIR_SIDE},
                                   "row": d.to_dict("records")})
    m = side(kv).merge(side(nokv), on=list(PAIR_KEY), suffixes=("_kv", "_nokv"))
    m["ratio"] = [fmt.num(a) / fmt.num(b) for a, b in zip(m["e2e_ms_nokv"], m["e2e_ms_kv"])]
    m["steps_ratio"] = [steps_ratio(p) for _, p in m.iterrows()]
    order = ["model", "weights", "device", "gpu", "dtype", "prompt_len", "new_tokens", *PATH, "seed", "batch"]
    key = sorted(range(len(m)), key=lambda i: tuple(fmt.nat(m.iloc[i][c]) for c in order))
    return m.iloc[key].reset_index(drop=True)


def pair_groups(pp: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """(setup with 'batch' = the batches shown, its pairs): one figure each, in natural order."""
    out = []
    for key, g in pp.groupby(list(GROUP), sort=False):
        s = dict(zip(GROUP, key))
        out.append(({**s, "batch": ", ".join(sorted(set(g["batch"]), key=fmt.nat))}, g))
    return sorted(out, key=lambda t: tuple(fmt.nat(t[0][c]) for c in GROUP))


def cumulative_ms(ttft, steps) -> np.ndarray | None:
    """time(k) for k = 1..len(steps)+1, or None without per-step timings."""
    if not isinstance(steps, (list, tuple, np.ndarray)) or not len(steps) or math.isnan(fmt.num(ttft)):
        return None
    return fmt.num(ttft) + np.concatenate([[0.0], np.cumsum([fmt.num(v) for v in steps])])


def steps_ratio(p) -> float:
    """time(k) without the cache over with it at the last token both rows have: the curve's end label."""
    kv, nokv = (cumulative_ms(p[f"ttft_ms_{s}"], p[f"step_ms_{s}"]) for s in ("kv", "nokv"))
    if kv is None or nokv is None:
        return math.nan
    n = min(len(kv), len(nokv))
    return float(nokv[n - 1] / kv[n - 1])


def path_text(p) -> str:
    return selection.label({"strategy": "", "cache": "", **{k: p[k] for k in PATH}}).lstrip(" /")


def any_disturbed(pp: pd.DataFrame) -> bool:
    return any(flag(v) for s in ("kv", "nokv") for v in pp.get(f"disturbed_{s}", []))


def cache_vs_none(pp: pd.DataFrame, title_text: str, path: Path) -> Drawn:
    """Top: time to k tokens, cache solid / no cache dashed; bottom: no-cache / cache time. One column per
    attention path, colour per batch; the legend sits below the panels, the last ratio at each line's end."""
    paths = list(dict.fromkeys(path_text(p) for _, p in pp.iterrows())) or ["–"]
    batches = sorted(set(pp["batch"]), key=fmt.nat)
    cmap = matplotlib.colormaps["tab10"]
    color = {b: cmap(i % 10) for i, b in enumerate(batches)}
    width = max(9.0, 4.6 * len(paths) + 1.0)
    fig = fmt.figure(width, 7.4)
    axes = fig.subplots(2, len(paths), sharex=True, sharey="row", squeeze=False)
    head = title(fig, f"KV cache vs no cache: {title_text}\ntime to have generated k tokens = TTFT + the first k−1 "
                 "per-step medians; solid: reference cache, dashed: use_cache=False (recomputes the whole context)"
                 + ("; × marks: a disturbed row" if any_disturbed(pp) else ""), width)
    data = {"title": head, "lines": [], "skipped": []}
    for _, p in pp.iterrows():
        j = paths.index(path_text(p))
        kv, nokv = (cumulative_ms(p[f"ttft_ms_{s}"], p[f"step_ms_{s}"]) for s in ("kv", "nokv"))
        if kv is None or nokv is None:
            data["skipped"].append({"path": paths[j], "batch": p["batch"], "why": "no per-step timings"})
            continue
        c = color[p["batch"]]
        for side, v, ls in (("cache", kv, "-"), ("no cache", nokv, "--")):
            d = flag(p[f"disturbed_{'kv' if side == 'cache' else 'nokv'}"])
            k = np.arange(1, len(v) + 1)
            axes[0, j].plot(k, v / 1e3, color=c, ls=ls, lw=1.4, marker="x" if d else None,
                            markevery=max(1, len(v) // 8))
            data["lines"].append({"path": paths[j], "batch": p["batch"], "kind": side, "disturbed": d,
                                  "k": k.tolist(), "seconds": (v / 1e3).tolist()})
        n = min(len(kv), len(nokv))
        r = nokv[:n] / kv[:n]
        axes[1, j].plot(np.arange(1, n + 1), r, color=c, lw=1.4)
        axes[1, j].annotate(f"×{r[-1]:.2f}", (n, r[-1]), xytext=(3, 0), textcoords="offset points", va="center",
                            fontsize=7, color=c)
        data["lines"].append({"path": paths[j], "batch": p["batch"], "kind": "ratio", "k": list(range(1, n + 1)),
                              "ratio": r.tolist()})
    for j, name in enumerate(paths):
        axes[0, j].set_title(f"attention: {name}", fontsize=9)
        axes[1, j].axhline(1.0, color="0.3", lw=0.8)
        axes[1, j].set_xlabel("tokens generated (k)")
        axes[1, j].margins(x=0.08)
    axes[0, 0].set_ylabel("time to have generated k tokens (s)")
    axes[1, 0].set_ylabel("no-cache time / cache time\n(above 1: the cache is faster)")
    handles = [Line2D([], [], color=color[b], lw=2, label=f"batch {b}") for b in batches]
    handles += [Line2D([], [], color="k", ls="-", label="reference cache"),
                Line2D([], [], color="k", ls="--", label="use_cache=False")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return Drawn(fmt.save(fig, path), data)


# ---------------------------------------------------------------- architectures side by side

def architecture_groups(shown: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Ok rows whose conditions other than the model agree, spanning >= 2 distinct kv_heads; rows sorted by
    kv_heads (most first), then model; groups in the order of their shared conditions."""
    ok = shown[shown["status"] == "ok"].copy()
    ok["kv_heads_n"] = col(ok, "kv_heads")
    ok = ok[ok["kv_heads_n"] > 0]
    groups: dict = {}
    for i, r in ok.iterrows():
        groups.setdefault(identity.cell_key(r.to_dict(), without=("model",)) + (("machine", r["machine"]),), []).append(i)
    out = []
    for key in sorted(groups, key=lambda k: tuple((n, fmt.nat(v)) for n, v in k)):
        rows = ok.loc[groups[key]]
        if rows["kv_heads_n"].nunique() >= 2:
            out.append((dict(key), rows.sort_values(["kv_heads_n", "model"], ascending=[False, True], kind="stable")))
    return out


def arch_title(s: dict) -> str:
    w = "RANDOM WEIGHTS" if s.get("weights") == "random" else f"{s.get('weights')} weights"
    dev = fmt.machine_text(s)
    strat = selection.label({**s, "strategy": ""}) + (f", seed {s['seed']}" if s.get("seed") not in ("", "0", None) else "")
    return (f"{w}, {dev}, {s.get('dtype')}, batch {s.get('batch')}, prompt {s.get('prompt_len')} + "
            f"{s.get('new_tokens')} new tokens, {strat}")


def heads_text(k: float) -> str:
    return f"{int(k)} (MQA)" if k == 1 else f"{int(k)}"


def architectures(rows: pd.DataFrame, title_text: str, path: Path) -> Drawn:
    """Left: KV cache held (measured) with the predicted KV marked; right: TPOT with whiskers (selection.interval)
    and decode tok/s after each bar. One row per model, most KV heads first."""
    rows = rows if "kv_heads_n" in rows else rows.assign(kv_heads_n=col(rows, "kv_heads"))
    width = 13.0
    fig = fmt.figure(width, 1.9 + 0.45 * max(len(rows), 3))
    ax_kv, ax_t = fig.subplots(1, 2, sharey=True)
    head = title(fig, f"Architectures side by side, by KV heads: {title_text}\nleft: KV cache held after "
                 "generation (diamond: predicted); right: time per output token (median; whiskers: its 95% CI from "
                 ">= 6 calls, else the min–max of 2–5 calls or an old row's p10–p90), decode throughput after the bar; "
                 "hatched = disturbed", width)
    y = np.arange(len(rows), dtype=float)
    labels = [f"{m}\n{heads_text(k)} KV heads" for m, k in zip(rows["model"], rows["kv_heads_n"])]
    kv, th, tpot = col(rows, "kv_cache_mib"), col(rows, "kv_theory_mib"), col(rows, "tpot_ms")
    dist = [flag(v) for v in rows.get("disturbed", [None] * len(rows))]
    ends = bars(ax_kv, y, kv, kv, kv, "tab:blue", [False] * len(rows), " MiB", text_at=th)
    ax_kv.plot(th, y, "kD", ms=5, label="predicted KV (kv_theory_mib)")
    iv = np.array([selection.interval(r, "tpot_ms") for _, r in rows.iterrows()], dtype=float).reshape(len(rows), 2)
    t_ends = bars(ax_t, y, tpot, iv[:, 0], iv[:, 1], "tab:orange", dist, " ms")
    tok = col(rows, "decode_tok_s")
    for yi, e, v in zip(y, iv[:, 1], tok):
        if math.isfinite(v):
            ax_t.annotate(f"{fmt.sig(v)} tok/s", (e, yi), xytext=(3, -9), textcoords="offset points", fontsize=7,
                          color="0.35", va="center")
    for ax, e, xl in ((ax_kv, [*ends, *th[np.isfinite(th)]], "KV cache held (MiB)"),
                      (ax_t, t_ends, "time per output token, TPOT (ms)")):
        ax.set_xlim(0, 1.3 * max([1e-9, *e]))
        ax.set_xlabel(xl)
        ax.grid(axis="y", visible=False)
    ax_kv.set_yticks(y, labels, fontsize=8)
    ax_kv.set_ylim(len(y) - 0.5, -0.5)
    fig.legend(loc="outside lower center", fontsize=8)
    data = {"title": head, "rows": [{"model": m, "kv_heads": float(k), "kv_cache_mib": float(a), "kv_theory_mib":
                                     float(b), "tpot_ms": float(t), "tpot_lo": float(lo), "tpot_hi": float(hi),
                                     "decode_tok_s": float(s), "disturbed": d}
                                    for m, k, a, b, t, (lo, hi), s, d in
                                    zip(rows["model"], rows["kv_heads_n"], kv, th, tpot, iv, tok, dist)]}
    return Drawn(fmt.save(fig, path), data)


# ---------------------------------------------------------------- report sections

def table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(fmt.md(c) for c in r) + " |" for r in rows]


def pair_name(s: dict) -> str:
    """The file name of a setup's cache-vs-none figure (gpu_report links it too)."""
    return "kv_vs_nocache_" + fmt.slug(s["model"], s["weights"], s["device"], fmt.machine_slug(s), s["dtype"], "ball",
                                       f"p{s['prompt_len']}", f"n{s['new_tokens']}") + ".png"


def verdict_text(p) -> str:
    """judge's e2e ratio (no cache / cache), its interval and verdict; the same words as every report."""
    m = margins.judge(p["row_kv"], p["row_nokv"], "e2e_ms")
    v = m.v
    if v.ratio is None:
        return margins.word(v)
    return f"{v.ratio:.2f}×{margins.interval_text(v)}: no cache {v.label}"


def cache_vs_none_section(pp: pd.DataFrame, out: Path, prefix: str = "") -> Section:
    """Note, one table row per pair (machine named), one figure per setup (FIGURE_MIN_TOKENS+); image links
    start with `prefix` (the page's way back to `out`)."""
    if pp.empty:
        return Section([], [])
    rows = [[p["machine"], p["model"], p["dtype"], p["prompt_len"], p["new_tokens"], path_text(p), p["batch"],
             fmt.fixed(fmt.num(p["e2e_ms_kv"]) / 1e3), fmt.fixed(fmt.num(p["e2e_ms_nokv"]) / 1e3),
             verdict_text(p), fmt.fixed(p["steps_ratio"]) + "×",
             "; ".join(f"{side} disturbed" for side, k in (("cache", "kv"), ("no cache", "nokv"))
                       if flag(p[f"disturbed_{k}"])) or "–"] for _, p in pp.iterrows()]
    lines = [PAIRS_NOTE, ""] + table(
        ["machine", "model", "dtype", "prompt", "new", "attention", "batch", "e2e cache (s)", "e2e no cache (s)",
         "e2e ratio [interval]: verdict", "steps ratio", "note"], rows) + [""]
    paths = []
    for s, g in pair_groups(pp):
        if fmt.num(s["new_tokens"]) >= FIGURE_MIN_TOKENS:
            paths.append(cache_vs_none(g, fmt.setup_title(s), out / pair_name(s)).path)
    return Section(lines + [f"![{p.stem}]({prefix}{p.name})" for p in paths] + [""] * bool(paths), paths)


def architecture_section(shown: pd.DataFrame, out: Path, prefix: str = "") -> Section:
    """Note, and per group a table and its figure; empty without a group."""
    groups = architecture_groups(shown)
    if not groups:
        return Section([], [])
    lines, paths = [ARCH_NOTE, ""], []
    for s, rows in groups:
        tag = hashlib.sha1(repr(sorted(s.items())).encode()).hexdigest()[:6]
        name = fmt.slug(s["weights"], s["device"], fmt.machine_slug(s), s["dtype"], f"b{s['batch']}",
                        f"p{s['prompt_len']}", f"n{s['new_tokens']}", tag)
        paths.append(architectures(rows, arch_title(s), out / f"architectures_{name}.png").path)
        tokens = fmt.num(s["batch"]) * (fmt.num(s["prompt_len"]) + fmt.num(s["new_tokens"]) - 1)
        body = [[r["model"], heads_text(r["kv_heads_n"]), fmt.fixed(r["kv_cache_mib"]), fmt.fixed(r["kv_theory_mib"]),
                 fmt.fixed(fmt.num(r["kv_cache_mib"]) * 1024 / tokens), fmt.fixed(r["tpot_ms"]),
                 fmt.fixed(r["decode_tok_s"], 1)] for _, r in rows.iterrows()]
        lines += [f"### {arch_title(s)}", ""] + table(
            ["model", "KV heads", "KV cache (MiB)", "predicted KV (MiB)", "KiB per cached token", "TPOT (ms)",
             "decode tok/s"], body) + ["", f"![{paths[-1].stem}]({prefix}{paths[-1].name})", ""]
    return Section(lines, paths)
