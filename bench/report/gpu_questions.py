"""The questions of the reference report, each decided from rows by one rule that holds for any GPU.

Every function takes setups from bench.report.selection (one GPU's rows) and returns a `Question`: rows of the
decision table and the markdown of its evidence. Only clean rows win: status ok and not disturbed. Every figure
in the text is formatted here from a row; the words around it are chosen by the numbers.

- latency: batch-1 setups, per prompt length (its biggest model): lowest tpot_ms (tables.winners), against the
  reference of the same attention path; if flash-attn wins, the lowest tpot_ms without it.
- throughput: each batch > 1 setup: highest e2e_tok_s (the whole call), against the reference of its attention path.
- largest: model and lengths measured at several batches: at the largest, the highest decode_tok_s; per
  strategy, its largest ok batch and its failures (allocator settings where they differ).
- fast_paths: which strategy / attention pairs ran compiled whole, and how much slower the same cache runs where
  its compile broke (graph breaks, recompile limit).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from bench.report import tables
from bench.report.fig_setup import flag
from bench.report.fmt import md, num, sig, text
from bench.report.gpu_facts import FA, alloc, best, broken, code, count, evidence, failures, gib, links, ms, passed_over, reference, short, status, tie, times, tiny, why, winner



@dataclass
class Question:
    title: str
    decisions: list = field(default_factory=list)  # {"you need", "use", "measured", "instead of / avoid"}
    evidence: list = field(default_factory=list)   # markdown lines


def latency(groups: list, plots: str) -> Question:
    """Batch-1 setups, longest prompt first: the lowest decode time per token. The decision table takes the
    biggest model (weights_mib) of each prompt length, the others get a line; where flash-attn wins, the
    fastest path without it is a question of its own."""
    q = Question("Lowest latency for one sequence")
    ones = [(s, r) for s, r in groups if s["batch"] == "1"]
    # per prompt length the setup with the most strategies measured (then the biggest model) makes the decision
    ones.sort(key=lambda t: (-num(t[0]["prompt_len"]), -int((t[1]["status"] == "ok").sum()),
                             -t[1]["weights_mib"].map(num).max(), short(t[0])))
    seen, picks, others = set(), [], []
    for s, rows in ones:
        w = winner(rows, s, "lowest latency")
        ref = reference(rows, w) if w is not None else None
        vs = f"{code(ref['label'])} {ms(ref['tpot_ms'])}" if ref is not None and ref.name != w.name else ""
        if w is None or s["prompt_len"] in seen:
            fig = links(s, rows, plots).split(" · ")[0]
            told = "no clean ok row" if w is None else f"fastest {code(w['label'])} {ms(w['tpot_ms'])}" + (
                f" ({vs})" if vs else "")
            others.append(f"- {short(s)}: {told}; {fig}")
            continue
        seen.add(s["prompt_len"])
        slow = best(rows, "tpot_ms", high=True)
        alt = [f"{vs} ({times(w['tpot_ms'], ref['tpot_ms'])})"] if vs else []
        if slow.name not in (w.name, getattr(ref, "name", None)):
            alt.append(f"slowest: {code(slow['label'])} {ms(slow['tpot_ms'])}")
        mbu = f", MBU {num(w['mbu']):.2f}" if not math.isnan(num(w.get("mbu"))) else ""
        q.decisions.append({"you need": f"lowest latency, one sequence: {short(s, False)}", "use": code(w["label"]),
                            "measured": f"{ms(w['tpot_ms'])}/token, TTFT {ms(w['ttft_ms'])}{mbu}{tie(rows, w)}",
                            "instead of / avoid": "; ".join(alt) or "–"})
        nofa = best(rows[rows["attn"] != FA], "tpot_ms") if w["attn"] == FA else None
        nref = reference(rows, nofa) if nofa is not None else None
        if nofa is not None:
            q.decisions.append({
                "you need": "the same without flash-attn", "use": code(nofa["label"]),
                "measured": f"{ms(nofa['tpot_ms'])}/token (with flash-attn: {ms(w['tpot_ms'])})"
                            + tie(rows[rows["attn"] != FA], nofa),
                "instead of / avoid": "–" if nref is None else
                f"{code(nref['label'])} {ms(nref['tpot_ms'])} ({times(nofa['tpot_ms'], nref['tpot_ms'])})"})
        roles = [("fastest", w), ("no flash-attn", nofa)]
        roles += [(text(x["strategy"]), x) for x in (ref, nref) if x is not None]
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


def throughput(groups: list, plots: str) -> Question:
    """Each batch > 1 setup: the most tokens per second over the whole call (prefill included), against the
    reference of the same attention path
    (or, where the reference wins, the next best). The largest batch of a family is left to `largest`."""
    q = Question("Throughput at batch > 1")
    tops, picks = {id(m[-1][1]) for _, m in families(groups)}, []
    many = sorted([g for g in groups if num(g[0]["batch"]) > 1], key=lambda t: (num(t[0]["batch"]), short(t[0])))
    for s, rows in many:
        w = best(rows, "e2e_tok_s", high=True)
        if w is None or id(rows) in tops:
            continue
        ref, whole = reference(rows, w), winner(rows, s, "most throughput")
        nxt = best(rows.drop(index=w.name), "e2e_tok_s", high=True) if ref is None or ref.name == w.name else None
        if nxt is None and ref is not None:
            vs = [f"{code(ref['label'])} {sig(ref['e2e_tok_s'])} tok/s "
                  f"({num(w['e2e_tok_s']) / num(ref['e2e_tok_s']):.2f}× fewer)"]
        else:
            vs = [f"{code(nxt['label'])} {sig(nxt['e2e_tok_s'])} tok/s"] if nxt is not None else []
        vs += [f"{code(r['label'])}: {status(r)}" for _, r in failures(rows)]
        fastest = best(rows, "decode_tok_s", high=True)
        whole = fastest if fastest is not None and fastest.name != w.name else None
        lead = f"; decoding alone {code(whole['label'])} leads" if whole is not None else ""
        q.decisions.append({"you need": f"throughput, batch {s['batch']}: {short(s, False)}",
                            "use": code(w["label"]) + alloc(w),
                            "measured": f"{sig(w['e2e_tok_s'])} tok/s over the whole call, prefill included "
                                        f"({sig(w['decode_tok_s'])} decoding), peak {gib(w['peak_mem_mib'])}{lead}"
                                        f"{tie(rows, w)}",
                            "instead of / avoid": "; ".join(vs) or "–"})
        roles = [("most tok/s", w), (text(ref["strategy"]) if ref is not None else "", ref), ("next", nxt),
                 ("decode lead", whole)]
        picks.append((s, rows, roles + passed_over(rows, w) + failures(rows)))
    q.evidence = evidence(picks, plots, whole_call=True)
    return q


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
        if w is not None:
            q.decisions.append({"you need": f"the largest batch measured: {short(top[0])}",
                                "use": code(w["label"]) + alloc(w),
                                "measured": f"{sig(w['decode_tok_s'])} decode tok/s, peak {gib(w['peak_mem_mib'])}, "
                                            f"KV {gib(w['kv_cache_mib'])}",
                                "instead of / avoid": "; ".join(fails) or "–"})
        q.evidence += [f"### {name}: batches {', '.join(s['batch'] for s, _ in members)}", "",
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
        x = [num(r["tpot_ms"]) / num(w["tpot_ms"]) for _, r, w in part if w is not None]
        q.decisions.append({
            "you need": "a compiled fast path",
            "use": ", ".join(sorted({code(w["label"]) for *_, w in part if w is not None})) or "–",
            "measured": (f"compiled whole; compiled in part the same cache runs "
                         f"{min(x):.1f}{'' if f'{min(x):.1f}' == f'{max(x):.1f}' else f'–{max(x):.1f}'}× slower "
                         f"({len(part)} setup{'s' * (len(part) != 1)})") if x else f"{len(part)} rows compiled in part",
            "instead of / avoid": ", ".join(sorted({code(r["label"]) for _, r, _ in part})) + ": compiled in part"})
        q.evidence += tables.markdown(pd.DataFrame([{
            "setup": tiny(s), "compiled in part": md(r["label"]), "graph breaks": count(r["graph_breaks"]),
            "recompile-limit hits": count(r["recompile_limit_hits"]), "ms/token": sig(r["tpot_ms"]),
            "same cache, compiled whole": f"{md(w['label'])}: {sig(w['tpot_ms'])}" if w is not None else "–"}
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
