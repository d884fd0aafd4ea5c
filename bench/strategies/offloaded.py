"""DynamicCache(offloading=True): layers wait in host memory and are prefetched to the GPU one ahead.

Host memory: each offloaded layer's keys and values go to the host through `tensor.to("cpu", non_blocking=True)`
after every update, and a non-blocking copy to the CPU allocates pinned memory (torch's `_to_copy`), from the
caching host allocator: every block is rounded up to a power of two, kept when freed (never returned to the system
unless its cache is emptied) and handed out again only for a request of the same rounded size. So a call holds,
for every rounded size its layers pass through, a block per offloaded K and V tensor: a layer whose length crosses a
power of two during the call keeps a full set of blocks of both sizes, and the blocks stay with the process for
its next cells (kvbench keeps one worker process per model).
"""
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

    def predicted_host_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> float:
        return float(pinned_bytes(self.host_tensor_bytes(geometry, prompt_len, new_tokens, batch)))

    def host_tensor_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> list[list[int]]:
        """Per offloaded K or V tensor, the bytes it has at each length of the call (prompt, then one more per
        decode step; generate() feeds new_tokens - 1 of them). Layers transformers keeps on the device (sliding
        ones, with offload_only_non_sliding, and linear-attention states) are not offloaded."""
        e = geometry.dtype.itemsize
        lengths = range(prompt_len, prompt_len + max(new_tokens - 1, 0) + 1)
        return [[batch * g.kv_heads * n * d * e for n in lengths] for g in geometry.layers
                if g.kv_heads and g.decode_cap is None and not g.state_bytes for d in (g.head_dim_k, g.head_dim_v)]

    def quality_cache(self, model, max_len: int):
        from transformers import DynamicCache

        return DynamicCache(config=model.config, offloading=True)

    def teardown(self, model) -> None:
        """Give the pinned host blocks back: torch's caching host allocator keeps every block the offloaded copies
        took and reuses it only for a request of the same power-of-two size, so a worker that moves on to a larger
        batch would hold both (the H200 probe returned all 18 GiB of its 2-layer blocks this way)."""
        import torch

        if not torch.cuda.is_available():
            return
        # torch 2.11 has no public call for it yet; later releases name it torch.accelerator.empty_host_cache
        empty = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None) or getattr(
            torch._C, "_host_emptyCache", None)
        if empty is not None:
            empty()


PENDING_BLOCKS = 2  # per size: a layer's K and V freed by its prefetch, their copy still in flight when the next
                    # layer's offload asks for blocks of that size (reused once their events complete)


def rounded(nbytes: int) -> int:
    """The caching host allocator's block for a request: the next power of two."""
    return 1 << max(nbytes - 1, 0).bit_length()


def pinned_bytes(tensor_sizes: list[list[int]]) -> int:
    """Pinned bytes the caching host allocator holds after a call: per rounded size, one block per tensor that
    passes through that size, plus PENDING_BLOCKS."""
    users: dict[int, int] = {}
    for sizes in tensor_sizes:
        for b in {rounded(n) for n in sizes}:
            users[b] = users.get(b, 0) + 1
    return sum(b * (n + PENDING_BLOCKS) for b, n in users.items())

