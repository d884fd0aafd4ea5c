"""Bytes a transformers Cache really holds: its own payload, not numel * element_size of a dense view.

The one walker of a cache's tensors (bench.predict counts meta caches with it too): every layer's attributes,
tensor subclasses (quanto's packed QTensors) unpacked through __tensor_flatten__ into data + scale + zero-point,
HQQ's (tensor, meta) tuples through their containers, `cumulative_length` left out (a counter, not a payload),
and each storage counted once (by storage identity, so it works on the meta device as on a GPU).

Two figures per cache: the storages the tensors keep alive (`total_bytes`, what memory holds), and the
tensors' own shapes (`logical_bytes`). They differ where a layer keeps a view of a larger tensor: a sliding
layer slices its last `window - 1` tokens out of the concatenation it just made, so its storage is that whole
concatenation (the prompt, right after a prefill; `window` tokens after a decode step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CachePayload:
    total_bytes: int = 0         # storages kept alive: what device (or host) memory holds
    logical_bytes: int = 0       # the tensors as shaped (a view counts its own elements)
    host_bytes: int = 0          # of total_bytes, held in host memory while the model runs elsewhere (offloading)
    quantized_tokens: int = 0    # tokens stored quantized, summed over layers
    cached_tokens: int = 0       # tokens held, summed over layers


def cache_layers(cache) -> list:
    """The layers of a transformers Cache (the self-attention side of an encoder-decoder one); [] for none."""
    if hasattr(cache, "self_attention_cache"):  # EncoderDecoderCache
        cache = cache.self_attention_cache
    return list(getattr(cache, "layers", None) or [])


def storage_id(t: torch.Tensor) -> int:
    """Identity of the storage under a tensor: equal for a tensor and all its views, on any device (meta too)."""
    return t.untyped_storage()._cdata


def tensors(obj, seen: set | None = None) -> list[torch.Tensor]:
    """Every plain tensor under obj (tensor subclasses unpacked, dicts / lists / tuples walked, empty tensors
    skipped), the first of each storage only; `seen` (storage ids) carries over between calls."""
    seen = set() if seen is None else seen
    found, todo = [], [obj]
    while todo:
        o = todo.pop()
        if isinstance(o, torch.Tensor):
            if type(o) is not torch.Tensor and hasattr(o, "__tensor_flatten__"):
                todo.extend(getattr(o, n) for n in o.__tensor_flatten__()[0])
            elif o.numel() and storage_id(o) not in seen:
                seen.add(storage_id(o))
                found.append(o)
        elif isinstance(o, dict):
            todo.extend(o.values())
        elif isinstance(o, (list, tuple)):
            todo.extend(o)
    return found


def layer_tensors(layer, seen: set | None = None) -> list[torch.Tensor]:
    """Every tensor a cache layer holds (its attributes but `cumulative_length`), each storage once."""
    return tensors({k: v for k, v in vars(layer).items() if k != "cumulative_length"}, seen)


def stored_bytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def shaped_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def cache_payload(cache, compute_device: torch.device | str | None = None) -> CachePayload:
    """Count what `cache` (a transformers Cache, or None) holds right now."""
    res = CachePayload()
    if cache is None:
        return res
    pool = getattr(cache, "cache_tensor", None)  # PagedAttentionCache (5.24+): one flat pool, trash sectors included
    if pool is None and hasattr(cache, "key_cache"):  # PagedAttentionCache (5.17): per-layer block pools
        pool = [cache.key_cache, cache.value_cache]
    if pool is not None:  # a paged pool is allocated up front, whole
        found = tensors(pool)
        res.total_bytes = sum(stored_bytes(t) for t in found)
        res.logical_bytes = sum(shaped_bytes(t) for t in found)
        return res
    dev = torch.device(compute_device) if compute_device is not None else None
    seen: set = set()
    for layer in cache_layers(cache):
        for t in layer_tensors(layer, seen):
            res.total_bytes += stored_bytes(t)
            res.logical_bytes += shaped_bytes(t)
            if dev is not None and dev.type != "cpu" and t.device.type == "cpu":
                res.host_bytes += stored_bytes(t)
        keys = getattr(layer, "keys", None)
        window = keys.shape[-2] if isinstance(keys, torch.Tensor) and keys.dim() == 4 else 0
        if hasattr(layer, "_quantized_keys"):
            total = int(layer.cumulative_length)
            res.cached_tokens += total
            res.quantized_tokens += total - window
        else:
            res.cached_tokens += int(layer.get_seq_length()) if hasattr(layer, "get_seq_length") else window
    return res
