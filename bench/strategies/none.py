"""No KV cache: generate(use_cache=False) recomputes attention over the whole sequence at every step."""
from __future__ import annotations

from dataclasses import dataclass

from bench.strategies.base import Strategy


@dataclass
class NoCache(Strategy):
    name = "none"
    holds_cache = False
    description = "use_cache=False: every step recomputes attention over the whole sequence"

    def generate_kwargs(self, model) -> dict:
        return {"use_cache": False}

    def predicted_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> float:
        return 0.0

    def quality_cache(self, model, max_len: int):
        return None  # no cache: perplexity is one full forward, as every step recomputes anyway
