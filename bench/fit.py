"""Refuse, before any model loads, a cell that cannot fit by the planner's own estimate."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from .config import ConfigError, RunConfig

RESERVE_FRAC = 0.1  # as `bench plan`: activations, workspace, CUDA context


def device_memory(device: str) -> Optional[tuple[str, int]]:
    """(name, bytes) of the memory a cell on `device` would use; asks nvidia-smi, never initialises CUDA here."""
    if device in ("cuda", "auto") and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout.splitlines()
            name, mib = out[0].rsplit(",", 1)
            return name.strip(), int(mib) * 2**20
        except (OSError, subprocess.SubprocessError, IndexError, ValueError):
            pass
    if device in ("cpu", "auto"):
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()) if Path("/proc/meminfo").exists() else None
        return ("host memory", int(m.group(1)) * 1024) if m else None
    return None


def check_fits(cfg: RunConfig) -> None:
    if not cfg.model.arch:  # shapes only known after fetching the config: the runner finds out
        return
    mem = device_memory(cfg.device)
    if mem is None:
        return
    from . import kvmath
    from .models import arch_config, planned_dtype
    from .runner import kv_theory_bytes

    config = arch_config(cfg.model)
    dtype = planned_dtype(cfg.dtype, cfg.model, config)
    weights = kvmath.weight_bytes(config, dtype)
    kv = kv_theory_bytes(cfg, config, dtype, tokens=cfg.prompt_len + cfg.new_tokens) or 0.0
    budget = mem[1] * (1 - RESERVE_FRAC)
    if weights + kv > budget:
        per_seq = kv / cfg.batch
        best = int((budget - weights) // per_seq) if per_seq and budget > weights else 0
        gib = 2**30
        raise ConfigError(
            f"batch={cfg.batch} x {cfg.prompt_len + cfg.new_tokens} tokens needs ~{(weights + kv) / gib:.1f} GiB "
            f"({weights / gib:.1f} weights + {kv / gib:.1f} KV, {dtype}) but {mem[0]} has {mem[1] / gib:.1f} GiB "
            f"({RESERVE_FRAC:.0%} reserved); the largest batch that fits is {best}")
