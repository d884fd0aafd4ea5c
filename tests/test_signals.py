"""bench.run.signals without Slurm: a SIGTERM or submitit's time-limit signal during a cell ends the cell with a
row that says why. The cell is a sleeping child process standing in for the worker (no torch); the real
worker under a real Slurm is tests/test_slurm.py's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from bench.run import signals
from bench.run.worker import Outcome


class SleepingCell:
    """Worker's interface as signals.run uses it: run() returns the error row of a worker process that died.
    `send`: a signal this process gets while the cell sleeps (once signals.run has installed its handlers)."""
    cuda = False

    def __init__(self, seconds: float = 30, send: int | None = None):
        self.seconds, self.send, self.proc = seconds, send, None

    def run(self, cfg, run_id, skip, first=True):
        child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({self.seconds})"])
        self.proc = type("Proc", (), {"is_alive": lambda _: child.poll() is None, "kill": lambda _: child.kill()})()
        if self.send is not None:
            threading.Timer(0.3, os.kill, (os.getpid(), self.send)).start()
        code = child.wait()
        if code == 0:
            return Outcome({"status": "ok", "error": ""})
        return Outcome({"status": "error", "error": f"the worker process died during this cell (exit code {code})"})


@pytest.fixture(autouse=True)
def _restore_signals(monkeypatch):
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(k, raising=False)
    yield
    signals.uninstall()


def test_sigterm_mid_cell_leaves_a_row_that_says_so_and_no_further_cell_starts():
    row = signals.run(SleepingCell(send=signal.SIGTERM), None, "run").row
    assert row == {"status": "error", "error": "stopped by SIGTERM during this cell"}
    with pytest.raises(SystemExit) as stopped:
        signals.run(SleepingCell(), None, "run").row
    assert stopped.value.code == 128 + signal.SIGTERM


def test_a_cell_that_ends_keeps_its_row():
    before = signal.getsignal(signal.SIGTERM)
    assert signals.run(SleepingCell(0), None, "run").row == {"status": "ok", "error": ""}
    assert signal.getsignal(signal.SIGTERM) is not before  # installed for the process's cells
    signals.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("squeue, why", [
    ("CANCELLED|None", "cancelled by Slurm (scancel, SIGTERM, job 76_1) during this cell"),
    ("COMPLETING|None", "cancelled by Slurm (scancel, SIGTERM, job 76_1) during this cell"),
    ("COMPLETING|TimeLimit", "stopped by Slurm at the job's time limit (SIGTERM, job 76_1) during this cell"),
    ("PREEMPTED|None", "preempted by Slurm (SIGTERM, job 76_1) during this cell"),
    ("RUNNING|None", "stopped by SIGTERM (Slurm job 76_1, state RUNNING) during this cell"),
])
def test_under_slurm_the_row_says_what_slurm_did(squeue, why, monkeypatch, tmp_path):
    (tmp_path / "squeue").write_text(f"#!/bin/sh\necho '{squeue}'\n")
    (tmp_path / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # an array task: 76_1 is the name squeue and scancel know it by
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "76")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert signals.why_terminated() == why


def _submitit_handler(exc: BaseException):
    def handler(signum, frame):
        raise exc
    return handler


def test_submitit_giving_up_at_the_time_limit_leaves_a_row():
    previous = signal.signal(signal.SIGUSR2, _submitit_handler(RuntimeError("timed-out too many times")))
    try:
        row = signals.run(SleepingCell(send=signal.SIGUSR2), None, "run").row
    finally:
        signals.uninstall()
        signal.signal(signal.SIGUSR2, previous)
    assert row["status"] == "error"
    assert row["error"] == ("stopped by Slurm's SIGUSR2 (time limit near, or preemption) and not requeued by "
                            "submitit (timed-out too many times) during this cell")


def test_a_requeue_by_submitit_goes_ahead():
    previous = signal.signal(signal.SIGUSR2, _submitit_handler(SystemExit(-1)))
    cell = SleepingCell(send=signal.SIGUSR2)
    try:
        with pytest.raises(SystemExit):
            signals.run(cell, None, "run").row
    finally:
        cell.proc.kill()
        signals.uninstall()
        signal.signal(signal.SIGUSR2, previous)
