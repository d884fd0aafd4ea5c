"""The cache-strategy interface. Everything specific to one strategy lives in its own module beside this one.

A strategy is a dataclass whose fields are its settings (they become row columns and part of the cell's
identity). conf/cache/<name>.yaml names the class with `_target_` and sets the fields; bench.cli.compose builds
it, and `check()` refuses bad settings before any model loads. The runner, quality, record, report and
compare only call these methods: none of them tests a cache name. Nothing here imports torch at module level,
so the parent process of `bench run` stays light.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Optional


class NotApplicable(Exception):
    """The strategy has no such thing (e.g. a generate() cache to score quality through)."""


@dataclass
class Strategy:
    name: ClassVar[str] = ""            # the row's `cache` column
    reference: ClassVar[bool] = False   # the full-precision default others are measured against
    holds_cache: ClassVar[bool] = True  # False: every step recomputes the whole context
    description: ClassVar[str] = ""     # one line for the README and report
    profiled: ClassVar[bool] = True     # its steps run in the calling thread, where the SDPA profiler sees them
    matmul_streams: ClassVar[int] = 1   # CUDA streams its forwards run matmuls on (each holds a cuBLAS workspace)
    preallocated: ClassVar[bool] = False  # its cache is allocated once, before the call: nothing grows by copying

    def __post_init__(self) -> None:
        self.check()

    @classmethod
    def applicable(cls, values: dict) -> tuple[str, ...]:
        """The settings that mean something with these values (all fields, unless a choice rules some out)."""
        from dataclasses import fields

        return tuple(f.name for f in fields(cls))

    # ---- settings ----
    def check(self) -> None:
        """Raise bench.config.checks.ConfigError (one line) for a bad setting."""

    def check_cell(self, cfg) -> None:
        """Refuse (ConfigError) a cell whose other conditions (attention path, lengths) these settings cannot
        run with; called with the whole RunConfig before anything loads."""

    def settings(self) -> dict:
        """Row columns that identify the cell, by name (the dataclass fields)."""
        return asdict(self)

    def label(self) -> str:
        """Short human name, e.g. 'quantized int4 (quanto)'."""
        return self.name

    # ---- running ----
    def unavailable_reason(self, model, device: str) -> Optional[str]:
        """Why this strategy cannot run here with this model, or None."""
        return None

    def attention(self, attn: str) -> str:
        """The attention implementation to set on the model for attention path `attn`."""
        return attn

    def generate_kwargs(self, model) -> dict:
        """generate() arguments selecting this cache, fresh for every call (generate mutates cache_config, and
        a cache object passed in must not carry one call's tokens into the next)."""
        return {"cache_implementation": self.name}

    def timed_call(self, model, ids, new_tokens: int, device: str, extra: dict):
        """One timed generation: (measure.Timing, output). `extra` holds generate() arguments from other conditions."""
        from bench.measure.clock import time_generate

        return time_generate(model, ids, new_tokens, {**self.generate_kwargs(model), **extra}, device)

    def cache_of(self, model, out) -> Any:
        """The cache object the last call left, to count its bytes."""
        # transformers 5.24 names it `cache` (past_key_values still answers, with a warning); 5.17 past_key_values
        cache = getattr(out, "cache", None)
        return cache if cache is not None else getattr(out, "past_key_values", None)

    def caveat(self, device: str) -> str:
        """A note the row must carry about what this strategy did here (empty: none)."""
        return ""

    def extra_columns(self, payload) -> dict:
        """Strategy-specific measured columns from the counted cache (bench.measure.cachebytes.CachePayload)."""
        return {}

    def teardown(self, model) -> None:
        """Release what the strategy keeps on the model between calls."""

    # ---- theory ----
    def predicted_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> Optional[float]:
        """Bytes the cache holds after one generate() call, from the architecture's geometry (bench.predict.geometry)."""
        return float(geometry.bytes(prompt_len, new_tokens - 1, batch))

    def predicted_device_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> Optional[float]:
        """The part of the cache held in device memory (what a fit check counts)."""
        return self.predicted_bytes(geometry, prompt_len, new_tokens, batch)

    def buffer_bytes(self, geometry, attn: str, prompt_len: int, new_tokens: int, batch: int) -> float:
        """Device bytes the strategy's own runner allocates up front and holds for the whole call, beside its cache
        and the model's forward (a paged runner's static batch tensors); 0: none."""
        return 0.0

    def predicted_host_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> float:
        """Host memory the strategy holds at its peak in a fresh process (an offloaded cache's pinned blocks);
        0: none."""
        return 0.0

    def meta_cache(self, prompt_len: int, new_tokens: int) -> Optional[tuple[Optional[str], int, Optional[dict]]]:
        """(cache_implementation, max_cache_len, cache_config) of the cache generate() builds here, where bench.predict.metarun can
        build it on the meta device, so a whole call's allocations (a quantizer's transients included) are simulated
        with the strategy's own cache; None where it cannot (host copies, a paged pool): the planner then uses the
        dynamic cache's allocation pattern with this strategy's bytes."""
        return None

    # ---- quality ----
    def quality_cache(self, model, max_len: int):
        """A fresh cache object to score perplexity through (None: no cache, every step recomputes)."""
        raise NotApplicable(f"cache={self.name} has no generate() cache to score quality through")
