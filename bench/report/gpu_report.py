"""The reference report of one GPU model, written from its rows: `python -m bench.report.gpu_report gpu=NAME`.

    python -m bench.report.gpu_report [store=results] gpu=NAME [out=results/<gpu-slug>-report.md] [plots=plots]

A decision table first (one row per question, bench.report.gpu_questions decides each), then the evidence
by question, KV cache against no cache, and how far repeated cells agree by `bench compare`'s own verdicts.
Every number is formatted from a row, so text, tables and rows cannot drift apart; the same rows give the same
bytes. Figures are linked, not drawn: `python -m bench report` writes them into `plots`. Run history and process
notes live in `<store>/logs/<gpu-slug>-history.md`, linked when present. No torch.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd

from bench.stats import verdicts
from bench.store import load
from bench.report import answers, fig_pairs, margins, selection, tables, verdict
from bench.report.fig_setup import flag
from bench.report.fmt import md, nat, num, sig, slug, text
from bench.report.gpu_facts import best, code, ms, short, status, tiny
from bench.report.gpu_questions import Question, fast_paths, largest, latency, throughput
from bench.report.gpu_questions import decisions as gpu_decisions

VERSIONS = (("driver", "driver"), ("cuda", "CUDA"), ("cudnn", "cuDNN"), ("torch", "torch"), ("transformers",
            "transformers"), ("flash_attn", "flash-attn"), ("quanto", "optimum-quanto"), ("hqq", "hqq"))
HOW = ("Only clean rows win: ok, not disturbed, not faster than their own bandwidth floor. **ms/token**: median "
       "decode step, (e2e − TTFT) / (new tokens − 1); **floor**: the fastest a step can read weights + KV at the "
       "measured copy bandwidth; **decode tok/s**: batch × 1000 / ms/token; **whole call**: prefill included; "
       "**memory**: CUDA peak allocated + KV held in host memory; **KV**: what the cache holds after the last call. "
       "**×r** = the other row's median decode ms/token ÷ the chosen one's, judged by `bench.report.verdict.judge` "
       "(as report.md, `bench compare` and the PR comment judge it): *beyond noise* when its whole interval lies "
       f"outside the noise floor; [lo–hi, 95% CI] where both rows have ≥ {margins.CI_FROM} calls, else [lo–hi, "
       "n=a+b], the bootstrap range of those calls, not a 95% CI.")
SOURCES = {"raw": "each call's e2e as recorded",
           "recovered": "each call's e2e recovered exactly from the row's p10/p50/p90 (rows of 2–3 calls)"}
REPEATS = "How far repeats agree"


class UsageError(ValueError):
    """Bad input: one line saying what is wrong."""


def gpu_slug(gpu: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA H200' -> 'h200': the first word with a digit, vendor dropped."""
    words = [w for w in gpu.split() if w.lower() not in ("nvidia", "amd", "tesla", "geforce")]
    first = next((w for w in words if re.search(r"\d", w)), "")
    return slug(first.split("-")[0]) or slug(gpu)


def rows_of(df: pd.DataFrame, gpu: str) -> tuple[pd.DataFrame, int]:
    """This GPU's rows, prepared (select places a crashed worker's row in the setup it belongs to); and how many
    CUDA rows name no GPU even so (left out, counted)."""
    d = selection.prepare(df)
    return d[d["gpu"] == gpu], int(((d["device"] == "cuda") & (d["gpu"] == "")).sum())


def _values(d: pd.DataFrame, c: str) -> str:
    """A column's one value, or each value with its number of rows."""
    vals = d[c].map(text)
    counts = vals[vals != ""].value_counts()
    if len(counts) <= 1:
        return "".join(counts.index)
    return ", ".join(f"{v} ({n} rows)" for v, n in sorted(counts.items(), key=lambda t: nat(t[0])))


def conditions(d: pd.DataFrame, picked: selection.Picked, nogpu: int) -> str:
    """The paragraph under the title: weights, rows and runs, dates, versions, protocol, all from the rows."""
    ts = sorted(text(v) for v in d["timestamp"] if text(v))
    when = " – ".join(dict.fromkeys(t[:16].replace("T", " ") for t in (ts[0], ts[-1]))) + " UTC" if ts else "undated"
    n_random = int((d["weights"] == "random").sum())
    weights = ("**Every row used RANDOM WEIGHTS**: the real shapes with random parameters, so timings and memory "
               "are the real model's, and no row has a quality figure. " if n_random == len(d) else
               f"**{n_random} of {len(d)} rows used RANDOM WEIGHTS** (no quality figure). " if n_random else "")
    vers = ", ".join(f"{name} {v}" for c, name in VERSIONS if c in d and (v := _values(d, c)))
    reps = sorted({int(num(v)) for v in d.loc[d["status"] == "ok", "repeats"] if not math.isnan(num(v))})
    warm = sorted({int(num(v)) for v in d["warmup"] if not math.isnan(num(v))})
    span = lambda xs: "–".join(map(str, sorted({xs[0], xs[-1]}))) + " " if xs else ""  # noqa: E731
    paged = " (or, for a strategy with a timed call of its own, as continuous batching has, its own token stamps)"
    lost = f" {nogpu} CUDA rows in the store name no GPU (their worker died first) and are left out." if nogpu else ""
    runs, old = d["run_id"].nunique(), len(picked.superseded)
    older = f"; {old} older rows of the same cells stay out of the tables (*{REPEATS}* compares them)" if old else ""
    return (f"{weights}{len(d)} rows from {runs} run{'s' * (runs > 1)}, {when}: {len(picked.shown)} cells, each "
            f"shown by its newest ok row{older}. {vers}. Protocol: {span(warm)}warm-up call{'s' * (warm != [1])} "
            f"on the exact shapes (kept apart as `cold_e2e_ms`), then {span(reps)}timed calls, each new token timed "
            f"by CUDA events{paged}; exactly `new_tokens` generated per call; figures are medians over the timed "
            f"calls.{lost}")


def _tally(labels: list) -> list[tuple[str, int]]:
    return sorted(pd.Series(labels, dtype=object).value_counts().items(), key=lambda t: (-t[1], t[0]))


def kv_vs_none(shown: pd.DataFrame, plots: str, floor: verdicts.NoiseFloor) -> tuple[Question, pd.DataFrame]:
    """Pairs of a reference row and a `holds_cache` false row, all else equal (fig_pairs.pairs): e2e times and
    `bench compare`'s verdict on no cache against the cache."""
    q, pp = Question("KV cache vs no cache"), fig_pairs.pairs(shown)
    if pp.empty:
        return q, pp
    lines, labels = [], []
    for _, p in pp.iterrows():
        kv, nokv = p["row_kv"], p["row_nokv"]
        v = margins.judge(kv, nokv, "e2e_ms", floor).v
        labels.append(v.label)
        iv = margins.interval_text(v)
        lines.append({"setup": tiny(p), "attention": md(fig_pairs.path_text(p)),
                      "e2e s, cache": sig(num(p["e2e_ms_kv"]) / 1e3),
                      "e2e s, no cache": sig(num(p["e2e_ms_nokv"]) / 1e3),
                      "no cache / cache, e2e [interval]: no cache is": f"{p['ratio']:.2f}{iv} {v.label}"
                      + ("" if kv["run_id"] == nokv["run_id"] else " (two runs)")})
    figs = []
    for s, _ in fig_pairs.pair_groups(pp):  # the figures `bench report` draws (fig_pairs.cache_vs_none_section)
        if num(s["new_tokens"]) >= fig_pairs.FIGURE_MIN_TOKENS:
            figs.append(f"[{short(s)}]({plots}/{fig_pairs.pair_name(s)})")
    said = ", ".join(f"{lab} in {n}" for lab, n in _tally(labels))
    q.evidence = [f"Reference-cache and `holds_cache` false rows, every other condition equal, judged as in "
                  f"*{REPEATS}*: no cache is {said} of {len(pp)} pairs.", ""] + tables.markdown(pd.DataFrame(lines)) + [
        "", "Time to each token: " + " · ".join(figs) if figs else "", ""]
    return q, pp


def default(groups: list, pp: pd.DataFrame) -> Question:
    """The reference strategy: where it ran ok, its range, how much faster the fastest path is, what no cache
    costs, where it failed."""
    q = Question("The default")
    refs = [(s, rows, best(rows[rows["reference"].map(flag)], "tpot_ms")) for s, rows in groups]
    got = [r for *_, r in refs if r is not None]
    if not got:
        return q
    t = [num(r["tpot_ms"]) for r in got]
    gain = [margins.judge(best(rows, "tpot_ms").to_dict(), r.to_dict()) for s, rows, r in refs
            if r is not None and s["batch"] == "1" and best(rows, "tpot_ms").name != r.name]
    x = [m.v.ratio for m in gain if m.v.ratio is not None]
    fails = [f"{status(r)} at batch {s['batch']} ({s['model']})" for s, rows, ref in refs if ref is None
             for _, r in rows[rows["reference"].map(flag) & rows["status"].isin(["oom", "error"])].iterrows()]
    said = [margins.judge(p["row_kv"], p["row_nokv"], "e2e_ms").v for _, p in pp.iterrows()]
    r = [v.ratio for v in said if v.ratio is not None]
    nocache = [f"no cache: e2e ×{min(r):.2f}–{max(r):.2f} the cache's; no cache is "
               + ", ".join(f"{lab} in {n}" for lab, n in _tally([v.label for v in said])) + f" of {len(said)}"] if r \
        else []
    q.decisions.append({
        "you need": "nothing special (the default)", "use": ", ".join(sorted({code(text(r["strategy"])) for r in got})),
        "measured": f"ok in {len(got)} of {len(groups)} setups, {sig(min(t))}–{ms(max(t))}/token"
                    + (f"; at batch 1 its decode step is up to ×{max(x):.1f} the fastest path's (beyond noise in "
                       f"{sum(m.beyond for m in gain)} of {len(gain)})" if x else ""),
        "instead of / avoid": "; ".join(nocache + fails) or "–"})
    return q


def repeats(d: pd.DataFrame, floor: verdicts.NoiseFloor) -> Question:
    """Cells with several ok rows on this GPU: each later row against the first, by verdict.judge, quoted."""
    q, lines, verdicts, froms = Question(REPEATS), [], [], set()
    ok = d[d["status"] == "ok"]
    for _, g in sorted(ok.groupby("_key", sort=False), key=lambda t: (short(t[1].iloc[-1]), t[1].iloc[-1]["label"])):
        if len(g) < 2:
            continue
        said = []
        for _, h in g.iloc[1:].iterrows():
            v, frm = verdict.judge(g.iloc[0].to_dict(), h.to_dict(), floor)
            froms.add(frm)
            verdicts.append((flag(h.get("compiled")), v.label))
            said.append(v)
        ratios = sorted(v.ratio for v in said if v.ratio is not None)
        if len(said) == 1:
            v = said[0]
            told = f"{v.ratio:.2f}{margins.interval_text(v)}: {v.label}"
        else:
            told = (f"{ratios[0]:.2f}–{ratios[-1]:.2f}: " if ratios else "") + ", ".join(
                f"{n} {lab}" for lab, n in _tally([v.label for v in said]))
        lines.append({"cell": f"{md(tiny(g.iloc[-1]))}, {md(g.iloc[-1]['label'])}", "runs": str(len(g)),
                      "later runs / the first (e2e): verdicts": md(told)})
    if not lines:
        q.evidence = ["No cell was measured more than once on this GPU.", ""]
        return q

    def tally(sub) -> str:
        return ", ".join(f"{n} {lab}" for lab, n in _tally([lab for _, lab in sub]))
    comp = [v for v in verdicts if v[0]]
    split = (f" Compiled cells: {tally(comp)}; the others: {tally([v for v in verdicts if not v[0]])}."
             if comp and len(comp) < len(verdicts) else "")
    n, src = len(verdicts), "; ".join(SOURCES.get(f, f) for f in sorted(froms))
    q.evidence = [f"{n} comparison{'s' * (n > 1)}, each later ok row of a cell against its first, judged as `bench "
                  f"compare` judges a cell (median e2e ratio and its bootstrap interval: a 95% CI where both rows have "
                  f">= {margins.CI_FROM} calls, else the range of the few calls, n=a+b; noise floor ±{floor.floor:.1%}"
                  f"{'' if floor.calibrated else ', not calibrated'}; samples: {src}): {tally(verdicts)}.{split} "
                  "Each verdict with its interval: `python -m bench compare` on the two runs.", ""
                  ] + tables.markdown(pd.DataFrame(lines)) + [""]
    return q


def build(df: pd.DataFrame, gpu: str, plots: str, history: str = "", nogpu: int = 0,
          floor: verdicts.NoiseFloor = verdicts.DEFAULT_FLOOR) -> str:
    """The report for one GPU's prepared rows (rows_of); `plots` and `history` are links relative to the report."""
    picked = selection.pick(df)
    groups = selection.setups(picked.shown)
    found = [(model, a) for (_, model), setups in answers.groups(groups) for a in answers.answers(setups, df)]
    pairs, pp = kv_vs_none(picked.shown, plots, floor)
    qs = [latency(groups, plots, found), throughput(groups, plots, found), largest(groups, df, plots), fast_paths(groups),
          default(groups, pp), pairs, repeats(df, floor)]
    out = [f"# kvbench reference report: {gpu}", "", conditions(df, picked, nogpu), "",
           "## Which KV cache? One row per question", ""]
    decisions = gpu_decisions(found) + [r for q in qs for r in q.decisions]
    if decisions:
        out += tables.markdown(pd.DataFrame(decisions)) + ["", HOW, ""]
    else:
        bad = len(picked.not_ok) > 0
        out += ["No clean row (ok, not disturbed) answers a question" + (". The cells not ok:" if bad else "."), ""]
        out += tables.not_ok(picked.not_ok) + [""] if bad else []
    for i, q in enumerate([q for q in qs if q.evidence], 1):
        out += [f"## {i}. {q.title}", ""] + q.evidence
    out += [f"Every row and figure: [report.md]({plots}/report.md) (`python -m bench report`)"
            + (f"; run history and process notes: [{Path(history).name}]({history})" if history else "") + "."]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip("\n") + "\n"


def write(store: str, gpu: str, out: str = "", plots: str = "plots") -> Path:
    """Write the report of `gpu`'s rows in `store` to `out` (default <store>/<gpu-slug>-report.md)."""
    df = load(store)
    if df.empty:
        raise UsageError(f"store={store} has no rows")
    rows, nogpu = rows_of(df, gpu)
    if rows.empty:
        seen = sorted({text(g) for g in df["gpu"]} - {""})
        raise UsageError(f"gpu={gpu!r} has no rows in {store}; its GPUs: {', '.join(seen) or 'none'}")
    home = Path(store) if Path(store).is_dir() else Path(store).parent
    path = Path(out) if out else home / f"{gpu_slug(gpu)}-report.md"
    history = home / "logs" / f"{gpu_slug(gpu)}-history.md"
    rel = lambda p: Path(os.path.relpath(Path(p).resolve(), path.parent.resolve())).as_posix()  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build(rows, gpu, rel(plots), rel(history) if history.exists() else "", nogpu))
    return path
