"""A StaticCache preallocated to a fixed token budget, as a server sizes it, rather than to each call.

This is also the worked example of adding a strategy (README "Adding a strategy"): this module and
conf/cache/static_budget.yaml are all it took. A setting (max_cache_len) with its checks, a cache object
built per call and passed to generate(), its predicted bytes, and the cache quality is scored through.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.config import checks
from bench.config.checks import ConfigError
from bench.strategies.base import Strategy


@dataclass
class StaticBudget(Strategy):
    max_cache_len: int = 4096   # tokens preallocated per sequence, whatever the call uses

    name = "static_budget"
    preallocated = True
    description = "StaticCache preallocated to max_cache_len tokens (a serving budget), passed to generate()"

    def check(self) -> None:
        checks.integer("cache.max_cache_len", self.max_cache_len, 1)

    def check_cell(self, cfg) -> None:
        if cfg.prompt_len + cfg.new_tokens - 1 > self.max_cache_len:
            raise ConfigError(f"cache.max_cache_len={self.max_cache_len} is shorter than prompt_len + new_tokens - 1 = "
                              f"{cfg.prompt_len + cfg.new_tokens - 1}; raise it or shorten the cell")

    def label(self) -> str:
        return f"static_budget ({self.max_cache_len} tokens)"

    def generate_kwargs(self, model) -> dict:
        return {"past_key_values": self.quality_cache(model, self.max_cache_len)}

    def teardown(self, model) -> None:
        model.__dict__.pop("_compiled_call", None)  # as Static: no compiled graphs carried into the next cell

    def predicted_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> float:
        return float(geometry.static_bytes(self.max_cache_len, batch))

    def meta_cache(self, prompt_len: int, new_tokens: int):
        return "static", self.max_cache_len, None

    def quality_cache(self, model, max_len: int):
        from transformers import StaticCache

        return StaticCache(config=model.config, max_cache_len=max(self.max_cache_len, max_len))
