"""Host memory against what a strategy keeps there (an offloaded cache's pinned blocks: bench.strategies.offloaded).

The host's figures come from /proc/meminfo, bounded by the process's cgroup limit where it has one (a container's
/proc/meminfo shows the whole machine, while the kernel kills the process at its cgroup's limit). Pinned memory
cannot be swapped out, so past what is available the kernel's OOM killer ends the process (SIGKILL), with no row.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

GIB = 2**30
WARN_SHARE = 0.8  # bench plan warns when a cell's host memory passes this share of what is available


@dataclass(frozen=True)
class HostMemory:
    total: int        # bytes this process may use at most (the machine's RAM, or its cgroup's limit)
    available: int    # bytes it can still take now


def _meminfo() -> dict[str, int]:
    path = Path("/proc/meminfo")
    if not path.exists():
        return {}
    return {m.group(1): int(m.group(2)) * 1024 for m in re.finditer(r"^(\w+):\s+(\d+) kB", path.read_text(), re.M)}


def _cgroup() -> tuple[Optional[int], Optional[int]]:
    """(limit, usage) of this process's memory cgroup (v2, else v1); None where there is no limit."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(limit).read_text().strip()
            used = int(Path(usage).read_text().strip())
        except (OSError, ValueError):
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "no limit"
            return int(text), used
        return None, used
    return None, None


def host_memory() -> Optional[HostMemory]:
    """What this process can use of the host's memory, or None where /proc/meminfo is missing."""
    info = _meminfo()
    if "MemTotal" not in info:
        return None
    total, available = info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
    limit, used = _cgroup()
    if limit is not None:
        total, available = min(total, limit), min(available, max(limit - (used or 0), 0))
    return HostMemory(total, available)


def host_refusal(host_bytes: float, mem: Optional[HostMemory] = None) -> Optional[str]:
    """Why a cell holding host_bytes of host memory (pinned) would be killed, or None."""
    mem = host_memory() if mem is None else mem
    if not host_bytes or mem is None or host_bytes <= mem.available:
        return None
    return (f"it holds ~{host_bytes / GIB:.1f} GiB of pinned host memory (power-of-two blocks of torch's caching "
            f"host allocator) but this process can take {mem.available / GIB:.1f} GiB of the host's "
            f"{mem.total / GIB:.1f} GiB: the kernel would kill it (SIGKILL)")


def host_warning(host_bytes: float, mem: Optional[HostMemory] = None) -> Optional[str]:
    """A note for bench plan when a cell's host memory comes near the host's (refusal or WARN_SHARE of it)."""
    mem = host_memory() if mem is None else mem
    if not host_bytes or mem is None:
        return None
    if (why := host_refusal(host_bytes, mem)) is not None:
        return f"host memory: {why}"
    if host_bytes > WARN_SHARE * mem.available:
        return (f"host memory: ~{host_bytes / GIB:.1f} GiB pinned, {host_bytes / mem.available:.0%} of the "
                f"{mem.available / GIB:.1f} GiB available here; pinned blocks stay with the process after the cell")
    return None
