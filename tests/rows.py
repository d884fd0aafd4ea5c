"""Synthetic schema-2 rows for the report and compare tests: a measured row without running a model."""
from __future__ import annotations

import numpy as np

from bench.store.schema import Record
from bench.store import RunFile

STRATEGIES = {  # cache name -> (label, settings, reference, holds_cache)
    "dynamic": ("dynamic", {}, True, True),
    "none": ("none", {}, False, False),
    "static": ("static", {}, False, True),
    "quantized": ("quantized int4 (quanto)", {"quant_backend": "quanto", "nbits": 4, "residual_length": 128,
                                              "q_group_size": 64, "axis_key": 0, "axis_value": 0}, False, True),
    "quantized_int2": ("quantized int2 (quanto)", {"quant_backend": "quanto", "nbits": 2, "residual_length": 128,
                                                   "q_group_size": 64, "axis_key": 0, "axis_value": 0}, False, True),
    "offloaded": ("offloaded", {}, False, True),
    "paged": ("paged (256-token blocks)", {"block_size": 256}, False, True),
}


def row(cache="dynamic", e2e=100.0, noise=0.01, n=12, seed=0, run_id="run-a", status="ok", new_tokens=16,
        kv=10.0, peak=500.0, ts="2026-12-01T10:00:00+00:00", **kw) -> dict:
    """One row whose e2e samples are lognormal around `e2e` (ms) with relative spread `noise`."""
    label, settings, ref, holds = STRATEGIES[cache]
    name = "quantized" if cache.startswith("quantized") else cache
    base = dict(model="tiny", weights="random", dtype="float32", device="cpu", gpu="", cache=name, strategy=label,
                reference=ref, holds_cache=holds, attn="sdpa", sdpa_backend="auto", compile="auto", batch=1,
                prompt_len=8, new_tokens=new_tokens, seed=0, run_id=run_id, status=status, timestamp=ts,
                repeats_mode="auto", warmup=1, settings=settings)
    base.update(kw)
    if status == "ok":
        rng = np.random.default_rng(seed)
        e = list(e2e * np.exp(rng.normal(0, noise, n)))
        t = [x * 0.1 for x in e]
        p = [(a - b) / (new_tokens - 1) for a, b in zip(e, t)]
        base.update(e2e_samples_ms=e, ttft_samples_ms=t, tpot_samples_ms=p, e2e_ms=float(np.median(e)),
                    ttft_ms=float(np.median(t)), tpot_ms=float(np.median(p)), repeats=n,
                    decode_tok_s=1000 / float(np.median(p)), e2e_tok_s=new_tokens * 1000 / float(np.median(e)),
                    step_ms=[float(np.median(p))] * (new_tokens - 1), kv_cache_mib=kv, peak_mem_mib=peak,
                    weights_mib=100.0, kv_theory_mib=kv, other_peak_mib=None if peak is None else peak - 100 - kv, cold_e2e_ms=2 * e2e,
                    precision=0.005, stop_reason="precision")
    else:
        base.setdefault("error", f"{status}: synthetic")
    for k in list(base):
        if k in ("settings",):
            continue
        if k not in Record.__dataclass_fields__:
            base["settings"] = {**base["settings"], k: base.pop(k)} if k in settings else base["settings"]
    return Record(**{k: v for k, v in base.items() if k in Record.__dataclass_fields__}).as_row()


def store(path, rows, run_id="run-a"):
    f = RunFile(path, run_id)
    for r in rows:
        f.append(r)
    return path
