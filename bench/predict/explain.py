"""Geometry.explain: the textbook formula's figure and, where the architecture's code differs, why, in words."""
from __future__ import annotations


def ranges(idx: list[int]) -> str:
    out: list[str] = []
    for n in idx:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)


def size(n: float) -> str:
    unit = next(((u, s) for u, s in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)) if n >= s), ("B", 1))
    return f"{n / unit[1]:.1f} {unit[0]}" if unit[1] > 1 else f"{n:.0f} B"


def explain(geo, prompt_len: int | None = None, decode_steps: int = 0, batch: int = 1) -> str:
    from bench.predict import formula

    n, h, dk, dv = formula.kv_heads_and_dims(geo.config)
    e, cfg = geo.dtype.itemsize, geo.text_config
    lines = [f"simple formula: {n} layers x {h} KV heads x ({dk}+{dv}) x {e} B = {n * h * (dk + dv) * e:,} B/token"]
    kv = [g for g in geo.layers if g.token_bytes]
    for s in sorted({(g.kv_heads, g.head_dim_k, g.head_dim_v) for g in kv if g.kv_heads} - {(h, dk, dv)}):
        why = " (MQA, declared by multi_query)" if s[0] == 1 and getattr(cfg, "multi_query", False) else ""
        idx = [g.index for g in kv if (g.kv_heads, g.head_dim_k, g.head_dim_v) == s]
        lines.append(f"layers {ranges(idx)} cache {s[0]} KV heads x ({s[1]}+{s[2]}){why}")
    if rank := getattr(cfg, "kv_lora_rank", None):
        latent = any((g.kv_heads, g.head_dim_k) == (1, rank) for g in kv)
        lines.append(f"MLA: the cache holds the {rank}-wide compressed latent and the rope key, not per-head K/V"
                     if latent else f"MLA: transformers caches per-head K/V here, not the {rank}-wide latent")
    for cap in sorted({g.held_cap for g in geo.layers if g.held_cap is not None}):
        idx = [g.index for g in geo.layers if g.held_cap == cap]
        g = geo.layers[idx[0]]
        line = f"layers {ranges(idx)} are sliding-window/chunked: they keep the last {cap} tokens"
        if g.decode_cap is not None and g.decode_cap > cap:
            line += (f"; their storage is the concatenation they sliced them from: {g.decode_cap} tokens after a "
                     f"decode step")
        if g.prefill_cap is None:
            line += ", and the whole prompt right after a longer prefill (until the first decode step)"
        lines.append(line)
    if states := [g for g in geo.layers if g.state_bytes]:
        lines.append(f"layers {ranges([g.index for g in states])} ({states[0].kind}) keep a fixed "
                     f"{size(sum(g.state_bytes for g in states))} state per sequence in all"
                     + ("" if any(g.token_bytes for g in states) else ", no per-token KV"))
    empty = sum(1 for g in geo.layers if not g.token_bytes and not g.state_bytes)
    empty += max(cfg.num_hidden_layers - len(geo.layers), 0)
    if empty:
        lines.append(f"{empty} layers hold nothing (they reuse earlier layers' KV, or have no cache)")
    lines.append(f"from the code: {sum(g.token_bytes for g in kv):,} B/token until a window fills")
    if prompt_len is not None:
        simple = n * h * (dk + dv) * e * batch * (prompt_len + decode_steps)
        held, resident = geo.held_bytes(prompt_len, decode_steps, batch), geo.bytes(prompt_len, decode_steps, batch)
        lines.append(f"at {prompt_len} + {decode_steps} tokens x batch {batch}: simple {size(simple)}, code "
                     f"{size(held)} held" + (f", {size(resident)} in memory" if resident != held else ""))
    return "\n".join(lines)
