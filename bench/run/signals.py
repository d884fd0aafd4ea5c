"""A cell stopped by its job's scheduler still leaves a row: SIGTERM (scancel) and submitit's time-limit signal.

Slurm ends a job by sending SIGTERM to every process of its steps and, KillWait seconds later (30 by default),
SIGKILL. submitit, which runs each cell of a `hydra/launcher=submitit_slurm` sweep as a job, installs its own
handlers before the cell starts: SIGTERM (and SIGCONT) are only logged, so a cancelled job would run on until
the SIGKILL and leave no row; SIGUSR2 (SUBMITIT_PREEMPT_SIGNAL), which Slurm sends `signal_delay_s` before the
time limit, makes submitit requeue a preempted job (SystemExit) or give up on a timed-out one by raising in
whatever code runs. (Its requeue of a kvbench cell also raises today: the hydra launcher's checkpoint pickles
the task function by value, with hydra_app's live worker process, which cannot be pickled.)

`install` (in the main thread, before a sweep's rounds start) puts the handlers in place; `run` wraps Worker.run
for one cell, from whichever slot thread runs it. While cells run, SIGTERM kills their worker processes (if
Slurm's SIGTERM to the step has not already), and the workers' own failure path returns each error row with the
identity the cell had reached; `run` puts why in it: "cancelled by Slurm (scancel, SIGTERM, job N) during this
cell". The caller writes that row like any other and returns, so the job ends well before the SIGKILL. SIGUSR2
goes to submitit's handler first: a requeue goes ahead (the requeued job runs the cell again); a job submitit
gives up on gets the row instead of a traceback. After a SIGTERM, the process starts no further cell
(`terminated()`; a sweep then stops with exit code 143).
"""
from __future__ import annotations

import os
import signal
import subprocess

import threading



class _Stop:
    workers: set = set()  # the Workers whose cells are in flight
    why = ""             # why the cell in flight was stopped; set once
    terminated = False   # a SIGTERM came: start no further cell
    replaced: dict = {}  # signal -> the handler ours replaced (submitit's, or the default)
    submitit_usr = None  # submitit's handler of its preemption/time-limit signal, run first


def _usr_signal() -> signal.Signals:
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").removeprefix("SIG"))


def _stop(why: str) -> None:
    _Stop.why = _Stop.why or why
    for w in list(_Stop.workers):
        if w.proc is not None and w.proc.is_alive():
            w.proc.kill()  # Worker.run sees the pipe close and returns the cell's error row


def why_terminated() -> str:
    """What sent the SIGTERM, as far as Slurm tells (its job state and reason while the job is ending)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return "stopped by SIGTERM during this cell"
    if os.environ.get("SLURM_ARRAY_TASK_ID"):  # a sweep's cell: the id squeue, scancel and submitit show
        job = f"{os.environ.get('SLURM_ARRAY_JOB_ID')}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    state, _, reason = out.partition("|")
    if state == "TIMEOUT" or reason == "TimeLimit":
        return f"stopped by Slurm at the job's time limit (SIGTERM, job {job}) during this cell"
    if "PREEMPT" in state or reason.startswith("Preempt"):
        return f"preempted by Slurm (SIGTERM, job {job}) during this cell"
    if state in ("CANCELLED", "COMPLETING"):
        return f"cancelled by Slurm (scancel, SIGTERM, job {job}) during this cell"
    return f"stopped by SIGTERM (Slurm job {job}, state {state or 'unknown'}) during this cell"


def _on_term(signum, frame) -> None:
    _Stop.terminated = True
    if _Stop.workers:
        _stop(why_terminated())


def _on_usr(signum, frame) -> None:
    handler = _Stop.submitit_usr
    try:
        handler(signum, frame)  # a requeue exits here (SystemExit): the requeued job runs the cell again
    except Exception as e:  # submitit gives up on the job, or its requeue fails: a row, not a traceback
        _stop(f"stopped by Slurm's {signal.Signals(signum).name} (time limit near, or preemption) and not "
              f"requeued by submitit ({e}) during this cell")


def terminated() -> bool:
    """Whether a SIGTERM came: start no further cell."""
    return _Stop.terminated


def install() -> None:
    """Our handlers, once per process, from the main thread (signal.signal refuses any other)."""
    if _Stop.replaced or threading.current_thread() is not threading.main_thread():
        return
    _Stop.replaced[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_term)
    usr = _usr_signal()
    previous = signal.getsignal(usr)
    if callable(previous):  # submitit's handler (without submitit the signal keeps its default)
        _Stop.submitit_usr = previous
        _Stop.replaced[usr] = signal.signal(usr, _on_usr)


def uninstall() -> None:
    """Give the signals back to the handlers they had before the first cell, and forget any stop."""
    for signum, handler in _Stop.replaced.items():
        signal.signal(signum, handler)
    _Stop.replaced, _Stop.submitit_usr = {}, None
    _Stop.workers, _Stop.why, _Stop.terminated = set(), "", False


def run(worker, cfg, run_id: str, skip: frozenset = frozenset(), first: bool = True):
    """worker.run(cfg, run_id, skip, first) (an Outcome), stoppable by the scheduler as the module says."""
    if _Stop.terminated:
        raise SystemExit(128 + signal.SIGTERM)
    install()
    with _LOCK:
        _Stop.workers.add(worker)
    try:
        out = worker.run(cfg, run_id, skip, first=first)
    finally:
        with _LOCK:
            _Stop.workers.discard(worker)
    if _Stop.why and out.row is not None and out.row["status"] == "error":
        out.row["error"] = _Stop.why
    return out


_LOCK = threading.Lock()
