"""Host memory in the plan: an offloaded cache's pinned blocks (bench.strategies.offloaded), checked against the host
(bench.predict.host) by the pre-flight fit check (bench.predict.preflight)."""
from __future__ import annotations

from transformers import LlamaConfig

from bench import predict
from bench.predict import host, planner
from bench.predict.geometry import kv_geometry
from bench.strategies.offloaded import Offloaded, pinned_bytes, rounded
from bench.strategies.offloaded_static import OffloadedStatic

GIB = 2**30
# 2 layers, 2 KV heads x 16 dims in bf16: one layer's K (or V) is 64 B per token of one sequence
TINY = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)
LLAMA2_7B = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)


def test_power_of_two_blocks():
    assert [rounded(n) for n in (1, 1024, 1025, 768 << 20)] == [1, 1024, 2048, 1 << 30]
    # two tensors of 1,000 and 1,100 B over two lengths: a 1 KiB and a 2 KiB block each, plus 2 pending per size
    assert pinned_bytes([[1000, 1100], [1000, 1100]]) == 1024 * 4 + 2048 * 4


def test_offloaded_host_bytes_by_hand():
    geo = kv_geometry(TINY, "bf16")
    # prompt 16: 1,024 B per tensor (a 1 KiB block); 17 and 18 tokens: 2 KiB blocks; 4 tensors, 2 pending per size
    assert Offloaded().predicted_host_bytes(geo, 16, 3, 1) == 1024 * 6 + 2048 * 6
    # the static cache is preallocated to 18 tokens: one size for the whole call
    assert OffloadedStatic().predicted_host_bytes(geo, 16, 3, 1) == 2048 * 6


def test_llama2_7b_batch_32_then_96():
    """Llama-2-7B shapes, bf16, 1024 + 16: a layer's K is 256 MiB at batch 32 and 1024 tokens (2^28 exactly), so the
    decode steps take 512 MiB blocks: 49.5 GiB of pinned blocks for 16.2 GiB of KV. Batch 96 takes 1 GiB blocks:
    66 GiB, which the blocks batch 32 left behind cannot serve."""
    geo = kv_geometry(LLAMA2_7B, "bf16")
    b32, b96 = (Offloaded().predicted_host_bytes(geo, 1024, 16, b) / GIB for b in (32, 96))
    assert (b32, b96) == (0.25 * 66 + 0.5 * 66, 66.0)
    assert b32 + b96 > 0.9 * 128  # beside the process itself, past a 128 GiB host


def test_host_refusal_and_warning():
    mem = host.HostMemory(total=128 * GIB, available=60 * GIB)
    assert host.host_refusal(66 * GIB, mem) and "SIGKILL" in host.host_refusal(66 * GIB, mem)
    assert host.host_refusal(50 * GIB, mem) is None and "pinned" in host.host_warning(50 * GIB, mem)
    assert host.host_warning(1 * GIB, mem) is None and host.host_refusal(0, mem) is None


def test_preflight_refuses_an_offloaded_cell_the_host_cannot_hold(monkeypatch):
    from bench.cli import compose

    cfg, = compose.cells(["model=tiny-llama", "cache=offloaded", "batch=4", "prompt_len=64", "new_tokens=8",
                          "device=cpu"], positions=False)
    monkeypatch.setattr(planner, "capacity", lambda device: ("a roomy card", 80 * GIB))
    monkeypatch.setattr(host, "host_memory", lambda: host.HostMemory(total=GIB, available=1024))
    why = predict.preflight(cfg, "cuda")
    assert why is not None and "pinned host memory" in why and "batch=4" in why
    monkeypatch.setattr(host, "host_memory", lambda: host.HostMemory(total=GIB, available=GIB))
    assert predict.preflight(cfg, "cuda") is None
    dynamic, = compose.cells(["model=tiny-llama", "cache=dynamic", "device=cpu"], positions=False)
    monkeypatch.setattr(host, "host_memory", lambda: host.HostMemory(total=GIB, available=0))
    assert predict.preflight(dynamic, "cuda") is None  # it keeps nothing in host memory
