"""DynamicCache, transformers' default: grows by one token per step (sliding-window layers stop growing)."""
from __future__ import annotations

from dataclasses import dataclass

from bench.strategies.base import Strategy


@dataclass
class Dynamic(Strategy):
    name = "dynamic"
    reference = True  # the full-precision default every other strategy is measured against
    description = "DynamicCache: grows by one token per step (transformers' default)"

    def meta_cache(self, prompt_len: int, new_tokens: int):
        return None, 0, None  # generate()'s default cache

    def quality_cache(self, model, max_len: int):
        from transformers import DynamicCache

        return DynamicCache(config=model.config)
