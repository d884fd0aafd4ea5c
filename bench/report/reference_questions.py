"""The questions of the reference report, each decided from rows by one rule that holds for any GPU.

Every function takes setups from bench.report.select (one GPU's rows) and returns a `Question`: rows of the
decision table and the markdown of its evidence. Only clean rows win: status ok and not disturbed. Every figure
in the text is formatted here from a row; the words around it are chosen by the numbers.

- latency: batch-1 setups, per prompt length (its biggest model): lowest tpot_ms (tables.winners), against the
  reference of the same attention path; if flash-attn wins, the lowest tpot_ms without it.
- throughput: each batch > 1 setup: highest e2e_tok_s (the whole call), against the reference of its attention path.
- largest: model and lengths measured at several batches: at the largest, the highest decode_tok_s; per
  strategy, its largest ok batch and its failures (allocator settings where they differ).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from . import select, tables
from .fig_setup import flag
from .fmt import md, num, sig, slug, text

FA = "flash_attention_2"
DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass
class Question:
    title: str
    decisions: list = field(default_factory=list)  # {"you need", "use", "measured", "instead of / avoid"}
    evidence: list = field(default_factory=list)   # markdown lines


def short(s: dict, batch: bool = True) -> str:
    b = f"batch {s['batch']}, " if batch else ""
    return f"{s['model']} {DTYPE.get(s['dtype'], s['dtype'])}, {b}{s['prompt_len']} + {s['new_tokens']} tokens"


def tiny(s: dict) -> str:
    """The setup in a table cell: 'llama-2-7b bf16 b1 1024+64'."""
    return f"{s['model']} {DTYPE.get(s['dtype'], s['dtype'])} b{s['batch']} {s['prompt_len']}+{s['new_tokens']}"


def code(label: str) -> str:
    return f"`{label}`"


def ms(v) -> str:
    return f"{sig(v)} ms"


def gib(mib) -> str:
    return "–" if math.isnan(num(mib)) else f"{num(mib) / 1024:.1f} GiB"


def times(a, b) -> str:
    """'4.11× slower' / '1.20× faster': b against a, for times (bigger is slower)."""
    r = num(b) / num(a)
    return "–" if math.isnan(r) else f"{r:.2f}× slower" if r >= 1 else f"{1 / r:.2f}× faster"


def clean(rows: pd.DataFrame) -> pd.DataFrame:
    ok = rows[rows["status"] == "ok"]
    return ok[~ok["disturbed"].map(flag).astype(bool)]


def best(rows: pd.DataFrame, metric: str, high: bool = False):
    """The clean row with the lowest (high: highest) metric, ties by label; None when none has it."""
    c = clean(rows).assign(_v=lambda d: d[metric].map(num))
    c = c[c["_v"].notna()].sort_values(["_v", "label"], ascending=[not high, True], kind="stable")
    return c.iloc[0] if len(c) else None


def tie(rows: pd.DataFrame, w) -> str:
    """'; intervals overlap `X` (…)' when the runner-up's decode-time interval (select.interval) overlaps the
    winner's: a ranking the repeats cannot settle."""
    nxt = best(rows.drop(index=w.name), "tpot_ms")
    if nxt is None:
        return ""
    (lo, hi), (lo2, hi2) = select.interval(w, "tpot_ms"), select.interval(nxt, "tpot_ms")
    return f"; intervals overlap {code(nxt['label'])} ({ms(nxt['tpot_ms'])})" if lo2 <= hi and lo <= hi2 else ""


def reference(rows: pd.DataFrame, r):
    """The ok reference row of r's attention path (attn, SDPA backend, compile), else None."""
    ok = rows[(rows["status"] == "ok") & rows["reference"].map(flag)]
    same = ok[(ok["attn"] == r["attn"]) & (ok["sdpa_backend"] == r["sdpa_backend"])
              & (ok["compile"] == r["compile"])]
    return same.iloc[0] if len(same) else None


def broken(r) -> bool:
    return flag(r.get("compiled")) and (num(r.get("graph_breaks")) > 0 or num(r.get("recompile_limit_hits")) > 0)


def why(r) -> str:
    """Status and reason in a few words: OOM figures from PyTorch's message, else the error's head and tail."""
    e = text(r.get("error"))
    if status(r) == "OOM":
        ask = re.search(r"Tried to allocate ([\d.]+ [GM]iB)", e)
        res = re.search(r"([\d.]+ [GM]iB) is reserved by PyTorch but unallocated", e)
        return "OOM" + (f" (asked {ask[1]}" + (f"; {res[1]} reserved, unallocated" if res else "") + ")"
                        if ask else "")
    parts = [p for p in e.split("; ") if p]
    out = parts[0] if parts else r["status"]
    if len(parts) > 1 and ": " in parts[-1]:
        out = f"{out.split(':')[0]} … {parts[-1].rsplit(': ', 1)[1]}"
    out = re.sub(r"\b\d{10,}\b", lambda m: f"{int(m[0]) / 2**30:.1f} GiB", out)
    return f"{r['status']}: {out}"


def status(r) -> str:
    return "OOM" if r["status"] == "oom" or "out of memory" in text(r.get("error")) else r["status"]


def alloc(r, how: str = "ran with") -> str:
    """' (ran with `expandable_segments:True`)': the allocator setting of a row, where not PyTorch's default."""
    return f" ({how} `{text(r['cuda_alloc_conf'])}`)" if text(r.get("cuda_alloc_conf")) else ""


def count(v) -> str:
    return "–" if math.isnan(num(v)) else str(int(num(v)))


def note(r) -> str:
    if r["status"] != "ok":
        return md(why(r))
    out = ["ok"] + (["⚠ disturbed"] if flag(r.get("disturbed")) else [])
    if broken(r):
        out.append(f"compiled in part ({count(r['graph_breaks'])} graph breaks"
                   + (", recompile limit hit)" if num(r.get("recompile_limit_hits")) > 0 else ")"))
    if text(r.get("cuda_alloc_conf")):
        out.append(md(r["cuda_alloc_conf"]))
    return "; ".join(out)


def finite(v) -> float:
    """A sort key: the number, or +inf for none."""
    return math.inf if math.isnan(num(v)) else num(v)


def links(s: dict, rows: pd.DataFrame, plots: str) -> str:
    name = slug(s["model"], s["weights"], s["device"], s["gpu"] or "nogpu", s["dtype"], f"b{s['batch']}",
                f"p{s['prompt_len']}", f"n{s['new_tokens']}")
    kinds = ["latency", "memory"] + ["step_latency"] * any(
        isinstance(v, list) and v for v in rows[rows["status"] == "ok"]["step_ms"])
    return " · ".join(f"[{k.replace('_', ' ')}]({plots}/{k}_{name}.png)" for k in kinds)


def evidence(picks: list, plots: str, whole_call: bool = False) -> list[str]:
    """picks: (setup, its rows, [(role, row)]) -> one table, the setup named on its first row, its rows fastest
    first (whole_call: most tok/s first), failures last; then each setup's figures."""
    out, figs, rest = [], [], 0
    for s, rows, roles in picks:
        merged: dict = {}
        for role, r in roles:
            if r is not None:
                merged.setdefault(r.name, ([], r))[0].append(role)
        order = sorted(merged.values(), key=lambda t: (t[1]["status"] != "ok", finite(t[1]["tpot_ms"]),
                                                       t[1]["label"]))
        for i, (names, r) in enumerate(order):
            ok = r["status"] == "ok"
            line = {"setup": tiny(s) if i == 0 else "", "row": ", ".join(dict.fromkeys(names)),
                    "strategy / attention": md(r["label"]), "ms/token": sig(r["tpot_ms"]) if ok else "–",
                    "decode tok/s": sig(r["decode_tok_s"]) if ok else "–"}
            if whole_call:
                line["tok/s, whole call"] = sig(r["e2e_tok_s"]) if ok else "–"
            out.append({**line, "TTFT ms": sig(r["ttft_ms"]) if ok else "–",
                        "peak GiB": gib(r["peak_mem_mib"])[:-4] if ok else "–",
                        "KV MiB": sig(r["kv_cache_mib"]) if ok else "–", "status": note(r)})
        figs.append(f"- {tiny(s)}: {links(s, rows, plots)}")
        rest += len(rows) - len(merged)
    if not out:
        return []
    more = f"{rest} more rows of these setups: [report.md]({plots}/report.md). Figures:"
    return tables.markdown(pd.DataFrame(out)) + ["", more, ""] + figs + [""]


def failures(rows: pd.DataFrame) -> list:
    return [("failed", r) for _, r in rows[rows["status"].isin(["oom", "error"])].iterrows()]


def passed_over(rows: pd.DataFrame, w) -> list:
    """Disturbed ok rows faster than the winner: shown, marked, never crowned."""
    ok = rows[(rows["status"] == "ok") & rows["disturbed"].map(flag)]
    return [("disturbed", r) for _, r in ok.iterrows() if finite(r["tpot_ms"]) < finite(w["tpot_ms"])]


def winner(rows: pd.DataFrame, s: dict, question: str):
    """The row tables.winners crowns for `question` (so this report and report.md never disagree), or None."""
    won = tables.winners(rows, s["weights"])[question]
    return None if won is None else clean(rows)[clean(rows)["label"] == won[0]].iloc[0]


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
