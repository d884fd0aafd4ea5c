"""`compare.md` and its figure: the verdict first, then the evidence, then what could not be compared."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import matplotlib
import pandas as pd

from bench.stats import verdicts
from bench.report import compare as cmp
from bench.report import fig_compare, margins
from bench.report.fmt import RC, md, text
from bench.report.tables import markdown

ENV = ("gpu", "cpu", "driver", "cuda", "cuda_alloc_conf", "torch", "transformers", "quanto", "flash_attn", "python",
       "git_sha")
CHANGED = (verdicts.SLOWER, verdicts.FASTER)


def _ci(v: verdicts.Verdict) -> str:
    """'1.021 [1.01–1.03, 95% CI]', or '[…, n=2+3]' where a side has too few calls for a 95% CI."""
    if v.ratio is None:
        return "–"
    return f"{v.ratio:.3f}{margins.interval_text(v)}"


def _r(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3f}"


def floor_text(floor: verdicts.NoiseFloor) -> str:
    if floor.calibrated:
        return (f"±{floor.floor:.1%}, calibrated from {floor.source} ({floor.n_cells} cells, "
                f"quantile {floor.quantile:g})")
    return (f"±{floor.floor:.1%}, the default: **not calibrated** on this machine (measure the same code twice "
            "and pass `calibrate=true`, or `noise=noise.json` from such a run)")


def _basis_line(cells: list, floor: verdicts.NoiseFloor) -> str:
    """What the verdicts rest on, and what could not be judged against measured reproducibility."""
    by = Counter("rounds" if c.time.basis.startswith("measured") else "floor" for c in cells)
    parts = []
    if by["rounds"]:
        parts.append(f"{by['rounds']} cells judged against their measured reproducibility (rounds in separate "
                     "processes, 99%)")
    if by["floor"]:
        parts.append(f"{by['floor']} cells could not be judged on reproducibility (a side measured in one process): "
                     f"judged against a noise floor of {floor_text(floor)}")
    detect = [c.time.detectable for c in cells if c.time.detectable is not None]
    if detect:
        parts.append(f"smallest detectable change {min(detect):.1%} to {max(detect):.1%} "
                     f"(median {sorted(detect)[len(detect) // 2]:.1%})")
    return "Timing verdicts: " + "; ".join(parts) + "." if parts else "No timing verdicts."


def _row(c: cmp.Cell) -> dict:
    v = c.time
    verdict = f"**{v.label}**" if v.label in CHANGED else v.label
    judged = "rounds" if v.basis.startswith("measured") else "floor"
    return {"setup": md(c.setup), "strategy / attention": md(c.label), "e2e head/base [interval]": _ci(v),
            "verdict": verdict, "judged on": judged,
            "smallest detectable": f"±{v.detectable:.1%}" if v.detectable is not None else "–",
            "TTFT ×": _r(c.ttft_ratio), "TPOT ×": _r(c.tpot_ratio),
            "memory": md("; ".join(c.memory)) if c.memory else "same", "note": md(v.note[:120])}


def _conditions(res: cmp.Result, base_spec: str, head_spec: str) -> list[str]:
    rows = [{"": "selection", "base": f"`{md(base_spec)}`", "head": f"`{md(head_spec)}`"}]
    for c in ENV:
        vals = {n: ", ".join(sorted({text(x) for x in d[c]} - {""})) if c in d else "" for n, d in (("base", res.base), ("head", res.head))}
        rows.append({"": c, "base": md(vals["base"]), "head": md(vals["head"])})
    rows.append({"": "rows (ok)", "base": f"{len(res.base)} ({int((res.base['status'] == 'ok').sum())})",
                 "head": f"{len(res.head)} ({int((res.head['status'] == 'ok').sum())})"})
    out = markdown(pd.DataFrame(rows))
    for name, d in (("base", res.base), ("head", res.head)):
        gpus = sorted({text(g) or "none" for g in d["machine"]})
        if len(gpus) > 1:
            out += ["", f"**{name} mixes {len(gpus)} GPUs** ({', '.join(gpus)}): each cell uses its newest ok row "
                        "whichever GPU ran it; add @gpu=NAME to pick one."]
    return out


def cross(res: cmp.Result) -> list[str]:
    """A warning line when base and head ran on different machines: every ratio is then a cross-GPU (or
    cross-host) compare, the machine's difference as much as the code's."""
    b, h = (sorted(set(d.loc[d["status"] == "ok", "machine"])) for d in (res.base, res.head))
    if not b or not h or b == h:
        return []
    kind = "cross-GPU" if all(not m.startswith("CPU") for m in b + h) else "cross-machine"
    return [f"**A {kind} compare**: base ran on {', '.join(b)}, head on {', '.join(h)}; each ratio below is the "
            "machines' difference as much as the code's, and the noise floor of one machine does not cover it.", ""]


def write(base: str, head: str, out: Path, floor: verdicts.NoiseFloor, pool: bool = False,
          calibrated_here: bool = False) -> list[Path]:
    b, h = cmp.side(base, "base"), cmp.side(head, "head")
    if calibrated_here:
        floor = cmp.calibrate(cmp.aa_pairs(b, h), f"A/A pair {base} vs {head}")
    res = cmp.compare(b, h, floor, pool)
    out.mkdir(parents=True, exist_ok=True)
    for old in sorted(out.glob("compare_*.png")):
        old.unlink()
    written = []
    counts = Counter(c.time.label for c in res.cells)
    mem = sum(any("no data" not in m for m in c.memory) for c in res.cells)
    title = "A/A calibration" if calibrated_here else "kvbench compare"
    lines = [f"# {title}", "", f"base `{md(base)}` vs head `{md(head)}`" + (" (samples pooled over rounds)" if pool else "") + ".", "",
             *cross(res),
             f"**{len(res.cells)} cells compared: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
             + f"; memory changed in {mem}.**", "", _basis_line(res.cells, floor), ""]
    changed = [c for c in res.cells if c.time.label in CHANGED or any("no data" not in m for m in c.memory)]
    lines += ["## Changes", ""] + (markdown(pd.DataFrame([_row(c) for c in changed])) if changed else ["None beyond noise."]) + [""]
    if res.cells:
        cells = pd.DataFrame([{"setup": c.setup, "label": c.label, "ratio": c.time.ratio if c.time.ratio is not None else math.nan,
                               "lo": c.time.lo if c.time.lo is not None else math.nan,
                               "hi": c.time.hi if c.time.hi is not None else math.nan, "verdict": c.time.label}
                              for c in res.cells])
        with matplotlib.rc_context():
            matplotlib.rcdefaults()
            matplotlib.rcParams.update(RC)
            said = cross(res)
            kind = "" if not said else "a cross-GPU compare, " if "cross-GPU" in said[0] else "a cross-machine compare, "
            drawn = fig_compare.ratios(cells, floor.floor, floor.calibrated,
                                       f"{kind}e2e time per call, {head} against {base}",
                                       out / "compare_ratios.png")
        written.append(drawn.path)
        lines += [f"![head/base ratios]({drawn.path.name})", ""]
    lines += ["## Conditions", ""] + _conditions(res, base, head) + [""]
    lines += ["## Every compared cell", "", "<details><summary>All cells</summary>", ""]
    lines += (markdown(pd.DataFrame([_row(c) for c in res.cells])) if res.cells else ["None."]) + ["", "</details>", ""]
    lines += ["## Cells on one side only", ""]
    for name, cells in (("base", res.only_base), ("head", res.only_head)):
        other = "head" if name == "base" else "base"
        lines += [f"Only in {name} (no ok row in {other}):", ""]
        lines += (markdown(pd.DataFrame([{"setup": md(s), "strategy / attention": md(lab), f"{other} has": md(has)}
                                         for s, lab, has in cells])) if cells else ["None."]) + [""]
    lines += ["## How a verdict is made", "",
              "Cells are matched by their conditions (bench.store.identity: model, weights, dtype, device, batch, lengths, "
              "strategy and its settings, attention, SDPA backend, compile, seed), not by GPU or library versions. "
              "Per cell: the ratio head/base of the median e2e time per call (`bench.report.verdict.judge`, as every "
              "report judges a pair). Where both rows measured their reproducibility (rounds in separate worker "
              "processes), the ratio's 99% interval comes from a t-test on the two sides' round medians, and the cell "
              "is *slower* or *faster* only when that interval excludes 1; the smallest change it could detect is "
              "shown per cell. Where a side has no such measure (rows of one process), the interval is a 95% "
              f"percentile bootstrap of the per-call samples (shown as [lo–hi, n=a+b] where a side has fewer than "
              f"{margins.CI_FROM} calls, which cannot reach 95% coverage), and a change must put it wholly outside the "
              f"noise band (1 ± floor, symmetric in log space); the floor is {floor_text(floor)}. A side whose calls "
              "disagreed with themselves is *disturbed*, and so is a cell whose two sides ran on the same GPU and CPU model "
              "with the host's launch probe more than 1.5x apart (the host changed, not the code); a side with one "
              "sample has *no interval*. TTFT and TPOT ratios "
              "are the breakdown of the same calls, not verdicts of their own. KV bytes compare exactly; peak memory "
              f"beyond {cmp.PEAK_REL:.0%} and {cmp.PEAK_ABS_MIB:g} MiB.", ""]
    path = out / "compare.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    written.append(path)
    if calibrated_here:
        noise = out / "noise.json"
        noise.write_text(json.dumps(floor.to_dict(), indent=1, sort_keys=True) + "\n")
        written.append(noise)
    return sorted(written)
