"""The report's tables of one setup (its summary and how each row was measured) and the cells not ok.

Every function takes rows picked by bench.report.selection and returns markdown lines. Disturbed rows and rows
faster than their own bandwidth floor are marked wherever they appear; every interval says what it is.
"""
from __future__ import annotations

import math
import re

import pandas as pd

from bench.report import facts, selection
from bench.report.fmt import fixed, md, num, sig, text

ENV_PER_ROW = ("cuda_alloc_conf", "torch", "transformers", "flash_attn")


def markdown(df: pd.DataFrame) -> list[str]:
    """A pipe table without tabulate's padding (the padding only costs bytes: GitHub aligns the columns)."""
    lines = df.to_markdown(index=False, disable_numparse=True, tablefmt="pipe").splitlines()
    lines[1] = re.sub(r":?-+:?", "---", lines[1])
    return [re.sub(r" +\|", " |", re.sub(r"\| +", "| ", ln)).rstrip() for ln in lines]


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"]


def reference_tpot(rows: pd.DataFrame, r) -> float:
    """tpot of the reference strategy (the dynamic cache) under the same attention path, else NaN."""
    ref = _ok(rows)[_ok(rows)["reference"].map(facts.flag)]
    same = ref[(ref["attn"] == r["attn"]) & (ref["sdpa_backend"] == r["sdpa_backend"]) & (ref["compile"] == r["compile"])]
    return num(same["tpot_ms"].iloc[0]) if len(same) else math.nan


def _short(v, n: int = 80) -> str:
    """The first clause of a message, at most n characters."""
    s = text(v).split("; ")[0]
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def note(r) -> str:
    if r["status"] != "ok":
        return f"**{r['status']}**: {md(_short(r['error']))}"
    notes = [md(_short(r.get("error")))] if text(r.get("error")) else []  # an ok row's caveat
    if facts.flag(r.get("disturbed")):
        notes.append(f"⚠ disturbed ({md(text(r.get('disturbed_why'))[:80])})")
    if facts.below_floor(r):
        notes.append(f"⚠ faster than its bandwidth floor (MBU {num(r.get('mbu')):.2f}): not ranked")
    if facts.flag(r.get("compiled")) and (num(r.get("graph_breaks")) > 0 or num(r.get("recompile_limit_hits")) > 0):
        notes.append("compiled only in part")
    return "; ".join(notes)


def memory_columns(rows: pd.DataFrame, r, ok_row: bool) -> dict:
    """GPU: device peak and host KV; CPU: the cell's own peak RSS where recorded, else the worker's lifetime peak
    RSS, labelled as what it is."""
    if facts.on_gpu(r):
        out = {"device peak GiB": fixed(num(r["peak_mem_mib"]) / 1024) if ok_row else "–"}
        if (rows["kv_host_mib"].map(num) > 0).any():
            out["host KV GiB"] = fixed(facts.host_mib(r) / 1024) if ok_row else "–"
        return out
    if any(not math.isnan(facts.cell_rss_mib(x)) for x in rows.to_dict("records")):
        return {"cell peak RSS MiB": sig(facts.cell_rss_mib(r)) if ok_row else "–"}
    return {"worker's peak RSS so far MiB (not this cell's)": sig(r["peak_mem_mib"]) if ok_row else "–"}


def summary(rows: pd.DataFrame, setup: dict) -> list[str]:
    """Strategies sorted by decode time, with its interval, floor and ratio to the dynamic cache; not-ok last."""
    ok = _ok(rows).assign(_t=lambda d: d["tpot_ms"].map(num)).sort_values(["_t", "label"], kind="stable")
    rest = rows[rows["status"] != "ok"].sort_values("label", kind="stable")
    quality = setup["weights"] == "real" and ok["ppl_delta"].map(num).notna().any()
    out = []
    for _, r in pd.concat([ok, rest]).iterrows():
        o = r["status"] == "ok"
        ref = reference_tpot(rows, r) if o else math.nan
        sp = selection.spread(r, "tpot_ms") if o else None
        line = {"strategy / attention": md(r["label"]),
                "decode ms/token [interval]": f"{sig(r['tpot_ms'])} {sp.text(sig)}" if o else "–",
                "floor ms": sig(r.get("bandwidth_floor_ms")) if o else "–",
                "÷ dynamic": (fixed(num(r["tpot_ms"]) / ref) + "×") if not math.isnan(ref) else "–",
                "decode tok/s": sig(r["decode_tok_s"]) if o else "–",
                "TTFT ms": sig(r["ttft_ms"]) if o else "–",
                **memory_columns(rows, r, o),
                "KV MiB": sig(r["kv_cache_mib"]) if o else "–"}
        if quality:
            line["Δppl"] = f"{num(r['ppl_delta']):+.3f}" if not math.isnan(num(r.get("ppl_delta"))) else "–"
        for c in selection.varying(rows, ENV_PER_ROW):
            line[c] = md(r.get(c))
        line["note"] = note(r) or ""
        out.append(line)
    return markdown(pd.DataFrame(out))


def _iv(r, metric: str) -> str:
    if math.isnan(num(r[metric])):
        return "–"
    return f"{sig(r[metric])} {selection.spread(r, metric).text(sig)}"


def details(rows: pd.DataFrame) -> list[str]:
    """How each ok row was measured and what it holds: intervals, repeats, cold start, compile, KV vs theory."""
    out = []
    for _, r in _ok(rows).iterrows():
        prec = num(r.get("precision"))
        reps = text(r.get("repeats")) + (f" (±{prec:.1%}, {text(r.get('stop_reason'))})" if not math.isnan(prec) else "")
        theory = num(r.get("kv_theory_mib"))
        out.append({"strategy / attention": md(r["label"]), "TTFT ms [interval]": _iv(r, "ttft_ms"),
                    "e2e ms [interval]": _iv(r, "e2e_ms"), "timed calls": reps,
                    "cold ×": fixed(num(r["cold_e2e_ms"]) / num(r["e2e_ms"]), 1),
                    "compiled": {"True": "yes", "False": "no"}.get(text(r.get("compiled")), "–"),
                    "attention ran": md(r.get("attn_used")) + (f" ({md(r.get('sdpa_backend_used'))})"
                                                               if text(r.get("sdpa_backend_used")) else ""),
                    "KV MiB (predicted)": f"{sig(r['kv_cache_mib'])} ({sig(theory)})" if not math.isnan(theory)
                    else sig(r["kv_cache_mib"]),
                    "MBU": fixed(r.get("mbu"), 3)})
    return markdown(pd.DataFrame(out)) if out else ["No ok rows."]


def not_ok(rows: pd.DataFrame) -> list[str]:
    """Every cell whose latest row is not ok, with the machine and the conditions that tell such rows apart."""
    if rows.empty:
        return ["None."]
    rows = rows.sort_values(["machine", "model", "batch", "label", "_ts"], key=lambda s: s.map(text), kind="stable")
    out = [{"machine": md(r["machine"]), "model": md(r["model"]), "dtype": md(r["dtype"]), "batch": md(r["batch"]),
            "tokens": f"{text(r['prompt_len'])} + {text(r['new_tokens'])}", "strategy / attention": md(r["label"]),
            "status": md(r["status"]) + (f" (stored as {md(r['status_stored'])})"
                                         if text(r.get("status_stored")) not in ("", text(r["status"])) else ""),
            "reason": md(_short(r["error"], 110))} for _, r in rows.iterrows()]
    return markdown(pd.DataFrame(out))
