"""Memory and host-speed figures: model bytes, peak memory, the host's launch speed, copy bandwidth."""
from __future__ import annotations

import functools
import re
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from bench.measure.clock import sync

MIB = 1024 * 1024


def model_bytes(model) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:  # tied embeddings count once
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def reset_peak(device: str) -> Optional[int]:
    """Start a new peak; returns the bytes in use right now (CUDA: allocated; CPU: the process's RSS)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    # Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS.
    try:
        Path("/proc/self/clear_refs").write_text("5")
        m = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def peak_bytes(device: str) -> tuple[int, Optional[int]]:
    """(peak, reserved) since reset_peak: CUDA allocator figures, or the process peak RSS."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) * 1024, None
    except (OSError, AttributeError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, None


def launch_us(device: str, window_s: float = 0.05) -> float:
    """Host time to issue one tiny op, in microseconds (on CUDA: one kernel launch; the GPU finishes each
    faster than the host issues the next). A batch-1 decode step of a small model is made of such launches,
    so this is the host speed behind its time, taken in the cell's own process: the mean over a 50 ms window
    after a warm-up, so time the host spends on other work inside the window counts."""
    x = torch.zeros(16, device=device)
    for _ in range(100):  # warm-up: allocator, dispatcher, first launch
        x.add_(1)
    sync(device)
    ops, t = 0, time.perf_counter()
    while time.perf_counter() - t < window_s:
        for _ in range(100):
            x.add_(1)
        ops += 100
    sync(device)
    return (time.perf_counter() - t) / ops * 1e6


@functools.lru_cache(maxsize=None)
def copy_bandwidth_gb_s(device: str) -> float:
    """Device memory bandwidth from a large copy (bytes read + written per second), median of 10."""
    n = (1 << 30) if device == "cuda" else (1 << 26)  # past the caches either way
    src = torch.empty(n, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(12):
        sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n / float(np.median(times[2:])) / 1e9
