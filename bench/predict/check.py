"""The planner held against stored GPU rows: `check(row)` judges one, `table(rows)` judges many.

The caller picks the rows (the command line: each GPU cell's newest ok or out-of-memory row, the planner's own
refusals left out); rows are plain dicts with the store's columns, plus `label` (the strategy / attention text to
show). For each row whose model ships its shapes in conf/model, the planner predicts the peak allocated bytes and
whether the cell fits the GPU, under the allocator setting the row ran with, and sets both against what the GPU
said: the measured peak_mem_mib, and whether the row ran or ran out.
"""
from __future__ import annotations

import math

from bench.predict import formula, planner
from bench import strategies
from bench.config.paths import CONF_DIR
from bench.config.settings import ModelConfig
from bench.predict.arch import arch_config

GIB = 2**30
WITHIN = 0.10  # a peak within 10% of the measured one counts as right


def _model(name: str):
    from omegaconf import OmegaConf


    path = CONF_DIR / "model" / f"{name}.yaml"
    return arch_config(ModelConfig(**OmegaConf.to_container(OmegaConf.load(path)))) if path.exists() else None


def _number(v) -> float:
    return float(v) if v is not None and v == v else math.nan


def check(r: dict) -> dict | None:
    """The planner against one row; None for a row it cannot judge (no shipped shapes, an unknown GPU or strategy,
    a cache the architecture refuses)."""
    config = _model(r["model"])
    try:
        strategy, cap = strategies.from_row(r), formula.parse_gpu(r["gpu"])[1]
    except (ValueError, KeyError):
        return None
    if config is None:
        return None
    try:
        p = planner.peak(config, r["dtype"], strategy, int(r["batch"]), int(r["prompt_len"]), int(r["new_tokens"]), r["attn"])
    except planner.CANNOT_PLAN:
        return None
    expandable = "expandable_segments:True" in str(r.get("cuda_alloc_conf") or "")
    need = p.needed(expandable)
    fits, ran = need <= cap, r["status"] == "ok"
    measured = _number(r.get("peak_mem_mib")) * 2**20 if ran else math.nan
    reserved = _number(r.get("peak_reserved_mib")) * 2**20 if ran else math.nan
    return {"model": r["model"], "gpu": r["gpu"], "batch": int(r["batch"]), "tokens": f"{r['prompt_len']} + {r['new_tokens']}",
            "strategy / attention": r.get("label") or f"{strategy.label()} / {r['attn']}",
            "allocator": "expandable" if expandable else "default",
            "measured peak GiB": measured / GIB, "predicted peak GiB": p.allocated / GIB,
            "error": p.allocated / measured - 1 if ran else math.nan,
            "reserved GiB measured / predicted": (reserved / GIB, (need - planner.CONTEXT_BYTES) / GIB),
            "needs GiB": need / GIB, "host GiB": p.host / GIB,
            "predicted": "fits" if fits else "OOM", "ran": "ok" if ran else "OOM", "agree": fits == ran}


def table(rows: list[dict]) -> str:
    """The summary line and a markdown table of every row the planner can judge."""
    import pandas as pd

    out = [c for r in rows if (c := check(r)) is not None]
    if not out:
        return "no GPU rows with a shipped model config"
    df = pd.DataFrame(out).sort_values(["gpu", "model", "batch", "tokens", "strategy / attention"], kind="stable")
    within = int((df["error"].abs() <= WITHIN).sum())
    measured = int(df["error"].notna().sum())
    head = (f"{len(df)} GPU cells: predicted peak within {WITHIN:.0%} of the measured peak in {within} of {measured} "
            f"that ran; fit predicted correctly in {int(df['agree'].sum())} of {len(df)}.\n")
    fmt = {"measured peak GiB": "{:.2f}", "predicted peak GiB": "{:.2f}", "needs GiB": "{:.1f}", "error": "{:+.1%}"}
    for col, f in fmt.items():
        df[col] = [("–" if v != v else f.format(v)) for v in df[col]]
    df["host GiB"] = [f"{v:.1f}" if v else "–" for v in df["host GiB"]]
    df["reserved GiB measured / predicted"] = [f"{'–' if m != m else f'{m:.1f}'} / {p:.1f}"
                                               for m, p in df["reserved GiB measured / predicted"]]
    df["agree"] = ["yes" if a else "**no**" for a in df["agree"]]
    return head + "\n" + df.to_markdown(index=False, disable_numparse=True)
