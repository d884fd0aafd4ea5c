"""bench.predict.split: a tiny model split over 2 fake GPUs, held against accelerate's own device map."""
from __future__ import annotations

from unittest import mock

import torch
from transformers import LlamaConfig

from bench.predict.metarun import meta_model
from bench.predict.planner import CONTEXT_BYTES
from bench.predict.split import device_map, place, split_plan
from bench.strategies.dynamic import Dynamic

# 4 layers, 2 KV heads x 16 dims: 2 x 16 x (K, V) x fp32 = 256 B per token per layer
CFG = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2)


def _accelerates_map(budget: int) -> dict:
    """accelerate's own balanced map for two GPUs of `budget` bytes (device_count faked: this machine has none)."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    model = meta_model(CFG, torch.float32)
    with mock.patch("torch.cuda.device_count", return_value=2):
        mm = get_balanced_memory(model, max_memory={0: budget, 1: budget, "cpu": 1 << 50},
                                 no_split_module_classes=model._no_split_modules)
        return dict(infer_auto_device_map(model, max_memory=mm, no_split_module_classes=model._no_split_modules))


def test_the_split_is_accelerates():
    total = sum(p.numel() * 4 for p in meta_model(CFG, torch.float32).parameters())
    for budget in (total, total // 2 + 60_000, total // 3):  # all fits, half and half with a spill, mostly spilt
        assert device_map(CFG, "float32", 2, CONTEXT_BYTES + budget) == _accelerates_map(budget), budget


def test_memory_per_gpu():
    total = sum(p.numel() * 4 for p in meta_model(CFG, torch.float32).parameters())
    gpu = CONTEXT_BYTES + total  # room for every weight on either GPU: balanced, two layers each
    acc = _accelerates_map(total)
    assert [acc[f"model.layers.{i}"] for i in range(4)] == [0, 0, 1, 1] and acc["lm_head"] == 1
    plan = split_plan(CFG, "float32", Dynamic(), 3, 32, 9, 2, gpu)
    assert [p["device"] for p in plan] == [0, 1] and [p["layers"] for p in plan] == ["0-1", "2-3"]
    by_hand, model = {0: 0, 1: 0}, meta_model(CFG, torch.float32)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:  # rotary inv_freq: a buffer on GPU 1
        by_hand[place(name, acc)] += t.numel() * t.element_size()
    assert [p["weights_bytes"] for p in plan] == [by_hand[0], by_hand[1]] and by_hand[0] + by_hand[1] > total
    kv_per_gpu = 2 * 256 * 3 * (32 + 8)  # 2 layers x 256 B x batch 3 x 40 tokens held after the call
    assert [p["kv_bytes"] for p in plan] == [kv_per_gpu, kv_per_gpu]
    assert plan[1]["activation_bytes"] > plan[0]["activation_bytes"]  # the logits run where lm_head is
    assert all(p["needed_bytes"] == p["peak_bytes"] + CONTEXT_BYTES for p in plan)


def test_a_spill_to_the_host_is_shown():
    total = sum(p.numel() * 4 for p in meta_model(CFG, torch.float32).parameters())
    plan = split_plan(CFG, "float32", Dynamic(), 1, 16, 4, 2, CONTEXT_BYTES + total // 3)
    assert plan[-1]["device"] == "cpu" and plan[-1]["weights_bytes"] > 0 and plan[-1]["layers"]
