"""QuantizedCache's byte model: the one home of what a quantized layer holds (bench.strategies.quantized uses it).

Which layers: transformers (5.17 to 5.24) builds one quantized layer per config layer and refuses every layer type
but full attention, so the geometry's full-attention layers are the ones quantized, holding every token.

The full-precision window: QuantizedLayer's own update rule, run on placeholders (`window_tokens`): the prefill
quantizes the whole prompt; each decode step appends to the window or, once it would reach residual_length,
re-quantizes everything. The rule changed after 5.17 (residual_length=1 alternates 0/1 there, stays 0 in 5.24);
running the installed class follows whichever is installed.

Packing of the two grouped backends (checked byte for byte against real generate() runs):
* quanto (`WeightQBitsTensor`, nbits 2 or 4): the tensor is grouped into q_group_size elements (axis 0: rows of
  consecutive elements, shape (n_groups, g); axis -1: (g, n_groups)); uint8 codes packed 8 // nbits to a byte
  along dim 0, that dim padded up to a multiple of 8 // nbits. So with axis 0 an odd group count costs one extra
  row of g bytes at int4 (up to three at int2) per quantized tensor; one scale and one shift per group, in the
  compute dtype.
* hqq (nbits 1, 2, 3, 4, 8): same grouping, codes packed along dim 0 with no padding; 3-bit packs 10 codes into an
  int32 and zero-pads rows to a multiple of 10; one scale and one zero per group, in the compute dtype.
fp8 (5.24+): one float8 byte per element and one float32 scale per layer's keys and one per its values, no window.
Asymptotic cost per element of the grouped ones: nbits / 8 + 2 * dtype_bytes / q_group_size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FP8_SCALE_BYTES = 4  # one float32 scale per tensor (a layer's keys, its values)


@dataclass(frozen=True)
class QuantLayer:
    kv_heads: int
    head_dim_k: int
    head_dim_v: int
    tokens: int   # tokens held: quantized + the full-precision residual window


def quantized_layers(geometry, prompt_len: int, decode_steps: int = 0) -> list[QuantLayer]:
    """What a QuantizedCache's layers hold over this geometry (bench.predict.geometry.Geometry): every token of
    each full-attention layer, no window. Any other layer type: ValueError, as transformers raises."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    text = geometry.text_config
    bad = set(get_layer_types_and_kwargs(text)[0]) - {"full_attention"}
    if bad or any(g.state_bytes or g.decode_cap is not None for g in geometry.layers):
        raise ValueError(f"{geometry.model_type}: QuantizedCache takes only full-attention layers, "
                         f"not {bad or 'states'}")
    by_index = {g.index: g for g in geometry.layers if g.kv_heads}
    layers = (by_index.get(i) for i in range(text.num_hidden_layers))
    return [QuantLayer(g.kv_heads, g.head_dim_k, g.head_dim_v, prompt_len + decode_steps) if g
            else QuantLayer(0, 0, 0, 0) for g in layers]


def window_tokens(prompt_len: int, decode_steps: int, residual_length: int) -> int:
    """Tokens in QuantizedLayer's full-precision window after a prefill and decode_steps steps, by the installed
    transformers' own update rule run on placeholders (the state repeats every max(R, 2) steps)."""
    import torch
    from transformers.cache_utils import QuantizedLayer

    class Counting(QuantizedLayer):
        def _quantize(self, tensor, axis):
            return tensor.shape[-2]

        def _dequantize(self, q):
            return torch.zeros(1, 1, q, 1)

    layer = Counting(residual_length=residual_length)
    for n in [prompt_len] + [1] * (decode_steps % max(residual_length, 2)):
        layer.update(torch.zeros(1, 1, n, 1), torch.zeros(1, 1, n, 1))
    return layer.keys.shape[-2] if layer.keys.dim() == 4 else 0


def tensor_bytes(elements: int, nbits: int, group: int, scale_bytes: int, backend: str, axis: int) -> int:
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


def grouped_bytes(geometry, prompt_len: int, decode_steps: int, batch: int, backend: str, nbits: int,
                  q_group_size: int, residual_length: int, axis_key: int, axis_value: int) -> int:
    """quanto / HQQ cache bytes: each layer's packed payload, scales and zero points, plus its window."""
    window, e, total = window_tokens(prompt_len, decode_steps, residual_length), geometry.dtype.itemsize, 0
    for q in quantized_layers(geometry, prompt_len, decode_steps):
        rows = batch * q.kv_heads * (q.tokens - window)
        total += batch * q.kv_heads * min(window, q.tokens) * (q.head_dim_k + q.head_dim_v) * e + sum(
            tensor_bytes(rows * d, nbits, q_group_size, e, backend, ax)
            for d, ax in ((q.head_dim_k, axis_key), (q.head_dim_v, axis_value)))
    return total


def fp8_bytes(geometry, prompt_len: int, decode_steps: int, batch: int) -> int:
    """fp8 cache bytes: a float8 byte per element, two float32 scales per layer."""
    return sum(batch * q.kv_heads * q.tokens * (q.head_dim_k + q.head_dim_v) + 2 * FP8_SCALE_BYTES
               for q in quantized_layers(geometry, prompt_len, decode_steps) if q.tokens)
