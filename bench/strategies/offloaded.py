"""DynamicCache(offloading=True): layers wait in host memory and are prefetched to the GPU one ahead."""
from __future__ import annotations

from dataclasses import dataclass

from bench.strategies.base import Strategy


@dataclass
class Offloaded(Strategy):
    name = "offloaded"
    description = "DynamicCache(offloading=True): layers wait in host memory, prefetched one ahead"

    def unavailable_reason(self, model, device: str):
        if device != "cuda":
            return f"cache={self.name} moves layers between GPU and host memory; it needs device=cuda"
        return None

    def extra_columns(self, payload) -> dict:
        return {"kv_host_mib": payload.host_bytes / 2**20}

    def predicted_device_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int):
        # the layer in use and the one prefetched ahead stay on the device; the rest waits in host memory
        full = self.predicted_bytes(geometry, prompt_len, new_tokens, batch)
        layers = max(len(geometry.layers), 1)
        return full * min(2, layers) / layers

    def quality_cache(self, model, max_len: int):
        from transformers import DynamicCache

        return DynamicCache(config=model.config, offloading=True)
