"""bench plan check: the planner against stored GPU rows (what it predicts, what the row says, whether they agree)."""
from __future__ import annotations

import pytest

from bench.predict import check as plancheck, planner
from rows import row

H200 = "NVIDIA H200"


def _rows():
    kw = dict(model="llama-2-7b", dtype="bfloat16", device="cuda", gpu=H200, prompt_len=1024, new_tokens=16)
    return [row("dynamic", batch=96, peak=71383.5, peak_reserved_mib=110380.0, **kw),
            row("dynamic", batch=160, status="oom", peak=None, **kw),
            row("quantized", batch=160, peak=51481.5, peak_reserved_mib=61234.0, **kw)]


def test_plan_check_against_h200_rows():
    out = plancheck.table(_rows())
    assert out.startswith("3 GPU cells: predicted peak within 10% of the measured peak in 2 of 2 that ran; "
                          "fit predicted correctly in 3 of 3.")
    lines = {tuple(c.strip() for c in ln.split("|")[3:6]): ln for ln in out.splitlines() if "llama-2-7b" in ln}
    b96 = lines[("96", "1024 + 16", "dynamic / sdpa")]
    assert "| 69.71 " in b96 and "| 69.68 " in b96 and "| 107.8 / " in b96 and "| fits " in b96
    b160 = lines[("160", "1024 + 16", "dynamic / sdpa")]
    assert "| OOM " in b160 and "| – / " in b160 and "**no**" not in b160


def test_check_judges_one_row_and_skips_what_it_cannot():
    judged = plancheck.check(_rows()[0])
    assert judged["agree"] and judged["predicted"] == "fits" and abs(judged["error"]) < 0.01
    assert plancheck.check({**_rows()[0], "model": "no-such-model"}) is None


def test_paged_pool_and_its_mask_at_batch_96():
    """H200, Llama-2-7B shapes, bf16, sdpa, 1024 + 16, batch 96: continuous batching's pool (482 sectors of 128 MiB:
    60.25 GiB) and its [1, 1, 98304, 221184] bf16 attention mask (40.5 GiB) beside the weights: 122.43 GiB measured."""
    r = row("paged", batch=96, peak=122.43 * 1024, peak_reserved_mib=128.1 * 1024, model="llama-2-7b",
            dtype="bfloat16", device="cuda", gpu=H200, prompt_len=1024, new_tokens=16)
    judged = plancheck.check(r)
    assert abs(judged["error"]) < 0.01 and judged["agree"], judged


def test_a_quantizer_not_installed_is_planned_with_the_dynamic_pattern(monkeypatch):
    """Without optimum-quanto the meta device cannot build the quanto cache: the planner falls back to the
    dynamic cache's allocation pattern with the strategy's own bytes, as for caches it cannot build at all."""
    import sys

    from transformers import LlamaConfig

    from bench.predict import activations, planner
    from bench.strategies.quantized import Quantized

    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    quanto = Quantized(quant_backend="quanto", nbits=4)
    with_quanto = planner.peak(cfg, "fp32", quanto, 2, 64, 8)
    monkeypatch.setitem(sys.modules, "optimum.quanto", None)  # import optimum.quanto now raises ImportError
    with pytest.raises(ImportError):
        activations.call_peak_bytes(cfg, "fp32", 3, 64, 1, "sdpa", *quanto.meta_cache(64, 8))
    without = planner.peak(cfg, "fp32", quanto, 3, 64, 8)  # another batch: not the remembered plan
    assert without.kv_device == 1.5 * with_quanto.kv_device and without.allocated > 0


def test_largest_batch_takes_a_handful_of_plans():
    calls = []

    def need(b):  # 13 GiB of weights, 0.5 GiB a sequence, a 3 GiB step past batch 100
        calls.append(b)
        return 13 + 0.5 * b + (3 if b > 100 else 0)

    assert planner.largest_batch(need, 80) == 128 and len(calls) <= 6  # 77 GiB at 128, 80.5 at 129
    assert planner.largest_batch(lambda b: 1e9, 80) == 0
    assert planner.largest_batch(lambda b: b, 1e9, limit=1000) == 1000
    assert planner.largest_batch(lambda b: 10 + 0.01 * b * b, 500) == 221  # 498.41 at 221, 502.84 at 222
