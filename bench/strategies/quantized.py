"""QuantizedCache: keys and values stored in fewer bits, dequantized before attention (it saves storage, not
attention bandwidth). Backends:
- quanto / hqq: nbits with a scale and zero point per group of q_group_size; the newest residual_length tokens
  stay in full precision and are re-quantized together once the window fills. Defaults are transformers' own.
- fp8 (transformers >= 5.24): float8 e4m3 with one float32 scale per layer's keys and one for its values,
  calibrated on the prefill and then frozen; no full-precision window and no group settings.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from bench.config import checks
from bench.config.checks import ConfigError
from bench.strategies.base import Strategy

# what transformers' quantized layers accept, their defaults, and what each needs installed
BACKENDS = {
    "quanto": {"nbits": (2, 4), "axes": (0, -1), "axis": 0, "package": "optimum.quanto", "extra": "quanto"},
    "hqq": {"nbits": (1, 2, 3, 4, 8), "axes": (0, 1), "axis": 1, "package": "hqq", "extra": "hqq"},
    "fp8": {"nbits": (), "axes": (), "axis": None, "package": None, "extra": None},
}
GROUP_DEFAULTS = {"nbits": 4, "residual_length": 128, "q_group_size": 64}


@dataclass
class Quantized(Strategy):
    quant_backend: str = "quanto"
    nbits: Optional[int] = None           # None: the backend's default (quanto/hqq 4); fp8 has none
    residual_length: Optional[int] = None  # None: 128 (quanto/hqq)
    q_group_size: Optional[int] = None    # None: 64 (quanto/hqq)
    axis_key: Optional[int] = None        # None: the backend's default (quanto 0, hqq 1)
    axis_value: Optional[int] = None

    name = "quantized"
    description = "QuantizedCache: quanto/hqq nbits per group with a full-precision window, or fp8 per tensor"

    @classmethod
    def applicable(cls, values: dict) -> tuple[str, ...]:
        # fp8 quantizes per tensor: bits, groups, window and axes mean nothing to it
        return ("quant_backend",) if values.get("quant_backend") == "fp8" else super().applicable(values)

    def check(self) -> None:
        checks.one_of("quant_backend", self.quant_backend, BACKENDS)
        spec = BACKENDS[self.quant_backend]
        group = [f.name for f in fields(self) if f.name != "quant_backend"]
        if self.quant_backend == "fp8":
            given = [f"{k}={getattr(self, k)}" for k in group if getattr(self, k) is not None]
            if given:
                raise ConfigError(f"{given[0]} does not apply to quant_backend=fp8, which quantizes per tensor "
                                  "(no bits, groups, window or axis to set); use quanto or hqq for those")
            return
        # the row records what ran, never None
        for k, v in GROUP_DEFAULTS.items():
            setattr(self, k, v if getattr(self, k) is None else getattr(self, k))
        self.axis_key = spec["axis"] if self.axis_key is None else self.axis_key
        self.axis_value = spec["axis"] if self.axis_value is None else self.axis_value
        checks.one_of("nbits", self.nbits, spec["nbits"], f" with quant_backend={self.quant_backend}")
        checks.integer("cache.residual_length", self.residual_length, 1)
        checks.integer("cache.q_group_size", self.q_group_size, 1)
        for k in ("axis_key", "axis_value"):
            checks.one_of(f"cache.{k}", getattr(self, k), spec["axes"], f" with quant_backend={self.quant_backend}")

    def label(self) -> str:
        if self.quant_backend == "fp8":
            return "quantized fp8 (e4m3, per tensor)"
        return f"quantized int{self.nbits} ({self.quant_backend})"

    def cache_config(self) -> dict:
        """QuantizedCache's arguments; a fresh dict each call (generate mutates cache_config)."""
        return {"backend": self.quant_backend, **{f.name: getattr(self, f.name) for f in fields(self)
                                                 if f.name != "quant_backend" and getattr(self, f.name) is not None}}

    def generate_kwargs(self, model) -> dict:
        return {"cache_implementation": "quantized", "cache_config": self.cache_config()}

    def meta_cache(self, prompt_len: int, new_tokens: int):
        return "quantized", 0, self.cache_config()

    def unavailable_reason(self, model, device: str):
        import importlib.util

        spec = BACKENDS[self.quant_backend]
        try:
            found = spec["package"] is None or importlib.util.find_spec(spec["package"]) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return (f"quant_backend={self.quant_backend} needs the {spec['package']} package "
                    f"(pip install -e .[{spec['extra']}])")
        try:  # transformers refuses some architectures (only full-attention layers), and older ones lack fp8
            self.quality_cache(model, 0)
        except (ValueError, NotImplementedError) as e:
            import transformers

            return (f"QuantizedCache(backend={self.quant_backend}) refuses {type(model).__name__} under "
                    f"transformers {transformers.__version__}: {str(e).splitlines()[0]}")
        return None

    def caveat(self, device: str) -> str:
        if self.quant_backend != "fp8":
            return ""
        import torch

        cast = torch.tensor([1000.0], device=device).to(torch.float8_e4m3fn).float().item()
        if cast == cast:  # saturates at 448, as torch 2.13 does
            return ""
        return (f"torch {torch.__version__}'s float8 cast does not saturate: cached values past the prefill's range "
                "become NaN (transformers' fp8 cache does not clamp); the timings stand, the generated text does not")

    def extra_columns(self, payload) -> dict:
        share = payload.quantized_tokens / payload.cached_tokens if payload.cached_tokens else None
        return {"kv_quantized_share": share}

    def predicted_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> float:
        from bench.strategies import quantized_bytes

        if self.quant_backend == "fp8":
            return float(quantized_bytes.fp8_bytes(geometry, prompt_len, new_tokens - 1, batch))
        return float(quantized_bytes.grouped_bytes(geometry, prompt_len, new_tokens - 1, batch, self.quant_backend,
                                                   self.nbits, self.q_group_size, self.residual_length,
                                                   self.axis_key, self.axis_value))

    def quality_cache(self, model, max_len: int):
        from transformers import QuantizedCache

        return QuantizedCache(config=model.config, **self.cache_config())
