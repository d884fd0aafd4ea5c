"""The textbook formula (bench.predict.formula) against published figures and hand arithmetic. The quantized
cache's byte model is tested with its strategy (tests/test_quantized_bytes.py)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig

from bench.config.gpus import GPU_BANDWIDTH_GB_S, GPU_MEMORY_GIB
from bench.predict.formula import bandwidth_floor_ms, kv_bytes_per_token, kv_cache_bytes, kv_heads_and_dims, parse_gpu, weight_bytes

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


def test_bandwidth_floor():
    assert bandwidth_floor_ms(13e9, 0.4e9, 3350) == pytest.approx(13.4 / 3350 * 1e3)
    assert set(GPU_BANDWIDTH_GB_S) == set(GPU_MEMORY_GIB)


def test_parse_gpu():
    assert parse_gpu("H100") == ("h100", int(79.18 * GiB))
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
