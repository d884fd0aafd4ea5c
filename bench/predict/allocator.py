"""PyTorch's CUDA caching allocator, simulated over a list of allocations and frees (bench.predict.activations records
them on the meta device): what it would reserve, fragmentation included. What decides an OOM is reserved
memory, not the live sum: a long-lived KV block placed in a freed activation block strands the segment's rest.

Two figures: `reserved_peak`, the segments it reserves on a roomy card (what max_memory_reserved shows), and
`least_capacity`, the least memory it can run in: when a new segment does not fit, the allocator returns its wholly
free cached segments to the driver and tries again (PyTorch's release_cached_blocks), and only then runs out. Free
space inside a segment that still holds a live block cannot be returned: that is the fragmentation that costs.
"""
from __future__ import annotations

import bisect
from typing import Optional

MIB = 1 << 20


def _segment(size: int, small: bool) -> int:
    return 2 * MIB if small else 20 * MIB if size < 10 * MIB else -(-size // (2 * MIB)) * 2 * MIB


def simulate(events: list[tuple[int, int]], cap: Optional[int] = None) -> Optional[int]:
    """Peak bytes reserved for these allocations and frees, from an empty pool, with no expandable segments: best
    fit within the pool (<= 1 MiB: small), a block split when the rest is > 1 MiB (small pool: any rest), new
    segments of 2 MiB (small), 20 MiB (< 10 MiB) or the size rounded up to 2 MiB, freed blocks merged with free
    neighbours. With a cap, a segment that would pass it first makes the allocator release every wholly free
    segment; None when even then it does not fit (out of memory)."""
    pools: dict[bool, list[tuple[int, int]]] = {True: [], False: []}  # small? -> sorted (size, address)
    blocks: dict[int, list] = {}                                       # address -> [size, used, segment, small]
    starts: list[list[int]] = []                                       # per segment: sorted block addresses
    sizes: list[int] = []                                              # per segment: its size (0: released)
    held: dict[int, int] = {}
    top = reserved = peak = 0
    for serial, size in events:
        if size:
            small = size <= MIB
            pool = pools[small]
            i = bisect.bisect_left(pool, (size, -1))
            if i == len(pool):  # nothing cached fits: a new segment
                seg = _segment(size, small)
                if cap is not None and reserved + seg > cap:
                    reserved -= _release(pools, blocks, starts, sizes)
                    if reserved + seg > cap:
                        return None
                    i = bisect.bisect_left(pool, (size, -1))
                blocks[top] = [seg, False, len(starts), small]
                starts.append([top])
                sizes.append(seg)
                pool.insert(i, (seg, top))
                top, reserved = top + seg, reserved + seg
                peak = max(peak, reserved)
            have, at = pool.pop(i)
            b = blocks[at]
            b[1] = True
            if have - size > (0 if small else MIB):
                b[0] = size
                blocks[at + size] = [have - size, False, b[2], small]
                bisect.insort(starts[b[2]], at + size)
                bisect.insort(pool, (have - size, at + size))
            held[serial] = at
        elif serial in held:
            _free(held.pop(serial), pools, blocks, starts)
    return peak


def _free(at: int, pools, blocks, starts) -> None:
    b = blocks[at]
    b[1], pool, seg = False, pools[b[3]], starts[b[2]]
    k = bisect.bisect_left(seg, at)
    for j in (k + 1, k - 1):  # merge with the free neighbours of the same segment
        if 0 <= j < len(seg) and not blocks[seg[j]][1]:
            lo, hi = min(seg[j], at), max(seg[j], at)
            pool.remove((blocks[seg[j]][0], seg[j]))
            blocks[lo][0] = blocks[lo][0] + blocks.pop(hi)[0]
            seg.remove(hi)
            at = lo
            k = bisect.bisect_left(seg, at)
    bisect.insort(pool, (blocks[at][0], at))


def _release(pools, blocks, starts, sizes) -> int:
    """Return every wholly free segment to the driver; the bytes released."""
    freed = 0
    for s, seg in enumerate(starts):
        if sizes[s] and len(seg) == 1 and not blocks[seg[0]][1] and blocks[seg[0]][0] == sizes[s]:
            b = blocks.pop(seg[0])
            pools[b[3]].remove((b[0], seg[0]))
            freed, sizes[s] = freed + sizes[s], 0
            seg.clear()
    return freed


def reserved_peak(events: list[tuple[int, int]]) -> int:
    """Peak bytes the allocator reserves on a card with room to spare (nothing is ever released)."""
    return simulate(events) or 0


def least_capacity(events: list[tuple[int, int]]) -> int:
    """The least memory these allocations run in: the smallest cap (to 2 MiB) under which the simulation, releasing
    free segments when pressed, never runs out. Between the live peak and reserved_peak."""
    hi = reserved_peak(events)
    lo = 0
    while hi - lo > 2 * MIB:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if simulate(events, mid) is not None else (mid, hi)
    return hi
