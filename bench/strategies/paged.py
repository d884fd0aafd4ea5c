"""Paged attention through transformers' continuous batching (generate_batch): a block pool sized up front.

The timed call is its own: continuous batching runs its steps in a thread and stamps every token, so the
clock is read from those stamps. Continuous batching ignores min_new_tokens, so EOS is disabled
(eos_token_id=-1) to force the length; the pool is sized to this workload (transformers' default takes about
90% of free memory); block sharing (prefix caching) is off, because the manager persists across warm-up and
repeats, which send the same prompts: with it every timed call after the first skipped most of its prefill.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bench.config import checks
from bench.config.checks import ConfigError
from bench.strategies.base import NotApplicable, Strategy


def _config_fields() -> set:
    import dataclasses

    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    return {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}


_FOOTPRINTS: dict = {}


@dataclass
class Paged(Strategy):
    block_size: int = 256  # tokens per block: transformers' default; flash-attn's paged kernel needs a multiple of 256

    name = "paged"
    preallocated = True
    description = "PagedAttention block pool through continuous batching (generate_batch)"
    profiled = False  # continuous batching steps in a thread of its own
    matmul_streams = 2  # its forwards run on a compute stream of its own, beside the default stream's workspace

    def check(self) -> None:
        checks.integer("cache.block_size", self.block_size, 1)

    def check_cell(self, cfg) -> None:
        if cfg.compile == "off":
            raise ConfigError("compile=off does not apply to cache=paged: continuous batching decides its own "
                              "graph capture; leave compile=auto")
        if cfg.attn.name == "flash_attention_2" and self.block_size % 256:
            raise ConfigError(f"cache.block_size={self.block_size} must be a multiple of 256 with "
                              "attn=flash_attention_2 (flash-attn's paged kernel requires it)")

    def label(self) -> str:
        return f"paged ({self.block_size}-token blocks)"

    def attention(self, attn: str) -> str:
        if attn == "flex_attention":  # raised here, before any call: the cell is unavailable, not an error
            raise ValueError("continuous batching (cache=paged) runs eager, sdpa or flash attention, not flex_attention")
        # Left alone, continuous batching swaps sdpa/eager for flash-attn when that is installed. transformers
        # 5.17: paged|<attn> runs exactly the path requested. 5.24: attention is named plainly (paged|sdpa is
        # read as sdpa; only eager keeps a paged| kernel) and the timed call turns auto_switch_to_flash off.
        return attn if "auto_switch_to_flash" in _config_fields() and attn != "eager" else f"paged|{attn}"

    def blocks(self, prompt_len: int, new_tokens: int, batch: int) -> int:
        return batch * math.ceil((prompt_len + new_tokens) / self.block_size)

    def timed_call(self, model, ids, new_tokens: int, device: str, extra: dict):
        import numpy as np
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        from bench.measure.clock import ShortGeneration, Timing, now_ms, sync
        from bench.measure.watch import logged

        batch, prompt_len = ids.shape
        fields = _config_fields()  # 5.24 calls a block a page and may swap in flash-attn unless told not to
        extra = {"auto_switch_to_flash": False} if "auto_switch_to_flash" in fields else {}
        extra["page_size" if "page_size" in fields else "block_size"] = self.block_size
        cb_cfg = ContinuousBatchingConfig(num_blocks=self.blocks(prompt_len, new_tokens, batch),
                                          max_batch_tokens=batch * prompt_len, allow_block_sharing=False, **extra)
        gen_cfg = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
        inputs = ids.tolist()
        sync(device)
        t0 = now_ms()
        # its generation loop runs in a thread that logs a failure instead of raising it: keep what it says
        with logged("ContinuousBatchingLogger", level=40) as errors:  # logging.ERROR
            out = model.generate_batch(inputs=inputs, generation_config=gen_cfg, continuous_batching_config=cb_cfg,
                                       record_timestamps=True, persistent_manager=True, warmup=False)
        results = list(out.values())
        produced = min((len(r.generated_tokens) for r in results), default=0)
        if produced != new_tokens or len(results) != batch:
            why = f"; its thread logged: {errors[0].splitlines()[0]}" if errors else ""
            raise ShortGeneration(f"asked for {batch} x {new_tokens} new tokens, continuous batching produced "
                                  f"{len(results)} x {produced}{why}")
        # Per position, the slowest sequence of the batch decides when that token is out for all. The call
        # ends at its last token: generate_batch then stops its thread and collects garbage (~0.5 s).
        tokens = np.array([r.timestamps[:new_tokens] for r in results]).max(axis=0) * 1e3 - t0
        return Timing(e2e_ms=float(tokens[-1]), ttft_ms=float(tokens[0]), step_ms=list(np.diff(tokens)),
                      produced=produced), out

    def cache_of(self, model, out):
        manager = getattr(model, "_cached_continuous_batching_manager", None)
        return getattr(getattr(manager, "batch_processor", None), "cache", None) if manager else None

    def predicted_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int):
        return None  # a pool sized up front (plus the blocks transformers reserves), not by the sequence

    def _footprint(self, geometry, attn: str, prompt_len: int, new_tokens: int, batch: int):
        from bench.strategies.paged_pool import footprint

        key = (geometry.config.to_json_string(), str(geometry.dtype), attn, prompt_len, new_tokens, batch, self.block_size)
        if key not in _FOOTPRINTS:
            _FOOTPRINTS[key] = footprint(geometry.config, geometry.dtype, attn, prompt_len, new_tokens, batch,
                                         self.block_size, self.blocks(prompt_len, new_tokens, batch))
        return _FOOTPRINTS[key]

    def predicted_device_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int):
        # the pool continuous batching builds for the blocks asked for (bench.strategies.paged_pool)
        return float(self._footprint(geometry, "sdpa", prompt_len, new_tokens, batch).pool_bytes)

    def buffer_bytes(self, geometry, attn: str, prompt_len: int, new_tokens: int, batch: int) -> float:
        return float(self._footprint(geometry, attn, prompt_len, new_tokens, batch).device_io_bytes)

    def teardown(self, model) -> None:
        if hasattr(model, "destroy_cached_continuous_batching_manager"):
            model.destroy_cached_continuous_batching_manager()

    def quality_cache(self, model, max_len: int):
        raise NotApplicable("cache=paged runs through continuous batching; quality is measured for generate() caches")
