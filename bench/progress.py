"""Sweep progress (cells done of total, the cell running, elapsed) as a Hydra callback + rich bar."""
from __future__ import annotations

import math
import time
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def count_cells(sweeper_params: dict, task_overrides: list[str]) -> int:
    """How many jobs the basic sweeper will launch: the product of every swept value list."""
    merged = {str(k): f"{k}={v}" for k, v in (sweeper_params or {}).items()}
    for o in task_overrides:  # the command line wins over sweep=... params for the same key
        merged[o.split("=", 1)[0].lstrip("+~")] = o
    parsed = OverridesParser.create().parse_overrides(list(merged.values()))
    return math.prod(len(list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override()) or 1


class _State:
    progress: Optional[Progress] = None
    task: Any = None
    total = 1
    done = 0
    start = 0.0


def start(total: int) -> None:
    _State.total, _State.done, _State.start = total, 0, time.time()
    _State.progress = Progress(TextColumn("[bold]cells"), MofNCompleteColumn(), BarColumn(),
                               TimeElapsedColumn(), TextColumn("{task.description}"), console=console)
    _State.task = _State.progress.add_task("", total=total)
    _State.progress.start()


def running(desc: str) -> None:
    if _State.progress is None:
        start(1)
    _State.progress.update(_State.task, description=f"running {desc}")


def finished(desc: str, status: str) -> None:
    _State.done += 1
    _State.progress.update(_State.task, advance=1, description=f"{desc}: {status}")
    if _State.done >= _State.total:
        stop()


def stop() -> None:
    if _State.progress is not None:
        _State.progress.stop()
        _State.progress = None


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = config.hydra.sweeper.get("params") or {}
        start(count_cells(dict(params), list(config.hydra.overrides.task)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        stop()
