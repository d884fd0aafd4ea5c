"""StaticCache: preallocated to prompt + new tokens; on a GPU, generate() compiles its decode step."""
from __future__ import annotations

from dataclasses import dataclass

from bench.strategies.base import Strategy


@dataclass
class Static(Strategy):
    name = "static"
    preallocated = True
    description = "StaticCache: preallocated to prompt_len + new_tokens; generate() compiles it on a GPU"

    def unavailable_reason(self, model, device: str):
        # transformers sizes a static cache to the longest any earlier call used: a cell must not inherit that
        model.__dict__.pop("_previous_max_cache_length", None)
        return None

    def teardown(self, model) -> None:
        # generate() keeps its compiled forward (CUDA graphs and their memory pool) on the model: a later
        # cell must not carry it in its peak
        model.__dict__.pop("_compiled_call", None)

    def predicted_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> float:
        # generate() sizes it to max_length - 1: the last token is never fed back
        return float(geometry.static_bytes(prompt_len + new_tokens - 1, batch))

    def meta_cache(self, prompt_len: int, new_tokens: int):
        return "static", prompt_len + new_tokens - 1, None  # generate() sizes it to max_length - 1

    def quality_cache(self, model, max_len: int):
        from transformers import StaticCache

        return StaticCache(config=model.config, max_cache_len=max_len)
