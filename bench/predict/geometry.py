"""KV-cache geometry read from an architecture's own code, not from its config's attribute names.

`kv_geometry` builds the model on the meta device (no memory), makes the cache generate() makes, runs
generate()'s own prefill and decode steps on meta (bench.predict.metarun) under a storage tracker
(bench.predict.tracker) and reads what each cache layer holds (bench.measure.cachebytes, the one walker). MQA
flags, MLA, sliding/chunked windows, KV sharing and linear-attention / SSM states come out as the code has them.
Probes (batch 1): prefill 1 + 1 decode step, prefill L + 2 decode steps (L beyond every window or chunk the
config names). Per layer, three figures, each fitted and checked against every probe (GeometryError if not):

  held      what its tensors hold (their shapes): shared + batch * (state + token * min(n, held_cap));
            a sliding or chunked layer keeps window - 1 tokens (transformers 5.24), a full one every token.
  resident  what memory holds (the storages those tensors keep alive): the same with min(n, prefill_cap) right
            after a prefill and min(n, decode_cap) after a decode step. A sliding layer slices its window out of
            the concatenation it just made, so its storage is the whole prompt after a prefill and `window`
            tokens after a decode step, one more than it shows.
  peak      what it holds at once while a forward updates it: its new storage, plus `overlap` of the old one
            (0: updated in place; a full layer frees its old keys before concatenating its values; a sliding
            layer concatenates both before freeing either). Layers update in order, so a forward's cache peak is
            max over l of (layers before l at their new size, l at its peak, layers after l at their old size).

n is the tokens seen: the prompt, plus one per decode step. 0-d tensors (bookkeeping scalars) do not scale with
batch; everything else does. StaticCache is probed on first use.

Not covered: windows larger than L the config does not name ("window"/"chunk" keys); caches whose size is
not min(tokens, cap)-linear (compressed attention); models without a transformers Cache (NoCacheError);
code that cannot run on meta (MetaRunError); beam search / assisted decoding (past recording).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import torch

from bench.config.dtypes import torch_dtype
from bench.measure.cachebytes import cache_layers, layer_tensors, shaped_bytes, stored_bytes
from bench.predict import memo
from bench.predict.metarun import GenerateLoop, MetaKernels, meta_context, meta_model
from bench.predict.tracker import Tracker, layer_peaks


class GeometryError(RuntimeError):
    """The probes do not fit the per-layer model: a prediction would be wrong, so none is made."""


class MetaRunError(GeometryError):
    """The architecture's code cannot run on the meta device (e.g. routing sizes read back from data)."""


class NoCacheError(GeometryError):
    """generate() gives this model no transformers Cache: it keeps its own state (rwkv, xlnet, reformer)."""


def layer_figures(cache) -> list[tuple[int, int, int]]:
    """Per cache layer: (storage bytes that scale with batch, 0-d bookkeeping bytes, shaped bytes that scale
    with batch); each storage counted once, with the first layer holding it."""
    seen: set = set()
    out = []
    for layer in cache_layers(cache):
        b = s = shaped = 0
        for t in layer_tensors(layer, seen):
            if t.dim() == 0:
                s += stored_bytes(t)
            else:
                b, shaped = b + stored_bytes(t), shaped + shaped_bytes(t)
        out.append((b, s, shaped))
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


def probe(model, prompt: int, steps: int, implementation: str | None = None, max_cache_len: int = 0,
          batch: int = 1, device: str = "meta"):
    """Run a prefill and `steps` decode steps: per forward, the per-layer figures after it and the per-layer
    (storage before, most at once, storage after) during it; and the cache at the end."""
    figures, peaks = [], []
    with meta_context(MetaKernels()), Tracker.of(model, device, rounding=1) as tr:
        run = GenerateLoop(model, batch, implementation, max_cache_len)
        for n in [prompt] + [1] * steps:
            before, start = tr.layer_serials(run.cache), len(tr.events)
            run.step(n)
            tr.collect()
            after = tr.layer_serials(run.cache)
            peaks.append(layer_peaks(tr.events, start, before + [set()] * (len(after) - len(before)), after))
            figures.append(layer_figures(run.cache))
    return figures, peaks, run.cache


@dataclass(frozen=True)
class LayerGeometry:
    """One cache layer of the dynamic cache generate() makes."""

    index: int
    kind: str                    # the cache layer's class
    token_bytes: int             # per cached token of one sequence
    state_bytes: int             # per sequence, whatever the length (conv / recurrent states)
    shared_bytes: int            # per layer, whatever the batch (0-d bookkeeping tensors)
    prefill_cap: Optional[int]   # storage tokens right after a prefill; None: all
    decode_cap: Optional[int]    # storage tokens after >= 1 decode step; None: all
    held_cap: Optional[int] = None   # tokens its tensors show (a window keeps window - 1); None: all
    overlap_share: Optional[float] = 0.0  # share of its old batch-scaled storage still alive at its update's peak
    overlap_state: Optional[float] = 0.0  # plus bytes per sequence; both None: not modelled
    kv_heads: int = 0            # shape of the K/V it holds (0: none)
    head_dim_k: int = 0
    head_dim_v: int = 0

    def resident(self, prompt_len: int, decode_steps: int = 0) -> int:
        n, cap = (prompt_len, self.prefill_cap) if decode_steps == 0 else (prompt_len + decode_steps, self.decode_cap)
        return n if cap is None else min(n, cap)

    def held(self, prompt_len: int, decode_steps: int = 0) -> int:
        n = prompt_len + decode_steps
        return n if self.held_cap is None else min(n, self.held_cap)

    def bytes(self, prompt_len: int, decode_steps: int = 0, batch: int = 1) -> int:
        """Resident bytes: the storages its tensors keep alive."""
        return self.shared_bytes + batch * (self.state_bytes + self.token_bytes * self.resident(prompt_len, decode_steps))

    def held_bytes(self, prompt_len: int, decode_steps: int = 0, batch: int = 1) -> int:
        return self.shared_bytes + batch * (self.state_bytes + self.token_bytes * self.held(prompt_len, decode_steps))

    def update_peak(self, prompt_len: int, decode_steps: int, batch: int = 1) -> int:
        """The most this layer holds at once while the forward reaching (prompt_len, decode_steps) updates it."""
        after = self.bytes(prompt_len, decode_steps, batch)
        if decode_steps == 0 or not (self.token_bytes or self.state_bytes):
            return after
        if self.overlap_share is None:
            raise GeometryError(f"layer {self.index} ({self.kind}): its update's peak is not modelled")
        old = self.state_bytes + self.token_bytes * self.resident(prompt_len, decode_steps - 1)
        return after + round(batch * (self.overlap_share * old + self.overlap_state))


def _solve(i, kind, short, long, L, kv, peaks) -> LayerGeometry:
    """One layer from its figures after prefill 1 (+1 step) and prefill L (+1, +2 steps), and its update peaks."""
    (a0, a1), (c0, c1, c2) = [f[0] for f in short], [f[0] for f in long]
    T, F = a1 - a0, 2 * a0 - a1
    bad = GeometryError(f"layer {i} ({kind}) does not fit shared + batch*(state + token*tokens): probes at 1 "
                        f"token {short}, at {L} tokens {long}")
    if T == 0:
        if len({a0, c0, c1, c2}) != 1 or len({f[2] for f in short + long}) != 1:
            raise bad
        cp = cd = ch = None
    else:
        if T < 0 or F < 0 or any((x - F) % T for x in (c0, c1, c2)):
            raise bad
        cp, cd, n2 = ((x - F) // T for x in (c0, c1, c2))
        if not (1 <= cp <= L and 2 <= cd <= L + 1 and n2 == min(L + 2, cd if cd <= L else L + 2)):
            raise bad
        cp, cd = (None if cp == L else cp), (None if cd == L + 1 else cd)
        shaped = [(f[2] - F) / T for f in short + long]
        if shaped[:2] != [1, 2] and shaped[:2] != [1, 1]:
            raise bad
        ch = None if shaped[2:] == [L, L + 1, L + 2] else int(shaped[2])
        if ch is not None and shaped[2:] != [ch] * 3:
            raise bad
    if len({f[1] for f in short + long}) != 1:
        raise bad
    return LayerGeometry(i, kind, T, F, short[0][1], cp, cd, ch, *_overlap(T, short, peaks), *kv)


def _overlap(T, short, peaks) -> tuple[Optional[float], Optional[float]]:
    """(share of the old batch-scaled storage, bytes per sequence) alive beside the new one at an update's peak,
    from the decode steps of both probes: solved on the long probe's two, checked on the short one's; (None,
    None) where they disagree."""
    steps = [(b - short[0][1], top - a) for b, top, a in peaks]  # old storage without 0-d, overlap bytes
    (x1, y1), (x2, y2) = steps[1], steps[2]
    share = (y2 - y1) / (x2 - x1) if T and x2 != x1 else 0.0
    state = y1 - share * x1
    if all(abs(share * x + state - y) < 0.5 for x, y in steps):
        return share, state
    return None, None


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
        """Dynamic cache bytes resident after a prefill of prompt_len tokens and decode_steps single-token steps
        (generate(max_new_tokens=n) runs n - 1 of them): what memory holds between forwards."""
        return sum(g.bytes(prompt_len, decode_steps, batch) for g in self.layers)

    def held_bytes(self, prompt_len: int, decode_steps: int = 0, batch: int = 1) -> int:
        """What the cache's tensors hold as shaped (a sliding layer's window - 1 tokens, not its storage)."""
        return sum(g.held_bytes(prompt_len, decode_steps, batch) for g in self.layers)

    def peak_bytes(self, prompt_len: int, decode_steps: int = 0, batch: int = 1) -> int:
        """The cache's most bytes at once during the forward that reaches (prompt_len, decode_steps): the prefill
        (decode_steps 0) or that decode step."""
        old = [0 if decode_steps == 0 else g.bytes(prompt_len, decode_steps - 1, batch) for g in self.layers]
        new = [g.bytes(prompt_len, decode_steps, batch) for g in self.layers]
        top = [g.update_peak(prompt_len, decode_steps, batch) for g in self.layers]
        return max((sum(new[:i]) + top[i] + sum(old[i + 1:]) for i in range(len(top))), default=0)

    def static_bytes(self, max_cache_len: int, batch: int = 1) -> int:
        """StaticCache bytes once allocated (first forward). generate() sizes it max_length - 1, i.e. prompt +
        max_new_tokens - 1; a sliding layer gets min(window, max_cache_len) slots (StaticSlidingWindowLayer)."""
        return sum(shared + batch * (state + token * (max_cache_len if cap is None else min(cap, max_cache_len)))
                   for shared, state, token, cap in _static_layers(self))

    def explain(self, prompt_len: int | None = None, decode_steps: int = 0, batch: int = 1) -> str:
        """The simple formula's figure and, where the code's differs, why (bench.predict.explain)."""
        from bench.predict.explain import explain

        return explain(self, prompt_len, decode_steps, batch)


_GEOMETRIES: dict[tuple, Geometry] = {}
_STATIC: dict[int, list[tuple[int, int, int, int | None]]] = {}


def kv_geometry(config, dtype: str | torch.dtype = "float16") -> Geometry:
    """Cache geometry of `config`'s causal LM in `dtype`, measured from its code (cached per config + dtype)."""
    dtype = torch_dtype(dtype)
    key = (config.to_json_string(), str(dtype))
    if key not in _GEOMETRIES:
        _GEOMETRIES[key] = memo.remembered("geometry", repr(key), lambda: _measure(config, dtype))
    return _GEOMETRIES[key]


def _measure(config, dtype: torch.dtype) -> Geometry:
    model = meta_model(config, dtype)
    text = model.config.get_text_config(decoder=True)
    L = probe_length(text)
    try:
        short, short_peaks, _ = probe(model, 1, 1)
        long, long_peaks, cache = probe(model, L, 2)
    except Exception as e:
        if not model._supports_default_dynamic_cache():
            raise NoCacheError(f"{text.model_type}: generate() passes no Cache; the model keeps its own state") from e
        raise MetaRunError(f"{text.model_type}: its code does not run on meta: {type(e).__name__}: {e}") from e
    layers = cache_layers(cache)
    if not layers:
        raise NoCacheError(f"{text.model_type}: generate() leaves no transformers Cache with layers "
                           f"({type(cache).__name__})")
    if len({len(s) for s in short + long + short_peaks + long_peaks}) != 1:
        raise GeometryError(f"{text.model_type}: the cache changed its number of layers between steps")
    fitted = tuple(_solve(i, type(layer).__name__, [s[i] for s in short], [s[i] for s in long], L, _kv_shape(layer),
                          [short_peaks[1][i], long_peaks[1][i], long_peaks[2][i]])
                   for i, layer in enumerate(layers))
    return Geometry(text.model_type, dtype, fitted, config, L)


def _static_layers(geo: Geometry) -> list[tuple[int, int, int, int | None]]:
    """Per StaticCache layer (0-d bytes, state bytes, token bytes, window or None), probed once: one token
    into StaticCache(max_cache_len=L); the token bytes are the dynamic layer's, the window its capacity."""
    if id(geo) not in _STATIC:
        model, L = meta_model(geo.config, geo.dtype), geo.probe_len
        figures, _, cache = probe(model, 1, 0, "static", L)
        if cache is None or len(figures[0]) != len(geo.layers):
            raise ValueError(f"{geo.model_type}: generate() makes no StaticCache matching the dynamic one")
        out = []
        for g, (b, s, _), layer in zip(geo.layers, figures[0], cache_layers(cache)):
            cap = getattr(layer, "max_cache_len", 0)  # StaticLayer family; linear-attention layers hold no tokens
            state = b - g.token_bytes * cap
            if state < 0:
                raise GeometryError(f"{geo.model_type}: static layer {g.index} holds {b} B, under {cap} tokens")
            out.append((s, state, g.token_bytes, None if cap >= L else cap))
        _STATIC[id(geo)] = out
    return _STATIC[id(geo)]
