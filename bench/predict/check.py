"""`python -m bench plan check [store=results]`: the planner held against every GPU row of a store.

For each GPU cell (its newest ok or out-of-memory row whose model ships its shapes in conf/model) it predicts
the peak allocated bytes and whether the cell fits the GPU, with the allocator setting the row ran under,
and sets both against what the GPU said: the measured peak_mem_mib, and whether the row ran or ran out.
"""
from __future__ import annotations

import sys

import pandas as pd

from bench.predict import formula, planner
from bench import strategies
from bench.config.paths import CONF_DIR
from bench.config.settings import ModelConfig
from bench.predict.arch import arch_config

GIB = 2**30


def _model(name: str):
    from omegaconf import OmegaConf

    path = CONF_DIR / "model" / f"{name}.yaml"
    return arch_config(ModelConfig(**OmegaConf.to_container(OmegaConf.load(path)))) if path.exists() else None


def rows(store: str) -> list[dict]:
    from bench.report import selection
    from bench.store import load

    df = load(store)
    df = df[(df["device"] == "cuda") & df["status"].isin(["ok", "oom"])]
    df = df[~df["error"].fillna("").str.startswith("not run:")]  # the planner's own refusals prove nothing
    df = df.reset_index(drop=True)
    shown = selection.pick(selection.prepare(df)).shown
    return [{**df.loc[i].to_dict(), "label": shown.loc[i, "label"]} for i in shown.index]


def check(r: dict) -> dict | None:
    """The planner against one row; None for a row it cannot judge (no shipped shapes, an unknown GPU or strategy)."""
    config = _model(r["model"])
    try:
        strategy, cap = strategies.from_row(r), formula.parse_gpu(r["gpu"])[1]
    except (ValueError, KeyError):
        return None
    if config is None:
        return None
    try:
        p = planner.peak(config, r["dtype"], strategy, int(r["batch"]), int(r["prompt_len"]), int(r["new_tokens"]), r["attn"])
    except planner.CANNOT_PLAN:  # a cache this architecture refuses: nothing to judge
        return None
    expandable = "expandable_segments:True" in str(r.get("cuda_alloc_conf") or "")
    need = p.needed(expandable)
    fits, ran = need <= cap, r["status"] == "ok"
    measured = float(r["peak_mem_mib"]) * 2**20 if ran and r.get("peak_mem_mib") is not None else float("nan")
    reserved = float(r["peak_reserved_mib"]) * 2**20 if ran and r.get("peak_reserved_mib") is not None else float("nan")
    return {"model": r["model"], "gpu": r["gpu"], "batch": int(r["batch"]), "tokens": f"{r['prompt_len']} + {r['new_tokens']}",
            "strategy / attention": r["label"], "allocator": "expandable" if expandable else "default",
            "measured peak GiB": measured / GIB, "predicted peak GiB": p.allocated / GIB,
            "error": p.allocated / measured - 1 if ran else float("nan"),
            "reserved GiB measured / predicted": (reserved / GIB, (need - planner.CONTEXT_BYTES) / GIB), "needs GiB": need / GIB,
            "predicted": "fits" if fits else "OOM", "ran": "ok" if ran else "OOM", "agree": fits == ran}


def main(argv: list[str]) -> int:
    store = "results"
    for a in argv:
        k, eq, v = a.partition("=")
        if k != "store" or not eq or not v:
            print(f"error: {a!r} is not an option of plan check; usage: python -m bench plan check [store=results]",
                  file=sys.stderr)
            return 2
        store = v
    out = [c for r in rows(store) if (c := check(r)) is not None]
    if not out:
        print("no GPU rows with a shipped model config in the store")
        return 0
    df = pd.DataFrame(out).sort_values(["gpu", "model", "batch", "tokens", "strategy / attention"], kind="stable")
    within = (df["error"].abs() <= 0.10).sum()
    measured = df["error"].notna().sum()
    print(f"{len(df)} GPU cells: predicted peak within 10% of the measured peak in {within} of {measured} that ran; "
          f"fit predicted correctly in {int(df['agree'].sum())} of {len(df)}.\n")
    fmt = {"measured peak GiB": "{:.2f}", "predicted peak GiB": "{:.2f}", "needs GiB": "{:.1f}", "error": "{:+.1%}"}
    for col, f in fmt.items():
        df[col] = [("–" if pd.isna(v) else f.format(v)) for v in df[col]]
    df["reserved GiB measured / predicted"] = [f"{'–' if pd.isna(m) else f'{m:.1f}'} / {p:.1f}"
                                               for m, p in df["reserved GiB measured / predicted"]]
    df["agree"] = ["yes" if a else "**no**" for a in df["agree"]]
    print(df.to_markdown(index=False, disable_numparse=True))
    return 0
