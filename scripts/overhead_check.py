"""Does the harness's instrumentation slow generate() down? Harness timing vs a bare loop.

Alternates, call by call on the same loaded model, prompt and lengths:
  - the harness's timed call (bench.measure.clock.time_generate: token streamer + CUDA events), and
  - a bare model.generate() with no streamer, synchronised around the call, for n and for 1 new
    token; its decode rate is batch * (n - 1) / (T(n) - T(1)).
Medians over --calls of each. Interleaving makes clock, thermal and allocator drift hit both.
Exit 1 if the decode tokens/s differ by more than --tolerance (default 0.03).

    python scripts/overhead_check.py model=gpt2 cache=dynamic [device=cuda] [--calls=15]
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from bench.run import attention, models
from bench.cli import compose
from bench.measure import clock as measure
from bench.run.environment import resolve_device
from bench.run.cell import get_model


def bare_ms(model, ids, n: int, kw: dict, device: str) -> float:
    measure.sync(device)
    t = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                   pad_token_id=measure.pad_id(model), **kw)
    measure.sync(device)
    return (time.perf_counter() - t) * 1e3


def main(argv: list[str]) -> int:
    opts = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("--")}
    tol, calls = float(opts.get("--tolerance", 0.03)), int(opts.get("--calls", 15))
    (cfg,) = compose.cells([a for a in argv if not a.startswith("--")])
    device = resolve_device(cfg.device)
    model = get_model(cfg, device).model
    attention.set_attention(model, cfg.cache.attention(cfg.attn.name))
    kw = lambda: cfg.cache.generate_kwargs(model)  # noqa: E731  (fresh per call)
    ids = models.prompt_ids(model.config.get_text_config().vocab_size, cfg.batch, cfg.prompt_len, cfg.seed).to(device)
    n = cfg.new_tokens
    h_e2e, h_dec, b_n, b_1 = [], [], [], []
    with torch.inference_mode(), attention.sdpa_context(cfg.attn):
        for i in range(calls + 2):  # the first two rounds warm up every shape
            t, _ = measure.time_generate(model, ids, n, kw(), device)
            bn = bare_ms(model, ids, n, kw(), device)
            b1 = bare_ms(model, ids, 1, kw(), device)
            if i >= 2:
                h_e2e.append(t.e2e_ms)
                h_dec.append(t.e2e_ms - t.ttft_ms)
                b_n.append(bn)
                b_1.append(b1)
    harness = cfg.batch * (n - 1) / (np.median(h_dec) / 1e3)
    bare = cfg.batch * (n - 1) / ((np.median(b_n) - np.median(b_1)) / 1e3)
    diff = harness / bare - 1
    result = {"model": cfg.model.name, "cache": cfg.cache.name, "attn": cfg.attn.name, "device": device,
              "dtype": str(model.dtype), "batch": cfg.batch, "prompt_len": cfg.prompt_len, "new_tokens": n,
              "calls": calls, "harness_decode_tok_s": float(harness), "bare_decode_tok_s": float(bare),
              "decode_relative_difference": float(diff),
              "harness_e2e_ms": float(np.median(h_e2e)), "bare_e2e_ms": float(np.median(b_n)),
              "e2e_relative_difference": float(np.median(h_e2e) / np.median(b_n) - 1),
              "bare_e2e_p10_p90_ms": [float(np.percentile(b_n, 10)), float(np.percentile(b_n, 90))],
              "tolerance": tol, "within_tolerance": bool(abs(diff) <= tol)}
    print(json.dumps(result, indent=2))
    return 0 if abs(diff) <= tol else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
