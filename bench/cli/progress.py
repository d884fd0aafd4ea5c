"""Progress of `bench run`: a bar on a terminal (cell-rounds done, elapsed, the cell running), and one line per cell.

Everything goes to stderr through one rich console; a log file (not a terminal) gets the lines only.
"""
from __future__ import annotations

from typing import Any, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


class Bar:
    """The sweep's bar: `step(text, advance)` moves it; `line` prints above it."""

    def __init__(self, total: int):
        self.progress: Optional[Progress] = None
        self.task: Any = None
        if console.is_terminal:
            self.progress = Progress(TextColumn("[bold]cell rounds"), MofNCompleteColumn(), BarColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                                     transient=True)
            self.task = self.progress.add_task("", total=total)
            self.progress.start()

    def step(self, text: str, advance: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=advance, description=text)

    def grow(self, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def line(text: str) -> None:
    """One line above the bar (the console carries nothing else)."""
    console.print(text, highlight=False, soft_wrap=True)
