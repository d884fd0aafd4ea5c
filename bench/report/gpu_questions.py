"""The questions of the reference report, each decided from rows by one rule that holds for any GPU.

Every function takes setups from bench.report.selection (one GPU's rows) and returns a `Question`: rows of the
decision table and the markdown of its evidence. Only clean rows win (facts.clean: ok, not disturbed, not
faster than the row's own bandwidth floor). Every pairwise word ('slower', 'beyond noise') is
bench.report.margins', i.e. bench.report.verdict.judge's, the same as report.md, compare and the PR comment say.

- decisions: the answers of bench.report.answers per model (lowest latency at batch 1, most throughput at the
  largest batch that fits, least memory, quantization's quality cost): the same winners as report.md's.
- latency: the evidence of each batch-1 answer; where flash-attn wins, the fastest path without it.
- throughput: each batch > 1 setup below a family's largest: the most decode tok/s, against the reference of its
  attention path (or the next best).
- largest: model and lengths measured at several batches: per strategy its largest ok batch and its failures.
- fast_paths: the same cache compiled whole against compiled in part (graph breaks, recompile limit), and
  processes that died.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from bench.report import facts, margins, tables
from bench.report.fig_setup import flag
from bench.report.fmt import md, num, sig, text
from bench.report.gpu_facts import (FA, alloc, best, broken, code, count, evidence, failures, gib, links, ms,
                                    passed_over, reference, short, status, tiny, why)


@dataclass
class Question:
    title: str
    decisions: list = field(default_factory=list)  # {"you need", "use", "measured", "instead of / avoid"}
    evidence: list = field(default_factory=list)   # markdown lines


NEED = {"latency": "lowest latency, batch 1", "throughput": "most throughput at the largest batch that fits",
        "memory": "least memory", "memory (KV bytes)": "fewest KV bytes", "quality": "quantization's quality cost"}


def decisions(found: list) -> list[dict]:
    """One decision row per answer (model, Answer): the words report.md's front page uses."""
    out = []
    for model, a in found:
        s = a.setup
        need = f"{NEED.get(a.question, a.question)}: {short(s)}"
        if a.winner is None:
            out.append({"you need": need, "use": "–", "measured": md(a.none), "instead of / avoid": "–"})
            continue
        run = f"{code(a.runner['label'])} {a.runner_said}: " if a.runner is not None else ""
        margin = a.margin.short() if a.margin is not None else a.margin_said
        out.append({"you need": need, "use": code(a.winner["label"]) + alloc(a.winner),
                    "measured": md("; ".join([a.said] + ([a.cost] if a.cost else []) + a.caveats)),
                    "instead of / avoid": md(run + margin)})
    return out


def versus(w, r, metric: str = "tpot_ms") -> str:
    """'`label` 19.7 ms: ×2.75 [2.72–2.81, 95% CI] beyond noise': r against w, as judge says."""
    return f"{code(r['label'])} {ms(r['tpot_ms'])}: {margins.judge(w.to_dict(), r.to_dict(), metric).short()}"


def latency(groups: list, plots: str, found: list) -> Question:
    """The evidence of each batch-1 answer, the fastest path without flash-attn where flash-attn wins, and the
    other batch-1 setups in a line each."""
    q = Question("Lowest latency for one sequence")
    chosen = {id(a.setup): a for _, a in found if a.question == "latency"}
    picks, others = [], []
    for s, rows in [g for g in groups if g[0]["batch"] == "1"]:
        a = next((x for x in chosen.values() if x.setup == s), None)
        w = best(rows, "tpot_ms")
        if a is None or a.winner is None or w is None:
            fig = links(s, rows, plots).split(" · ")[0]
            told = "no clean ok row" if w is None else f"fastest {code(w['label'])} {ms(w['tpot_ms'])}"
            others.append(f"- {short(s)}: {told}; {fig}")
            continue
        ref = reference(rows, w)
        nofa = best(rows[rows["attn"] != FA], "tpot_ms") if w["attn"] == FA else None
        if nofa is not None:
            nref = reference(rows, nofa)
            q.decisions.append({"you need": f"the same without flash-attn: {short(s)}", "use": code(nofa["label"]),
                                "measured": f"{ms(nofa['tpot_ms'])}/token: {margins.judge(w.to_dict(), nofa.to_dict()).short()} "
                                            f"against {code(w['label'])} {ms(w['tpot_ms'])}",
                                "instead of / avoid": "–" if nref is None or nref.name == nofa.name
                                else versus(nofa, nref)})
        slow = best(rows, "tpot_ms", high=True)
        roles = [("fastest", w), ("no flash-attn", nofa)] + [(text(x["strategy"]), x) for x in (ref,) if x is not None]
        picks.append((s, rows, roles + [("slowest", slow)] + passed_over(rows, w)))
    q.evidence = evidence(picks, plots) + (["Also at batch 1:", ""] + others + [""] if others else [])
    return q


def families(groups: list) -> list[tuple[str, list]]:
    """Batch > 1 setups by model and lengths, measured at several batches: their largest is a question of fit."""
    fam: dict = {}
    for s, rows in groups:
        if num(s["batch"]) > 1:
            fam.setdefault(short(s, False), []).append((s, rows))
    return [(k, sorted(v, key=lambda t: num(t[0]["batch"]))) for k, v in sorted(fam.items()) if len(v) > 1]


def throughput(groups: list, plots: str, found: list = ()) -> Question:
    """Each batch > 1 setup but a family's largest: the most decode tok/s, against the reference of the same
    attention path (or, where the reference wins, the next best), judged on the decode step. A setup a throughput
    answer (`found`) is about gets its evidence here and its decision row there."""
    q = Question("Throughput at batch > 1")
    answered = [a.setup for _, a in found if a.question == "throughput"]
    tops = {id(m[-1][1]) for _, m in families(groups)}
    picks = []
    many = sorted([g for g in groups if num(g[0]["batch"]) > 1], key=lambda t: (num(t[0]["batch"]), short(t[0])))
    for s, rows in many:
        w = best(rows, "decode_tok_s", high=True)
        if w is None or id(rows) in tops:
            continue
        ref = reference(rows, w)
        nxt = best(rows.drop(index=w.name), "decode_tok_s", high=True) if ref is None or ref.name == w.name else None
        other = nxt if nxt is not None else ref if ref is not None and ref.name != w.name else None
        vs = [f"{code(other['label'])} {sig(other['decode_tok_s'])} tok/s: "
              f"{margins.judge(w.to_dict(), other.to_dict()).short()}"] if other is not None else []
        vs += [f"{code(r['label'])}: {status(r)}" for _, r in failures(rows)]
        if s not in answered:
            q.decisions.append({"you need": f"throughput, batch {s['batch']}: {short(s, False)}",
                                "use": code(w["label"]) + alloc(w),
                                "measured": f"{sig(w['decode_tok_s'])} decode tok/s ({sig(w['e2e_tok_s'])} over the "
                                            f"whole call, prefill included), peak {gib(w['peak_mem_mib'])}"
                                            + "".join(f"; {code(r['label'])} {sig(r['decode_tok_s'])} not ranked: {why_}"
                                                      for why_, r in passed_over_tok(rows, w)),
                                "instead of / avoid": "; ".join(vs) or "–"})
        roles = [("most tok/s", w), (text(ref["strategy"]) if ref is not None else "", ref), ("next", nxt)]
        picks.append((s, rows, roles + passed_over(rows, w) + failures(rows)))
    q.evidence = evidence(picks, plots, whole_call=True)
    return q


def passed_over_tok(rows: pd.DataFrame, w) -> list:
    """Flagged rows with more decode tok/s than the winner (never crowned), with the reason."""
    return [(facts.why_not_clean(r), r) for _, r in rows[rows["status"] == "ok"].iterrows()
            if not facts.clean(r) and num(r["decode_tok_s"]) > num(w["decode_tok_s"])]


def _fit(lab: str, g: pd.DataFrame, every: pd.DataFrame) -> tuple[dict, object, pd.DataFrame]:
    """One strategy across a family's batches: its table line, its largest ok row, its failed rows. A failure
    that an ok row of the same cell later replaced under another allocator setting is listed with that setting."""
    g = g.assign(_b=g["batch"].map(num)).sort_values("_b", kind="stable")
    ok, bad = g[g["status"] == "ok"], g[g["status"].isin(["oom", "error"])]
    hi = ok.iloc[-1] if len(ok) else None
    conf = {k: text(r["cuda_alloc_conf"]) for k, r in zip(ok["_key"], ok.to_dict("records"))}
    older = every[every["_key"].isin(set(conf)) & every["status"].isin(["oom", "error"])]
    older = older[[text(o["cuda_alloc_conf"]) != conf[o["_key"]] for _, o in older.iterrows()]]
    failed = [f"{b['batch']}: {why(b)}" for _, b in bad.iterrows()] + [
        f"{o['batch']} ({text(o['cuda_alloc_conf']) or 'default allocator'}): {why(o)}" for _, o in older.iterrows()]
    line = {"strategy / attention": md(lab), "largest ok batch": "–", "decode tok/s": "–", "peak GiB": "–",
            "allocator": "–", "failed at batch": md("; ".join(failed)) or "–"}
    if hi is not None:
        line.update({"largest ok batch": text(hi["batch"]), "decode tok/s": sig(hi["decode_tok_s"]),
                     "peak GiB": gib(hi["peak_mem_mib"])[:-4],
                     "allocator": md(text(hi["cuda_alloc_conf"]) or "default")})
    return line, hi, bad


def largest(groups: list, every: pd.DataFrame, plots: str) -> Question:
    """Per family: at its largest batch the most decode tok/s; per strategy the largest batch it ran ok at and
    where it failed (`every`: all of this GPU's rows, for failures a later row replaced)."""
    q = Question("The largest batches")
    for name, members in families(groups):
        top, rows = members[-1], pd.concat([r for _, r in members])
        w, lines, fails = best(top[1], "decode_tok_s", high=True), [], []
        for lab, g in sorted(rows.groupby("label"), key=lambda t: t[0]):
            line, hi, bad = _fit(lab, g, every)
            lines.append(line)
            if len(bad):
                ok_at = "" if hi is None else alloc(hi, f"ok at {hi['batch']} with") or f" (ok at {hi['batch']})"
                fails.append(f"{code(lab)} {status(bad.iloc[0])} at {bad.iloc[0]['batch']}{ok_at}")
        best_at = (f"Most decode tok/s at batch {top[0]['batch']}: {code(w['label'])} {sig(w['decode_tok_s'])}, peak "
                   f"{gib(w['peak_mem_mib'])}. " if w is not None else "")
        q.evidence += [f"### {name}: batches {', '.join(s['batch'] for s, _ in members)}", "",
                       best_at + ("Failed: " + "; ".join(fails) + "." if fails else ""), "",
                       *tables.markdown(pd.DataFrame(lines)), "", f"Batch {top[0]['batch']}: " + links(*top, plots), ""]
    return q


CRASH = re.compile(r"SIG[A-Z]{3,}|died|core dumped|Segmentation fault")


def signal(r) -> str:
    m = re.search(r"SIG[A-Z]{3,}", text(r.get("error")))
    return m[0] if m else "crashed"


def fast_paths(groups: list) -> Question:
    """Rows compiled only in part (graph breaks, recompile limit hit) against the same cache compiled whole, and
    rows whose process died against the same cache and attention that ran (e.g. with compile off)."""
    q = Question("Fast paths that break")
    part, crash = [], []
    for s, rows in groups:
        for _, r in rows.iterrows():
            same = rows[rows["cache"] == r["cache"]]
            if r["status"] == "ok" and broken(r):
                part.append((s, r, best(same[same["compiled"].map(flag) & ~same.apply(broken, axis=1)], "tpot_ms")))
            elif r["status"] == "error" and CRASH.search(text(r["error"])):
                crash.append((s, r, best(same[same["attn"] == r["attn"]], "tpot_ms")))
    if part:
        said = [margins.judge(w.to_dict(), r.to_dict()) for _, r, w in part if w is not None]
        x = [m.v.ratio for m in said if m.v.ratio is not None]
        beyond = sum(m.beyond for m in said)
        q.decisions.append({
            "you need": "a compiled fast path",
            "use": ", ".join(sorted({code(w["label"]) for *_, w in part if w is not None})) or "–",
            "measured": (f"compiled whole; compiled in part the same cache's decode step is ×{min(x):.1f}"
                         f"{'' if f'{min(x):.1f}' == f'{max(x):.1f}' else f'–{max(x):.1f}'} the compiled one's, "
                         f"beyond noise in {beyond} of {len(said)} setup{'s' * (len(said) != 1)}")
                        if x else f"{len(part)} rows compiled in part",
            "instead of / avoid": ", ".join(sorted({code(r["label"]) for _, r, _ in part})) + ": compiled in part"})
        q.evidence += tables.markdown(pd.DataFrame([{
            "setup": tiny(s), "compiled in part": md(r["label"]), "graph breaks": count(r["graph_breaks"]),
            "recompile-limit hits": count(r["recompile_limit_hits"]), "ms/token": sig(r["tpot_ms"]),
            "same cache, compiled whole": f"{md(w['label'])}: {sig(w['tpot_ms'])}; "
                                          f"{margins.judge(w.to_dict(), r.to_dict()).short()}" if w is not None else "–"}
            for s, r, w in part])) + [""]
    if crash:
        def died(s, r) -> str:
            batch = f", batch {s['batch']}" if s["batch"] != "1" else ""
            return f"{code(r['label'])}, compile={r['compile']}{batch}"
        q.decisions.append({
            "you need": "a run that does not crash",
            "use": ", ".join(sorted({code(o["label"]) for *_, o in crash if o is not None})) or "–",
            "measured": f"the process died in {len(crash)} cell{'' if len(crash) == 1 else 's'}",
            "instead of / avoid": "; ".join(f"{died(s, r)} ({signal(r)})" for s, r, _ in crash)})
        q.evidence += tables.markdown(pd.DataFrame([{
            "setup": tiny(s), "crashed": md(f"{r['label']}, compile={r['compile']}"), "reason": md(why(r)),
            "same cache and attention that ran": f"{md(o['label'])}: {sig(o['tpot_ms'])} ms/token" if o is not None
            else "–"} for s, r, o in crash])) + [""]
    return q
