"""What a GPU model holds, by name: its memory capacity. Plain data, no torch: the planner and the report read it.

Names as `bench plan gpu=` takes them; a row's `gpu` column (torch's name, e.g. 'NVIDIA H100 80GB HBM3') is
matched by the one known name it contains (`capacity`).
"""
from __future__ import annotations

import re
from typing import Optional

# Usable device memory, GiB: what torch.cuda.get_device_properties().total_memory reports where a card of this
# project ran (H100 80GB HBM3, H200), else nvidia-smi's total (MiB / 1024), a little above it.
GPU_MEMORY_GIB: dict[str, float] = {
    "h100": 79.18,  # H100 80GB HBM3 (SXM)
    "h200": 139.80,
    "a100-80gb": 81920 / 1024,
    "a100-40gb": 40960 / 1024,
    "l4": 23034 / 1024,
    "t4": 15360 / 1024,
    "a10g": 23028 / 1024,
    "rtx4090": 24564 / 1024,
}


# Datasheet peak memory bandwidth, GB/s. Kernels reach ~80-90% of it at best: a bandwidth measured
# on the card (e.g. a large device-to-device copy) gives a truer floor than this table.
GPU_BANDWIDTH_GB_S: dict[str, float] = {
    "h100": 3350,  # SXM
    "h200": 4800,
    "a100-80gb": 2039,
    "a100-40gb": 1555,
    "l4": 300,
    "t4": 320,
    "a10g": 600,
    "rtx4090": 1008,
}


def norm(name: str) -> str:
    """A GPU name without case or separators: 'NVIDIA H100 80GB HBM3' -> 'nvidiah10080gbhbm3'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def capacity(gpu: str) -> Optional[tuple[str, float]]:
    """(table name, GiB) of a GPU named exactly as a table key or as torch names it (the one key it contains);
    None when no key or more than one matches."""
    n = norm(gpu)
    if not n:
        return None
    exact = [k for k in GPU_MEMORY_GIB if norm(k) == n]
    inside = exact or [k for k in GPU_MEMORY_GIB if norm(k) in n]
    return (inside[0], GPU_MEMORY_GIB[inside[0]]) if len(inside) == 1 else None
