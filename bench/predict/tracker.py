"""Live storages of a run, from their creating op until freed: the allocations an allocator would see.

`Tracker` is a dispatch mode (and MetaSafe, so data-dependent code runs on meta) that records every storage an
op creates on its device (weights and buffers excluded) and when it is freed, as events (serial, bytes) and
(serial, 0). bench.predict.activations takes its peak and feeds the events to the allocator simulation;
bench.predict.geometry replays them per cache layer to find what a layer's update holds at once. The same mode
runs over real CPU tensors (device="cpu"), which is how the tests hold the meta figures against real runs.
"""
from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._pytree import tree_flatten

from bench.measure.cachebytes import cache_layers, layer_tensors, storage_id
from bench.predict.metarun import MetaSafe

CUDA_BLOCK = 512  # the CUDA caching allocator rounds every allocation up to this


class Tracker(MetaSafe):
    """Live storages by identity; entries carry a serial number (a freed storage's id may be reused later).
    Sizes are rounded up to `rounding` bytes (512: as the CUDA caching allocator; 1: exact)."""

    def __init__(self, ignore: set[int], device: str = "meta", rounding: int = CUDA_BLOCK):
        super().__init__()
        self.ignore, self.device, self.rounding = ignore, device, rounding
        self.live, self.now, self.peak, self.at_peak, self.serial = {}, 0, 0, {}, 0
        self.events: list[tuple[int, int]] = []  # (serial, bytes) allocations, (serial, 0) frees

    @classmethod
    def of(cls, model, device: str = "meta", rounding: int = CUDA_BLOCK) -> "Tracker":
        """A tracker that never counts this model's weights and buffers."""
        return cls({storage_id(t) for t in (*model.parameters(), *model.buffers())}, device, rounding)

    def rounded(self, nbytes: int) -> int:
        return -(-nbytes // self.rounding) * self.rounding

    def add(self, t: torch.Tensor, op: str) -> int | None:
        """The serial of t's storage (tracked from now on if new); None for weights and empty storages."""
        st = t.untyped_storage()
        key, old = st._cdata, self.live.get(st._cdata)
        if old is not None and not old[0].expired():
            return old[3]
        if key in self.ignore or st.nbytes() == 0:
            return None
        n, self.serial = self.rounded(st.nbytes()), self.serial + 1
        self.now += n - (old[1] if old else 0)
        self.live[key] = (StorageWeakRef(st), n, op, self.serial)
        self.events.append((self.serial, n))
        return self.serial

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        self.collect()
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == self.device:
                self.add(t, func._overloadpacket.__name__)
        if self.now > self.peak:
            self.peak, self.at_peak = self.now, {e[3]: (e[1], e[2]) for e in self.live.values()}
        return out

    def collect(self) -> None:
        """Record the frees of storages that died since the last op."""
        for key in [k for k, entry in self.live.items() if entry[0].expired()]:
            _, n, _, serial = self.live.pop(key)
            self.now -= n
            self.events.append((serial, 0))

    def adopt(self, cache) -> set[int]:
        """Serials of the storages the cache holds now (added as live if new)."""
        return {s for layer in self.layer_serials(cache) for s in layer}

    def layer_serials(self, cache) -> list[set[int]]:
        """Per cache layer, the serials of the storages it holds now (each storage with its first layer)."""
        seen: set = set()
        return [{self.add(t, "kv cache") for t in layer_tensors(layer, seen)} - {None} for layer in cache_layers(cache)]


def cache_peak(events: list[tuple[int, int]], start: int, before: list[set[int]], after: list[set[int]]) -> int:
    """The most bytes a cache's storages (those it held before a forward or holds after) held at once during it."""
    return layer_peaks(events, start, [set().union(*before)], [set().union(*after)])[0][1]


def layer_peaks(events: list[tuple[int, int]], start: int, before: list[set[int]],
                after: list[set[int]]) -> list[tuple[int, int, int]]:
    """Per cache layer: (bytes it held before a forward, the most it held at once during it, bytes after), from
    the events recorded since index `start` (taken after `before` was read); a layer's storages are those it
    held before or holds after."""
    size = {s: n for s, n in events if n}
    out = []
    for b, a in zip(before, after):
        mine = b | a
        now = top = held = sum(size[s] for s in b)
        for s, n in events[start:]:
            if s in mine:
                now += n if n else -size[s]
                top = max(top, now)
        out.append((held, top, sum(size[s] for s in a)))
    return out
