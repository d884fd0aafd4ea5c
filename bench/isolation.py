"""Cells in a worker process: a crash (segfault, abort, a killed process) costs one cell, not the sweep.

One long-lived worker holds the loaded model across cells, so isolation costs no reload per cell;
if it dies or outlives cell_timeout_s, the cell gets an error row saying so and the next cell
starts a fresh worker. The parent never imports torch.
"""
from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import signal
from typing import Optional

from .config import RunConfig
from .record import conditions


def _serve(conn) -> None:
    import os

    from .runner import run_cell

    # Fault drill: KVBENCH_FAULT=kill:<cache> makes the worker SIGKILL itself on that cache's cells.
    fault = os.environ.get("KVBENCH_FAULT", "")

    import torch

    conn.send(("ready", torch.cuda.is_available()))
    while True:
        try:
            cfg, run_id = conn.recv()
        except EOFError:
            return
        if fault == f"kill:{cfg.cache.name}":
            os.kill(os.getpid(), signal.SIGKILL)
        conn.send(("row", run_cell(cfg, run_id).as_row()))


class Worker:
    def __init__(self):
        self.proc: Optional[mp.Process] = None
        self.conn = None
        self.cuda: Optional[bool] = None  # whether the worker's torch sees a GPU (device=auto resolves by it)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def start(self) -> None:
        # spawn, not fork: a forked child would inherit whatever CUDA state the parent had.
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="kvbench-cell")
        self.proc.start()
        child.close()
        _, self.cuda = self.conn.recv()  # ready: imports done

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(10)
        self.proc, self.conn = None, None

    def run(self, cfg: RunConfig, run_id: str, timeout_s: Optional[float] = None) -> dict:
        if not self.alive():
            self.start()
        self.conn.send((cfg, run_id))
        try:
            if self.conn.poll(timeout_s):
                kind, row = self.conn.recv()
                return row
            reason = f"cell exceeded cell_timeout_s={timeout_s:g}; its worker process was killed"
        except (EOFError, ConnectionResetError):
            self.proc.join(10)
            code = self.proc.exitcode
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
            reason = f"the worker process died during this cell ({how}); the cell left no result"
        self.stop()
        return failed_row(cfg, self.device(cfg), run_id, reason)

    def device(self, cfg: RunConfig) -> str:
        if cfg.device != "auto":
            return cfg.device
        if self.cuda is None:
            self.start()
        return "cuda" if self.cuda else "cpu"


def failed_row(cfg: RunConfig, device: str, run_id: str, reason: str, status: str = "error") -> dict:
    """The row of a cell that left no result of its own."""
    rec = conditions(cfg, device)
    rec.run_id, rec.status, rec.error = run_id, status, reason
    rec.timestamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return rec.as_row()
