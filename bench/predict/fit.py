"""The pre-flight fit check: the one question a run asks prediction before a cell loads.

`preflight(cfg, device)` plans the cell (bench.predict.planner) and answers with the reason it cannot fit, on the
device (its need against the card) or on the host (pinned memory against what the process can still take), or
None. A cell whose shapes are not known before loading, or whose architecture cannot be planned, is let through:
the device answers.
"""
from __future__ import annotations

from typing import Optional

GIB = 2**30


def _config(cfg):
    from bench.predict.arch import arch_config, planned_dtype

    config = arch_config(cfg.model)
    return config, planned_dtype(cfg.model, config)


def load_dtype(cfg) -> str:
    """The dtype the cell's model will be built in."""
    return _config(cfg)[1]


def preflight(cfg, device: str) -> Optional[str]:
    """Why this cell cannot fit (device memory, or host memory for a strategy keeping KV there), or None."""
    from bench.predict import planner
    from bench.predict.host import host_refusal

    if not cfg.model.arch:  # shapes only known after fetching the config: the device answers
        return None
    config, dtype = _config(cfg)
    try:
        p = planner.peak(config, dtype, cfg.cache, cfg.batch, cfg.prompt_len, cfg.new_tokens, cfg.attn.name)
    except Exception:  # noqa: BLE001 - no plan, no refusal
        return None
    cells = f"batch={cfg.batch} x {cfg.prompt_len}+{cfg.new_tokens} tokens"
    mem = planner.capacity(device)
    need = p.needed(planner.expandable_segments())
    if mem is not None and need > mem[1]:
        buffers = f", {p.buffers / GIB:.1f} runner buffers" if p.buffers else ""
        return (f"{cells} needs ~{need / GIB:.1f} GiB ({p.weights / GIB:.1f} weights, {p.kv_device / GIB:.1f} KV"
                f"{buffers}, allocator {p.reserved / GIB:.1f} in all beyond the weights, "
                f"{planner.CONTEXT_BYTES / GIB:.0f} context; {dtype}) but {mem[0]} has {mem[1] / GIB:.1f} GiB")
    if device == "cuda" and (why := host_refusal(p.host)):
        return f"{cells}: {why}"
    return None
