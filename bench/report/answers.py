"""The questions people ask of one machine (a GPU model, or a CPU model) and one model, each answered from rows by
one rule: the winner, the runner-up (the best row of another cache), the margin between them with its interval
and judge's verdict (bench.report.margins), and the caveats that go on the same line.

- latency: at batch 1, the lowest decode ms/token (of the batch-1 setups, the one with the most rows that may
  win, then the longest context).
- throughput: at the largest batch where any cache ran ok, the most decode tok/s.
- memory: at the setup holding the most KV tokens (batch x context), the least memory (GPU: device peak + host
  KV; CPU: a cell's own peak RSS where rows carry one, else the KV bytes), with its cost in decode time against
  the fastest row there.
- quality: real weights only: of the caches holding fewer KV bytes than the reference, the least perplexity
  change.
Only clean rows win (facts.clean: ok, not disturbed, not faster than their own bandwidth floor); faster rows
passed over for that are named in the caveats. report.md's front page and the per-GPU reports both read these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from bench.report import facts, margins
from bench.report.compare import PEAK_ABS_MIB, PEAK_REL
from bench.report.fmt import nat, num, sig, text

QUESTIONS = ("latency", "throughput", "memory", "quality")


@dataclass
class Answer:
    question: str
    setup: dict                     # the setup the answer is about (selection.SETUP keys)
    winner: Optional[dict] = None
    runner: Optional[dict] = None
    margin: Optional[margins.Margin] = None   # judge on (winner, runner-up), timing questions
    said: str = ""                  # the winner's figure
    runner_said: str = ""           # the runner-up's figure
    margin_said: str = ""           # the margin in words (judge's, or an exact difference for memory and quality)
    cost: str = ""                  # memory: what the winner costs in decode time
    caveats: list = field(default_factory=list)
    none: str = ""                  # no answer: why


def ctx(s: dict) -> float:
    return num(s["prompt_len"]) + num(s["new_tokens"])


def pool(rows: pd.DataFrame) -> list[dict]:
    return [r for r in rows.to_dict("records")]


def clean(rows: pd.DataFrame) -> list[dict]:
    return [r for r in pool(rows) if facts.clean(r)]


def pick_setup(setups: list, key) -> tuple:
    """The setup that sorts first by key (a tuple, smaller first); ties broken by the setup's own text."""
    return min(setups, key=lambda t: (key(t), tuple(nat(v) for v in t[0].values())))


def ranked(rows: list[dict], metric: str, high: bool = False) -> list[dict]:
    have = [r for r in rows if not math.isnan(num(r.get(metric)))]
    return sorted(have, key=lambda r: ((-1 if high else 1) * num(r[metric]), text(r.get("label"))))


def strategy(r: dict) -> str:
    return text(r.get("strategy")) or text(r.get("cache"))


def other_cache(order: list[dict], w: dict) -> Optional[dict]:
    """The best row of another cache strategy than the winner's, settings included (int2 is another cache than
    int4; the same cache under another attention path is not a runner-up for 'which cache')."""
    return next((r for r in order if strategy(r) != strategy(w)), None)


def passed_over(rows: pd.DataFrame, w: dict, metric: str, high: bool = False) -> list[str]:
    """Ok rows better than the winner on metric that may not win, and why."""
    out = []
    for r in ranked([r for r in pool(rows) if r["status"] == "ok" and not facts.clean(r)], metric, high):
        better = num(r[metric]) > num(w[metric]) if high else num(r[metric]) < num(w[metric])
        if better:
            out.append(f"{r['label']} ({sig(r[metric])}) not ranked: {facts.why_not_clean(r)}")
    return out


def runs_apart(r: dict, every: Optional[pd.DataFrame], metric: str) -> str:
    """Where the cell ran ok in several runs: how far apart their medians are, when beyond the noise floor."""
    if every is None or "_key" not in every:
        return ""
    same = every[(every["_key"] == r.get("_key")) & (every["status"] == "ok")]
    vals = [num(v) for v in same[metric] if num(v) > 0]
    if len(vals) < 2 or max(vals) / min(vals) <= 1 + margins.FLOOR.floor:
        return ""
    return f"{r['label']}'s {len(vals)} runs: medians ×{max(vals) / min(vals):.2f} apart"


def timing_answer(q: str, s: dict, rows: pd.DataFrame, metric: str, high: bool, every, unit: str) -> Answer:
    """Winner and runner-up by metric among clean rows, judged on the decode step (tpot_ms)."""
    a = Answer(q, s)
    order = ranked(clean(rows), metric, high)
    if not order:
        a.none = "no clean ok row"
        return a
    w = order[0]
    a.winner, a.said = w, f"{sig(w[metric])} {unit}"
    a.caveats = facts.caveats(w, weights_said=True) + passed_over(rows, w, metric, high)
    a.runner = other_cache(order, w)
    if a.runner is None:
        a.margin_said = "the only cache measured cleanly here"
    else:
        a.runner_said = f"{sig(a.runner[metric])} {unit}"
        a.margin = margins.judge(w, a.runner, "tpot_ms")
        a.margin_said = a.margin.text()
        a.caveats += [x for x in (margins.why(a.margin),) if x]
    a.caveats += [x for x in (runs_apart(w, every, "tpot_ms"),
                              runs_apart(a.runner, every, "tpot_ms") if a.runner else "") if x]
    return a


def latency(setups: list, every: Optional[pd.DataFrame] = None) -> Optional[Answer]:
    ones = [t for t in setups if t[0]["batch"] == "1"]
    if not ones:
        return None
    s, rows = pick_setup(ones, lambda t: (-len(clean(t[1])), -ctx(t[0])))
    a = timing_answer("latency", s, rows, "tpot_ms", False, every, "ms/token")
    if a.winner is not None and facts.floor_text(a.winner):
        a.said += f" ({facts.floor_text(a.winner)})"
    return a


def throughput(setups: list, every: Optional[pd.DataFrame] = None) -> Optional[Answer]:
    ran = [t for t in setups if clean(t[1])]
    top = max((num(t[0]["batch"]) for t in ran), default=math.nan)
    if not top > 1:
        return None  # batch 1 only: the latency answer is the throughput answer
    s, rows = pick_setup([t for t in ran if num(t[0]["batch"]) == top], lambda t: (-len(clean(t[1])), -ctx(t[0])))
    a = timing_answer("throughput", s, rows, "decode_tok_s", True, every, "decode tok/s")
    if a.winner is None:
        return a
    oom = sorted({r["label"] for r in pool(rows) if r["status"] == "oom"})
    if oom:
        a.caveats.append("OOM here: " + ", ".join(oom))
    share = facts.prefill_share(a.winner)
    if share > 0.5:
        a.caveats.append(f"{s['new_tokens']} new tokens: prefill is {share:.0%} of a call (whole-call tok/s "
                         f"{sig(a.winner.get('e2e_tok_s'))})")
    same = [t for t in ran if all(t[0][k] == s[k] for k in ("dtype", "prompt_len", "new_tokens"))]
    best = ranked([r for _, rows2 in same for r in clean(rows2)], "decode_tok_s", True)
    if best and best[0]["label"] != a.winner["label"]:
        b = best[0]
        a.caveats.append(f"most at any batch: {b['label']} {sig(b['decode_tok_s'])} at batch {b['batch']}")
    return a


def memory(setups: list, every: Optional[pd.DataFrame] = None) -> Optional[Answer]:
    def caches(t) -> int:
        return len({strategy(r) for r in clean(t[1]) if facts.holds_cache(r)})
    cached = [t for t in setups if caches(t)]
    if not cached:
        return None
    # the most KV tokens among setups where two caches can be compared (else among all)
    s, rows = pick_setup(cached, lambda t: (caches(t) < 2, -num(t[0]["batch"]) * ctx(t[0]), -caches(t)))
    a = Answer("memory", s)
    cands = [r for r in clean(rows) if facts.holds_cache(r)]
    mem = {id(r): facts.memory(r).mib for r in cands}
    gpu = facts.on_gpu(cands[0])
    if gpu and any(math.isnan(v) for v in mem.values()):
        a.none = f"no peak figure for {sum(math.isnan(v) for v in mem.values())} of {len(cands)} rows"
        return a
    if not gpu and all(math.isnan(v) for v in mem.values()):  # the process's RSS is not a cell's: KV bytes
        mem = {id(r): num(r.get("kv_cache_mib")) for r in cands}
        a.question = "memory (KV bytes)"
    order = sorted([r for r in cands if not math.isnan(mem[id(r)])], key=lambda r: (mem[id(r)], r["label"]))
    if not order:
        a.none = "no memory figure"
        return a
    w = a.winner = order[0]
    a.said = facts.mem_text(w)
    a.caveats = facts.caveats(w, weights_said=True)
    a.runner = other_cache(order, w)
    if a.runner is None:
        a.margin_said = "the only cache measured cleanly here"
    else:
        x, y = mem[id(w)], mem[id(a.runner)]
        a.runner_said = facts.mem_text(a.runner)
        more = f"+{facts.size(y - x)}" + (f" ({y / x - 1:+.0%})" if x > 0 else "")
        if a.question == "memory (KV bytes)":  # bytes counted from tensors: exact, as compare counts them
            a.margin_said = more + ", exact"
        elif y - x >= PEAK_ABS_MIB and (x <= 0 or (y - x) / x > PEAK_REL):
            a.margin_said = more + ": beyond the 1% and 1 MiB peak threshold"
        else:
            a.margin_said = more + ": a tie (within 1% or 1 MiB)"
    fastest = ranked(clean(rows), "tpot_ms")[0]
    if fastest["label"] == w["label"]:
        a.cost = "also the fastest here"
    else:
        m = margins.judge(fastest, w, "tpot_ms")
        a.cost = f"decode {m.short()} vs the fastest here, {fastest['label']} {sig(fastest['tpot_ms'])} ms/token"
    return a


def quality(setups: list, every: Optional[pd.DataFrame] = None) -> Optional[Answer]:
    def scored(rows):
        ok = [r for r in pool(rows) if r["status"] == "ok"]
        ref = next((r for r in ok if facts.flag(r.get("reference")) and not math.isnan(num(r.get("ppl")))), None)
        if ref is None:
            return None, []
        return ref, [r for r in ok if facts.holds_cache(r) and not facts.flag(r.get("reference"))
                     and not math.isnan(num(r.get("ppl_delta")))
                     and num(r.get("kv_cache_mib")) < num(ref.get("kv_cache_mib"))]
    real = [t for t in setups if t[0]["weights"] == "real" and scored(t[1])[1]]
    if not real:
        return None
    s, rows = pick_setup(real, lambda t: (-len(scored(t[1])[1]), -ctx(t[0])))
    ref, cands = scored(rows)
    order = sorted(cands, key=lambda r: (num(r["ppl_delta"]), r["label"]))
    a = Answer("quality", s, winner=order[0])
    kv = lambda r: f"KV {num(r['kv_cache_mib']) / num(ref['kv_cache_mib']) - 1:+.0%}"  # noqa: E731
    w = a.winner
    a.said = f"Δppl {num(w['ppl_delta']):+.3f} ({num(w['ppl_delta']) / num(ref['ppl']):+.1%} of {sig(ref['ppl'], 4)}), {kv(w)}"
    a.runner = next((r for r in order[1:]), None)
    if a.runner is not None:
        a.runner_said = f"Δppl {num(a.runner['ppl_delta']):+.3f}, {kv(a.runner)}"
        a.margin_said = f"{num(a.runner['ppl_delta']) - num(w['ppl_delta']):+.3f} ppl (one fixed text: no interval)"
    agree = lambda r: ("" if math.isnan(num(r.get("agreement")))  # noqa: E731 - each row's own, beside it
                       else f", greedy agreement {num(r.get('agreement')):.0%}")
    a.said += agree(w)
    worst = order[-1]
    if len(order) > 2:
        a.caveats.append(f"worst: {worst['label']} Δppl {num(worst['ppl_delta']):+.3g}, {kv(worst)}{agree(worst)}")
    return a


def answers(setups: list, every: Optional[pd.DataFrame] = None) -> list[Answer]:
    """The answers for one machine and model, in QUESTIONS order, those that apply."""
    return [a for f in (latency, throughput, memory, quality) if (a := f(setups, every)) is not None]


def groups(setups: list) -> list[tuple[tuple[str, str], list]]:
    """setups (selection.setups) by (machine, model), GPUs first then CPUs, each in natural order."""
    out: dict = {}
    for s, rows in setups:
        out.setdefault((s["machine"], s["model"]), []).append((s, rows))
    return sorted(out.items(), key=lambda kv: (kv[0][0].startswith("CPU"), nat(kv[0][0]), nat(kv[0][1])))
