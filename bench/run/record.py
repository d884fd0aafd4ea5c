"""The row a cell starts from: its conditions as requested, before anything loads (bench.store.schema.Record).

The runner fills in what loading and measuring find; a cell that dies leaves `failed_row` with whatever the
worker had already resolved.
"""
from __future__ import annotations

import datetime as dt

from bench.store import identity
from bench.store.schema import Record


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def conditions(cfg, device: str, gpu: str = "") -> Record:
    """A Record holding the conditions as requested (weights and dtype are replaced by what loaded)."""
    s = cfg.cache
    return Record(
        model=cfg.model.name, weights=cfg.weights, dtype=cfg.model.dtype, device=device, gpu=gpu,
        cache=s.name, strategy=s.label(), reference=s.reference, holds_cache=s.holds_cache,
        attn=cfg.attn.name, sdpa_backend=cfg.attn.sdpa_backend if cfg.attn.name == "sdpa" else "",
        compile=cfg.compile, compile_mode=cfg.compile_mode if cfg.compile == "auto" else "",
        batch=cfg.batch, prompt_len=cfg.prompt_len, new_tokens=cfg.new_tokens,
        warmup=cfg.warmup, seed=cfg.seed, settings=s.settings(),
        repeats_mode="auto" if cfg.repeats == "auto" else "fixed",
        precision_target=cfg.precision if cfg.repeats == "auto" else None, timestamp=now())


def failed_row(cfg, device: str, run_id: str, reason: str, status: str = "error", known: dict | None = None) -> dict:
    """The row of a cell that left no result of its own; `known` holds the conditions the worker had
    already resolved (loaded dtype and weights, GPU) when it died."""
    row = conditions(cfg, device).as_row()
    row.update(known or {})
    row.update(run_id=run_id, status=status, error=reason, timestamp=now())
    row["cell_id"] = identity.cell_id(row)
    return row
