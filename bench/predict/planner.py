"""What a cell needs in device (and host) memory, predicted from the architecture's own code before anything loads.

peak allocated = weights + the strategy's up-front buffers + the larger of
  - the prefill: its live activations at their peak (bench.predict.activations, on the meta device) + the KV of
    the prompt (the whole prompt, sliding layers included: bench.predict.geometry's peak),
  - a decode step at the final length: its transients + the cache the strategy holds on the device then;
reserved = what PyTorch's caching allocator would hold for the same allocations (simulated: fragmentation
included, the figure that decides an out-of-memory). A cell fits when weights + buffers + reserved +
CONTEXT_BYTES (CUDA context, library handles) is within the card. Activations are measured for the dynamic
cache; other strategies swap in their own cache bytes (their transients are taken as the dynamic cache's). Where
the meta device can build a strategy's own cache (Strategy.meta_cache), the prefill and its first decode step
are also simulated in one pool with it, its own transients included: apart, each phase starts from an empty
pool and misses what the two strand. A strategy that allocates its own pool up front (paged) gives it from the
library's own sizing (Strategy.predicted_device_bytes, Strategy.buffer_bytes); one that keeps KV in host memory
gives that too (Strategy.predicted_host_bytes), checked against the host by bench.predict.host.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bench.predict import activations, geometry, formula, memo

# what the planner raises for a cache the architecture refuses (or a quantizer it cannot find): no plan, no crash
CANNOT_PLAN = (ValueError, ImportError, NotImplementedError)
CONTEXT_BYTES = 1 << 30  # the CUDA context and library handles: not allocated through PyTorch's caching allocator
CALL_STEPS = 1  # decode steps simulated after the prefill: the stranded segments appear at the first one
# The simulated allocator under-counts what a pressed card strands: on the H200 (torch 2.11), Llama-2-7B shapes at
# 1024 + 16 with the dynamic cache ran at batch 133 and ran out at 136 (results/boundary-dynamic-*), which the
# simulation's fragmentation under pressure brackets only when scaled by 1.51 to 1.60 (it said 154 unscaled).
# Measured for a cache that grows by copying; a preallocated one (static, paged) kept the unscaled simulation's
# calls right (static ran at 96 and ran out at 160, paged ran at 96), so it is not scaled.
PRESSED_UNDERCOUNT = 1.55
WORKSPACE_BYTES = 32 << 20  # cuBLAS's workspace on Hopper (PyTorch's default :4096:8), which PyTorch does allocate,
                            # one per CUDA stream matmuls run on (Strategy.matmul_streams)


@dataclass(frozen=True)
class Peak:
    weights: float
    kv_device: float        # the cache in device memory after the call
    prefill_live: float     # live non-weight bytes at the prefill's peak (KV of the prompt included; with the
                            # strategy's own cache on meta, the peak of the prefill and first decode step)
    decode_live: float      # the same for the last decode step
    reserved: float         # simulated allocator segments at the worse of the two (non-weight), on a roomy card
    buffers: float = 0.0    # allocated up front by the strategy's runner and held all call (a paged runner's IO)
    host: float = 0.0       # host memory the strategy holds at its peak, in a fresh process (pinned blocks)
    least: float = 0.0      # the least memory the allocator runs it in (non-weight): it releases wholly free
                            # segments when pressed, so only fragmentation inside used segments costs

    @property
    def allocated(self) -> float:
        return self.weights + self.buffers + max(self.prefill_live, self.decode_live)

    def needed(self, expandable: bool = False) -> float:
        """What the card must hold: weights, buffers, the allocator's segments and the context. With
        PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True segments grow in place: no fragmentation to pay."""
        live = max(self.prefill_live, self.decode_live)
        held = live if expandable else max(self.least or self.reserved, live)
        return self.weights + self.buffers + held + CONTEXT_BYTES


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


_PEAKS: dict = {}


def peak(config, dtype: str, strategy, batch: int, prompt_len: int, new_tokens: int, attn: str = "sdpa") -> Peak:
    """The predicted peak of one generate() call of this strategy (bytes); remembered per process."""
    attn = "sdpa" if attn not in ("eager", "flash_attention_2") else attn
    key = (config.to_json_string(), str(dtype), repr(strategy), batch, prompt_len, new_tokens, attn)
    if key not in _PEAKS:
        _PEAKS[key] = memo.remembered("peak", repr(key), lambda: _peak(config, dtype, strategy, batch, prompt_len,
                                                                         new_tokens, attn))
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
    first = call if call is not None else pre
    if call is not None:
        prefill = max(prefill, call.peak_bytes)
    frag = max(first.reserved_bytes - first.peak_bytes, dec.reserved_bytes - dec.peak_bytes, 0)
    pressed = max(first.capacity_bytes - first.peak_bytes, dec.capacity_bytes - dec.peak_bytes, 0)
    workspaces = WORKSPACE_BYTES * strategy.matmul_streams
    top = max(prefill, decode) + workspaces
    return Peak(formula.weight_bytes(config, dtype), kv_end, prefill + workspaces, decode + workspaces, top + frag,
                buffers=strategy.buffer_bytes(geo, attn, prompt_len, new_tokens, batch),
                host=strategy.predicted_host_bytes(geo, prompt_len, new_tokens, batch),
                least=top + pressed * (1.0 if strategy.preallocated else PRESSED_UNDERCOUNT))


def largest_batch(need: Callable[[int], float], capacity: float, limit: int = 1 << 16) -> int:
    """The largest b in [1, limit] with need(b) <= capacity (0: none), for a need growing about linearly in b:
    secant steps through the plans nearest the boundary (a handful of plans), then bisection if they stall."""
    known: dict[int, float] = {}
    lo, hi, b = 0, limit + 1, 1          # lo fits (or is 0), hi does not (or is past the limit)
    for step in range(64):
        known[b] = need(b)
        lo, hi = (b, hi) if known[b] <= capacity else (lo, b)
        if hi - lo <= 1:
            break
        side = sorted(k for k in known if k <= lo)[-2:] + sorted(k for k in known if k >= hi)[:1]
        b1, b2 = (side[-2], side[-1]) if len(side) >= 2 else (b, None)
        if b2 is None or known[b2] == known[b1] or step >= 8:
            guess = (lo + hi) // 2 if hi <= limit else 2 * max(lo, 1)
        else:
            guess = b1 + int((capacity - known[b1]) * (b2 - b1) // (known[b2] - known[b1]))
        b = min(max(guess, lo + 1), hi - 1, limit)
    return min(lo, limit)


def most_batch(config, dtype: str, strategy, prompt_len: int, new_tokens: int, attn: str, device_bytes: int,
               expandable: bool = False, limit: int = 1 << 16) -> int:
    """The largest batch whose predicted need fits `device_bytes` (0: not even one sequence)."""
    def need(b: int) -> float:
        return peak(config, dtype, strategy, b, prompt_len, new_tokens, attn).needed(expandable)

    return largest_batch(need, device_bytes, limit)


def predicted_peak(cfg, config, dtype: str, device: str) -> Optional[float]:
    """Predicted peak allocated bytes of a cell, or None where the architecture's code cannot be run on meta."""
    try:
        return peak(config, dtype, cfg.cache, cfg.batch, cfg.prompt_len, cfg.new_tokens, cfg.attn.name).allocated
    except Exception:  # noqa: BLE001 - a prediction we cannot make is no prediction, not a failed cell
        return None
