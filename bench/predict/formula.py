"""KV-cache theory as the textbook formula: bytes per token, bytes held, weight bytes, bandwidth floor, GPU sizes.

Everything here is computed from a transformers config alone (no weights, no GPU): layers x KV heads x head dims
x bytes per element, every layer counted as full attention. It is the figure a reader expects, set beside the
architecture's own code (bench.predict.geometry), which sees windows, MQA flags, MLA and states. Strategy byte
models (quantized packing, pools) live with their strategies (bench/strategies/).
"""
from __future__ import annotations

import re

from bench.config.gpus import GPU_MEMORY_GIB, capacity

from bench.config.dtypes import itemsize


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


def kv_bytes_per_token(config, dtype="float16") -> float:
    """Bytes one cached token costs across all layers, keys and values: layers x kv_heads x (head_dim_k +
    head_dim_v) x bytes/element."""
    layers, kv_heads, dim_k, dim_v = kv_heads_and_dims(config)
    return float(layers * kv_heads * (dim_k + dim_v) * itemsize(dtype))

def kv_cache_bytes(config, tokens: int, batch: int = 1, dtype="float16") -> float:
    """Bytes `tokens` cached tokens of `batch` sequences cost by the textbook formula."""
    return float(tokens * batch * kv_bytes_per_token(config, dtype))

def weight_bytes(config, dtype="float16") -> int:
    """Parameter bytes of the model `config` describes, built on the meta device (nothing allocated).

    Tied embeddings share one Parameter, which `parameters()` yields once. Modules a model keeps in
    fp32 whatever the load dtype are counted at `dtype` too.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()) * itemsize(dtype)


def bandwidth_floor_ms(weight_bytes: float, kv_bytes: float, bandwidth_gb_s: float) -> float:
    """Lower bound on one decode step: it must read every weight and the whole cache once."""
    return (weight_bytes + kv_bytes) / (bandwidth_gb_s * 1e9) * 1e3


# What a card gives the process, GiB. H100 and H200: the total capacity torch reports (get_device_properties,
# cudaMemGetInfo), as the out-of-memory rows of this project's runs print it; it is what the run's fit check
# holds a plan against (nvidia-smi shows more: 81,559 and 143,771 MiB). The others: nvidia-smi's total.
def parse_gpu(spec: str) -> tuple[str, int]:
    """(name, bytes) for a known GPU name (case and separators ignored, or a name as torch gives it) or a size like
    '24' / '24GiB'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:gib)?\s*", spec, flags=re.IGNORECASE)
    if m:
        gib = float(m.group(1))
        return f"{gib:g} GiB", int(gib * 2**30)
    found = capacity(spec)
    if found is None:
        raise ValueError(f"unknown GPU {spec!r}; use one of {', '.join(GPU_MEMORY_GIB)} or a size in GiB like 24 or 24GiB")
    return found[0], int(found[1] * 2**30)
