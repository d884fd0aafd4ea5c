"""`report.md`: which cache wins what, first; then per setup a one-screen summary and, folded, the evidence.

Reads only the store (pandas + matplotlib, never torch). The same store gives byte-identical files: fixed
rcParams, no PNG timestamps, sorted order and fixed number formats everywhere.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd

from bench.store import load
from bench.report import fig_pairs, fig_quality, fig_setup, fig_steps, selection, tables
from bench.report.fmt import RC, md, setup_title, slug, text

GLOSSARY = [
    "- **decode ms/token** (`tpot_ms`): median over the timed calls of (e2e − TTFT) / (new tokens − 1).",
    "- **× dynamic**: decode ms/token over the dynamic cache's under the same attention path (below 1: faster).",
    "- **decode tok/s** (`decode_tok_s`): batch × 1000 / decode ms/token, all sequences together.",
    "- **TTFT ms** (`ttft_ms`): from the call to the first new token: the prefill plus one step.",
    "- **throughput over the whole call** (`e2e_tok_s`): batch × new tokens / e2e, prefill included.",
    "- **peak device GiB** (`peak_mem_mib`): CUDA max allocated (CPU: process peak RSS) during the timed calls.",
    "- **KV MiB** (`kv_cache_mib`): bytes the cache object holds after the last call, counted from its own tensors; "
    "predicted (`kv_theory_mib`) from the architecture's own code on the meta device.",
    "- **Δppl** (`ppl_delta`): perplexity through the cache minus the dynamic cache's (real weights only).",
    "- **[95% CI]**: distribution-free interval of the median from the raw per-call samples; **±x%** is its "
    "half-width, the precision `repeats=auto` stopped at.",
    "- **cold ×**: the first warm-up call over a steady call (compile, plan building, allocator growth).",
    "- **MBU**: (weights + KV at the mean length) / measured copy bandwidth, over decode ms/token; 1 = at the "
    "bandwidth floor (a read-only step can slightly beat the copy, which reads and writes).",
    "- **⚠ disturbed**: the calls disagreed with themselves even after re-measuring (spread, stalls, host speed "
    "moved); such a row is shown but never wins.",
    "- **RANDOM WEIGHTS**: the real shapes with random parameters: timings and memory are the real model's, the "
    "text is meaningless and no quality figure is computed.",
]


def _conditions(rows: pd.DataFrame) -> str:
    """The environment shared by every row of a setup (what differs is a column of its tables)."""
    parts = []
    for c in ("torch", "transformers", "cuda", "driver", "cpu", "cuda_alloc_conf", "flash_attn"):
        vals = sorted({text(v) for v in rows[c]}) if c in rows else []
        if len(vals) == 1 and vals[0]:  # one value in every row; what varies is a column of the tables
            parts.append(f"{c} {vals[0]}")
    runs = rows["run_id"].nunique()
    ts = sorted(text(v)[:10] for v in rows["timestamp"] if text(v))
    when = f", {ts[0]}" + (f" … {ts[-1]}" if ts[-1] != ts[0] else "") if ts else ""
    return f"Conditions: {', '.join(parts) or '–'}; {len(rows)} cells from {runs} run(s){when}."


def _setup(s: dict, rows: pd.DataFrame, out: Path) -> tuple[list[str], list[Path]]:
    title = setup_title(s)
    name = slug(s["model"], s["weights"], s["device"], s["gpu"] or "nogpu", s["dtype"], f"b{s['batch']}",
                f"p{s['prompt_len']}", f"n{s['new_tokens']}")
    drawn = [fig_setup.latency(rows, title, out / f"latency_{name}.png"),
             fig_setup.memory(rows, title, out / f"memory_{name}.png")]
    ok = rows[rows["status"] == "ok"]
    if len(ok) and any(isinstance(v, list) and v for v in ok["step_ms"]):
        drawn.append(fig_steps.steps(rows, title, out / f"step_latency_{name}.png"))
    q = fig_quality.quality(rows, title, out / f"quality_{name}.png") if s["weights"] == "real" else None
    if q is not None:
        drawn.append(q)
    lines = [f"## {title}", "", _conditions(rows), ""] + tables.summary(rows, s) + [
        "", tables.winners_line(rows, s), "", "<details><summary>Figures and how each row was measured</summary>", ""]
    lines += [f"![{p.path.stem.split('_')[0]}]({p.path.name})" for p in drawn] + [""] + tables.details(rows)
    lines += ["", "</details>", ""]
    return lines, [d.path for d in drawn]


def write(store="results", out="plots") -> list[Path]:
    """Write report.md and its figures into `out`; returns the paths written, sorted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = load(store)
    md_lines = ["# kvbench report", ""]
    written: list[Path] = []
    if df.empty:
        md_lines += ["No rows in the store.", ""]
    else:
        picked = selection.pick(selection.prepare(df))
        groups = selection.setups(picked.shown)
        md_lines += [f"From `{md(store)}`: {len(picked.shown)} cells in {len(groups)} setups "
                     f"({int((picked.shown['status'] == 'ok').sum())} ok); {len(picked.superseded)} older rows of the "
                     "same cells left out. Random-weight setups say so in their title.", "",
                     "## Which cache? The winner of each question, per setup", ""]
        md_lines += tables.overview(groups) + ["", "Definitions: [glossary](#glossary). Each setup below opens "
                                                   "with its summary; figures and details are folded.", ""]
        with matplotlib.rc_context():
            matplotlib.rcdefaults()  # inside the context: restored on exit
            matplotlib.rcParams.update(RC)
            for s, rows in groups:
                lines, paths = _setup(s, rows, out)
                md_lines += lines
                written += paths
            lines, paths = _across(picked.shown, out)
            md_lines += lines
            written += paths
        md_lines += ["## Rows not ok", ""] + _folded(picked.not_ok)
    md_lines += ["## Glossary", ""] + GLOSSARY + [""]
    path = out / "report.md"
    path.write_text("\n".join(md_lines).rstrip("\n") + "\n")
    return sorted(written + [path])


def _folded(not_ok: pd.DataFrame) -> list[str]:
    """How many cells did not run ok, by status, in the open; the table with each reason folded below it."""
    if not_ok.empty:
        return ["None.", ""]
    counts = not_ok["status"].astype(str).value_counts()
    said = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    n = len(not_ok)
    return ([f"{n} cell{'' if n == 1 else 's'} whose newest row is not ok: {said}.", "",
             "<details><summary>Each cell and why</summary>", ""] + tables.not_ok(not_ok) + ["", "</details>", ""])


def _across(shown: pd.DataFrame, out: Path) -> tuple[list[str], list[Path]]:
    """Comparisons across setups: the cache against no cache, and architectures by KV heads."""
    lines, paths = [], []
    pairs = fig_pairs.pairs(shown[shown["status"] == "ok"])
    if len(pairs):
        drawn = fig_pairs.cache_vs_none_section(pairs, out)
        lines += drawn.lines
        paths += drawn.paths
    arch = fig_pairs.architecture_section(shown[shown["status"] == "ok"], out)
    lines += arch.lines
    paths += arch.paths
    return lines, paths
