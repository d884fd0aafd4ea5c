"""Held, resident and peak bytes per layer kind (bench.predict.geometry) against real generate() calls on the CPU.

After every forward of a real generate() (prefill, then each decode step) the cache's tensors are counted as shaped
(held) and as the storages they keep alive (resident), and a storage tracker over the real tensors records the most
the cache's storages held at once during that forward (peak). Tiny configs of every layer kind transformers ships
(bench's registry shrinking, windows of 8): full, MQA by flag, sliding, alternating sliding / full, chunked, latent
(MLA), indexed (DSA), linear-attention states, hybrid state + attention layers; prompts inside, at and beyond the
window, batch 1 and 2.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, FalconConfig, MistralConfig

from bench.measure.cachebytes import cache_payload
from bench.predict.geometry import kv_geometry
from bench.predict.tracker import Tracker, cache_peak
from test_kv_registry import tiny_config

KINDS = {  # layer kind -> model_type (tiny_config keeps one layer of each kind it has)
    "full": "llama", "sliding": "mistral", "alternating": "gpt_oss", "chunked": "llama4_text",
    "latent (MLA)": "deepseek_v3", "indexed (DSA)": "deepseek_v32", "states": "qwen3_next", "hybrid": "falcon_h1",
    "alternating (Gemma-2)": "gemma2", "alternating (Cohere-2)": "cohere2",
}
RUNS = [(5, 4, 1), (8, 3, 2), (20, 1, 1), (20, 5, 2)]  # inside, at, beyond the window (8); a prefill alone
_MODELS: dict = {}


def _model(cfg):
    key = cfg.to_json_string()
    if key not in _MODELS:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _MODELS[key] = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    return _MODELS[key]


def traced_generate(model, prompt: int, new: int, batch: int) -> list[tuple[int, int, int]]:
    """Per forward of a real generate(): (held, resident, peak) bytes of its cache."""
    ids = torch.randint(8, 100, (batch, prompt), generator=torch.Generator().manual_seed(prompt))
    out, state = [], {}
    with Tracker.of(model, "cpu", rounding=1) as tr:
        def before(module, args, kwargs):
            state["cache"] = cache = next((kwargs[k] for k in ("cache", "past_key_values") if kwargs.get(k) is not None), None)
            state["before"], state["start"] = tr.layer_serials(cache), len(tr.events)

        def after(module, args, kwargs, output):
            tr.collect()
            cache = state["cache"]
            now = tr.layer_serials(cache)
            old = state["before"] + [set()] * (len(now) - len(state["before"]))
            payload = cache_payload(cache)
            out.append((payload.logical_bytes, payload.total_bytes, cache_peak(tr.events, state["start"], old, now)))

        hooks = [model.register_forward_pre_hook(before, with_kwargs=True),
                 model.register_forward_hook(after, with_kwargs=True)]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                               do_sample=False, pad_token_id=0, use_cache=True)
        finally:
            for h in hooks:
                h.remove()
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_held_resident_and_peak_after_every_forward(kind):
    cfg = tiny_config(KINDS[kind])
    geo = kv_geometry(cfg, torch.float32)
    for prompt, new, batch in RUNS:
        real = traced_generate(_model(cfg), prompt, new, batch)
        predicted = [(geo.held_bytes(prompt, k, batch), geo.bytes(prompt, k, batch), geo.peak_bytes(prompt, k, batch))
                     for k in range(new)]
        assert predicted == real, (kind, prompt, new, batch)


def test_sliding_window_by_hand():
    """Mistral-style, window 16, 2 KV heads x 64 dims in fp32 (1,024 B per token per layer), 2 layers, 40-token
    prompt: the layers keep 15 tokens (30,720 B plus two 8-byte window scalars: 30,736) whatever the steps; memory
    holds the whole prompt's concatenation until the first decode step (81,936), then 16 tokens (32,784); during that
    step layer 0 holds its old 40 and new 16 tokens at once while layer 1 still holds its 40: 98,320."""
    cfg = MistralConfig(vocab_size=128, hidden_size=256, intermediate_size=64, num_attention_heads=4,
                        num_key_value_heads=2, num_hidden_layers=2, sliding_window=16)
    geo = kv_geometry(cfg, "fp32")
    per_token, scalars = 1024, 16
    assert [geo.held_bytes(40, k) for k in (0, 1, 4)] == [15 * 2 * per_token + scalars] * 3 == [30_736] * 3
    assert [geo.bytes(40, k) for k in (0, 1, 4)] == [81_936, 32_784, 32_784]
    assert geo.peak_bytes(40, 0) == 81_936 and geo.peak_bytes(40, 1) == (40 + 16 + 40) * per_token + scalars
    assert geo.peak_bytes(40, 2) == (16 + 16 + 16) * per_token + scalars  # 49,168: one layer's old and new window
    assert [(g.held_cap, g.decode_cap, g.prefill_cap, g.overlap_share) for g in geo.layers] == [(15, 16, None, 1.0)] * 2
    text = geo.explain(40, 0)
    assert "keep the last 15 tokens" in text and "16 tokens after a decode step" in text
    assert "30.0 KiB held, 80.0 KiB in memory" in text and "still hold the whole prompt" not in text


def test_full_layers_free_their_old_keys_before_concatenating_values():
    """A full layer's update: new keys, old keys freed, new values, old values freed: at most its old values beside
    the new keys and values (overlap: half its old storage when K and V are the same width)."""
    cfg = FalconConfig(vocab_size=128, hidden_size=512, num_attention_heads=8, num_hidden_layers=2, multi_query=True,
                       new_decoder_architecture=False)
    geo = kv_geometry(cfg, "fp32")
    per_token = 2 * 64 * 4  # MQA by flag: 1 KV head x 64 dims x (K, V) x fp32
    assert [g.overlap_share for g in geo.layers] == [0.5, 0.5] and geo.bytes(10, 2) == 2 * 12 * per_token
    # the step's peak is at the last layer: layer 0 at its new 12 tokens, layer 1 at 12 new plus its 11 old values
    assert geo.peak_bytes(10, 2) == 12 * per_token + 12 * per_token + 11 * per_token // 2 == 15_104
