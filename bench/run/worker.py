"""Cells in a worker process: a crash (segfault, abort, a killed process) costs one cell, not the sweep.

A worker is one round: it loads a model once, times the cells it is given in turn, and exits; the next round is
a fresh process (its spread against this one is what a rerun sees). The parent never imports torch. The worker
reports where each cell is: `loaded` (with the conditions as they will run: a crash after that still leaves a
row with the right identity), `timing` (warm-up and compile done), then its row. The parent holds each phase to
its own limit: loading to LOAD_TIMEOUT_S, warm-up and compile to cfg.compile_budget_s (a recompile storm is named
from the counts the worker streams while it warms up), the timed calls to cfg.cell_timeout_s; past one, the worker
is killed and the cell gets an error row saying which. A worker that dies while starting leaves error rows that say
why (its import error, or the signal that killed it).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from bench.run.record import failed_row

LOAD_TIMEOUT_S = 3600.0  # a worker that cannot start or load a model within an hour is stuck
START_TIMEOUT_S = 600.0  # imports of torch and transformers
PROGRESS_S = 2.0         # how often a warming worker reports its compile counts


def _serve(conn, env: dict) -> None:
    """The worker process: imports, then cells until the parent closes the pipe."""
    os.environ.update(env)
    lock = threading.Lock()

    def send(*msg) -> None:
        with lock:
            conn.send(msg)

    try:
        import warnings

        warnings.filterwarnings("ignore")  # library deprecation chatter: the console carries one line per cell
        import torch

        from bench.measure.watch import compile_counts, count_cudagraph_records
        from bench.run.cell import run_cell
        from bench.run.preflight import preflight, set_threads
        threads = set_threads(env.get("KVBENCH_THREADS", "auto"))
        count_cudagraph_records()
    except BaseException as e:  # noqa: BLE001 - whatever broke the start, the parent must hear it in one line
        send("broken", f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        return
    send("ready", torch.cuda.is_available(), threads, torch.cuda.device_count())
    # drills: kill:<cache> SIGKILLs the worker on that cache's cells; sleep:<cache>:<seconds> makes them sleep that
    # long once the model is in (a cell long enough to cancel)
    fault = os.environ.get("KVBENCH_FAULT", "")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe: done
            return
        if msg[0] == "preflight":
            send("preflight", preflight(msg[1]))
            continue
        _, cfg, run_id, skip, first = msg
        warming = threading.Event()

        def report_progress() -> None:
            t0 = time.monotonic()
            while not warming.wait(PROGRESS_S):
                send("progress", {**compile_counts(), "seconds": time.monotonic() - t0})

        def loaded(row: dict) -> None:
            send("loaded", row)
            if fault == f"kill:{cfg.cache.name}":
                os.kill(os.getpid(), signal.SIGKILL)
            if fault.startswith(f"sleep:{cfg.cache.name}:"):
                seconds = fault.split(":")[2]
                print(f"fault drill: the {cfg.cache.name} cell sleeps {seconds} s", file=sys.stderr, flush=True)
                time.sleep(float(seconds))
            threading.Thread(target=report_progress, daemon=True).start()

        def timing() -> None:
            warming.set()
            send("timing", compile_counts())

        rec = run_cell(cfg, run_id, skip, on_loaded=loaded, on_timing=timing, first_round=first)
        warming.set()
        send("row", rec.as_row() if rec is not None else None)


@dataclass
class Outcome:
    row: Optional[dict]                 # None: resume found the cell in `skip`
    seconds: float = 0.0
    compiles: dict = field(default_factory=dict)


class Worker:
    def __init__(self, env: Optional[dict] = None):
        self.env = dict(env or {})     # e.g. CUDA_VISIBLE_DEVICES of the GPU this worker is pinned to
        self.proc: Optional[mp.Process] = None
        self.conn = None
        self.cuda: Optional[bool] = None   # whether the worker's torch sees a GPU (device=auto resolves by it)
        self.threads: Optional[int] = None
        self.device_count: Optional[int] = None  # CUDA GPUs the worker sees
        self.broken = ""                   # why the worker could not start ('' = it started)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def start(self) -> bool:
        """Start the worker and wait for its imports; False (and `broken` says why) when it could not start."""
        # The worker's libraries leave a semaphore for multiprocessing's resource tracker to clean up at exit, which
        # it reports in a warning; the tracker takes its warning filters from this process's -W options.
        if "ignore:resource_tracker:UserWarning" not in sys.warnoptions:
            sys.warnoptions.append("ignore:resource_tracker:UserWarning")
        # spawn, not fork: a forked child would inherit whatever CUDA state the parent had.
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # the child's CUDA runtime reads CUDA_VISIBLE_DEVICES from its first import
        try:
            self.proc = ctx.Process(target=_serve, args=(child, self.env), daemon=True, name="kvbench-cell")
            self.proc.start()
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        child.close()
        try:
            if not self.conn.poll(START_TIMEOUT_S):
                self.broken = f"the worker did not start within {START_TIMEOUT_S:g} s"
            else:
                msg = self.conn.recv()
                if msg[0] == "ready":
                    _, self.cuda, self.threads, self.device_count = msg
                    self.broken = ""
                    return True
                self.broken = f"the worker could not start: {msg[1]}"
        except (EOFError, ConnectionResetError, OSError):
            self.broken = f"the worker process died while starting ({self._how()})"
        self.stop()
        return False

    def _how(self) -> str:
        self.proc.join(10)
        code = self.proc.exitcode
        return f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"

    def stop(self, graceful: bool = False) -> None:
        """Kill the worker; graceful: close its pipe first so it exits on its own (and frees what it holds)."""
        if self.proc is not None:
            if graceful and self.conn is not None and not self.conn.closed:
                self.conn.close()
                self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(10)
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.proc, self.conn = None, None

    def ensure(self) -> bool:
        return self.alive() or self.start()

    def preflight(self, cells: list) -> Optional[str]:
        """What the worker finds wrong with the cells before any model loads (one line), or None."""
        if not self.ensure():
            return None  # the cells themselves will say the worker could not start
        self.conn.send(("preflight", cells))
        try:
            return self.conn.recv()[1]
        except (EOFError, ConnectionResetError):
            self.broken = f"the worker process died during the pre-flight check ({self._how()})"
            self.stop()
            return None

    def run(self, cfg, run_id: str, skip: frozenset = frozenset(), first: bool = True) -> Outcome:
        """The cell's row, whatever happens to the worker."""
        t0 = time.monotonic()
        device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and self.cuda) else "cpu"
        if not self.ensure():
            return Outcome(failed_row(cfg, device, run_id, self.broken), time.monotonic() - t0)
        self.conn.send(("cell", cfg, run_id, skip, first))
        known: dict = {}
        counts: dict = {}
        try:
            kind, payload = self._next(LOAD_TIMEOUT_S)
            if kind is None:
                reason = f"the worker did not load the model within {LOAD_TIMEOUT_S:g} s; it was killed"
            elif kind == "row":  # refused or unavailable before loading, or skipped
                return Outcome(payload, time.monotonic() - t0)
            else:
                known = payload
                kind, payload = self._warm(cfg.compile_budget_s, counts)
                if kind == "row":  # the warm-up itself failed: the row says how
                    return Outcome(payload, time.monotonic() - t0, counts)
                if kind is None:
                    reason = storm(cfg, counts)
                else:
                    counts.update(payload)
                    kind, payload = self._next(cfg.cell_timeout_s)
                    if kind == "row":
                        return Outcome(payload, time.monotonic() - t0, counts)
                    reason = f"cell exceeded cell_timeout_s={cfg.cell_timeout_s:g}; its worker process was killed"
        except (EOFError, ConnectionResetError):
            reason = f"the worker process died during this cell ({self._how()}); the cell left no result"
        self.stop()
        return Outcome(failed_row(cfg, device, run_id, reason, known=known), time.monotonic() - t0, counts)

    def _next(self, timeout: Optional[float]):
        """The next message that is not a progress report, or (None, None) past `timeout` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if end is None else max(end - time.monotonic(), 0.0)
            if not self.conn.poll(left):
                return None, None
            kind, *rest = self.conn.recv()
            if kind != "progress":
                return kind, (rest[0] if len(rest) == 1 else rest)

    def _warm(self, budget: float, counts: dict):
        """Wait for the end of the warm-up (`timing`, or a row if it failed) within `budget` seconds, keeping
        the latest compile counts the worker streamed."""
        end = time.monotonic() + budget
        while True:
            if not self.conn.poll(max(end - time.monotonic(), 0.0)):
                return None, None
            kind, *rest = self.conn.recv()
            if kind == "progress":
                counts.update(rest[0])
                continue
            return kind, rest[0]


def storm(cfg, counts: dict) -> str:
    """The error of a cell whose warm-up outlived its compile budget, naming what compiled meanwhile."""
    what = f"{cfg.cache.name} cache + {cfg.attn.name}"
    seen = []
    if counts.get("graphs"):
        seen.append(f"dynamo compiled {counts['graphs']} graphs")
    if counts.get("cudagraphs"):
        seen.append(f"{counts['cudagraphs']} CUDA graphs recorded")
    done = f" ({', '.join(seen)})" if seen else ""
    return (f"warm-up still compiling after compile_budget_s={cfg.compile_budget_s:g} s{done}: {what}; "
            "its worker was killed (try compile=off or compile_mode=max-autotune-no-cudagraphs)")
