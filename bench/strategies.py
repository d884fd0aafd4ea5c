"""Cache strategies and attention paths -> generate() arguments, and why a combination can't run.

A new strategy is one entry in CACHE_KWARGS (plus a conf/cache/<name>.yaml); code elsewhere
only where its behaviour is new (paged goes through continuous batching in measure.py).
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Optional

import torch

from .config import RunConfig, quant_cache_config

# generate() kwargs per cache strategy (fresh dict per call: generate mutates cache_config).
CACHE_KWARGS = {
    "none": lambda c: {"use_cache": False},
    "dynamic": lambda c: {"cache_implementation": "dynamic"},
    "static": lambda c: {"cache_implementation": "static"},
    "offloaded": lambda c: {"cache_implementation": "offloaded"},
    "offloaded_static": lambda c: {"cache_implementation": "offloaded_static"},
    "quantized": lambda c: {"cache_implementation": "quantized", "cache_config": quant_cache_config(c)},
    "paged": lambda c: {"cache_implementation": "paged", "block_size": c.block_size},
}

QUANT_PACKAGE = {"quanto": "optimum.quanto", "hqq": "hqq"}


def generate_kwargs(cfg: RunConfig) -> dict:
    kw = CACHE_KWARGS[cfg.cache.name](cfg.cache)
    if cfg.compile == "off":
        kw["disable_compile"] = True
    return kw


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def unavailable_reason(cfg: RunConfig, model, device: str) -> Optional[str]:
    """Why this cell cannot run here, or None. Checked before any timing."""
    cache, attn = cfg.cache.name, cfg.attn.name
    if cache in ("offloaded", "offloaded_static") and device != "cuda":
        return f"cache={cache} moves layers between GPU and host memory; it needs device=cuda"
    if cache == "quantized":
        pkg = QUANT_PACKAGE[cfg.cache.backend]
        if not _has_module(pkg):
            extra = "quanto" if cfg.cache.backend == "quanto" else "hqq"
            return f"quant backend {cfg.cache.backend} needs the {pkg} package (pip install -e .[{extra}])"
    if attn == "flash_attention_2":
        if device != "cuda":
            return "attn=flash_attention_2 needs a CUDA GPU"
        if not _has_module("flash_attn"):
            return "attn=flash_attention_2 needs the flash-attn package, which is not installed"
        if model.dtype not in (torch.float16, torch.bfloat16):
            return (f"attn=flash_attention_2 runs in float16/bfloat16 only; this model loaded in "
                    f"{str(model.dtype).removeprefix('torch.')} (add dtype=float16)")
    if attn == "flex_attention" and not getattr(model, "_supports_flex_attn", False):
        return f"{type(model).__name__} does not support attn=flex_attention in transformers"
    if attn == "sdpa" and cfg.attn.sdpa_backend in ("flash", "efficient", "cudnn") and device != "cuda":
        return f"sdpa_backend={cfg.attn.sdpa_backend} is a CUDA kernel; on CPU use auto or math"
    if attn == "sdpa" and cfg.attn.sdpa_backend == "cudnn" and not torch.backends.cudnn.is_available():
        return "sdpa_backend=cudnn needs cuDNN"
    return None


def sdpa_context(cfg: RunConfig):
    """Pin PyTorch's SDPA backend when one is asked for; 'auto' lets PyTorch choose."""
    if cfg.attn.name != "sdpa" or cfg.attn.sdpa_backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    pick = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[cfg.attn.sdpa_backend]
    return sdpa_kernel([pick])


def attention_for(cfg: RunConfig) -> str:
    # Continuous batching needs a paged kernel; left alone it swaps sdpa/eager for flash-attn when
    # that is installed. Asking for paged|<attn> runs exactly the path requested.
    return f"paged|{cfg.attn.name}" if cfg.cache.name == "paged" else cfg.attn.name


def set_attention(model, attn: str) -> str:
    """Switch the loaded model's attention path in place; returns what is in effect."""
    if getattr(model.config, "_attn_implementation", None) != attn:
        model.set_attn_implementation(attn)
    return model.config._attn_implementation
