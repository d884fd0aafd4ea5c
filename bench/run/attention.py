"""Attention paths: whether one can run here, pinning PyTorch's SDPA backend, switching a loaded model."""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Optional

import torch

from bench.config.settings import AttnConfig


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def unavailable_reason(attn: AttnConfig, model, device: str) -> Optional[str]:
    """Why this attention path cannot run here, or None. Checked before any timing."""
    if attn.name == "flash_attention_2":
        if device != "cuda":
            return "attn=flash_attention_2 needs a CUDA GPU"
        if not _has_module("flash_attn"):
            return "attn=flash_attention_2 needs the flash-attn package, which is not installed"
        if model.dtype not in (torch.float16, torch.bfloat16):
            return (f"attn=flash_attention_2 runs in float16/bfloat16 only; this model loaded in "
                    f"{str(model.dtype).removeprefix('torch.')} (add dtype=float16)")
    if attn.name == "flex_attention" and not getattr(model, "_supports_flex_attn", False):
        return f"{type(model).__name__} does not support attn=flex_attention in transformers"
    if attn.name == "sdpa" and attn.sdpa_backend in ("flash", "efficient", "cudnn") and device != "cuda":
        return f"sdpa_backend={attn.sdpa_backend} is a CUDA kernel; on CPU use auto or math"
    if attn.name == "sdpa" and attn.sdpa_backend == "cudnn" and not torch.backends.cudnn.is_available():
        return "sdpa_backend=cudnn needs cuDNN"
    return None


def sdpa_context(attn: AttnConfig):
    """Pin PyTorch's SDPA backend when one is asked for; 'auto' lets PyTorch choose."""
    if attn.name != "sdpa" or attn.sdpa_backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    pick = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[attn.sdpa_backend]
    return sdpa_kernel([pick])


def set_attention(model, implementation: str) -> str:
    """Switch the loaded model's attention path in place; returns what is in effect."""
    if getattr(model.config, "_attn_implementation", None) != implementation:
        model.set_attn_implementation(implementation)
    return model.config._attn_implementation
