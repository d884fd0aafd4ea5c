"""What continuous batching allocates up front, counted from its own classes built on the meta device.

generate_batch (transformers 5.24) resolves its ContinuousBatchingConfig from the workload (prompt length, new
tokens, requests), builds a PagedAttentionCache (one flat uint8 pool: the sectors asked for through num_blocks
plus two trash sectors) and the static input/output tensors of its batches (ContinuousBatchingIOs): among them,
for sdpa and eager, an attention mask of shape [1, 1, max_batch_tokens, pool tokens + max_batch_tokens] in the
model's dtype, per attention type. kvbench sets max_batch_tokens = batch x prompt, so the mask grows with the
square of the batch: 40.5 GiB at Llama-2-7B, batch 96, 1024 + 16 tokens, bf16, beside a 60.25 GiB pool.
With flash attention there is no mask; on a GPU, CUDA graphs are then on, and so is async batching, which keeps
two device IO sets and two pinned host ones (transformers' own rule, `decide_use_async_batching`).
"""
from __future__ import annotations

import copy
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

from bench.measure.cachebytes import stored_bytes, tensors


@dataclass(frozen=True)
class PagedFootprint:
    pool_bytes: int          # the PagedAttentionCache tensor, trash sectors included
    device_io_bytes: int     # static batch tensors on the device (masks, indices, ids), all IO sets
    host_io_bytes: int       # their pinned host mirrors (async batching only)
    max_batch_tokens: int
    async_batching: bool


@contextmanager
def _quiet():
    log = logging.getLogger("ContinuousBatchingLogger")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def attn_implementation(attn: str) -> str:
    """The attention continuous batching runs for an attention path (kvbench turns auto_switch_to_flash off):
    eager becomes paged|eager, the others stay as they are."""
    return "paged|eager" if attn == "eager" else attn


def footprint(config, dtype, attn: str, prompt_len: int, new_tokens: int, batch: int, page_size: int,
              num_blocks: int, cuda: bool = True) -> PagedFootprint:
    """Build the cache and the IO tensors generate_batch builds for this workload, on meta, and count them.
    `cuda`: decide CUDA graphs and async batching as on a GPU (where kvbench runs paged)."""
    import torch
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching import cache as cb_cache
    from transformers.generation.continuous_batching.cb_logits_processors import ContinuousBatchingLogitsProcessorList
    from transformers.generation.continuous_batching.distributed import DistributedHelper
    from transformers.generation.continuous_batching.initialization import resolve_continuous_batching_config
    from transformers.generation.continuous_batching.input_outputs import ContinuousBatchingIOs
    from transformers.generation.continuous_batching.utils import WorkloadHints, attn_mask_is_needed
    from transformers.generation.logits_process import LogitsProcessorList

    text = copy.deepcopy(config.get_text_config(decoder=True))
    text._attn_implementation = attn_implementation(attn)
    mask = attn_mask_is_needed(text)
    flash = "flash" in text._attn_implementation
    graphs = cuda and not mask  # decide_use_cuda_graphs' default on a GPU: graphs when no mask is needed
    blocks_per_request = math.ceil((prompt_len + new_tokens) / page_size) + 1
    cb = ContinuousBatchingConfig(
        num_blocks=num_blocks, max_batch_tokens=batch * prompt_len, allow_block_sharing=False, page_size=page_size,
        auto_switch_to_flash=False, use_cuda_graph=graphs, use_async_batching=graphs and not mask,
        # the decode fast path (flash_attn_with_kvcache's block table) exists on a GPU with flash only
        max_blocks_per_request=(blocks_per_request + blocks_per_request % 2) if cuda and flash else 0)
    with _quiet():  # off a GPU, transformers warns that graphs and the fast path are off: decided above
        cb = resolve_continuous_batching_config(text, cb, WorkloadHints(prompt_len, new_tokens, batch), False,
                                                torch.device("cuda" if cuda else "cpu"))
    dtype = getattr(torch, str(dtype).removeprefix("torch."))
    with mock.patch.object(cb_cache.PagedAttentionMemoryHandler, "get_available_memory", lambda self: 1 << 62):
        cache = cb_cache.PagedAttentionCache(text, cb, "meta", DistributedHelper(None, None, {}), dtype, True)
    processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList(), False, True)
    io = ContinuousBatchingIOs(cache, text, cb, torch.device("meta"), dtype, processors)
    io_bytes = sum(stored_bytes(t) for t in tensors([v for v in vars(io).values() if isinstance(v, (torch.Tensor, dict))]))
    sets = 2 if cb.use_async_batching else 1
    return PagedFootprint(cache.cache_tensor.untyped_storage().nbytes(), sets * io_bytes,
                          io_bytes * 2 if cb.use_async_batching else 0, cache.max_batch_tokens, cb.use_async_batching)
