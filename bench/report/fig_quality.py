"""Quality against KV memory saved, for setups with quality figures (real weights).

x: KV bytes a row saves against the reference row (`reference`: the dynamic cache) of the same attention path.
Left: ppl_delta on a symmetric-log axis, linear only within ±linthresh (0.1% of the reference perplexity,
rounded down to a power of ten), so +0.23 (int4) stands well clear of 0 next to +139 (int2). Right: the greedy
tokens identical to the reference's before the first difference (first_divergence); greedy agreement is printed
in the labels and explained, since it drifts once the two texts differ.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.transforms import Bbox

from bench.report import fmt
from bench.report.fig_setup import Drawn, finite_max, flag, holds_cache, ordered, title

COLUMNS = ["label", "reference", "cached", "kv_cache_mib", "kv_saved_pct", "ppl", "ppl_delta", "first_divergence",
           "agreement", "ref_ppl", "ref_prefix"]
AGREEMENT_NOTE = ("greedy agreement (in the labels: share of all positions with the reference's token) drifts: "
                  "after the first differing token each text continues from its own context, so agreement mostly "
                  "measures that drift; the identical prefix is the comparable figure")


def path_of(r, with_compile: bool = True) -> tuple:
    keys = ("attn", "sdpa_backend", "compile") if with_compile else ("attn", "sdpa_backend")
    return tuple(fmt.text(r.get(k)) for k in keys)


def reference_of(r, refs: list):
    """The reference row of r's attention path (same compile switch where there is one), or None."""
    same = [f for f in refs if path_of(f) == path_of(r)] or [f for f in refs if path_of(f, False) == path_of(r, False)]
    return same[0] if same else None


def points(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per ok row with a quality figure, in label order."""
    ok = [r for _, r in ordered(rows).iterrows() if r["status"] == "ok"]
    refs = [r for r in ok if flag(r.get("reference")) and holds_cache(r)]
    out = []
    for r in ok:
        if all(math.isnan(fmt.num(r.get(c))) for c in ("ppl_delta", "first_divergence")):
            continue
        ref = reference_of(r, refs)
        kv = fmt.num(r.get("kv_cache_mib"))
        kv = 0.0 if math.isnan(kv) and not holds_cache(r) else kv
        base = fmt.num(ref.get("kv_cache_mib")) if ref is not None else math.nan
        out.append({"label": r["label"], "reference": ref is not None and ref["label"] == r["label"],
                    "cached": holds_cache(r), "kv_cache_mib": kv,
                    "kv_saved_pct": 100.0 * (1.0 - kv / base) if base > 0 else math.nan,
                    **{c: fmt.num(r.get(c)) for c in ("ppl", "ppl_delta", "first_divergence", "agreement")},
                    "ref_ppl": fmt.num(ref.get("ppl")) if ref is not None else math.nan,
                    "ref_prefix": fmt.num(ref.get("first_divergence")) if ref is not None else math.nan})
    return pd.DataFrame(out, columns=COLUMNS)


def linthresh(ref_ppl) -> float:
    """|ppl_delta| below this is drawn linearly (reads as 'no change'): 0.1% of the reference ppl, a power of 10."""
    p = finite_max(ref_ppl)
    return 10.0 ** math.floor(math.log10(0.001 * p)) if p > 0 else 0.01


def quality(rows: pd.DataFrame, title_text: str, path: Path) -> Drawn | None:
    pts = points(rows)
    if pts.empty:
        return None
    xcol = "kv_saved_pct" if pts["kv_saved_pct"].notna().any() else "kv_cache_mib"
    xlabel = ("KV cache bytes saved vs the reference (%; 100 = no cache kept)" if xcol == "kv_saved_pct"
              else "KV cache held (MiB; no reference row to compare with)")
    shown = pts[pts[xcol].notna()]
    width = 13.0
    fig = fmt.figure(width, 6.0)
    ax_p, ax_d = fig.subplots(1, 2, sharex=True)
    lt = linthresh(shown["ref_ppl"])
    head = title(fig, f"Quality vs KV memory: {title_text}\none point per ok row, against the reference (dynamic) "
                 "cache of the same attention path: x = KV bytes saved (from kv_cache_mib), black = the reference, "
                 "grey = no cache (use_cache=False)", width)
    data = {"title": head, "x": xcol, "yscale": {"name": "symlog", "linthresh": lt}, "points": [],
            "left_out": sorted(set(pts["label"]) - set(shown["label"]))}
    colors = ["black" if r else "0.55" if not c else "tab:blue" for r, c in zip(shown["reference"], shown["cached"])]
    xs = shown[xcol].to_numpy(dtype=float)
    ax_p.set_yscale("symlog", linthresh=lt, linscale=0.6)
    ax_p.axhspan(-lt, lt, color="0.93", lw=0, zorder=0)
    ax_p.axhline(0.0, color="k", lw=0.8, ls="--")
    d = shown["ppl_delta"].to_numpy(dtype=float)
    has_d = np.isfinite(d)
    is_ref = shown["reference"].to_numpy(dtype=bool)
    dots(ax_p, xs, d, colors, is_ref)
    top = finite_max(np.abs(np.concatenate([[lt], d])))
    ax_p.set_ylim(-lt * 1.5 if not (d < 0).any() else -top * 3, top * 8)
    ax_p.set_ylabel("ppl_delta = ppl − reference ppl (symlog)")
    ax_p.set_title(fmt.wrap("perplexity change through the cache (lower is better); symmetric-log axis, linear "
                            f"inside the grey band |Δ| < {fmt.sig(lt)}, which reads as no change", 80), fontsize=8)
    prefix = finite_max(shown["ref_prefix"])
    f = shown["first_divergence"].to_numpy(dtype=float)
    has_f = np.isfinite(f)
    dots(ax_d, xs, f, colors, is_ref)
    avoid = []
    if not math.isnan(prefix):
        ax_d.axhline(prefix, color="k", lw=0.8, ls="--")
        avoid.append(ax_d.annotate(f"all {prefix:.0f} greedy tokens equal", (0.5, prefix), xytext=(0, -3),
                                   xycoords=("axes fraction", "data"), textcoords="offset points", fontsize=7,
                                   color="0.3", ha="center", va="top"))
    ax_d.set_ylim(-0.06 * (prefix if prefix > 0 else 1), 1.18 * (prefix if prefix > 0 else finite_max(f, 1.0)))
    ax_d.set_ylabel("identical greedy prefix (tokens)")
    ax_d.set_title(fmt.wrap("identical greedy prefix (first_divergence); " + AGREEMENT_NOTE, 80), fontsize=8)
    for ax in (ax_p, ax_d):
        ax.set_xlabel(xlabel)
        ax.margins(x=0.25)
    if xcol == "kv_saved_pct":
        ax_p.axvline(0.0, color="k", lw=0.6, ls=":")
        ax_d.axvline(0.0, color="k", lw=0.6, ls=":")
    place_labels(fig, ax_p, xs[has_d], d[has_d], [f"{lab} ({'≈0' if abs(v) < lt else f'{v:+.3g}'})" for lab, v in
                                                   zip(shown["label"][has_d], d[has_d])])
    agree = shown["agreement"].to_numpy(dtype=float)
    place_labels(fig, ax_d, xs[has_f], f[has_f], [lab + ("" if math.isnan(a) else f" (agreement {a:.0%})")
                                                   for lab, a in zip(shown["label"][has_f], agree[has_f])], avoid)
    fig.draw_without_rendering()
    to_frac = ax_p.transAxes.inverted()
    zero = float(to_frac.transform(ax_p.transData.transform((0.0, 0.0)))[1])
    data["zero_frac"] = zero
    for (_, p), x, dv in zip(shown.iterrows(), xs, d):
        frac = float(to_frac.transform(ax_p.transData.transform((x, dv)))[1]) if math.isfinite(dv) else None
        data["points"].append({"label": p["label"], "x": float(x), "ppl_delta": float(dv), "y_frac": frac,
                               "first_divergence": float(p["first_divergence"]), "agreement": float(p["agreement"]),
                               "reference": bool(p["reference"]), "cached": bool(p["cached"])})
    return Drawn(fmt.save(fig, path), data)


def dots(ax, xs, ys, colors, is_ref) -> None:
    """The points with a value; the reference drawn last, so a row that coincides with it never hides it."""
    for top in (False, True):
        keep = np.isfinite(ys) & (is_ref == top)
        ax.scatter(xs[keep], ys[keep], c=[c for c, k in zip(colors, keep) if k], s=45, edgecolors="k", lw=0.5,
                   zorder=4 if top else 3)


OFFSETS = [(7, 0, "left", "center"), (-7, 0, "right", "center"), (0, 8, "center", "bottom"), (0, -8, "center", "top")]
OFFSETS += [(dx, dy, ha, "center") for dy in (16, -16, 30, -30, 44, -44) for dx, ha in ((7, "left"), (-7, "right"))]


def place_labels(fig, ax, xs, ys, texts, avoid=()) -> None:
    """Label points without overlaps, deterministically: points within 6 px share one multi-line label; each
    label takes the first offset that stays inside the axes and covers no marker or earlier label."""
    if not len(xs):
        return
    fig.draw_without_rendering()  # final layout: data -> pixel positions hold
    r = fig.canvas.get_renderer()
    pix = ax.transData.transform(np.column_stack([xs, ys]))
    groups: list[tuple[np.ndarray, int, list[str]]] = []
    for i, (p, t) in enumerate(zip(pix, texts)):
        near = next((g for g in groups if np.hypot(*(g[0] - p)) < 6), None)
        if near:
            near[2].append(t)
        else:
            groups.append((p, i, [t]))
    taken = [Bbox.from_extents(p[0] - 6, p[1] - 6, p[0] + 6, p[1] + 6) for p in pix]
    taken += [a.get_window_extent(r) for a in avoid]
    box_ax = ax.get_window_extent(r)
    for p, i, lines in groups:
        text, place = "\n".join(lines), None
        for dx, dy, ha, va in OFFSETS:
            a = ax.annotate(text, (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                            fontsize=7)
            box = a.get_window_extent(r)
            a.remove()
            fits = (box_ax.x0 <= box.x0 and box.x1 <= box_ax.x1 and box_ax.y0 <= box.y0 and box.y1 <= box_ax.y1
                    and not any(box.overlaps(t) for t in taken))
            if fits or place is None:
                place = (dx, dy, ha, va, box)
            if fits:
                break
        dx, dy, ha, va, box = place
        ax.annotate(text, (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=7,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if abs(dy) > 8 else None)
        taken.append(box)
