"""Cells in a worker process: a crash (segfault, abort, a killed process) costs one cell, not the sweep.

One long-lived worker holds the loaded model across cells, so isolation costs no reload per cell. The worker
says when a cell's model is in (with the cell's conditions as they will run); the cell's timeout counts from
there, so a fresh worker's imports and model build never count against it. If the worker dies or outlives
cell_timeout_s, the cell gets an error row with the identity it had reached, and the next cell starts a
fresh worker. The parent never imports torch.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import sys
from typing import Optional

from bench.store.schema import failed_row

LOAD_TIMEOUT_S = 3600.0  # a worker that cannot start or load a model within an hour is stuck


def _serve(conn) -> None:
    import os
    import warnings

    warnings.filterwarnings("ignore")  # library deprecation chatter: the console carries one line per cell
    from bench.run.cell import run_cell

    # Fault drill: KVBENCH_FAULT=kill:<cache> makes the worker SIGKILL itself on that cache's cells.
    fault = os.environ.get("KVBENCH_FAULT", "")

    import torch

    conn.send(("ready", torch.cuda.is_available()))
    while True:
        try:
            cfg, run_id, skip = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe: done
            return

        def loaded(row: dict) -> None:
            conn.send(("loaded", row))
            if fault == f"kill:{cfg.cache.name}":
                os.kill(os.getpid(), signal.SIGKILL)

        rec = run_cell(cfg, run_id, skip, on_loaded=loaded)
        conn.send(("row", rec.as_row() if rec is not None else None))


class Worker:
    def __init__(self):
        self.proc: Optional[mp.Process] = None
        self.conn = None
        self.cuda: Optional[bool] = None  # whether the worker's torch sees a GPU (device=auto resolves by it)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def start(self) -> None:
        # The worker's libraries leave a semaphore for multiprocessing's resource tracker to clean up at exit, which
        # it reports in a warning; the tracker takes its warning filters from this process's -W options.
        if "ignore:resource_tracker:UserWarning" not in sys.warnoptions:
            sys.warnoptions.append("ignore:resource_tracker:UserWarning")
        # spawn, not fork: a forked child would inherit whatever CUDA state the parent had.
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="kvbench-cell")
        self.proc.start()
        child.close()
        _, self.cuda = self.conn.recv()  # ready: imports done

    def stop(self, graceful: bool = False) -> None:
        """Kill the worker; graceful: close its pipe first so it exits on its own (and frees what it holds)."""
        if self.proc is not None:
            if graceful:
                self.conn.close()
                self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(10)
            if not self.conn.closed:
                self.conn.close()
        self.proc, self.conn = None, None

    def device(self, requested: str) -> str:
        if requested != "auto":
            return requested
        if self.cuda is None:
            self.start()
        return "cuda" if self.cuda else "cpu"

    def run(self, cfg, run_id: str, skip: frozenset = frozenset()) -> Optional[dict]:
        """The cell's row (None: resume found it in `skip`)."""
        if not self.alive():
            self.start()
        self.conn.send((cfg, run_id, skip))
        known: dict = {}
        try:
            if not self.conn.poll(LOAD_TIMEOUT_S):
                reason = f"the worker did not load the model within {LOAD_TIMEOUT_S:g} s; it was killed"
            else:
                kind, payload = self.conn.recv()
                if kind == "row":  # refused or unavailable before loading, or skipped
                    return payload
                known = payload
                if self.conn.poll(cfg.cell_timeout_s):
                    return self.conn.recv()[1]
                reason = f"cell exceeded cell_timeout_s={cfg.cell_timeout_s:g}; its worker process was killed"
        except (EOFError, ConnectionResetError):
            self.proc.join(10)
            code = self.proc.exitcode
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
            reason = f"the worker process died during this cell ({how}); the cell left no result"
        self.stop()
        return failed_row(cfg, self.device(cfg.device), run_id, reason, known=known)
