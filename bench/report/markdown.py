"""`report.md`: on its first screen, which cache answers each question per machine and model, and what it costs;
then where to look next and a glossary. Every setup gets a page under setups/ with its tables and figures.

Reads only the store (pandas + matplotlib, never torch). The same store gives byte-identical files: fixed
rcParams, no PNG timestamps, sorted order and fixed number formats everywhere.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

from bench.store import load
from bench.report import answers, fig_capacity, fig_memory, fig_pairs, fig_quality, fig_setup, fig_steps, fig_tradeoff
from bench.report import front, kept, pages, selection
from bench.report.fmt import RC, md, setup_slug, setup_title

GLOSSARY = [
    "- **decode ms/token** (`tpot_ms`): median over the timed calls of (e2e − TTFT) / (new tokens − 1).",
    "- **floor ms** (`bandwidth_floor_ms`): the fastest a decode step can be: (weights + KV at the mean length) ÷ "
    "the device's measured copy bandwidth; **MBU** = floor ÷ decode ms/token. A row below its floor (MBU > 1) is "
    "flagged and never ranked.",
    "- **÷ dynamic**: decode ms/token ÷ the dynamic cache's under the same attention path (below 1: faster).",
    "- **×r (margin)**: runner-up's median ÷ winner's, judged by `bench.report.verdict.judge` (interval, noise "
    "floor, disturbed sides) on the timing the question ranks by.",
    "- **decode tok/s** (`decode_tok_s`): batch × 1000 ÷ decode ms/token, all sequences together.",
    "- **TTFT ms** (`ttft_ms`): from the call to the first new token: setup and the prefill, which produces it.",
    "- **e2e** (`e2e_ms`): the whole `generate()` call; whole-call tok/s (`e2e_tok_s`) = batch × new tokens ÷ e2e.",
    "- **memory (GPU)**: `peak_mem_mib` (CUDA peak allocated during the timed calls) + `kv_host_mib` (KV an "
    "offloaded cache keeps in host memory).",
    "- **memory (CPU)**: a row's `peak_mem_mib` is the worker process's peak RSS over its whole life (it grows "
    "with the cells run before it), never a cell's; a cell's own peak is used where rows carry one, else the KV "
    "bytes are compared.",
    "- **KV MiB** (`kv_cache_mib`): bytes the cache object holds after the last call, counted from its own "
    "tensors; predicted (`kv_theory_mib`) from the architecture's own code on the meta device.",
    "- **Δppl** (`ppl_delta`): perplexity through the cache minus the dynamic cache's (real weights only).",
    "- **interval of a median**: a 95% CI from ≥ 6 calls; min–max of 2–5 calls; p10–p90 of an old row that kept "
    "no raw samples; none for one call. Each says which it is. A row timed in rounds also says its **rerun ±** "
    "(`precision`): the 95% interval of its e2e median that a rerun in other processes sees, from the spread of its "
    "round medians.",
    "- **cold ×**: the first warm-up call over a steady call (compile, plan building, allocator growth).",
    "- **⚠ disturbed**: the calls disagreed with themselves even after re-measuring (spread, stalls, host speed "
    "moved); shown, never ranked.",
    "- **RANDOM WEIGHTS**: the real shapes with random parameters: timings and memory are the real model's, the "
    "text is meaningless and no quality figure is computed.",
]


FIGURES = ("latency_", "tradeoff_", "memory_", "step_latency_", "quality_", "throughput_", "kv_vs_nocache_",
           "architectures_")


def draw_setup(s: dict, rows, out: Path) -> list[Path]:
    """The figures of one setup, in the order its page shows them."""
    title, name = setup_title(s), setup_slug(s)
    drawn = [fig_setup.latency(rows, title, out / f"latency_{name}.png"),
             fig_tradeoff.tradeoff(rows, title, out / f"tradeoff_{name}.png"),
             fig_memory.memory(rows, title, out / f"memory_{name}.png")]
    ok = rows[rows["status"] == "ok"]
    if len(ok) and any(isinstance(v, list) and v for v in ok["step_ms"]):
        drawn.append(fig_steps.steps(rows, title, out / f"step_latency_{name}.png"))
    if s["weights"] == "real":
        drawn.append(fig_quality.quality(rows, title, out / f"quality_{name}.png"))
    return [d.path for d in drawn if d is not None]


def write(store="results", out="plots") -> list[Path]:
    """Write report.md, its pages (setups/) and its figures into `out`; returns the paths written, sorted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / pages.PAGES, ignore_errors=True)  # pages of setups no longer in the store go too
    (out / pages.PAGES).mkdir()
    df = load(store)
    lines = ["# kvbench report: which KV cache, and what it costs", ""]
    written: list[Path] = []
    if df.empty:
        lines += ["No rows in the store.", ""]
    else:
        every = selection.prepare(df)
        picked = selection.pick(every)
        setups = selection.setups(picked.shown)
        groups = answers.groups(setups)
        with matplotlib.rc_context():
            matplotlib.rcdefaults()  # inside the context: restored on exit
            matplotlib.rcParams.update(RC)
            fams = {}
            keep = kept.Kept(out)
            for f, rows in fig_capacity.families(picked.shown):
                path = out / f"throughput_{fig_capacity.family_slug(f)}.png"
                written += keep.figures(path.name, f, rows, lambda: [fig_capacity.throughput(rows, f, path).path])
                fams[tuple(f[c] for c in fig_capacity.FAMILY)] = path
            for s, rows in setups:
                figs = keep.figures(setup_slug(s), s, rows, lambda: draw_setup(s, rows, out))
                fam = fams.get(tuple(s[c] for c in fig_capacity.FAMILY))
                written += figs + [pages.setup_page(s, rows, every, figs, fam, out)]
            kv = fig_pairs.cache_vs_none_section(fig_pairs.pairs(picked.shown), out, "../")
            arch = fig_pairs.architecture_section(picked.shown, out, "../")
        written += kv.paths + arch.paths + [keep.save()]
        written.append(pages.index(groups, out))
        written.append(pages.not_ok_page(picked.not_ok, out))
        top, refs, more = front.answers_section(groups, every, pages.PAGES)
        lines += [front.counts(store, picked, groups), "", front.quality_note(picked.shown), "",
                  front.legend(front.floor_said()), ""] + top
        if more:
            written.append(pages.section_page("answers.md", "More answers", more, out))
            lines += [f"More machines and models: [{pages.PAGES}/answers.md]({pages.PAGES}/answers.md).", ""]
        lines += ["## Where to look next", "", f"- Every setup, one page each (tables, figures, how each row was "
                  f"measured): [{pages.PAGES}/index.md]({pages.PAGES}/index.md), {len(setups)} setups."]
        if fams:
            lines.append("- Throughput against batch with the card's capacity and the OOMs: "
                         + " · ".join(f"[{md(p.stem[len('throughput_'):])}]({p.name})" for p in fams.values()))
        for sec, name, what in ((kv, "kv-vs-nocache.md", "KV cache against no cache"),
                                (arch, "architectures.md", "Architectures side by side, by KV heads")):
            if sec.lines:
                written.append(pages.section_page(name, what, sec.lines, out))
                lines.append(f"- {what}: [{pages.PAGES}/{name}]({pages.PAGES}/{name})")
        n = len(picked.not_ok)
        lines += [f"- Cells not ok, each with its reason: [{pages.PAGES}/not-ok.md]({pages.PAGES}/not-ok.md), "
                  f"{n} cell{'s' * (n != 1)}.", ""]
    lines += ["## Glossary", ""] + GLOSSARY + [""] + (refs if not df.empty else [])
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    stale = [p for p in out.glob("*.png") if p.name.startswith(FIGURES) and p not in set(written)]
    for p in stale:  # figures of setups the store no longer holds: `out` is a function of the store
        p.unlink()
    return sorted(written + [path])
