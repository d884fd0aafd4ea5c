"""What a worker process checks before any model loads, and what it sets once: the CPU threads it times with.

`preflight(cells)` answers, for every model of a sweep, the questions only the worker's libraries can: is the
device there, does the model name a decoder-only causal LM whose shapes build, do the lengths fit its positions.
The parent turns the first problem into one line and exit code 2, before any cell runs.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Optional

from bench.config.checks import ConfigError


def preflight(cells: list) -> Optional[str]:
    """The first reason these cells cannot run at all (one line), or None."""
    import torch

    from bench.config.settings import NO_GPU
    from bench.predict.arch import check_model, max_positions

    if any(c.device == "cuda" for c in cells) and not torch.cuda.is_available():
        return NO_GPU
    configs: dict[str, object] = {}
    for c in cells:
        key = json.dumps(asdict(c.model), sort_keys=True)
        try:
            if key not in configs:
                configs[key] = check_model(c.model)
            c.check_positions(max_positions(configs[key]))
        except ConfigError as e:
            return str(e)
    return None


def set_threads(spec: str) -> int:
    """Pin torch's intra-op threads: `auto` keeps torch's own choice (the cores it may use), an integer sets it.
    Returns the count in effect, recorded in every row."""
    import torch

    if spec not in ("", "auto"):
        torch.set_num_threads(int(spec))
    return torch.get_num_threads()


def visible_gpu() -> str:
    """The GPU a pinned worker sees (CUDA_VISIBLE_DEVICES), '' when unpinned."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")
