"""bench.predict.columns: the row's geometry columns come from the architecture's code, not its config's names."""
from __future__ import annotations

from transformers import FalconConfig, Gemma2Config, LlamaConfig

from bench import predict


def test_falcon_multi_query_caches_one_kv_head():
    cfg = FalconConfig(vocab_size=128, hidden_size=512, num_attention_heads=8, num_hidden_layers=2, multi_query=True,
                       new_decoder_architecture=False)
    assert cfg.num_kv_heads == 8  # the textbook formula's reading
    cols = predict.columns(cfg, "bf16")
    assert (cols["kv_heads"], cols["head_dim_k"], cols["head_dim_v"], cols["kv_layers"]) == (1, 64, 64, 2)
    assert cols["window_tokens"] is None and cols["kv_token_bytes"] == 2 * 2 * 64 * 2


def test_sliding_and_full_layers():
    cfg = Gemma2Config(vocab_size=128, hidden_size=64, intermediate_size=64, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, num_hidden_layers=4, sliding_window=16)
    cols = predict.columns(cfg, "fp32")
    assert (cols["kv_heads"], cols["window_tokens"], cols["window_layers"], cols["kv_layers"]) == (2, 16, 2, 4)
    assert cols["state_bytes"] == 0


def test_llama2_7b():
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
    cols = predict.columns(cfg, "float16")
    assert (cols["kv_heads"], cols["head_dim_k"], cols["kv_token_bytes"]) == (32, 128, 512 * 1024)
