"""Quality figures: perplexity decoded token by token through each cache, and greedy agreement."""
from __future__ import annotations

import math

import pytest
import torch

from bench.run import quality, cell as runner
from bench.strategies import NotApplicable


@pytest.fixture(scope="module")
def tiny(make_cfg):
    cfg = make_cfg("model=tiny-llama")
    model = runner.get_model(cfg, "cpu").model
    ids = torch.randint(0, model.config.vocab_size, (1, 200), generator=torch.Generator().manual_seed(1))
    return model, ids


def test_cache_paths_reproduce_the_uncached_perplexity(tiny, make_cfg):
    model, ids = tiny
    none = quality.perplexity(model, ids, make_cfg("model=tiny-llama", "cache=none").cache)
    dynamic = quality.perplexity(model, ids, make_cfg("model=tiny-llama", "cache=dynamic").cache)
    static = quality.perplexity(model, ids, make_cfg("model=tiny-llama", "cache=static").cache)
    # Random weights over a 1000-token vocabulary: ppl is near the vocabulary size, and every exact
    # cache must give the full forward's figure.
    assert 100 < none < 10_000
    assert dynamic == pytest.approx(none, rel=1e-4)
    assert static == pytest.approx(none, rel=1e-4)


def test_quantized_cache_moves_perplexity_and_int2_more_than_int4(tiny, make_cfg):
    model, ids = tiny
    base = quality.perplexity(model, ids, make_cfg("model=tiny-llama", "cache=dynamic").cache)
    q = {n: quality.perplexity(model, ids, make_cfg("model=tiny-llama", "cache=quantized", f"nbits={n}",
                                                     "cache.residual_length=8", "cache.q_group_size=16").cache)
         for n in (2, 4)}
    assert abs(q[4] - base) > 1e-6 * base  # the quantized path was really taken
    assert abs(q[2] - base) > abs(q[4] - base)


def test_paged_has_no_generate_cache_to_score(tiny, make_cfg):
    model, _ = tiny
    with pytest.raises(NotApplicable, match="continuous batching"):
        make_cfg("model=tiny-llama", "cache=paged").cache.quality_cache(model, 10)


def test_agreement_counts_positions_and_earliest_divergence():
    n = quality.AGREE_NEW_TOKENS
    base = [list(range(n)), list(range(n))]
    assert quality.agreement(base, base) == (1.0, n)
    other = [list(range(n)), list(range(10)) + [-1] * (n - 10)]
    share, first = quality.agreement(other, base)
    assert first == 10
    assert share == pytest.approx((n + 10) / (2 * n))


def test_measure_against_itself_agrees_fully(tiny, make_cfg):
    model, ids = tiny

    class Tok:  # stands in for a tokenizer: the text's ids are the fixed random ids
        def __call__(self, text, return_tensors):
            return type("Enc", (), {"input_ids": ids})()

    quality._baselines.clear()
    cfg = make_cfg("model=tiny-llama", "cache=dynamic")
    fig = quality.measure(model, Tok(), cfg)
    assert fig["ppl_delta"] == pytest.approx(0.0, abs=1e-9)
    assert fig["agreement"] == 1.0 and fig["first_divergence"] == quality.AGREE_NEW_TOKENS
    assert fig["quality_tokens"] == ids.shape[1] - quality.PPL_PREFIX
    assert math.isfinite(fig["ppl"])


def test_random_weight_rows_leave_quality_empty(make_cfg):
    rec = runner.run_cell(make_cfg("model=tiny-gpt2", "cache=dynamic"), "t")
    assert rec.status == "ok" and rec.weights == "random"
    assert rec.ppl is None and rec.agreement is None and rec.first_divergence is None
    assert rec.mbu is not None and 0 < rec.mbu and rec.bandwidth_floor_ms > 0
