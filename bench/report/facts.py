"""Facts of one row that every report states the same way: memory as a reader must count it, the bandwidth floor,
and the caveats that go on the same line as the row's figures.

Memory: on a GPU, `peak_mem_mib` is the CUDA peak allocated and an offloaded cache's host-side KV
(`kv_host_mib`) is memory too: `memory_mib` adds it. On a CPU, `peak_mem_mib` is the worker process's peak
RSS over its whole life (it grows with run order), so it is never a cell's own figure: a per-cell peak is used
where a row has one (CELL_RSS), else the cell has no memory figure and its KV bytes are what can be compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bench.report.fmt import num, sig, text

# A cell's own peak RSS on a CPU, under the names a row may carry it (newest first); none yet in the store.
CELL_RSS = ("peak_rss_cell_mib", "cell_peak_rss_mib", "peak_rss_mib_cell")


def flag(v) -> bool:
    """A boolean column as read back (bool, 'True', None, NaN): True only for a true value."""
    return text(v) in ("True", "true", "1")


def on_gpu(r) -> bool:
    return text(r.get("device")) == "cuda"


def holds_cache(r) -> bool:
    """False only for rows that recompute the whole context every step (use_cache=False)."""
    return text(r.get("holds_cache")) not in ("False", "false", "0")


def host_mib(r) -> float:
    """KV an offloaded cache keeps in host memory (0 where none)."""
    h = num(r.get("kv_host_mib"))
    return h if h > 0 else 0.0


def cell_rss_mib(r) -> float:
    """A CPU cell's own peak RSS, where the row carries one; NaN otherwise."""
    for c in CELL_RSS:
        v = num(r.get(c))
        if not math.isnan(v):
            return v
    return math.nan


@dataclass(frozen=True)
class Memory:
    """What a row's memory figure is: `mib` (NaN: none), `what` it measures, and the host part of it."""
    mib: float
    what: str
    host_mib: float = 0.0


def memory(r) -> Memory:
    """GPU: device peak allocated + host KV. CPU: the cell's own peak RSS where recorded, else none."""
    if on_gpu(r):
        return Memory(num(r.get("peak_mem_mib")) + host_mib(r), "device peak + host KV", host_mib(r))
    v = cell_rss_mib(r)
    return Memory(v, "cell peak RSS" if not math.isnan(v) else "no per-cell figure on a CPU")


def gib(mib) -> str:
    return "–" if math.isnan(num(mib)) else f"{num(mib) / 1024:.1f} GiB"


def size(mib) -> str:
    """An amount of memory in the unit that keeps its digits: '40.3 GiB', '512 MiB', '3.30 MiB'."""
    x = num(mib)
    return "–" if math.isnan(x) else gib(x) if abs(x) >= 1024 else f"{sig(x)} MiB"


def mem_text(r) -> str:
    """'70.4 GiB' or '23.2 GiB + 47.2 GiB host' (GPU); '812 MiB cell RSS' or 'KV 7.01 MiB' (CPU)."""
    m = memory(r)
    if on_gpu(r):
        dev = num(r.get("peak_mem_mib"))
        return size(dev) + (f" + {size(m.host_mib)} host" if m.host_mib else "")
    if not math.isnan(m.mib):
        return f"{sig(m.mib)} MiB cell RSS"
    return f"KV {sig(r.get('kv_cache_mib'))} MiB"


def below_floor(r) -> bool:
    """A decode step faster than the row's own bandwidth floor (MBU > 1): weights + KV cannot be read that fast,
    so the figure is in doubt (a mis-timed step, or a floor that counts bytes the step did not read)."""
    t, f = num(r.get("tpot_ms")), num(r.get("bandwidth_floor_ms"))
    return t > 0 and f > 0 and t < f


def floor_text(r) -> str:
    f = num(r.get("bandwidth_floor_ms"))
    return "" if math.isnan(f) else f"floor {sig(f)} ms"


def prefill_share(r) -> float:
    """TTFT over the whole call: near 1, a call's throughput is mostly its prefill's."""
    t, e = num(r.get("ttft_ms")), num(r.get("e2e_ms"))
    return t / e if t > 0 and e > 0 else math.nan


def clean(r) -> bool:
    """May win a question: ok, not disturbed, not faster than its own bandwidth floor."""
    return text(r.get("status")) == "ok" and not flag(r.get("disturbed")) and not below_floor(r)


def why_not_clean(r) -> str:
    if text(r.get("status")) != "ok":
        return text(r.get("status"))
    if flag(r.get("disturbed")):
        return "disturbed"
    if below_floor(r):
        return f"below its bandwidth floor (MBU {num(r.get('mbu')):.2f})"
    return ""


def caveats(r, weights_said: bool = False) -> list[str]:
    """What a reader must know beside this row's figures, shortest first."""
    out = []
    if text(r.get("weights")) == "random" and not weights_said:
        out.append("random weights")
    if flag(r.get("disturbed")):
        out.append("disturbed")
    if below_floor(r):
        out.append(f"below its bandwidth floor (MBU {num(r.get('mbu')):.2f})")
    if on_gpu(r) and host_mib(r):
        out.append(f"{size(host_mib(r))} in host memory")
    if flag(r.get("compiled")) and (num(r.get("graph_breaks")) > 0 or num(r.get("recompile_limit_hits")) > 0):
        out.append("compiled only in part")
    return out
