"""Facts of single rows for the reference report, in words: short names, figures, why a cell failed, links.

Shared by bench.report.gpu_report and bench.report.gpu_questions; every figure is formatted from a row."""
from __future__ import annotations

import math
import re

import pandas as pd

from bench.report import facts, tables
from bench.report.fig_setup import flag
from bench.report.fmt import md, num, setup_slug, sig, text

FA = "flash_attention_2"
DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


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


def clean(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that may win (facts.clean: ok, not disturbed, not faster than their own bandwidth floor)."""
    return rows[pd.Series([facts.clean(r) for r in rows.to_dict("records")], index=rows.index, dtype=bool)]


def best(rows: pd.DataFrame, metric: str, high: bool = False):
    """The clean row with the lowest (high: highest) metric, ties by label; None when none has it."""
    c = clean(rows).assign(_v=lambda d: d[metric].map(num))
    c = c[c["_v"].notna()].sort_values(["_v", "label"], ascending=[not high, True], kind="stable")
    return c.iloc[0] if len(c) else None


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
    """The setup's page and its figures, as `bench report` writes them into `plots`."""
    name = setup_slug(s)
    kinds = ["latency", "memory"] + ["step_latency"] * any(
        isinstance(v, list) and v for v in rows[rows["status"] == "ok"]["step_ms"])
    return " · ".join([f"[page]({plots}/setups/{name}.md)"]
                      + [f"[{k.replace('_', ' ')}]({plots}/{k}_{name}.png)" for k in kinds])


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
    """Flagged ok rows (disturbed, below their bandwidth floor) faster than the winner: shown, never crowned."""
    ok = rows[(rows["status"] == "ok") & ~rows.index.isin(clean(rows).index)]
    return [(facts.why_not_clean(r).split(" (")[0], r) for _, r in ok.iterrows()
            if finite(r["tpot_ms"]) < finite(w["tpot_ms"])]
