"""KV-cache geometry read from an architecture's own code, not from its config's attribute names.

`kv_geometry` builds the model on the meta device (no memory), makes the cache generate() makes, runs
generate()'s own prefill and decode steps on meta (bench.predict.metarun) and reads what each cache
layer holds. MQA flags, MLA, sliding/chunked windows, KV sharing and linear-attention / SSM states come out
as the code has them. Probes (batch 1): prefill 1 + 1 decode step, prefill L + 2 decode steps (L beyond every
window or chunk the config names). Each layer must fit

    bytes = shared + batch * (state + token * held),  held(P, k) = min(P, prefill_cap) if k == 0
                                                                   else min(P + k, decode_cap)

(a sliding layer keeps a view of its last concatenation: a whole prompt right after prefill, `window` tokens
after a decode step, not window - 1) or GeometryError is raised. 0-d tensors (bookkeeping scalars) do not
scale with batch; everything else does. Counts follow bench.measure.cachebytes.cache_payload (each storage once,
whole storages, `cumulative_length` excluded). StaticCache is probed on first use.

Not covered: windows larger than L the config does not name ("window"/"chunk" keys); caches whose size is
not min(tokens, cap)-linear (compressed attention); models without a transformers Cache (NoCacheError);
code that cannot run on meta (MetaRunError); beam search / assisted decoding (past recording).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from bench.predict.metarun import GenerateLoop, MetaKernels, MetaSafe, as_dtype, cache_layers, layer_tensors, meta_context, meta_model


class GeometryError(RuntimeError):
    """The probes do not fit the per-layer model: a prediction would be wrong, so none is made."""


class MetaRunError(GeometryError):
    """The architecture's code cannot run on the meta device (e.g. routing sizes read back from data)."""


class NoCacheError(GeometryError):
    """generate() gives this model no transformers Cache: it keeps its own state (rwkv, xlnet, reformer)."""


def layer_bytes(cache) -> list[tuple[int, int]]:
    """Per cache layer: (bytes that scale with batch, 0-d bookkeeping bytes); storages counted once."""
    seen: set[int] = set()
    out = []
    for layer in cache_layers(cache):
        b = s = 0
        for t in layer_tensors(layer):
            if t.untyped_storage()._cdata not in seen:
                seen.add(t.untyped_storage()._cdata)
                b, s = (b, s + t.untyped_storage().nbytes()) if t.dim() == 0 else (b + t.untyped_storage().nbytes(), s)
        out.append((b, s))
    return out


def _kv_shape(layer) -> tuple[int, int, int]:
    k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
    if isinstance(k, torch.Tensor) and k.dim() == 4 and isinstance(v, torch.Tensor) and v.dim() == 4:
        return k.shape[1], k.shape[-1], v.shape[-1]
    return 0, 0, 0


def probe_length(text_config) -> int:
    """A prompt length beyond every window or chunk size the config names."""
    sizes = []
    for k, v in text_config.to_dict().items():
        if re.search("window|chunk", k):
            sizes += [x for x in (v if isinstance(v, list) else [v]) if isinstance(x, int) and not isinstance(x, bool)]
    return max([64] + [2 * s + 16 for s in sizes])


def _run(model, prompt: int, steps: int, implementation: str | None = None, max_cache_len: int = 0):
    """Per-layer bytes after the prefill and after each decode step, and the cache at the end."""
    states = []
    with meta_context(MetaSafe(), MetaKernels()):
        run = GenerateLoop(model, 1, implementation, max_cache_len)
        for n in [prompt] + [1] * steps:
            run.step(n)
            states.append(layer_bytes(run.cache))
    return states, run.cache


@dataclass(frozen=True)
class LayerGeometry:
    """One cache layer of the dynamic cache generate() makes."""

    index: int
    kind: str                    # the cache layer's class
    token_bytes: int             # per cached token of one sequence
    state_bytes: int             # per sequence, whatever the length (conv / recurrent states)
    shared_bytes: int            # per layer, whatever the batch (0-d bookkeeping tensors)
    prefill_cap: int | None      # tokens held right after a prefill; None: all
    decode_cap: int | None       # tokens held after >= 1 decode step; None: all
    kv_heads: int = 0            # shape of the K/V it holds (0: none)
    head_dim_k: int = 0
    head_dim_v: int = 0

    def held(self, prompt_len: int, decode_steps: int = 0) -> int:
        n, cap = (prompt_len, self.prefill_cap) if decode_steps == 0 else (prompt_len + decode_steps, self.decode_cap)
        return n if cap is None else min(n, cap)

    def bytes(self, prompt_len: int, decode_steps: int = 0, batch: int = 1) -> int:
        return self.shared_bytes + batch * (self.state_bytes + self.token_bytes * self.held(prompt_len, decode_steps))


def fit_layer(i: int, kind: str, short: list, long: list, L: int, kv: tuple) -> LayerGeometry:
    """Solve one layer from (batch bytes, 0-d bytes) after prefill 1 (+1 step) and prefill L (+1, +2 steps)."""
    (a0, a1), (c0, c1, c2) = [b for b, _ in short], [b for b, _ in long]
    T, F = a1 - a0, 2 * a0 - a1
    bad = GeometryError(f"layer {i} ({kind}) does not fit shared + batch*(state + token*held): probes at 1 "
                        f"token {short}, at {L} tokens {long}")
    if T == 0:
        if len({a0, c0, c1, c2}) != 1:
            raise bad
        cp = cd = None
    else:
        if T < 0 or F < 0 or any((x - F) % T for x in (c0, c1, c2)):
            raise bad
        cp, cd, n2 = ((x - F) // T for x in (c0, c1, c2))
        if not (1 <= cp <= L and 2 <= cd <= L + 1 and n2 == min(L + 2, cd if cd <= L else L + 2)):
            raise bad
        cp, cd = (None if cp == L else cp), (None if cd == L + 1 else cd)
    if len({s for _, s in short + long}) != 1:
        raise bad
    return LayerGeometry(i, kind, T, F, short[0][1], cp, cd, *kv)


def _ranges(idx: list[int]) -> str:
    out: list[str] = []
    for n in idx:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)


def _size(n: float) -> str:
    unit = next(((u, s) for u, s in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)) if n >= s), ("B", 1))
    return f"{n / unit[1]:.1f} {unit[0]}" if unit[1] > 1 else f"{n:.0f} B"


@dataclass(frozen=True)
class QuantLayer:
    kv_heads: int
    head_dim_k: int
    head_dim_v: int
    tokens: int   # tokens held: quantized + the full-precision residual window


@dataclass(frozen=True)
class Geometry:
    model_type: str
    dtype: torch.dtype
    layers: tuple[LayerGeometry, ...]
    config: object = field(repr=False, compare=False)   # the config kv_geometry was given
    probe_len: int = 0

    @property
    def text_config(self):
        return self.config.get_text_config(decoder=True)

    def bytes(self, prompt_len: int, decode_steps: int = 0, batch: int = 1) -> int:
        """Dynamic cache bytes after a prefill of prompt_len tokens and decode_steps single-token steps
        (generate(max_new_tokens=n) runs n - 1 of them)."""
        return sum(g.bytes(prompt_len, decode_steps, batch) for g in self.layers)

    def static_bytes(self, max_cache_len: int, batch: int = 1) -> int:
        """StaticCache bytes once allocated (first forward). generate() sizes it max_length - 1, i.e. prompt +
        max_new_tokens - 1; a sliding layer gets min(window, max_cache_len) slots (StaticSlidingWindowLayer)."""
        return sum(shared + batch * (state + token * (max_cache_len if cap is None else min(cap, max_cache_len)))
                   for shared, state, token, cap in _static_layers(self))

    def quantized_layers(self, prompt_len: int, decode_steps: int = 0) -> list[QuantLayer]:
        """What a QuantizedCache's layers hold: every token, no window. transformers (5.17 to 5.24) builds one
        QuantizedLayer per config layer and refuses any layer type but full attention (ValueError, here too)."""
        from transformers.cache_utils import get_layer_types_and_kwargs

        bad = set(get_layer_types_and_kwargs(self.text_config)[0]) - {"full_attention"}
        if bad or any(g.state_bytes or g.decode_cap is not None for g in self.layers):
            raise ValueError(f"{self.model_type}: QuantizedCache takes only full-attention layers, "
                             f"not {bad or 'states'}")
        by_index = {g.index: g for g in self.layers if g.kv_heads}
        layers = (by_index.get(i) for i in range(self.text_config.num_hidden_layers))
        return [QuantLayer(g.kv_heads, g.head_dim_k, g.head_dim_v, prompt_len + decode_steps) if g
                else QuantLayer(0, 0, 0, 0) for g in layers]

    def quantized_bytes(self, prompt_len: int, decode_steps: int = 0, batch: int = 1, backend: str = "quanto",
                        nbits: int = 4, q_group_size: int = 64, residual_length: int = 128,
                        axis_key: int = 0, axis_value: int = 0) -> int:
        """QuantizedCache bytes: kvmath's exact quanto/HQQ packing, per layer, over what quantized_layers holds."""
        from bench.predict import formula

        formula.check_quant(backend, nbits)
        window, e, total = quantized_window(prompt_len, decode_steps, residual_length), self.dtype.itemsize, 0
        for q in self.quantized_layers(prompt_len, decode_steps):
            rows = batch * q.kv_heads * (q.tokens - window)
            total += batch * q.kv_heads * min(window, q.tokens) * (q.head_dim_k + q.head_dim_v) * e + sum(
                formula.quantized_tensor_bytes(rows * d, nbits, q_group_size, e, backend, ax)
                for d, ax in ((q.head_dim_k, axis_key), (q.head_dim_v, axis_value)))
        return total

    def explain(self, prompt_len: int | None = None, decode_steps: int = 0, batch: int = 1) -> str:
        """The simple formula's figure and, where the code's differs, why."""
        from bench.predict import formula

        n, h, dk, dv = formula.kv_heads_and_dims(self.config)
        e, cfg = self.dtype.itemsize, self.text_config
        lines = [f"simple formula: {n} layers x {h} KV heads x ({dk}+{dv}) x {e} B = {n * h * (dk + dv) * e:,} B/token"]
        kv = [g for g in self.layers if g.token_bytes]
        for s in sorted({(g.kv_heads, g.head_dim_k, g.head_dim_v) for g in kv if g.kv_heads} - {(h, dk, dv)}):
            why = " (MQA, declared by multi_query)" if s[0] == 1 and getattr(cfg, "multi_query", False) else ""
            idx = [g.index for g in kv if (g.kv_heads, g.head_dim_k, g.head_dim_v) == s]
            lines.append(f"layers {_ranges(idx)} cache {s[0]} KV heads x ({s[1]}+{s[2]}){why}")
        if rank := getattr(cfg, "kv_lora_rank", None):
            latent = any((g.kv_heads, g.head_dim_k) == (1, rank) for g in kv)
            lines.append(f"MLA: the cache holds the {rank}-wide compressed latent and the rope key, not per-head K/V"
                         if latent else f"MLA: transformers caches per-head K/V here, not the {rank}-wide latent")
        for cap in sorted({g.decode_cap for g in self.layers if g.decode_cap is not None}):
            idx = [g.index for g in self.layers if g.decode_cap == cap]
            whole = all(self.layers[i].prefill_cap is None for i in idx)
            lines.append(f"layers {_ranges(idx)} are sliding-window/chunked: they stop growing at {cap} tokens"
                         + (" (right after a longer prefill they still hold the whole prompt)" if whole else ""))
        if states := [g for g in self.layers if g.state_bytes]:
            lines.append(f"layers {_ranges([g.index for g in states])} ({states[0].kind}) keep a fixed "
                         f"{_size(sum(g.state_bytes for g in states))} state per sequence in all"
                         + ("" if any(g.token_bytes for g in states) else ", no per-token KV"))
        empty = sum(1 for g in self.layers if not g.token_bytes and not g.state_bytes)
        empty += max(cfg.num_hidden_layers - len(self.layers), 0)
        if empty:
            lines.append(f"{empty} layers hold nothing (they reuse earlier layers' KV, or have no cache)")
        lines.append(f"from the code: {sum(g.token_bytes for g in kv):,} B/token until a window fills")
        if prompt_len is not None:
            simple = n * h * (dk + dv) * e * batch * (prompt_len + decode_steps)
            lines.append(f"at {prompt_len} + {decode_steps} tokens x batch {batch}: simple {_size(simple)}, "
                         f"code {_size(self.bytes(prompt_len, decode_steps, batch))}")
        return "\n".join(lines)


def quantized_window(prompt_len: int, decode_steps: int, residual_length: int) -> int:
    """Tokens in QuantizedLayer's full-precision window, by transformers' own update rule run on placeholders:
    the flush condition changed after 5.17 (residual_length=1 alternates 0/1 there, stays 0 in 5.24); the
    state repeats every max(R, 2) steps."""
    from transformers.cache_utils import QuantizedLayer

    class Counting(QuantizedLayer):
        def _quantize(self, tensor, axis):
            return tensor.shape[-2]

        def _dequantize(self, q):
            return torch.zeros(1, 1, q, 1)

    layer = Counting(residual_length=residual_length)
    for n in [prompt_len] + [1] * (decode_steps % max(residual_length, 2)):
        layer.update(torch.zeros(1, 1, n, 1), torch.zeros(1, 1, n, 1))
    return layer.keys.shape[-2] if layer.keys.dim() == 4 else 0


_GEOMETRIES: dict[tuple, Geometry] = {}
_STATIC: dict[int, list[tuple[int, int, int, int | None]]] = {}


def kv_geometry(config, dtype: str | torch.dtype = "float16") -> Geometry:
    """Cache geometry of `config`'s causal LM in `dtype`, measured from its code (cached per config + dtype)."""
    dtype = as_dtype(dtype)
    key = (config.to_json_string(), str(dtype))
    if key in _GEOMETRIES:
        return _GEOMETRIES[key]
    model = meta_model(config, dtype)
    text = model.config.get_text_config(decoder=True)
    L = probe_length(text)
    try:
        short, _ = _run(model, 1, 1)
        long, cache = _run(model, L, 2)
    except Exception as e:
        if not model._supports_default_dynamic_cache():
            raise NoCacheError(f"{text.model_type}: generate() passes no Cache; the model keeps its own state") from e
        raise MetaRunError(f"{text.model_type}: its code does not run on meta: {type(e).__name__}: {e}") from e
    layers = cache_layers(cache)
    if not layers:
        raise NoCacheError(f"{text.model_type}: generate() leaves no transformers Cache with layers "
                           f"({type(cache).__name__})")
    if len({len(s) for s in short + long}) != 1:
        raise GeometryError(f"{text.model_type}: the cache changed its number of layers between steps")
    fitted = tuple(fit_layer(i, type(layer).__name__, [s[i] for s in short], [s[i] for s in long], L, _kv_shape(layer))
                   for i, layer in enumerate(layers))
    _GEOMETRIES[key] = Geometry(text.model_type, dtype, fitted, config, L)
    return _GEOMETRIES[key]


def _static_layers(geo: Geometry) -> list[tuple[int, int, int, int | None]]:
    """Per StaticCache layer (0-d bytes, state bytes, token bytes, window or None), probed once: one token
    into StaticCache(max_cache_len=L); the token bytes are the dynamic layer's, the window its capacity."""
    if id(geo) not in _STATIC:
        model, L = meta_model(geo.config, geo.dtype), geo.probe_len
        states, cache = _run(model, 1, 0, "static", L)
        if cache is None or len(states[0]) != len(geo.layers):
            raise ValueError(f"{geo.model_type}: generate() makes no StaticCache matching the dynamic one")
        out = []
        for g, (b, s), layer in zip(geo.layers, states[0], cache_layers(cache)):
            cap = getattr(layer, "max_cache_len", 0)  # StaticLayer family; linear-attention layers hold no tokens
            state = b - g.token_bytes * cap
            if state < 0:
                raise GeometryError(f"{geo.model_type}: static layer {g.index} holds {b} B, under {cap} tokens")
            out.append((s, state, g.token_bytes, None if cap >= L else cap))
        _STATIC[id(geo)] = out
    return _STATIC[id(geo)]
