"""Row columns that describe an architecture's KV geometry, read from its code (bench.predict.geometry), not from the
config's attribute names: a Falcon multi_query model caches 1 KV head, whatever num_kv_heads says."""
from __future__ import annotations

from collections import Counter


def columns(config, dtype) -> dict:
    """{kv_heads, head_dim_k, head_dim_v, kv_layers, window_tokens, window_layers, kv_token_bytes,
    state_bytes} of the cache generate() makes for `config` in `dtype`. Where layers differ, kv_heads and
    head dims are those most layers cache; window_tokens is the attention window of the sliding / chunked
    layers (the smallest, if several; None without any); kv_token_bytes is one sequence's bytes per token over
    all layers until a window fills; state_bytes its fixed per-sequence states (linear attention, SSM)."""
    from bench.predict.geometry import kv_geometry

    geo = kv_geometry(config, dtype)
    kv = [g for g in geo.layers if g.kv_heads and g.token_bytes]
    shape = Counter((g.kv_heads, g.head_dim_k, g.head_dim_v) for g in kv).most_common(1)
    heads, dk, dv = shape[0][0] if shape else (0, 0, 0)
    windowed = [g for g in geo.layers if g.decode_cap is not None and g.token_bytes]
    return {"kv_heads": heads, "head_dim_k": dk, "head_dim_v": dv, "kv_layers": len(kv),
            "window_tokens": min((g.decode_cap for g in windowed), default=None), "window_layers": len(windowed),
            "kv_token_bytes": sum(g.token_bytes for g in geo.layers), "state_bytes": sum(g.state_bytes for g in geo.layers)}
