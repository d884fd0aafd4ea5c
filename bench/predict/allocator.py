"""PyTorch's CUDA caching allocator, simulated over a list of allocations and frees (bench.predict.activations records
them on the meta device): what it would reserve, fragmentation included. What decides an OOM is reserved
memory, not the live sum: a long-lived KV block placed in a freed activation block strands the segment's rest.
"""
from __future__ import annotations

import bisect


def reserved_peak(events: list[tuple[int, int]]) -> int:
    """Peak bytes PyTorch's CUDA caching allocator would reserve for these allocations and frees, from an
    empty pool, with no memory cap and no expandable segments: best fit within the pool (<= 1 MiB: small),
    a block split when the rest is > 1 MiB (small pool: any rest), new segments of 2 MiB (small), 20 MiB
    (< 10 MiB) or the size rounded up to 2 MiB, freed blocks merged with free neighbours, nothing released.
    A long-lived tensor (a KV layer) placed in a freed activation block strands the rest of that segment."""
    mib = 1 << 20
    pools: dict[bool, list[tuple[int, int]]] = {True: [], False: []}  # small? -> sorted (size, address)
    blocks: dict[int, list] = {}                                       # address -> [size, used, segment, small]
    starts: list[list[int]] = []                                       # per segment: sorted block addresses
    held: dict[int, int] = {}
    top = 0
    for serial, size in events:
        if size:
            small = size <= mib
            pool = pools[small]
            i = bisect.bisect_left(pool, (size, -1))
            if i == len(pool):  # nothing cached fits: a new segment
                seg = 2 * mib if small else 20 * mib if size < 10 * mib else -(-size // (2 * mib)) * 2 * mib
                blocks[top] = [seg, False, len(starts), small]
                starts.append([top])
                pool.insert(i, (seg, top))
                top += seg
            have, at = pool.pop(i)
            b = blocks[at]
            b[1] = True
            if have - size > (0 if small else mib):
                b[0] = size
                blocks[at + size] = [have - size, False, b[2], small]
                bisect.insort(starts[b[2]], at + size)
                bisect.insort(pool, (have - size, at + size))
            held[serial] = at
        elif serial in held:
            at = held.pop(serial)
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
    return top
