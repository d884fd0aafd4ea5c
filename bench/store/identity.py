"""One cell identity: the conditions a measurement ran under, as they finally ran.

A cell is model, weights and dtype as loaded, device, GPU model, batch, lengths, the strategy with its
settings, attention, SDPA backend, compile (and its mode where one was chosen) and seed. Environment columns (library versions, host, git sha)
describe a row and never identify a cell. The runner stores `cell_id` once the model has loaded; resume,
report and compare all recompute the same key from a row's columns with `cell_key`, so rows written before
this module existed match rows written after it. No torch, no pandas: the analysis side imports this too.
"""
from __future__ import annotations

import hashlib
import json
import math

# Conditions every row has, in display order. The strategy's own settings join them by name (strategy_keys).
BASE_KEYS = ("model", "weights", "dtype", "device", "gpu", "batch", "prompt_len", "new_tokens",
             "cache", "attn", "sdpa_backend", "compile", "seed")
# Strategy settings of rows written before strategies named their own (schema 1): the quantized cache's and
# the paged cache's block size. A setting enters the identity only where a row has a value for it.
LEGACY_SETTING_KEYS = ("nbits", "quant_backend", "residual_length", "q_group_size", "axis_key", "axis_value",
                       "block_size")


def text(v) -> str:
    """Canonical text of a condition value: equal conditions compare equal whatever a reader did to them
    (pandas turns ints into floats next to missing values, None into NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def setting_keys(row) -> tuple[str, ...]:
    """Names of the strategy settings that identify this row's cell, sorted."""
    keys = row.get("strategy_keys")
    if not isinstance(keys, (list, tuple)):  # a schema-1 row
        keys = LEGACY_SETTING_KEYS
    return tuple(sorted(k for k in keys if text(row.get(k)) != ""))


def cell_key(row, without: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...]:
    """The identity as sorted (name, text) pairs. `without` drops conditions a caller deliberately
    compares across (compare drops 'gpu' to set one GPU against another)."""
    names = [k for k in BASE_KEYS if k not in without] + [k for k in setting_keys(row) if k not in without]
    # a chosen torch.compile mode makes another cell; transformers' own (empty or "auto") keeps older rows' ids
    if text(row.get("compile_mode")) not in ("", "auto") and "compile_mode" not in without:
        names.append("compile_mode")
    return tuple(sorted((k, text(row.get(k))) for k in names))


def cell_id(row, without: tuple[str, ...] = ()) -> str:
    """A short stable hash of `cell_key`."""
    key = json.dumps(cell_key(row, without), separators=(",", ":"))
    return hashlib.sha1(key.encode()).hexdigest()[:12]
