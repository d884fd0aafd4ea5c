"""Activation peaks of generate()'s prefill and decode steps, measured on the meta device (bench.predict.metarun).

`prefill_peak_bytes` / `decode_peak_bytes` track every storage an op creates (weights and buffers excluded,
bench.predict.tracker), rounded up to 512 B as the CUDA caching allocator does, until it is freed: the peak of the live sum, its KV
share, the largest transient, the logits, and `reserved_bytes`, the allocator's segments simulated over the
same allocations (fragmentation: what decides OOM when long-lived KV blocks land in freed activation blocks).
Attention "eager" runs the eager code (q x kv scores); "sdpa" transformers' sdpa path (repeat_kv, masks,
transposes) with a fused kernel's output + float32 logsumexp; "flash_attention_2" a registered function with
flash's. Not seen: kernels' workspaces (cuBLAS, split-KV), the CUDA context, libraries outside PyTorch (their
PyTorch fallbacks are measured: mamba, linear attention), routing sizes read back from data (meta guesses).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.config.dtypes import torch_dtype
from bench.predict.allocator import least_capacity, reserved_peak
from bench.predict.metarun import GenerateLoop, MetaKernels, MetaSafe, meta_context, meta_model
from bench.predict.tracker import Tracker


@dataclass(frozen=True)
class ActivationPeak:
    peak_bytes: int        # live non-weight bytes at the peak, KV cache included
    kv_bytes: int          # the KV cache's share of the peak
    largest_bytes: int     # the largest single non-KV allocation live at the peak
    largest_op: str        # the op that made it
    logits_bytes: int      # the forward's logits (logits_to_keep=1), plus generate()'s float32 copy
    baseline_bytes: int    # live before the step (the cache a decode step starts from)
    reserved_bytes: int    # simulated caching-allocator segments for it all, on a roomy card (see reserved_peak)
    capacity_bytes: int = 0  # the least memory the allocator runs it in, releasing free segments (least_capacity)

    @property
    def transient_bytes(self) -> int:
        return self.peak_bytes - self.kv_bytes


def call_peak_bytes(config, dtype: str | torch.dtype, batch: int, prompt_len: int, steps: int,
                    attn: str = "sdpa", implementation: str | None = None, max_cache_len: int = 0,
                    cache_config: dict | None = None) -> ActivationPeak:
    """A whole call as the allocator sees it: the prefill and then `steps` decode steps in one stream, with the
    cache generate() builds for `implementation` (None: dynamic) and `cache_config`, and generate()'s float32 copy
    of each step's last logits (the step's output dropped before the next, as generate() does). Simulated apart,
    each phase starts from an empty pool; together, the first decode step's larger KV blocks cannot reuse the
    prefill's freed ones, and activations split the segments the prompt's KV left: the reserved figure that
    decides an OOM at large batch. largest_bytes and baseline_bytes are not tracked over a whole call (0)."""
    model = meta_model(config, torch_dtype(dtype), attn)
    with meta_context(MetaKernels()):
        with Tracker.of(model) as tracker:
            run = GenerateLoop(model, batch, implementation, max_cache_len, cache_config)
            kv: set = set()
            for tokens in [prompt_len] + [1] * steps:
                out = run.step(tokens)
                logits = out.logits[:, -1, :].to(dtype=torch.float32, copy=True)  # generate()'s next_token_logits
                logits_bytes = sum(tracker.rounded(x.untyped_storage().nbytes()) for x in (out.logits, logits))
                del out
                kv |= tracker.adopt(run.cache)
    return ActivationPeak(
        peak_bytes=tracker.peak, kv_bytes=sum(n for k, (n, _) in tracker.at_peak.items() if k in kv),
        largest_bytes=0, largest_op="", baseline_bytes=0, logits_bytes=logits_bytes,
        reserved_bytes=reserved_peak(tracker.events), capacity_bytes=least_capacity(tracker.events))


def _measure(model, batch: int, warmup: list[int], tokens: int) -> ActivationPeak:
    with meta_context(MetaKernels()):
        with MetaSafe():
            run = GenerateLoop(model, batch)
            for n in warmup:
                run.step(n)
        with Tracker.of(model) as tracker:
            kv = tracker.adopt(run.cache)
            base = tracker.peak = tracker.now
            out = run.step(tokens)
            logits = out.logits[:, -1, :].to(dtype=torch.float32, copy=True)  # generate()'s next_token_logits
            kv |= tracker.adopt(run.cache)
    largest = max(((n, op) for k, (n, op) in tracker.at_peak.items() if k not in kv), default=(0, ""))
    return ActivationPeak(
        peak_bytes=tracker.peak, kv_bytes=sum(n for k, (n, _) in tracker.at_peak.items() if k in kv),
        largest_bytes=largest[0], largest_op=largest[1], baseline_bytes=base,
        logits_bytes=sum(tracker.rounded(x.untyped_storage().nbytes()) for x in (out.logits, logits)),
        reserved_bytes=reserved_peak(tracker.events), capacity_bytes=least_capacity(tracker.events))


def prefill_peak_bytes(config, dtype: str | torch.dtype, batch: int, prompt_len: int,
                       attn: str = "sdpa") -> ActivationPeak:
    """Peak of live non-weight bytes during generate()'s prefill forward of batch x prompt_len tokens."""
    return _measure(meta_model(config, torch_dtype(dtype), attn), batch, [], prompt_len)


def decode_peak_bytes(config, dtype: str | torch.dtype, batch: int, context_len: int,
                      attn: str = "sdpa") -> ActivationPeak:
    """Peak during one decode step with context_len tokens already cached (reached by a prefill of
    context_len - 1 and one decode step, so sliding layers are in their steady state)."""
    warm = [context_len - 1, 1] if context_len > 1 else [1]
    return _measure(meta_model(config, torch_dtype(dtype), attn), batch, warm, 1)
