"""KV-cache theory as a formula: bytes per token, bytes held, weight bytes, bandwidth floor, GPU sizes.

Everything here is computed from a transformers config alone (no weights, no GPU), so the numbers
can be set beside what `bench.measure.cachebytes.cache_payload` counts on a real cache.

Quantized caches follow transformers 5.17's `QuantizedLayer` and the packing of its two backends,
checked byte for byte against real `generate()` runs (tests/test_kvmath.py):

* quanto (`WeightQBitsTensor`, nbits 2 or 4): the tensor is grouped into `q_group_size` elements
  (axis 0: rows of consecutive elements, shape (n_groups, g); axis -1: shape (g, n_groups)); the
  uint8 codes are packed 8 // nbits to a byte along dim 0, and that dim is padded up to a multiple
  of 8 // nbits (axis -1 groups across tokens: batch * kv_heads * tokens must be a multiple of g,
  else quanto raises). So with axis 0 an odd group count costs one extra row of g bytes at int4 (up to
  three at int2) per quantized tensor; one scale and one shift per group, in the compute dtype.
* hqq (nbits 1, 2, 3, 4, 8): same grouping, codes packed along dim 0 with no padding (the packer
  raises instead when the row count is not a multiple of 8 // nbits); 3-bit packs 10 codes into an
  int32 and zero-pads rows to a multiple of 10; one scale and one zero per group, in the compute dtype.

Asymptotic cost per element: nbits / 8 + 2 * dtype_bytes / q_group_size, e.g. with group 64:
int4 0.5625 B (fp16 scales) / 0.625 B (fp32), int2 0.3125 B / 0.375 B.
"""
from __future__ import annotations

import math
import re

import torch

DTypeLike = str | torch.dtype

_DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}
_QUANT_BITS = {"quanto": (2, 4), "hqq": (1, 2, 3, 4, 8)}  # what transformers' Quanto/HQQQuantizedLayer accept


def _torch_dtype(dtype: DTypeLike) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_ALIASES.get(dtype.lower().removeprefix("torch."), dtype.lower().removeprefix("torch."))
    out = getattr(torch, name, None)
    if not isinstance(out, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return out


def _elem_bytes(dtype: DTypeLike) -> int:
    return _torch_dtype(dtype).itemsize


def kv_heads_and_dims(config) -> tuple[int, int, int, int]:
    """(num_layers, num_kv_heads, head_dim_k, head_dim_v) of the decoder's self-attention.

    The standard attribute names work for every architecture (GPT-2's n_layer/n_head/n_embd are
    mapped onto them by its config). Every layer is counted as full attention: sliding-window or
    linear-attention layers, which hold less, are not modelled.
    """
    text = config.get_text_config(decoder=True)
    layers = text.num_hidden_layers
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads  # absent => MHA; GQA < heads; MQA = 1
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    # MLA-style configs (DeepSeek) cache keys and values of different widths; their head_dim is only the rope part.
    dim_k = getattr(text, "qk_head_dim", None) or head_dim
    dim_v = getattr(text, "v_head_dim", None) or head_dim
    return layers, kv_heads, dim_k, dim_v


def check_quant(backend: str, nbits: int) -> None:
    if backend not in _QUANT_BITS:
        raise ValueError(f"unknown quantization backend {backend!r}; allowed: {', '.join(_QUANT_BITS)}")
    if nbits not in _QUANT_BITS[backend]:
        raise ValueError(f"{backend} quantizes the KV cache to {_QUANT_BITS[backend]} bits, not {nbits}")


def _code_bits(backend: str, nbits: int) -> float:
    """Bits one quantized code occupies once packed (hqq's 3-bit packs 10 codes into 32 bits)."""
    return 3.2 if (backend == "hqq" and nbits == 3) else float(nbits)


def kv_bytes_per_token(
    config,
    dtype: DTypeLike = "float16",
    nbits: int | None = None,
    q_group_size: int = 64,
    residual_length: int = 128,
    backend: str = "quanto",
) -> float:
    """Bytes one cached token costs across all layers, keys and values.

    Full precision: layers x kv_heads x (head_dim_k + head_dim_v) x bytes/element.
    Quantized: the asymptotic cost of the quantized part, packed codes plus one scale and one
    zero-point per q_group_size elements in the compute dtype. The full-precision window
    (< residual_length tokens) and packing padding are bounded, so they vanish per token; use
    `kv_cache_bytes` for the exact figure at a given length. residual_length is accepted so one
    cache spec can be passed to every function here.
    """
    layers, kv_heads, dim_k, dim_v = kv_heads_and_dims(config)
    elements = layers * kv_heads * (dim_k + dim_v)
    if nbits is None:
        return float(elements * _elem_bytes(dtype))
    check_quant(backend, nbits)
    return elements * (_code_bits(backend, nbits) / 8 + 2 * _elem_bytes(dtype) / q_group_size)


def quantized_window_tokens(prompt_len: int, new_tokens: int, residual_length: int) -> int:
    """Tokens left in QuantizedLayer's full-precision window after generate() made new_tokens tokens.

    Simulates transformers 5.17 `QuantizedLayer.update`: prefill quantizes the whole prompt and
    leaves the window empty (a 1-D placeholder); each decode step then either appends its token to
    the window, or, when the window is non-empty and len + 1 >= residual_length, re-quantizes
    everything (old, window and new token) and empties it. generate() feeds back new_tokens - 1
    tokens (the last one is never fed), so the cache then holds prompt_len + new_tokens - 1 tokens.
    prompt_len only sets how many tokens are quantized; the window depends on decode steps alone.
    """
    if prompt_len < 1 or new_tokens < 0:
        raise ValueError("need prompt_len >= 1 and new_tokens >= 0")
    fed = max(new_tokens - 1, 0)
    # The window is empty again exactly every max(residual_length, 2) steps (it can only flush once
    # it holds a token), so simulating the remainder of a cycle gives the same state as all steps.
    fed %= max(residual_length, 2)
    window = 0
    for _ in range(fed):
        window = 0 if (window > 0 and window + 1 >= residual_length) else window + 1
    return window


def quantized_tensor_bytes(
    elements: int, nbits: int, group: int, scale_bytes: int, backend: str, axis: int
) -> int:
    """Bytes of one quantized K or V tensor of one layer: packed codes + scale + zero-point."""
    if elements == 0:
        return 0
    if elements % group:
        raise ValueError(f"q_group_size {group} must divide the {elements} elements quantized per tensor")
    groups = elements // group
    if backend == "quanto":
        rows, cols = (groups, group) if axis == 0 else (group, groups)
        data = math.ceil(rows / (8 // nbits)) * cols  # pack_weights pads dim 0 to whole bytes
    elif nbits == 3:
        rows, cols = (groups, group) if axis == 1 else (group, groups)
        data = math.ceil(rows / 10) * cols * 4  # 10 codes per int32, rows zero-padded to a multiple of 10
    else:
        data = elements * nbits // 8
    return data + 2 * groups * scale_bytes


def kv_cache_bytes(
    config,
    tokens: int,
    batch: int = 1,
    dtype: DTypeLike = "float16",
    nbits: int | None = None,
    q_group_size: int = 64,
    residual_length: int = 128,
    backend: str = "quanto",
    prompt_len: int | None = None,
    axis: int = 0,
) -> float:
    """Bytes the cache holds for `tokens` cached tokens per sequence, `batch` sequences.

    Quantized caches are exact for transformers 5.17 (packing padding included): the last
    `quantized_window_tokens` tokens sit in full precision, the rest quantized. prompt_len is the
    prefill length (the other tokens arrived one decode step each); None assumes the worst case,
    a full window (residual_length - 1 tokens, at most tokens - 1). axis is the quantization axis
    (axis_key = axis_value), which only changes padding.
    """
    layers, kv_heads, dim_k, dim_v = kv_heads_and_dims(config)
    elem = _elem_bytes(dtype)
    if nbits is None:
        return float(layers * batch * kv_heads * tokens * (dim_k + dim_v) * elem)
    check_quant(backend, nbits)
    if tokens <= 0:
        return 0.0
    if prompt_len is None:
        window = min(tokens - 1, max(residual_length, 2) - 1)
    elif 1 <= prompt_len <= tokens:
        window = quantized_window_tokens(prompt_len, tokens - prompt_len + 1, residual_length)
    else:
        raise ValueError(f"prompt_len must be in [1, tokens={tokens}], got {prompt_len}")
    quantized = tokens - window
    per_layer = batch * kv_heads * window * (dim_k + dim_v) * elem + sum(
        quantized_tensor_bytes(batch * kv_heads * quantized * d, nbits, q_group_size, elem, backend, axis)
        for d in (dim_k, dim_v)
    )
    return float(layers * per_layer)


def weight_bytes(config, dtype: DTypeLike = "float16") -> int:
    """Parameter bytes of the model `config` describes, built on the meta device (nothing allocated).

    Tied embeddings share one Parameter, which `parameters()` yields once. Modules a model keeps in
    fp32 whatever the load dtype are counted at `dtype` too.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()) * _elem_bytes(dtype)


def bandwidth_floor_ms(weight_bytes: float, kv_bytes: float, bandwidth_gb_s: float) -> float:
    """Lower bound on one decode step: it must read every weight and the whole cache once."""
    return (weight_bytes + kv_bytes) / (bandwidth_gb_s * 1e9) * 1e3


# Total memory as nvidia-smi reports it (MiB / 1024): what the card really has, below the marketing GB.
GPU_MEMORY_GIB: dict[str, float] = {
    "h100": 81559 / 1024,  # H100 80GB HBM3 (SXM)
    "h200": 143771 / 1024,
    "a100-80gb": 81920 / 1024,
    "a100-40gb": 40960 / 1024,
    "l4": 23034 / 1024,
    "t4": 15360 / 1024,
    "a10g": 23028 / 1024,
    "rtx4090": 24564 / 1024,
}

# Datasheet peak memory bandwidth, GB/s. Kernels reach ~80-90% of it at best: a bandwidth measured
# on the card (e.g. a large device-to-device copy) gives a truer floor than this table.
GPU_BANDWIDTH_GB_S: dict[str, float] = {
    "h100": 3350,  # SXM
    "h200": 4800,
    "a100-80gb": 2039,
    "a100-40gb": 1555,
    "l4": 300,
    "t4": 320,
    "a10g": 600,
    "rtx4090": 1008,
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def parse_gpu(spec: str) -> tuple[str, int]:
    """(name, bytes) for a known GPU name (case and separators ignored) or a size like '24' / '24GiB'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:gib)?\s*", spec, flags=re.IGNORECASE)
    if m:
        gib = float(m.group(1))
        return f"{gib:g} GiB", int(gib * 2**30)
    for name, gib in GPU_MEMORY_GIB.items():
        if _norm(name) == _norm(spec):
            return name, int(gib * 2**30)
    # a name as torch or nvidia-smi gives it ("NVIDIA H100 80GB HBM3"): the one known key it contains
    inside = [name for name in GPU_MEMORY_GIB if _norm(name) in _norm(spec)]
    if len(inside) == 1:
        return inside[0], int(GPU_MEMORY_GIB[inside[0]] * 2**30)
    raise ValueError(f"unknown GPU {spec!r}; use one of {', '.join(GPU_MEMORY_GIB)} or a size in GiB like 24 or 24GiB")
