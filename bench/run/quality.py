"""Output quality under a cache strategy, against the full-precision dynamic cache (real weights only).

- Perplexity through the cache: a fixed English text (bench/data/quality_text.txt, public-domain
  passages) is prefilled for PPL_PREFIX tokens, then fed one token at a time through the cache, as
  generation uses it; the perplexity is over the tokens predicted in those decode steps. A quantized
  cache only shows its error there (the prefill attends in full precision), and the text is long
  enough that most of it leaves the full-precision residual window.
- Greedy agreement: AGREE_PROMPTS real prompts from the same text, AGREE_NEW_TOKENS greedy tokens
  each (length forced), compared position by position with the dynamic cache's tokens. Agreement
  drifts after the first differing token, which is why perplexity is reported beside it.
"""
from __future__ import annotations

import math
import weakref

import torch

from bench.config.paths import DATA_DIR
from bench.measure.clock import pad_id
from bench.strategies import reference

TEXT_PATH = DATA_DIR / "quality_text.txt"
PPL_PREFIX = 32
PPL_MAX_TOKENS = 640
AGREE_PROMPTS = 4
AGREE_PROMPT_LEN = 24
AGREE_NEW_TOKENS = 64


def text_ids(tokenizer) -> torch.Tensor:
    ids = tokenizer(TEXT_PATH.read_text(), return_tensors="pt").input_ids[:, :PPL_MAX_TOKENS]
    return ids


def cache_argument() -> str:
    """The forward argument that takes a cache: `cache` from transformers 5.24 (`past_key_values` is deprecated
    there), `past_key_values` before."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


@torch.inference_mode()
def perplexity(model, ids: torch.Tensor, strategy) -> float:
    """exp(mean NLL) of ids[PPL_PREFIX:] predicted one decode step at a time through the strategy's cache."""
    device = model.device
    ids = ids.to(device)
    T = ids.shape[1]
    cache = strategy.quality_cache(model, T)
    if cache is None:  # no cache: every step recomputes the whole prefix, i.e. one full forward
        logits = model(ids).logits[0, PPL_PREFIX - 1:T - 1]
    else:
        out = model(ids[:, :PPL_PREFIX], **{cache_argument(): cache}, use_cache=True,
                    cache_position=torch.arange(PPL_PREFIX, device=device))
        steps = [out.logits[0, -1]]
        for t in range(PPL_PREFIX, T - 1):
            out = model(ids[:, t:t + 1], **{cache_argument(): cache}, use_cache=True,
                        cache_position=torch.tensor([t], device=device))
            steps.append(out.logits[0, -1])
        logits = torch.stack(steps)
    nll = torch.nn.functional.cross_entropy(logits.float(), ids[0, PPL_PREFIX:T])
    return math.exp(nll.item())


def agreement_prompts(ids: torch.Tensor) -> list[torch.Tensor]:
    stride = (ids.shape[1] - AGREE_PROMPT_LEN) // AGREE_PROMPTS
    return [ids[:, i * stride:i * stride + AGREE_PROMPT_LEN] for i in range(AGREE_PROMPTS)]


@torch.inference_mode()
def greedy_tokens(model, prompts: list[torch.Tensor], kwargs_fn) -> list[list[int]]:
    outs = []
    for p in prompts:
        p = p.to(model.device)
        out = model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=AGREE_NEW_TOKENS,
                             min_new_tokens=AGREE_NEW_TOKENS, do_sample=False,
                             pad_token_id=pad_id(model), **kwargs_fn())
        outs.append(out[0, p.shape[1]:].tolist())
    return outs


def agreement(tokens: list[list[int]], baseline: list[list[int]]) -> tuple[float, int]:
    """(share of identical tokens at equal positions, earliest position where any prompt differs;
    AGREE_NEW_TOKENS when none does)."""
    same = total = 0
    first = AGREE_NEW_TOKENS
    for a, b in zip(tokens, baseline):
        eq = [x == y for x, y in zip(a, b)]
        same, total = same + sum(eq), total + len(eq)
        if not all(eq):
            first = min(first, eq.index(False))
    return same / total, first


_baselines: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {attention: baseline}


def measure(model, tokenizer, cfg) -> dict:
    """ppl, ppl_delta, agreement, first_divergence for this cell, against the reference strategy (the
    full-precision dynamic cache) under the same attention path."""
    ids = text_ids(tokenizer)
    prompts = agreement_prompts(ids)
    strategy, ref = cfg.cache, reference()
    per_model = _baselines.setdefault(model, {})  # a model id() can be reused once a model is freed: not this
    key = (cfg.attn.name, cfg.attn.sdpa_backend)
    if key not in per_model:
        per_model[key] = (perplexity(model, ids, ref), greedy_tokens(model, prompts, lambda: ref.generate_kwargs(model)))
    base_ppl, base_tokens = per_model[key]
    if strategy.reference and cfg.compile == "auto":  # this cell is the baseline: nothing to redo
        ppl, agree, first = base_ppl, 1.0, AGREE_NEW_TOKENS
    else:
        extra = {"disable_compile": True} if cfg.compile == "off" else {}
        ppl = perplexity(model, ids, strategy)
        agree, first = agreement(greedy_tokens(model, prompts, lambda: {**strategy.generate_kwargs(model), **extra}),
                                 base_tokens)
    return {"ppl": ppl, "ppl_delta": ppl - base_ppl, "agreement": agree, "first_divergence": first,
            "quality_tokens": ids.shape[1] - PPL_PREFIX}
