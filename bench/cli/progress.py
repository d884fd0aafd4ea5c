"""Progress of `bench run` (cells done of total, the cell running, elapsed) and its one line per cell.

The total comes from bench.cli.compose, which expanded the command's cells before Hydra started; the Hydra
callback only closes the bar when a sweep ends. Everything goes to stderr through one rich console.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


class _State:
    progress: Optional[Progress] = None
    task: Any = None
    total = 1
    done = 0
    start = 0.0


def expect(total: int) -> None:
    """Open the bar for `total` cells (on a terminal; a log file gets the per-cell lines only)."""
    stop()
    _State.total, _State.done, _State.start = total, 0, time.time()
    if not console.is_terminal:
        return
    _State.progress = Progress(TextColumn("[bold]cells"), MofNCompleteColumn(), BarColumn(),
                               TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                               transient=True)
    _State.task = _State.progress.add_task("", total=total)
    _State.progress.start()


def running(desc: str) -> None:
    if _State.progress is None and _State.done == 0 and _State.total <= 1:
        expect(1)
    if _State.progress is not None:
        _State.progress.update(_State.task, description=f"running {desc}")


def line(text: str) -> None:
    """One line above the bar (the console carries nothing else)."""
    console.print(text, highlight=False, soft_wrap=True)


def finished(desc: str, status: str) -> None:
    _State.done += 1
    if _State.progress is not None:
        _State.progress.update(_State.task, advance=1, description=f"{desc}: {status}")
    if _State.done >= _State.total:
        stop()


def stop() -> None:
    if _State.progress is not None:
        _State.progress.stop()
        _State.progress = None


class SweepProgress(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        stop()
