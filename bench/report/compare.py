"""What changed between two result sets: one timing verdict per cell, memory compared exactly.

BASE and HEAD are each a store (a directory of run files, or one .jsonl file), or a store narrowed by filters:
`STORE@key=value[@key=value...]`; a bare `STORE@abc123` means `git_sha=abc123`. git_sha and run_id match by
prefix, every other column by its exact text. Cells are matched by bench.store.identity without the GPU, so one GPU
can be set against another; each side uses its newest ok row per cell (pool=True: all its ok rows, samples
pooled, as `bench pr` measures each side in several rounds).

The timing verdict of a cell is the ratio head/base of the median e2e time, with a bootstrap interval from the
raw per-call samples, judged against a noise floor measured from an A/A pair (bench.stats.verdicts): a change is
declared only when the whole interval lies outside the floor's band. ttft and tpot ratios are shown beside it
as the breakdown, not as verdicts of their own. A side flagged disturbed, or two sides of one machine type whose
host's launch probe differs by more than a cell may drift (host_moved), is `disturbed`, never a clean verdict.
KV bytes and peak memory are exact comparisons.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.stats import verdicts
from bench.store import load
from bench.report import selection, verdict
from bench.report.fmt import nat, text

PREFIX_KEYS = ("git_sha", "run_id")
FORM = ("BASE and HEAD: STORE (a directory or .jsonl file) or STORE@key=value[@key=value] "
        "(e.g. results@git_sha=abc123, results@run_id=ID, results@abc123)")
PEAK_REL, PEAK_ABS_MIB = 0.01, 1.0   # an allocator or RSS peak changed: beyond 1% and 1 MiB
KV_ABS_MIB = 1.0 / 2**20             # KV bytes: any difference of a byte or more


class CompareError(ValueError):
    """Bad input: one line saying what is wrong and what is allowed."""


def parse_spec(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """'STORE@k=v@abc' -> ('STORE', [('k', 'v'), ('git_sha', 'abc')]). A store path may itself hold '@'."""
    if not spec:
        raise CompareError(f"empty BASE/HEAD; {FORM}")
    if Path(spec).exists() or "@" not in spec:
        return spec, []
    cuts = [i for i, ch in enumerate(spec) if ch == "@"]
    at = next((i for i in cuts if Path(spec[:i]).exists()), cuts[0])  # shortest existing store prefix
    store, filters = spec[:at], []
    for term in spec[at + 1:].split("@"):
        key, eq, value = term.partition("=")
        key, value = (key.strip(), value) if eq else ("git_sha", term)
        if not key or not value:
            raise CompareError(f"bad filter {term!r} in {spec!r}; {FORM}")
        filters.append((key, value))
    return store, filters


def side(spec: str, name: str) -> pd.DataFrame:
    """The rows `spec` names; CompareError when the store is missing/empty or a filter matches nothing."""
    store, filters = parse_spec(spec)
    if not store or not Path(store).exists():
        raise CompareError(f"{name} store {store!r} not found; {FORM}")
    df = load(store)
    if df.empty:
        raise CompareError(f"{name} store {store!r} has no rows; {FORM}")
    for key, value in filters:
        if key not in df.columns:
            raise CompareError(f"{name} filter {key}={value!r}: unknown column {key!r}; use one of "
                               f"{', '.join(sorted(c for c in df.columns if not c.endswith('_samples_ms')))}")
        col = df[key].map(text)
        hit = col.str.startswith(value) if key in PREFIX_KEYS else col == value
        if not hit.any():
            seen = sorted(set(col) - {""})
            raise CompareError(f"{name} {spec!r} matches no rows: {key}={value!r} is not in {store!r} "
                               f"(its {key} values: {', '.join(seen[:5]) or 'none'}{' …' if len(seen) > 5 else ''})")
        df = df[hit]
    return selection.prepare(df.reset_index(drop=True))


def _pooled(df: pd.DataFrame) -> dict:
    """Per cell, the newest ok row with every ok row's samples pooled (disturbed if any round was)."""
    out = {}
    for key, rows in df[df["status"] == "ok"].groupby("_key_nogpu", sort=False):
        r = rows.iloc[-1].to_dict()
        for m in selection.TIMINGS:
            vals = [v for _, x in rows.iterrows() for v in (selection.samples(x, m)[0] or [])]
            r[f"{m[:-3]}_samples_ms"] = vals
            r[m] = float(pd.Series(vals).median()) if vals else r[m]
        rounds = [v for x in rows["round_e2e_ms"] if isinstance(x, list) for v in x if v]
        sds = [float(v) for v in rows["run_sd_rel"] if v is not None and v == v]
        if rounds and len(sds) == len(rows):  # every run's rounds, and their runs' spread between processes
            r["round_e2e_ms"], r["run_sd_rel"] = rounds, math.sqrt(sum(v * v for v in sds) / len(sds))
            r["run_sd_df"] = float(min(rows["run_sd_df"]))
        r["disturbed"] = any(v is True for v in rows["disturbed"])
        r["disturbed_why"] = "; ".join(sorted({text(v) for v in rows["disturbed_why"]} - {""}))
        out[key] = r
    return out


@dataclass
class Cell:
    key: tuple
    setup: str
    label: str
    base: dict
    head: dict
    time: verdicts.Verdict
    ttft_ratio: float
    tpot_ratio: float
    memory: list          # ['KV bigger (+x%)', ...]; empty: same memory
    samples_from: str     # raw, recovered (schema-1 rows) or why none


def _memory(b: dict, h: dict) -> list[str]:
    out = []
    for col, name, rel, absmib in (("kv_cache_mib", "KV", 0.0, KV_ABS_MIB), ("peak_mem_mib", "peak", PEAK_REL, PEAK_ABS_MIB)):
        bv, hv = float(pd.to_numeric(b.get(col), errors="coerce")), float(pd.to_numeric(h.get(col), errors="coerce"))
        if math.isnan(bv) or math.isnan(hv):
            out.append(f"{name}: no data" + ("" if math.isnan(bv) and math.isnan(hv) else
                                             f" in {'base' if math.isnan(bv) else 'head'}"))
            continue
        if abs(hv - bv) < absmib or (bv and abs(hv - bv) / bv <= rel):
            continue
        out.append(f"{name} {'bigger' if hv > bv else 'smaller'} ({(hv / bv - 1) if bv else math.inf:+.1%})")
    return out


def _ratio(b: dict, h: dict, col: str) -> float:
    bv, hv = float(pd.to_numeric(b.get(col), errors="coerce")), float(pd.to_numeric(h.get(col), errors="coerce"))
    return hv / bv if bv and not (math.isnan(bv) or math.isnan(hv)) else math.nan


@dataclass
class Result:
    cells: list
    only_base: list       # (setup, label, what head has)
    only_head: list
    not_ok: pd.DataFrame  # side, row
    base: pd.DataFrame
    head: pd.DataFrame
    floor: verdicts.NoiseFloor


def _setup_text(r: dict) -> str:
    return (f"{r['model']} ({r['weights']} weights), {r['device']} {r['dtype']}, "
            f"b{r['batch']} p{r['prompt_len']} n{r['new_tokens']}")


def compare(base: pd.DataFrame, head: pd.DataFrame, floor: verdicts.NoiseFloor, pool: bool = False) -> Result:
    """Match the prepared sides and judge every cell with an ok row on both."""
    rows = {}
    for name, df in (("base", base), ("head", head)):
        rows[name] = _pooled(df) if pool else {
            r["_key_nogpu"]: r for r in selection.pick(df, "_key_nogpu").shown.to_dict("records") if r["status"] == "ok"}
    order = lambda k: tuple(nat(v) for _, v in k)  # noqa: E731
    cells = []
    for k in sorted(set(rows["base"]) & set(rows["head"]), key=order):
        b, h = rows["base"][k], rows["head"][k]
        v, frm = verdict.judge(b, h, floor)
        cells.append(Cell(k, _setup_text(h), h["label"], b, h, v, _ratio(b, h, "ttft_ms"), _ratio(b, h, "tpot_ms"),
                          _memory(b, h), frm))
    latest = {n: selection.pick(df, "_key_nogpu") for n, df in (("base", base), ("head", head))}

    def only(a: str, other: str) -> list:
        out = []
        for k in sorted(set(rows[a]) - set(rows[other]), key=order):
            r = rows[a][k]
            o = latest[other].not_ok[latest[other].not_ok["_key_nogpu"] == k]
            has = f"{o.iloc[-1]['status']}: {text(o.iloc[-1]['error'])[:150]}" if len(o) else "absent"
            out.append((_setup_text(r), r["label"], has))
        return out

    not_ok = pd.concat([latest[n].not_ok.assign(side=n) for n in ("base", "head")])
    return Result(cells, only("base", "head"), only("head", "base"), not_ok, base, head, floor)


def aa_pairs(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[list, list]]:
    """(samples of run a, samples of run b) of every cell the same code measured twice, disturbed ones left out."""
    pairs = []
    for c in compare(a, b, verdicts.DEFAULT_FLOOR).cells:
        if c.time.label == verdicts.DISTURBED:
            continue
        x, y = selection.samples(c.base, "e2e_ms")[0], selection.samples(c.head, "e2e_ms")[0]
        if x and y and len(x) > 1 and len(y) > 1:
            pairs.append((x, y))
    return pairs


def calibrate(pairs: list, source: str) -> verdicts.NoiseFloor:
    """The noise floor of A/A pairs: the same code measured in separate runs (bench.stats.verdicts.calibrate)."""
    if not pairs:
        raise CompareError("calibrating needs cells with raw samples on both sides of an A/A pair (schema-2 rows)")
    return verdicts.calibrate(pairs, source=source)
