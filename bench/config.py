"""Typed run configuration (Hydra structured configs) and its validation.

Hydra composes conf/*.yaml onto these dataclasses; `validate` then checks what types alone
cannot, and raises ConfigError with one line naming what is wrong and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

CACHES = ("none", "dynamic", "static", "offloaded", "offloaded_static", "quantized", "paged")
ATTNS = ("eager", "sdpa", "flash_attention_2", "flex_attention")
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
QUANT_BACKENDS = ("quanto", "hqq")
NBITS = (2, 4)
COMPILE = ("auto", "off")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")
WEIGHTS = ("auto", "real", "random")


class ConfigError(ValueError):
    """Bad input: the message is one line saying what is wrong and what is allowed."""


@dataclass
class ModelConfig:
    name: str = "gpt2"
    hub_id: Optional[str] = None        # hub id, or a local directory holding config.json + weights
    gguf: Optional[str] = None          # "package:file.gguf" shipped inside an installed Python package
    dtype: str = "auto"                 # auto: the checkpoint's dtype (real) or arch's torch_dtype (random)
    arch: Dict[str, Any] = field(default_factory=dict)  # config.json fields: the shapes, for random weights offline


@dataclass
class CacheConfig:
    name: str = "dynamic"
    backend: Optional[str] = None       # quantized: quanto | hqq
    nbits: Optional[int] = None         # quantized: 2 | 4
    residual_length: Optional[int] = None
    q_group_size: Optional[int] = None
    axis_key: Optional[int] = None      # None: the backend's default (quanto 0, hqq 1)
    axis_value: Optional[int] = None
    block_size: Optional[int] = None    # paged: tokens per block of the pool


@dataclass
class AttnConfig:
    name: str = "sdpa"
    sdpa_backend: str = "auto"


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    attn: AttnConfig = field(default_factory=AttnConfig)
    # top-level shortcuts, fed into the groups by interpolation in conf/
    nbits: int = 4
    quant_backend: str = "quanto"
    sdpa_backend: str = "auto"
    dtype: str = "auto"                 # overrides model.dtype unless auto
    weights: str = "auto"               # auto: real if loadable, else random; real: fail without weights
    batch: int = 1
    prompt_len: int = 128
    new_tokens: int = 128
    warmup: int = 1
    repeats: int = 3
    device: str = "auto"
    device_map: Optional[str] = None    # 'auto': accelerate spreads a too-large model over GPUs (real weights)
    compile: str = "auto"               # auto: what transformers does (compiles static caches on GPU); off
    seed: int = 0
    store: str = "results"
    quality: str = "auto"               # auto: ppl + greedy agreement when weights are real; on; off
    resume: bool = False                # skip cells the store already holds as ok/unavailable
    isolate: bool = True                # run cells in a worker process: a crash costs one cell
    cell_timeout_s: Optional[float] = None  # with isolate: kill a cell running longer than this
    fit_check: bool = True              # refuse, before loading, a cell the planner says cannot fit (false: let the device answer)


# transformers' defaults, and the axes each backend accepts along with its nbits.
QUANT_DEFAULT_AXIS = {"quanto": 0, "hqq": 1}


def quant_cache_config(c: CacheConfig) -> dict:
    axis = QUANT_DEFAULT_AXIS[c.backend]
    return {
        "backend": c.backend,
        "nbits": c.nbits,
        "axis_key": axis if c.axis_key is None else c.axis_key,
        "axis_value": axis if c.axis_value is None else c.axis_value,
        "q_group_size": c.q_group_size or 64,
        "residual_length": 128 if c.residual_length is None else c.residual_length,
    }


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def _positive(name: str, value) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value} must be a positive integer")


def validate(cfg: RunConfig, max_positions: Optional[int] = None) -> None:
    _one_of("cache", cfg.cache.name, CACHES)
    _one_of("attn", cfg.attn.name, ATTNS)
    _one_of("sdpa_backend", cfg.attn.sdpa_backend, SDPA_BACKENDS)
    _one_of("compile", cfg.compile, COMPILE)
    _one_of("device", cfg.device, DEVICES)
    _one_of("dtype", cfg.dtype, DTYPES)
    _one_of("model.dtype", cfg.model.dtype, DTYPES)
    _one_of("weights", cfg.weights, WEIGHTS)
    _one_of("quality", cfg.quality, ("auto", "on", "off"))
    if cfg.cache.name == "quantized":
        _one_of("quant_backend", cfg.cache.backend, QUANT_BACKENDS)
        _one_of("nbits", cfg.cache.nbits, NBITS)
    if cfg.cache.name == "paged":
        _positive("cache.block_size", cfg.cache.block_size)
        if cfg.attn.name == "flash_attention_2" and cfg.cache.block_size % 256:
            raise ConfigError(f"cache.block_size={cfg.cache.block_size} must be a multiple of 256 with "
                              "attn=flash_attention_2 (flash-attn's paged kernel requires it)")
    for k in ("batch", "prompt_len", "new_tokens", "repeats"):
        _positive(k, getattr(cfg, k))
    if cfg.warmup < 0:
        raise ConfigError(f"warmup={cfg.warmup} must be 0 or more")
    if cfg.new_tokens < 2:
        raise ConfigError(f"new_tokens={cfg.new_tokens} must be at least 2 (one prefill token plus decode steps)")
    if max_positions and cfg.prompt_len + cfg.new_tokens > max_positions:
        raise ConfigError(
            f"prompt_len + new_tokens = {cfg.prompt_len + cfg.new_tokens} exceeds {cfg.model.name}'s "
            f"{max_positions} positions; keep the sum at most {max_positions}")
