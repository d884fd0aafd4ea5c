"""QuantizedCache: keys and values stored in nbits with a scale and zero point per group; the newest
`residual_length` tokens stay in full precision. Dequantized before attention: it saves storage, not
attention bandwidth. Defaults are transformers' own; the backends accept different bits and axes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import checks
from .base import Strategy

# what transformers' QuantoQuantizedLayer / HQQQuantizedLayer accept, their default axis and the package each needs
BACKENDS = {
    "quanto": {"nbits": (2, 4), "axes": (0, -1), "axis": 0, "package": "optimum.quanto", "extra": "quanto"},
    "hqq": {"nbits": (1, 2, 3, 4, 8), "axes": (0, 1), "axis": 1, "package": "hqq", "extra": "hqq"},
}


@dataclass
class Quantized(Strategy):
    quant_backend: str = "quanto"
    nbits: int = 4
    residual_length: int = 128
    q_group_size: int = 64
    axis_key: Optional[int] = None      # None: the backend's default (quanto 0, hqq 1)
    axis_value: Optional[int] = None

    name = "quantized"
    description = "QuantizedCache: nbits with per-group scale and zero point; newest residual_length tokens in full precision"

    def check(self) -> None:
        checks.one_of("quant_backend", self.quant_backend, BACKENDS)
        spec = BACKENDS[self.quant_backend]
        checks.one_of("nbits", self.nbits, spec["nbits"], f" with quant_backend={self.quant_backend}")
        checks.integer("cache.residual_length", self.residual_length, 1)
        checks.integer("cache.q_group_size", self.q_group_size, 1)
        # the row records the axis that ran, never None
        self.axis_key = spec["axis"] if self.axis_key is None else self.axis_key
        self.axis_value = spec["axis"] if self.axis_value is None else self.axis_value
        for k in ("axis_key", "axis_value"):
            checks.one_of(f"cache.{k}", getattr(self, k), spec["axes"], f" with quant_backend={self.quant_backend}")

    def label(self) -> str:
        return f"quantized int{self.nbits} ({self.quant_backend})"

    def cache_config(self) -> dict:
        """QuantizedCache's arguments; a fresh dict each call (generate mutates cache_config)."""
        return {"backend": self.quant_backend, "nbits": self.nbits, "axis_key": self.axis_key,
                "axis_value": self.axis_value, "q_group_size": self.q_group_size,
                "residual_length": self.residual_length}

    def generate_kwargs(self) -> dict:
        return {"cache_implementation": "quantized", "cache_config": self.cache_config()}

    def unavailable_reason(self, model, device: str):
        import importlib.util

        spec = BACKENDS[self.quant_backend]
        try:
            found = importlib.util.find_spec(spec["package"]) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return (f"quant_backend={self.quant_backend} needs the {spec['package']} package "
                    f"(pip install -e .[{spec['extra']}])")
        try:  # transformers refuses some architectures (only full-attention layers are supported)
            self.quality_cache(model, 0)
        except (ValueError, NotImplementedError) as e:
            return f"QuantizedCache refuses {type(model).__name__}: {str(e).splitlines()[0]}"
        return None

    def extra_columns(self, payload) -> dict:
        share = payload.quantized_tokens / payload.cached_tokens if payload.cached_tokens else None
        return {"kv_quantized_share": share}

    def predicted_bytes(self, geometry, prompt_len: int, new_tokens: int, batch: int) -> float:
        # the packed payload, scales and zero points of each layer, plus the full-precision window
        return float(geometry.quantized_bytes(prompt_len, new_tokens - 1, batch, self.quant_backend, self.nbits,
                                              self.q_group_size, self.residual_length, self.axis_key, self.axis_value))

    def quality_cache(self, model, max_len: int):
        from transformers import QuantizedCache

        return QuantizedCache(config=model.config, **self.cache_config())
