"""StaticCache(offloading=True): a preallocated cache whose layers live in host memory between uses."""
from __future__ import annotations

from dataclasses import dataclass

from bench.strategies.offloaded import Offloaded
from bench.strategies.static import Static


@dataclass
class OffloadedStatic(Offloaded):
    name = "offloaded_static"
    preallocated = True
    description = "StaticCache(offloading=True): preallocated, layers in host memory between uses"

    def unavailable_reason(self, model, device: str):
        return Offloaded.unavailable_reason(self, model, device) or Static.unavailable_reason(self, model, device)

    def teardown(self, model) -> None:
        Static.teardown(self, model)
        Offloaded.teardown(self, model)

    def predicted_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> float:
        return Static.predicted_bytes(self, geometry, prompt_len, new_tokens, batch)

    def host_tensor_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> list[list[int]]:
        # preallocated to prompt + new tokens - 1: one size per tensor for the whole call
        n, e = prompt_len + new_tokens - 1, geometry.dtype.itemsize
        return [[batch * g.kv_heads * n * d * e] for g in geometry.layers
                if g.kv_heads and g.decode_cap is None and not g.state_bytes for d in (g.head_dim_k, g.head_dim_v)]

    def quality_cache(self, model, max_len: int):
        from transformers import StaticCache

        return StaticCache(config=model.config, max_cache_len=max_len, offloading=True)
