"""The first screen of report.md: per machine and model, the answer to each question (bench.report.answers),
with its runner-up, margin, verdict and caveats on one line, and what the counts are. Detail lives on one page
per setup (bench.report.pages), linked from each answer; this page grows with machines and models, not setups.
"""
from __future__ import annotations

import pandas as pd

from bench.report import answers as ans
from bench.report import facts, margins, selection
from bench.report.fmt import md, num, setup_slug, sig, text

MAX_GROUPS = 8       # machine x model groups with a choice answered on the front page; the rest on setups/answers.md
DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
SHORT = {"flash_attention_2": "FA2", "flex_attention": "flex"}  # attention paths, front page only
ASKED = {"latency": "lowest latency", "throughput": "most throughput", "memory": "least memory",
         "memory (KV bytes)": "fewest KV bytes", "quality": "quantization's quality cost"}


def counts(store: str, picked: selection.Picked, groups: list) -> str:
    """One sentence whose numbers add up: every cell once, by its status (one vocabulary)."""
    cells = pd.concat([picked.shown, picked.unplaced])
    by = cells["status"].value_counts()
    parts = [f"{int(by.get(s, 0))} {s}" for s in ("ok", "unavailable", "oom", "error") if by.get(s, 0)]
    lost = len(picked.unplaced)
    where = (f" ({lost} of the not-ok cells are in no setup: their worker died before the model loaded)"
             if lost else "")
    ok = picked.shown[picked.shown["status"] == "ok"].to_dict("records")
    dist, below = sum(facts.flag(r.get("disturbed")) for r in ok), sum(facts.below_floor(r) for r in ok)
    flagged = ", ".join(x for x in (f"{dist} disturbed" if dist else "", f"{below} below {'its' if below == 1 else 'their'} "
                                    "own bandwidth floor" if below else "") if x)
    machines = sorted(set(picked.shown["machine"]))
    return (f"From `{md(store)}`: **{len(cells)} cells = {' + '.join(parts)}**{where}, in "
            f"{len(selection.setups(picked.shown))} setups on {len(machines)} machine{'s' * (len(machines) != 1)}; "
            f"{len(picked.superseded)} older rows of the same cells left out"
            + (f"; of the ok rows {flagged} (shown, never ranked)" if flagged else "") + ".")


def legend(floor_text: str) -> str:
    return ("**How to read.** Winner (bold): the best clean row (ok, not disturbed, not below its bandwidth floor); "
            "runner-up: the best row of another cache. **×r** = runner-up ÷ winner, medians of decode ms/token "
            f"(= winner's tok/s ÷ runner-up's), judged by `verdict.judge` against a {floor_text} noise floor; "
            f"[lo–hi, 95% CI] where both rows have ≥ {margins.CI_FROM} calls, [lo–hi, n=a+b] (bootstrap range of a "
            "and b calls, not a 95% CI) where not. **Memory** (GPU) = device peak allocated + KV in host memory. "
            f"Attention: {', '.join(f'{v} = {k}' for k, v in SHORT.items())}.")


def quality_note(shown: pd.DataFrame) -> str:
    real = shown[(shown["weights"] == "real") & shown["ppl_delta"].map(lambda v: not pd.isna(v))]
    random = sorted(set(shown[shown["weights"] == "random"]["machine"]) - set(shown[shown["weights"] != "random"]["machine"]))
    has = sorted({f"{r['model']} on {r['machine']}" for r in real.to_dict("records")})
    first = f"Quality figures exist only for real weights: {', '.join(has)}." if has else \
        "No row has a quality figure (quality is computed for real weights only)."
    return first + (f" Every row on {', '.join(random)} used **random weights** (timing and memory of the real "
                    "shapes, no quality)." if random else "")


class Refs(dict):
    """Reference-style links: the opening shows short [text][n]; the targets are listed once at the end."""

    def ref(self, target: str) -> str:
        return self.setdefault(target, f"s{len(self) + 1}")

    def lines(self) -> list[str]:
        return [f"[{n}]: {t}" for t, n in self.items()]


def link(a: ans.Answer, pages: str, refs: Refs) -> str:
    s = a.setup
    where = f"b{s['batch']} {s['prompt_len']}+{s['new_tokens']} {DTYPE.get(s['dtype'], s['dtype'])}"
    return f"[{ASKED.get(a.question, a.question)}, {where}][{refs.ref(f'{pages}/{setup_slug(s)}.md')}]"


def short(label: str) -> str:
    for k, v in SHORT.items():
        label = label.replace(f"/ {k}", f"/ {v}")
    return md(label)


def line(model: str, a: ans.Answer, pages: str, say_weights: bool, refs: Refs) -> dict:
    caveats = (["random weights"] if say_weights and a.setup["weights"] == "random" else []) + a.caveats
    if a.winner is None:
        return {"model": model, "question": link(a, pages, refs), "use": "–", "runner-up: margin": "–",
                "cost · caveats": md(a.none)}
    run = "–" if a.runner is None else f"{short(a.runner['label'])} {md(a.runner_said)}"
    margin = a.margin.short() if a.margin is not None else a.margin_said
    return {"model": model, "question": link(a, pages, refs), "use": f"**{short(a.winner['label'])}** {md(a.said)}",
            "runner-up: margin": f"{run}: {short(margin)}" if a.runner is not None else md(margin),
            "cost · caveats": short("; ".join(([a.cost] if a.cost else []) + caveats)) if a.cost or caveats else "–"}


def lonely(found: list) -> bool:
    """A group where only one cache ran cleanly anywhere: nothing to choose between."""
    return all(a.runner is None for a in found) and not any(a.question == "quality" for a in found)


def machine_table(machine: str, items: list, pages: str, refs: Refs) -> list[str]:
    from bench.report.tables import markdown

    all_random = all(a.setup["weights"] == "random" for _, found in items for a in found)
    lines, single = [], []
    for model, found in items:
        if lonely(found):
            single.append((model, found))
            continue
        for i, a in enumerate(found):
            lines.append(line(model if i == 0 else "", a, pages, not all_random, refs))
    if single:
        lat = [a for _, f in single for a in f if a.question == "latency" and a.winner is not None]
        t = sorted(num(a.winner["tpot_ms"]) for a in lat)
        use = "–" if not lat else (f"{short(lat[0].winner['label'])} {sig(t[0])}" + (f"–{sig(t[-1])}" if len(t) > 1
                                   else "") + " ms/token") if len({a.winner["label"] for a in lat}) == 1 else \
            "; ".join(f"{short(a.winner['label'])} {sig(a.winner['tpot_ms'])} ms/token" for a in lat[:3])
        lines.append({"model": ", ".join(m for m, _ in single), "question": f"one cache each ([pages][{refs.ref(pages + '/index.md')}])",
                      "use": use, "runner-up: margin": "–", "cost · caveats": "nothing to choose between"})
    head = f"### {machine}" + (" · random weights" if all_random else "")
    return [head, ""] + markdown(pd.DataFrame(lines)) + [""]


def answers_section(groups: list, every: pd.DataFrame, pages: str, limit: int = MAX_GROUPS) -> tuple[list, list, list]:
    """(lines of the front page, its link targets for the end of the page, lines of the overflow page with its
    targets): a table per machine, one row per answer."""
    refs, refs_more = Refs(), Refs()
    by_machine: dict = {}
    n = 0  # groups with a choice, counted in order: the first `limit` are answered here (one cache each: one line)
    for (machine, model), setups in groups:
        found = ans.answers(setups, every)
        by_machine.setdefault(machine, []).append((n if not lonely(found) else 0, model, found))
        n += not lonely(found)
    front, more = [], []
    for machine, items in by_machine.items():
        shown = [(m, f) for n, m, f in items if n < limit]
        rest = [(m, f) for n, m, f in items if n >= limit]
        if shown:
            front += machine_table(machine, shown, pages, refs)
        if rest:
            more += machine_table(machine, rest, ".", refs_more)
    return front, refs.lines(), more + [""] + refs_more.lines() if more else []


def floor_said() -> str:
    f = margins.FLOOR
    return f"±{f.floor:.1%} " + ("calibrated" if f.calibrated else "(default, uncalibrated)")


def models_said(groups: list) -> str:
    return ", ".join(sorted({text(model) for (_, model), _ in groups}))
