"""Bytes a transformers Cache really holds: its own payload, not numel * element_size of a dense view.

Walks every layer's attributes; tensor subclasses (quanto's packed QTensors) are unpacked
through __tensor_flatten__ into data + scale + zero-point, HQQ's (tensor, meta) tuples through
their containers, and each storage is counted once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CachePayload:
    total_bytes: int = 0
    host_bytes: int = 0          # held in host memory while the model runs elsewhere (offloading)
    quantized_tokens: int = 0    # tokens stored quantized, summed over layers
    cached_tokens: int = 0       # tokens held, summed over layers


def _walk(obj, seen: set, out: list) -> None:
    if isinstance(obj, torch.Tensor):
        if type(obj) is not torch.Tensor and hasattr(obj, "__tensor_flatten__"):
            names, _ = obj.__tensor_flatten__()
            for n in names:
                _walk(getattr(obj, n), seen, out)
            return
        if obj.numel() == 0:
            return
        key = (obj.untyped_storage().data_ptr(), obj.device)
        if key in seen:
            return
        seen.add(key)
        out.append((obj.untyped_storage().nbytes(), obj.device))
    elif isinstance(obj, dict):
        for v in obj.values():
            _walk(v, seen, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk(v, seen, out)


def cache_payload(cache, compute_device: torch.device | str | None = None) -> CachePayload:
    """Count what `cache` (a transformers Cache, or None) holds right now."""
    res = CachePayload()
    if cache is None:
        return res
    pool = getattr(cache, "cache_tensor", None)  # PagedAttentionCache (5.24+): one flat pool, trash sectors included
    if pool is None and hasattr(cache, "key_cache"):  # PagedAttentionCache (5.17): per-layer block pools
        pool = [cache.key_cache, cache.value_cache]
    if pool is not None:  # a paged pool is allocated up front, whole
        found: list = []
        _walk(pool, set(), found)
        res.total_bytes = sum(n for n, _ in found)
        return res
    layers = getattr(cache, "layers", None)
    if layers is None:  # e.g. EncoderDecoderCache
        layers = getattr(getattr(cache, "self_attention_cache", None), "layers", [])
    dev = torch.device(compute_device) if compute_device is not None else None
    seen: set = set()
    for layer in layers:
        found: list = []
        _walk({k: v for k, v in vars(layer).items() if k != "cumulative_length"}, seen, found)
        for nbytes, d in found:
            res.total_bytes += nbytes
            if dev is not None and dev.type != "cpu" and d.type == "cpu":
                res.host_bytes += nbytes
        keys = getattr(layer, "keys", None)
        window = keys.shape[-2] if isinstance(keys, torch.Tensor) and keys.dim() == 4 else 0
        if hasattr(layer, "_quantized_keys"):
            total = int(layer.cumulative_length)
            res.cached_tokens += total
            res.quantized_tokens += total - window
        else:
            res.cached_tokens += int(layer.get_seq_length()) if hasattr(layer, "get_seq_length") else window
    return res
