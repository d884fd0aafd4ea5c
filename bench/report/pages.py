"""The pages report.md links to, under <out>/setups/: one per setup (its answers, summary, figures, how each row
was measured), an index of the setups, and the cells not ok. Figures stay in <out>/ (linked as ../name.png).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.report import answers as ans
from bench.report import margins, tables
from bench.report.fmt import md, setup_slug, setup_title, sig, text

PAGES = "setups"
MARGIN = ("×r = the runner-up's median decode ms/token ÷ the winner's, judged by `bench.report.verdict.judge` against "
          f"a ±{margins.FLOOR.floor:.1%} noise floor{'' if margins.FLOOR.calibrated else ' (default, uncalibrated)'}; "
          f"[lo–hi, 95% CI] where both rows have ≥ {margins.CI_FROM} calls, else [lo–hi, n=a+b], the bootstrap range "
          "of those calls. Only clean rows are ranked: ok, not disturbed, not below their bandwidth floor.")


def conditions(rows: pd.DataFrame) -> str:
    """The environment shared by every row of a setup (what differs is a column of its tables)."""
    parts = []
    for c in ("torch", "transformers", "cuda", "driver", "cpu", "cuda_alloc_conf", "flash_attn"):
        vals = sorted({text(v) for v in rows[c]}) if c in rows else []
        if len(vals) == 1 and vals[0]:
            parts.append(f"{c} {vals[0]}")
    runs = rows["run_id"].nunique()
    ts = sorted(text(v)[:10] for v in rows["timestamp"] if text(v))
    when = f", {ts[0]}" + (f" … {ts[-1]}" if ts[-1] != ts[0] else "") if ts else ""
    return f"Conditions: {', '.join(parts) or '–'}; {len(rows)} cells from {runs} run(s){when}."


def said(a: ans.Answer, what: str) -> str:
    """'**lowest decode ms/token**: X 7.15 ms/token (floor 3.39 ms); runner-up Y 19.7 ms/token: ×2.75 ...'."""
    if a is None:
        return ""
    if a.winner is None:
        return f"**{what}**: – ({md(a.none)})"
    out = f"**{what}**: {md(a.winner['label'])} {md(a.said)}"
    if a.runner is not None:
        out += f"; runner-up {md(a.runner['label'])} {md(a.runner_said)}: {md(a.margin.short() if a.margin else a.margin_said)}"
    else:
        out += f" ({md(a.margin_said)})"
    extra = ([a.cost] if a.cost else []) + a.caveats
    return out + (f". {md('; '.join(extra))}" if extra else "") + "."


def here(s: dict, rows: pd.DataFrame, every: pd.DataFrame) -> list[str]:
    """This setup's own answers: the lowest decode time, the least memory, quality where there is one."""
    one = [(s, rows)]
    lines = [said(ans.timing_answer("latency", s, rows, "tpot_ms", False, every, "ms/token"),
                  "lowest decode ms/token here"),
             said(ans.memory(one, every), "least memory here"), said(ans.quality(one, every), "quality cost here")]
    return [f"- {x}" for x in lines if x]


def setup_page(s: dict, rows: pd.DataFrame, every: pd.DataFrame, figures: list[Path], family: Path | None,
               out: Path) -> Path:
    path = out / PAGES / f"{setup_slug(s)}.md"
    lines = [f"# {setup_title(s)}", "", "[← report](../report.md) · [all setups](index.md)", "",
             conditions(rows), ""] + here(s, rows, every) + ["", MARGIN, ""] + tables.summary(rows, s) + [""]
    lines += [f"![{p.stem.split('_')[0]}](../{p.name})" for p in figures]
    if family is not None:
        lines += ["", f"Throughput against batch for these lengths: ![throughput](../{family.name})"]
    lines += ["", "## How each row was measured", ""] + tables.details(rows) + [""]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    return path


def index(groups: list, out: Path) -> Path:
    """Every setup, by machine and model, with its cells and its fastest clean row."""
    lines = ["# Every setup", "", "[← report](../report.md)", ""]
    for (machine, model), setups in groups:
        lines += [f"## {machine} · {model}", ""]
        for s, rows in setups:
            fast = ans.ranked(ans.clean(rows), "tpot_ms")
            ok = int((rows["status"] == "ok").sum())
            best = f"; fastest clean: {md(fast[0]['label'])} {sig(fast[0]['tpot_ms'])} ms/token" if fast else ""
            lines.append(f"- [{setup_title(s)}]({setup_slug(s)}.md): {len(rows)} cells, {ok} ok{best}")
        lines.append("")
    path = out / PAGES / "index.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    return path


def not_ok_page(not_ok: pd.DataFrame, out: Path) -> Path:
    counts = not_ok["status"].value_counts()
    said_ = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    head = f"{len(not_ok)} cells whose newest row is not ok: {said_}." if len(not_ok) else "None."
    lines = ["# Cells not ok", "", "[← report](../report.md)", "", head,
             "One status vocabulary: ok, unavailable (cannot run here), oom (out of memory, however the run filed "
             "it), error (anything else, e.g. a worker killed by a signal).", ""] + tables.not_ok(not_ok)
    path = out / PAGES / "not-ok.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    return path


def section_page(name: str, title: str, lines: list[str], out: Path) -> Path:
    path = out / PAGES / name
    path.write_text("\n".join([f"# {title}", "", "[← report](../report.md)", ""] + lines).rstrip("\n") + "\n")
    return path
