"""Does the harness slow generate() down? Compare its decode tokens/s with a bare timing loop.

The bare loop calls model.generate() with no streamer, no profiler and no spies, synchronises
the device around each call and derives the decode rate as
    batch * (n - 1) / (T(n new tokens) - T(1 new token))    (medians over repeats)
which needs no per-token hooks. The harness's figure comes from bench.runner.run_cell on the same
cell (same loaded model, prompt and lengths). Rounds alternate harness and bare loop so drift in
clocks or thermals hits both. Exit 1 if they differ by more than --tolerance (default 3%).

    python scripts/overhead_check.py model=gpt2 cache=dynamic new_tokens=128 [device=cuda]
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench import models, strategies
from bench.cli import CONF_DIR
from bench.config import RunConfig
from bench.measure import sync
from bench.runner import get_model, run_cell


def bare_seconds(model, ids, n: int, kw: dict, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                   pad_token_id=model.generation_config.eos_token_id or 0, **kw)
    sync(device)
    return time.perf_counter() - t


def main(argv: list[str]) -> int:
    tol = 0.03
    overrides = []
    for a in argv:
        if a.startswith("--tolerance="):
            tol = float(a.split("=", 1)[1])
        else:
            overrides.append(a)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg: RunConfig = OmegaConf.to_object(compose("config", overrides=overrides))
    rounds = 3
    harness, harness_e2e, bare_n, bare_1 = [], [], [], []
    for r in range(rounds):
        rec = run_cell(cfg, run_id="overhead-check")
        if rec.status != "ok":
            print(f"harness cell failed: {rec.status} {rec.error}")
            return 2
        harness.append(rec.decode_tok_s)
        harness_e2e.append(rec.e2e_ms)
        device = rec.device
        model = get_model(cfg, device).model
        strategies.set_attention(model, cfg.attn.name)
        ids = models.prompt_ids(model.config.get_text_config().vocab_size, cfg.batch, cfg.prompt_len, cfg.seed).to(device)
        with torch.inference_mode(), strategies.sdpa_context(cfg):
            for _ in range(cfg.warmup):
                bare_seconds(model, ids, cfg.new_tokens, strategies.generate_kwargs(cfg), device)
                bare_seconds(model, ids, 1, strategies.generate_kwargs(cfg), device)
            for _ in range(cfg.repeats):
                bare_n.append(bare_seconds(model, ids, cfg.new_tokens, strategies.generate_kwargs(cfg), device))
                bare_1.append(bare_seconds(model, ids, 1, strategies.generate_kwargs(cfg), device))
    bare = cfg.batch * (cfg.new_tokens - 1) / (np.median(bare_n) - np.median(bare_1))
    ours = float(np.median(harness))
    diff = ours / bare - 1
    result = {"model": cfg.model.name, "cache": cfg.cache.name, "attn": cfg.attn.name, "device": device,
              "batch": cfg.batch, "prompt_len": cfg.prompt_len, "new_tokens": cfg.new_tokens,
              "harness_decode_tok_s": ours, "harness_rounds": harness, "bare_decode_tok_s": float(bare),
              "bare_e2e_ms": float(np.median(bare_n) * 1e3), "bare_ttft_proxy_ms": float(np.median(bare_1) * 1e3),
              "harness_e2e_ms": float(np.median(harness_e2e)),
              "e2e_relative_difference": float(np.median(harness_e2e) / (np.median(bare_n) * 1e3) - 1),
              "relative_difference": float(diff), "tolerance": tol, "within_tolerance": bool(abs(diff) <= tol)}
    print(json.dumps(result, indent=2))
    return 0 if abs(diff) <= tol else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
