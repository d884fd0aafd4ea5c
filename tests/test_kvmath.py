"""kvmath against published figures, hand arithmetic and bytes counted on real tiny generate() runs."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig

from bench.measure.cachebytes import cache_payload
from bench.predict.formula import GPU_BANDWIDTH_GB_S, GPU_MEMORY_GIB, bandwidth_floor_ms, kv_bytes_per_token, kv_cache_bytes, kv_heads_and_dims, parse_gpu, quantized_window_tokens, weight_bytes

KiB, MiB, GiB = 2**10, 2**20, 2**30

LLAMA2_7B = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
LLAMA2_13B = LlamaConfig(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40)
LLAMA2_70B = LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                         num_attention_heads=64, num_key_value_heads=8)
LLAMA3_8B = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256)
GPT2 = GPT2Config()


@pytest.mark.parametrize("config, dtype, kib", [
    (LLAMA2_7B, "float16", 512),
    (LLAMA2_13B, "float16", 800),
    (GPT2, "float16", 36),
    (GPT2, "float32", 72),
    (GPT2, torch.float32, 72),
    (LLAMA2_70B, "float16", 320),
    (LLAMA3_8B, "bfloat16", 128),
])
def test_bytes_per_token_published_figures(config, dtype, kib):
    assert kv_bytes_per_token(config, dtype=dtype) == kib * KiB


def test_heads_and_dims_mha_gqa_mqa_explicit_head_dim():
    assert kv_heads_and_dims(GPT2) == (12, 12, 64, 64)  # n_layer / n_head / n_embd
    assert kv_heads_and_dims(GPT2Config(n_embd=1024, n_head=8, n_layer=4)) == (4, 8, 128, 128)  # no head_dim attr
    assert kv_heads_and_dims(LLAMA2_70B) == (80, 8, 128, 128)
    mqa = MistralConfig(hidden_size=1024, num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=1)
    assert kv_heads_and_dims(mqa) == (4, 1, 64, 64)
    # explicit head_dim wider than hidden / heads (Gemma-style) wins over the division
    wide = LlamaConfig(hidden_size=2048, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=1, head_dim=256)
    assert kv_heads_and_dims(wide) == (2, 1, 256, 256)


def test_cache_bytes_full_precision():
    assert kv_cache_bytes(LLAMA2_7B, 1024, batch=1, dtype="float16") == 512 * MiB
    assert kv_cache_bytes(LLAMA2_7B, 1024, batch=3, dtype="float16") == 3 * 512 * MiB
    gqa = kv_cache_bytes(LLAMA3_8B, 10_000, dtype="float16")
    mha = kv_cache_bytes(LlamaConfig(**{**LLAMA3_8B.to_dict(), "num_key_value_heads": 32}), 10_000, dtype="float16")
    assert gqa / GiB == pytest.approx(1.22, abs=0.005)
    assert mha / GiB == pytest.approx(4.88, abs=0.01)


def test_weight_bytes_matches_real_instantiation_and_hand_count():
    tiny = GPT2Config(vocab_size=100, n_positions=32, n_embd=48, n_layer=2, n_head=4)
    model = AutoModelForCausalLM.from_config(tiny)
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.state_dict().values()
                if p.is_floating_point()}
    v, p, d, layers = 100, 32, 48, 2
    by_hand = v * d + p * d + layers * (12 * d * d + 13 * d) + 2 * d  # wte tied to lm_head: counted once
    assert weight_bytes(tiny, "float32") == sum(storages.values()) == by_hand * 4
    untied = GPT2Config(**{**tiny.to_dict(), "tie_word_embeddings": False})
    assert weight_bytes(untied, "float16") == (by_hand + v * d) * 2
    assert weight_bytes(LLAMA2_7B, "float16") == 6_738_415_616 * 2


def test_quantized_window_hand_values():
    # residual 8: window grows 1..7 on the fed tokens, then the 8th fed token flushes it
    assert [quantized_window_tokens(5, n, 8) for n in (0, 1, 2, 3, 8, 9, 10, 17, 18)] == [0, 0, 1, 2, 7, 0, 1, 0, 1]
    # the window must hold a token before it can flush, so residual_length 1 alternates
    assert [quantized_window_tokens(3, n, 1) for n in range(1, 6)] == [0, 1, 0, 1, 0]


def test_quanto_padding_by_hand():
    # MQA, head_dim 32, group 32, 5 tokens fp32: 5 groups per K (or V) tensor; int4 packs 2 rows per
    # byte row, so 3 rows x 32 B of codes (one row of padding) + 5 scales + 5 shifts x 4 B = 136 B.
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    spec = dict(dtype="float32", nbits=4, q_group_size=32, residual_length=8, prompt_len=5)
    assert kv_cache_bytes(cfg, 5, **spec) == 2 * 2 * (3 * 32 + 2 * 5 * 4)
    # hqq never pads (its packer needs an even group count): 6 tokens = 6 groups, 6 x 16 B of codes
    assert kv_cache_bytes(cfg, 6, **{**spec, "backend": "hqq", "prompt_len": 6}) == 2 * 2 * (6 * 16 + 2 * 6 * 4)


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
def test_quantized_formula_equals_real_cache(tiny_models, backend, nbits, axis, kv_heads, dtype):
    cfg, model = tiny_models[kv_heads]
    model = model.to(dtype)
    residual, group = 8, 32
    for prompt, new in [(5, 1), (5, 3), (7, 9), (3, 20)]:  # prefill only, window filling, flushed, past 2 flushes
        ids = torch.randint(0, cfg.vocab_size, (1, prompt))
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                             cache_implementation="quantized", return_dict_in_generate=True,
                             cache_config={"backend": backend, "nbits": nbits, "q_group_size": group,
                                           "residual_length": residual, "axis_key": axis, "axis_value": axis})
        cache = out.past_key_values
        tokens = prompt + new - 1  # the last generated token is never fed back
        layer = cache.layers[0]
        assert layer.cumulative_length == tokens
        window = layer.keys.shape[-2] if layer.keys.dim() == 4 else 0
        assert window == quantized_window_tokens(prompt, new, residual)
        expected = kv_cache_bytes(cfg, tokens, dtype=dtype, nbits=nbits, q_group_size=group,
                                  residual_length=residual, backend=backend, prompt_len=prompt, axis=axis)
        assert expected == cache_payload(cache).total_bytes, (prompt, new)


def test_quantized_per_token_ordering_and_overhead():
    fp = kv_bytes_per_token(LLAMA2_7B, dtype="float16")
    int4 = kv_bytes_per_token(LLAMA2_7B, dtype="float16", nbits=4, q_group_size=64)
    int2 = kv_bytes_per_token(LLAMA2_7B, dtype="float16", nbits=2, q_group_size=64)
    elements = 2 * 32 * 4096
    assert int4 == elements * (0.5 + 2 * 2 / 64)  # 0.5625 B/element
    assert int2 == elements * (0.25 + 2 * 2 / 64)  # 0.3125 B/element
    assert kv_bytes_per_token(LLAMA2_7B, dtype="float32", nbits=4) == elements * 0.625
    assert int2 < int4 < fp
    held = [kv_cache_bytes(LLAMA2_7B, 4096, nbits=n) for n in (2, 4, None)]
    assert held == sorted(held) and len(set(held)) == 3
    # all quantized, no padding (even group count): exact equals asymptotic
    assert kv_cache_bytes(LLAMA2_7B, 4096, nbits=4, prompt_len=4096) == 4096 * int4
    # worst-case window (127 fp16 tokens) costs more than an empty one
    assert kv_cache_bytes(LLAMA2_7B, 4096, nbits=4) == 3969 * int4 + 127 * fp
    with pytest.raises(ValueError):
        kv_bytes_per_token(LLAMA2_7B, nbits=8, backend="quanto")


def test_bandwidth_floor():
    assert bandwidth_floor_ms(13e9, 0.4e9, 3350) == pytest.approx(13.4 / 3350 * 1e3)
    assert set(GPU_BANDWIDTH_GB_S) == set(GPU_MEMORY_GIB)


def test_parse_gpu():
    assert parse_gpu("H100") == ("h100", 81559 * MiB)
    assert parse_gpu("A100_80GB")[1] == parse_gpu("a100-80gb")[1] == 81920 * MiB
    assert parse_gpu("t4")[1] == 15360 * MiB
    assert parse_gpu("24")[1] == parse_gpu("24GiB")[1] == 24 * GiB
    assert parse_gpu("12.5 gib")[1] == int(12.5 * GiB)
    # names as torch and nvidia-smi give them: the one known key they contain
    assert parse_gpu("NVIDIA H100 80GB HBM3")[0] == "h100" and parse_gpu("NVIDIA H200")[0] == "h200"
    with pytest.raises(ValueError) as err:
        parse_gpu("h900")
    msg = str(err.value)
    assert "\n" not in msg and "h100" in msg and "t4" in msg and "GiB" in msg
