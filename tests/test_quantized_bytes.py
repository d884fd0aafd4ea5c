"""QuantizedCache's byte model (bench.strategies.quantized_bytes) against hand arithmetic and real generate() caches."""
from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

from bench.measure.cachebytes import cache_payload
from bench.predict.geometry import kv_geometry
from bench.strategies import quantized_bytes as qb
from bench.strategies.quantized import Quantized


def _generate(model, prompt: int, new: int, batch: int, spec: dict):
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt), generator=torch.Generator().manual_seed(prompt))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0, cache_implementation="quantized",
                             return_dict_in_generate=True, cache_config=dict(spec))
    return out.past_key_values


def test_window_by_hand():
    # residual 8: the window grows 1..7 on the fed tokens, then the 8th fed token flushes it (fed = steps)
    assert [qb.window_tokens(5, s, 8) for s in (0, 1, 2, 7, 8, 9, 16, 17)] == [0, 1, 2, 7, 0, 1, 0, 1]
    # transformers 5.24: with residual_length 1 every step flushes (5.17 alternated 0/1)
    assert [qb.window_tokens(3, s, 1) for s in range(5)] == [0] * 5


def test_packing_by_hand():
    # MQA, head_dim 32, group 32, 5 tokens fp32: 5 groups per K (or V) tensor; quanto int4 packs 2 rows per byte
    # row, so 3 rows x 32 B of codes (one row of padding) + 5 scales + 5 shifts x 4 B = 136 B
    assert qb.tensor_bytes(5 * 32, 4, 32, 4, "quanto", 0) == 3 * 32 + 2 * 5 * 4
    # hqq never pads (its packer needs an even group count): 6 groups, 6 x 16 B of codes
    assert qb.tensor_bytes(6 * 32, 4, 32, 4, "hqq", 1) == 6 * 16 + 2 * 6 * 4
    with pytest.raises(ValueError, match="must divide"):
        qb.tensor_bytes(33, 4, 32, 4, "quanto", 0)


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    out = {}
    for kv_heads in (1, 2):  # MQA (odd group counts: quanto pads) and GQA
        cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=kv_heads, head_dim=32)
        out[kv_heads] = (cfg, AutoModelForCausalLM.from_config(cfg).eval())
    return out


@pytest.mark.parametrize("backend, nbits, axis, kv_heads", [
    ("quanto", 4, 0, 1), ("quanto", 4, 0, 2), ("quanto", 2, 0, 1), ("quanto", 2, 0, 2),
    ("hqq", 4, 1, 2),  # hqq's 4-bit packer needs an even group count: GQA only
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_predicted_bytes_equal_the_real_cache(tiny_models, backend, nbits, axis, kv_heads, dtype):
    cfg, model = tiny_models[kv_heads]
    model = model.to(dtype)
    geo = kv_geometry(cfg, dtype)
    strategy = Quantized(quant_backend=backend, nbits=nbits, residual_length=8, q_group_size=32, axis_key=axis,
                         axis_value=axis)
    # prefill only, window filling, flushed once, past two flushes; batch 2 once
    for prompt, new, batch in [(5, 1, 1), (5, 3, 1), (7, 9, 2), (3, 20, 1)]:
        cache = _generate(model, prompt, new, batch, strategy.cache_config())
        layer = cache.layers[0]
        assert layer.cumulative_length == prompt + new - 1  # the last generated token is never fed back
        assert (layer.keys.shape[-2] if layer.keys.dim() == 4 else 0) == qb.window_tokens(prompt, new - 1, 8)
        assert strategy.predicted_bytes(geo, prompt, new, batch) == cache_payload(cache).total_bytes, (prompt, new)


def test_fp8_bytes():
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=32)
    geo = kv_geometry(cfg, torch.bfloat16)
    # a float8 byte per element (2 layers x batch 3 x 2 heads x 40 tokens x (32 + 32)) + two float32 scales a layer
    assert Quantized(quant_backend="fp8").predicted_bytes(geo, 30, 11, 3) == 2 * (3 * 2 * 40 * 64 + 8)


def test_only_full_attention_layers():
    """transformers' QuantizedCache refuses a sliding-window model (it would not respect the window), so do we."""
    swa = MistralConfig(vocab_size=128, hidden_size=64, intermediate_size=64, num_attention_heads=4,
                        num_key_value_heads=2, num_hidden_layers=2, sliding_window=16)
    geo = kv_geometry(swa, torch.float32)
    with pytest.raises(ValueError, match="full-attention"):
        Quantized(quant_backend="quanto", nbits=4).predicted_bytes(geo, 64, 2, 1)
    model = AutoModelForCausalLM.from_config(swa).eval()
    with pytest.raises(ValueError):
        _generate(model, 5, 2, 1, {"backend": "quanto", "nbits": 4})


def test_asymptotic_cost_per_element():
    """Llama-2-7B shapes, fp16, group 64: int4 costs 0.5625 B per element, int2 0.3125 B (packed codes plus a
    scale and a zero point per group), once the window is a small share of 4096 quantized tokens."""
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
    geo = kv_geometry(cfg, torch.float16)
    elements = 4096 * 2 * 32 * 4096  # tokens x (K, V) x layers x (heads x head_dim)
    for nbits, per in ((4, 0.5625), (2, 0.3125)):
        got = Quantized(quant_backend="quanto", nbits=nbits).predicted_bytes(geo, 4096, 1, 1)
        assert got == elements * per
