"""The report's tables: a summary per setup with the winner of each question, details, rows not ok.

Every function takes rows picked by bench.report.selection and returns markdown lines. Disturbed rows are
marked wherever they appear and never win anything.
"""
from __future__ import annotations

import math
import re

import pandas as pd

from bench.report import selection
from bench.report.fmt import GIB, fixed, md, num, sig, text

ENV_PER_ROW = ("cuda_alloc_conf", "torch", "transformers", "gpu", "cpu", "flash_attn")


def markdown(df: pd.DataFrame) -> list[str]:
    """A pipe table without tabulate's padding (the padding only costs bytes: GitHub aligns the columns)."""
    lines = df.to_markdown(index=False, disable_numparse=True, tablefmt="pipe").splitlines()
    lines[1] = re.sub(r":?-+:?", "---", lines[1])
    return [re.sub(r" +\|", " |", re.sub(r"\| +", "| ", ln)).rstrip() for ln in lines]


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"]


def _clean(rows: pd.DataFrame) -> pd.DataFrame:
    ok = _ok(rows)
    return ok[~ok["disturbed"].map(lambda v: v is True)]


def reference_tpot(rows: pd.DataFrame, r) -> float:
    """tpot of the reference strategy (the dynamic cache) under the same attention path, else any."""
    ref = _ok(rows)[_ok(rows)["reference"].map(lambda v: v is True)]
    same = ref[(ref["attn"] == r["attn"]) & (ref["sdpa_backend"] == r["sdpa_backend"]) & (ref["compile"] == r["compile"])]
    pick = same if len(same) else ref
    return num(pick["tpot_ms"].iloc[0]) if len(pick) else math.nan


def _saved_mib(rows: pd.DataFrame, r) -> float:
    ref = _ok(rows)[_ok(rows)["reference"].map(lambda v: v is True) & (_ok(rows)["attn"] == r["attn"])]
    return num(ref["kv_cache_mib"].iloc[0]) - num(r["kv_cache_mib"]) if len(ref) else math.nan


def _short(v, n: int = 80) -> str:
    """The first clause of a message, at most n characters."""
    s = text(v).split("; ")[0]
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def _note(r) -> str:
    if r["status"] != "ok":
        return f"**{r['status']}**: {md(_short(r['error']))}"
    notes = [md(_short(r.get("error")))] if text(r.get("error")) else []  # an ok row's caveat
    if r.get("disturbed") is True:
        notes.append(f"⚠ disturbed ({md(text(r.get('disturbed_why'))[:80])})")
    if text(r.get("compiled")) == "True" and (num(r.get("graph_breaks")) > 0 or num(r.get("recompile_limit_hits")) > 0):
        notes.append("compiled only in part")
    return "; ".join(notes)


def winners(rows: pd.DataFrame, weights: str) -> dict:
    """Question -> (label, figure text) over clean ok rows; None where nothing answers it."""
    ok = _clean(rows)
    out: dict = {"lowest latency": None, "most throughput": None, "least memory": None, "best quality per byte saved": None}
    if ok.empty:
        return out
    tpot = ok["tpot_ms"].map(num)
    if tpot.notna().any():
        r = ok.loc[tpot.idxmin()]
        out["lowest latency"] = (r["label"], f"{num(r['tpot_ms']):.2f} ms/token")
    tput = ok["e2e_tok_s"].map(num)
    if tput.notna().any():
        r = ok.loc[tput.idxmax()]
        out["most throughput"] = (r["label"], f"{sig(r['e2e_tok_s'])} tok/s over the whole call")
    # of the strategies that keep a cache (no cache at all is its own answer); on a CPU the peak is the
    # process's RSS, which the cache barely moves: there, the KV bytes decide
    cached = ok[ok["holds_cache"].map(lambda v: v is not False)]
    gpu = (cached["device"] == "cuda").all()
    mem = cached["peak_mem_mib" if gpu else "kv_cache_mib"].map(num)
    if mem.isna().any() and len(cached):  # a winner among the rows that kept a figure would answer another question
        out["least memory"] = ("–", f"no {'peak' if gpu else 'KV'} figure for {int(mem.isna().sum())} of "
                                    f"{len(cached)} rows")
    elif mem.notna().any():
        r = cached.loc[mem.idxmin()]
        out["least memory"] = (r["label"], f"{num(r['peak_mem_mib']) * 2**20 / GIB:.2f} GiB peak" if gpu
                               else f"{sig(r['kv_cache_mib'])} MiB KV")

    if weights == "real":  # of the caches: keeping none saves every byte at no loss and answers nothing
        scored = [(num(r["ppl_delta"]) / s, r) for _, r in cached.iterrows()
                  if (s := _saved_mib(rows, r)) > 0 and not math.isnan(num(r["ppl_delta"]))]
        if scored:
            score, r = min(scored, key=lambda t: (t[0], t[1]["label"]))
            out["best quality per byte saved"] = (r["label"], f"Δppl {num(r['ppl_delta']):+.3f} for "
                                                              f"{_saved_mib(rows, r):.2f} MiB saved")
    return out


def winners_line(rows: pd.DataFrame, setup: dict) -> str:
    w = winners(rows, setup["weights"])
    parts = []
    for q, v in w.items():
        if q == "most throughput":
            q = f"most throughput at batch {setup['batch']}"
        if v is None:
            why = "random weights: no quality figures" if q.startswith("best quality") and setup["weights"] != "real" else "no ok row"
            parts.append(f"**{q}:** – ({why})")
        else:
            parts.append(f"**{q}:** {md(v[0])} ({v[1]})")
    return "; ".join(parts) + "."


def summary(rows: pd.DataFrame, setup: dict) -> list[str]:
    """Strategies sorted by decode time, with the ratio to the dynamic cache; not-ok cells last."""
    ok = _ok(rows).assign(_t=lambda d: d["tpot_ms"].map(num)).sort_values(["_t", "label"], kind="stable")
    rest = rows[rows["status"] != "ok"].sort_values("label", kind="stable")
    quality = setup["weights"] == "real" and ok["ppl_delta"].map(num).notna().any()
    out = []
    for _, r in pd.concat([ok, rest]).iterrows():
        ok_row = r["status"] == "ok"
        line = {"strategy / attention": md(r["label"]),
                "decode ms/token": fixed(r["tpot_ms"]) if ok_row else "–",
                "× dynamic": (fixed(num(r["tpot_ms"]) / reference_tpot(rows, r)) + "×") if ok_row and not math.isnan(reference_tpot(rows, r)) else "–",
                "decode tok/s": sig(r["decode_tok_s"]) if ok_row else "–",
                "TTFT ms": sig(r["ttft_ms"]) if ok_row else "–",
                "peak device GiB": fixed(num(r["peak_mem_mib"]) * 2**20 / GIB) if ok_row else "–",
                "KV MiB": sig(r["kv_cache_mib"]) if ok_row else "–"}
        if quality:
            line["Δppl"] = f"{num(r['ppl_delta']):+.3f}" if not math.isnan(num(r.get("ppl_delta"))) else "–"
        for c in selection.varying(rows, ENV_PER_ROW):
            line[c] = md(r.get(c))
        line["note"] = _note(r) or ""
        out.append(line)
    return markdown(pd.DataFrame(out))


def _ci(r, metric: str) -> str:
    med = num(r[metric])
    if math.isnan(med):
        return "–"
    lo, hi = selection.interval(r, metric)
    return f"{sig(med)} [{sig(lo)}–{sig(hi)}]" if not (math.isnan(lo) or lo == hi) else sig(med)


def details(rows: pd.DataFrame) -> list[str]:
    """How each ok row was measured and what it holds: intervals, repeats, cold start, compile, KV vs theory."""
    out = []
    for _, r in _ok(rows).iterrows():
        prec = num(r.get("precision"))
        reps = text(r.get("repeats")) + (f" (±{prec:.1%}, {text(r.get('stop_reason'))})" if not math.isnan(prec) else "")
        theory = num(r.get("kv_theory_mib"))
        line = {"strategy / attention": md(r["label"]), "TTFT ms [95% CI]": _ci(r, "ttft_ms"),
                "TPOT ms [95% CI]": _ci(r, "tpot_ms"), "repeats": reps,
                "cold ×": fixed(num(r["cold_e2e_ms"]) / num(r["e2e_ms"]), 1),
                "compiled": {"True": "yes", "False": "no"}.get(text(r.get("compiled")), "–"),
                "attention ran": md(r.get("attn_used")) + (f" ({md(r.get('sdpa_backend_used'))})" if text(r.get("sdpa_backend_used")) else ""),
                "KV MiB (predicted)": f"{sig(r['kv_cache_mib'])} ({sig(theory)})" if not math.isnan(theory) else sig(r["kv_cache_mib"]),
                "MBU": fixed(r.get("mbu"), 3)}
        out.append(line)
    return markdown(pd.DataFrame(out)) if out else ["No ok rows."]


def not_ok(rows: pd.DataFrame) -> list[str]:
    """Every cell whose latest row is not ok, with the conditions that tell such rows apart."""
    if rows.empty:
        return ["None."]
    rows = rows.sort_values(["model", "device", "batch", "label", "_ts"], key=lambda s: s.map(text), kind="stable")
    out = [{"model": md(r["model"]), "device": md(r["device"]) + (f" ({md(r['gpu'])})" if text(r.get("gpu")) else ""),
            "dtype": md(r["dtype"]), "batch": md(r["batch"]), "tokens": f"{text(r['prompt_len'])} + {text(r['new_tokens'])}",
            "strategy / attention": md(r["label"]), "status": md(r["status"]), "reason": md(_short(r["error"], 110))}
           for _, r in rows.iterrows()]
    return markdown(pd.DataFrame(out))


def overview(groups: list[tuple[dict, pd.DataFrame]]) -> list[str]:
    """One row per setup: who wins each question. The first screen of the report."""
    out = []
    for s, rows in groups:
        w = winners(rows, s["weights"])
        short = (f"{s['model']} ({'random' if s['weights'] == 'random' else s['weights']} weights), "
                 f"{s['device']}{' ' + s['gpu'] if s['gpu'] else ''}, {s['dtype']}, batch {s['batch']}, "
                 f"{s['prompt_len']} + {s['new_tokens']} tok")
        out.append({"setup": md(short), **{q: (f"{md(v[0])} ({v[1]})" if v else "–") for q, v in w.items()}})
    return markdown(pd.DataFrame(out)) if out else ["No rows."]
