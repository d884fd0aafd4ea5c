"""Prediction from the architecture's own code on the meta device: KV geometry, activations, the planner.

The questions other stages ask (each imports torch only when called):
  preflight(cfg, device)   -> the reason a cell cannot fit (device or host memory), or None     (bench.predict.fit)
  load_dtype(cfg)          -> the dtype the cell's model will be built in                         (bench.predict.fit)
  columns(config, dtype)   -> the row's geometry columns: kv_heads, head dims, window, ...       (bench.predict.row_columns)
  split_plan(...)          -> memory per GPU of a model split over several with accelerate      (bench.predict.split)
"""
from __future__ import annotations

from typing import Optional


def preflight(cfg, device: str) -> Optional[str]:
    from bench.predict.fit import preflight as ask

    return ask(cfg, device)


def load_dtype(cfg) -> str:
    from bench.predict.fit import load_dtype as dtype_of

    return dtype_of(cfg)


def columns(config, dtype) -> dict:
    from bench.predict.row_columns import columns as read

    return read(config, dtype)


def split_plan(config, dtype, strategy, batch: int, prompt_len: int, new_tokens: int, gpus: int,
               gpu_bytes: int, attn: str = "sdpa") -> list[dict]:
    from bench.predict.split import split_plan as plan

    return plan(config, dtype, strategy, batch, prompt_len, new_tokens, gpus, gpu_bytes, attn)
