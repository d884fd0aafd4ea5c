"""What a cell needs in device memory, predicted from the architecture's own code before anything loads.

peak allocated = weights + the larger of
  - the prefill: its live activations at their peak (bench.predict.activations, on the meta device) + the KV of the prompt,
  - a decode step at the final length: its transients + the cache the strategy holds on the device then;
reserved = what PyTorch's caching allocator would hold for the same allocations (simulated: fragmentation
included, the figure that decides an out-of-memory). A cell fits when weights + reserved + CONTEXT_BYTES (CUDA
context, library workspaces) is within the card. Activations are measured for the dynamic cache; other
strategies swap in their own cache bytes (their transients are taken as the dynamic cache's). Where the meta
device can build a strategy's own cache (Strategy.meta_cache), the prefill and its first decode step are also
simulated in one pool with it, its own transients included: apart, each phase starts from an empty pool and
misses what the two strand.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.predict import activations, geometry, formula
from bench.predict.arch import arch_config, planned_dtype

# what the planner raises for a cache the architecture refuses (or a quantizer it cannot find): no plan, no crash
CANNOT_PLAN = (ValueError, ImportError, NotImplementedError)
CONTEXT_BYTES = 1 << 30  # the CUDA context and library handles: not allocated through PyTorch's caching allocator
CALL_STEPS = 1  # decode steps simulated after the prefill: the stranded segments appear at the first one
WORKSPACE_BYTES = 32 << 20  # cuBLAS's workspace on Hopper (PyTorch's default :4096:8), which PyTorch does allocate


@dataclass(frozen=True)
class Peak:
    weights: float
    kv_device: float        # the cache in device memory after the call
    prefill_live: float     # live non-weight bytes at the prefill's peak (KV of the prompt included; with the
                            # strategy's own cache on meta, the peak of the prefill and first decode step)
    decode_live: float      # the same for the last decode step
    reserved: float         # simulated allocator segments at the worse of the two (non-weight)

    @property
    def allocated(self) -> float:
        return self.weights + max(self.prefill_live, self.decode_live)

    def needed(self, expandable: bool = False) -> float:
        """What the card must hold: weights, the allocator's segments and the context. With
        PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True segments grow in place: no fragmentation to pay."""
        held = max(self.prefill_live, self.decode_live) if expandable else max(self.reserved, self.prefill_live, self.decode_live)
        return self.weights + held + CONTEXT_BYTES


def expandable_segments() -> bool:
    """Whether this process's CUDA allocator grows segments in place (PYTORCH_CUDA_ALLOC_CONF)."""
    return "expandable_segments:true" in os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "").replace(" ", "").lower()


def capacity(device: str) -> Optional[tuple[str, int]]:
    """(name, bytes) of the memory a cell on `device` uses."""
    if device == "cuda":
        import torch

        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        return p.name, int(p.total_memory)
    m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()) if Path("/proc/meminfo").exists() else None
    return ("host memory", int(m.group(1)) * 1024) if m else None


def load_dtype(cfg) -> str:
    return planned_dtype(cfg.model, arch_config(cfg.model))


_PEAKS: dict = {}


def peak(config, dtype: str, strategy, batch: int, prompt_len: int, new_tokens: int, attn: str = "sdpa") -> Peak:
    """The predicted peak of one generate() call of this strategy (bytes); remembered per process."""
    attn = "sdpa" if attn not in ("eager", "flash_attention_2") else attn
    key = (config.to_json_string(), str(dtype), repr(strategy), batch, prompt_len, new_tokens, attn)
    if key not in _PEAKS:
        _PEAKS[key] = _peak(config, dtype, strategy, batch, prompt_len, new_tokens, attn)
    return _PEAKS[key]


def _peak(config, dtype: str, strategy, batch: int, prompt_len: int, new_tokens: int, attn: str) -> Peak:
    geo = geometry.kv_geometry(config, dtype)
    pre = activations.prefill_peak_bytes(config, dtype, batch, prompt_len, attn)
    if strategy.holds_cache:
        dec = activations.decode_peak_bytes(config, dtype, batch, prompt_len + new_tokens - 1, attn)
    else:  # without a cache every step is a prefill of the whole sequence so far
        dec = activations.prefill_peak_bytes(config, dtype, batch, prompt_len + new_tokens - 1, attn)
    kv_end = strategy.predicted_device_bytes(geo, prompt_len, new_tokens, batch)
    kv_end = dec.kv_bytes if kv_end is None else kv_end
    kv_prompt = strategy.predicted_device_bytes(geo, prompt_len, 1, batch)
    kv_prompt = pre.kv_bytes if kv_prompt is None else kv_prompt
    prefill = pre.peak_bytes - pre.kv_bytes + kv_prompt
    decode = dec.peak_bytes - dec.kv_bytes + kv_end
    # the allocator's overhead over the live sum. Where the meta device can build the strategy's own cache: its
    # prefill and first decode steps in one pool (where large batches strand most), with its own transients (a
    # quantizer's float32 copies); elsewhere each phase alone, with the dynamic cache's pattern.
    own = strategy.meta_cache(prompt_len, new_tokens) if strategy.holds_cache else None
    try:
        call = None if own is None else activations.call_peak_bytes(
            config, dtype, batch, prompt_len, min(new_tokens - 1, CALL_STEPS), attn, *own)
    except ImportError:  # its optional package (quanto, hqq) is not installed here: plan it as the dynamic cache
        call = None
    if call is not None:
        first = call.reserved_bytes - call.peak_bytes
        prefill = max(prefill, call.peak_bytes)
    else:
        first = pre.reserved_bytes - pre.peak_bytes
    frag = max(first, dec.reserved_bytes - dec.peak_bytes, 0)
    return Peak(formula.weight_bytes(config, dtype), kv_end, prefill + WORKSPACE_BYTES, decode + WORKSPACE_BYTES,
                max(prefill, decode) + frag + WORKSPACE_BYTES)


def predicted_peak(cfg, config, dtype: str, device: str) -> Optional[float]:
    """Predicted peak allocated bytes of a cell, or None where the architecture's code cannot be run on meta."""
    try:
        return peak(config, dtype, cfg.cache, cfg.batch, cfg.prompt_len, cfg.new_tokens, cfg.attn.name).allocated
    except Exception:  # noqa: BLE001 - a prediction we cannot make is no prediction, not a failed cell
        return None


def refusal(cfg, device: str) -> Optional[str]:
    """Why the planner predicts this cell cannot fit on `device`, or None."""
    if not cfg.model.arch:  # shapes only known after fetching the config: the device answers
        return None
    mem = capacity(device)
    config = arch_config(cfg.model)
    dtype = planned_dtype(cfg.model, config)
    try:
        p = peak(config, dtype, cfg.cache, cfg.batch, cfg.prompt_len, cfg.new_tokens, cfg.attn.name)
    except Exception:  # noqa: BLE001
        return None
    need = p.needed(expandable_segments())
    if mem is None or need <= mem[1]:
        return None
    gib = 2**30
    return (f"batch={cfg.batch} x {cfg.prompt_len}+{cfg.new_tokens} tokens needs ~{need / gib:.1f} GiB "
            f"({p.weights / gib:.1f} weights, {p.kv_device / gib:.1f} KV, allocator {p.reserved / gib:.1f} in all "
            f"beyond the weights, {CONTEXT_BYTES / gib:.0f} context; {dtype}) but {mem[0]} has {mem[1] / gib:.1f} GiB")
