"""`python -m bench run [-m] OVERRIDES`: every cell composed and checked, then measured in rounds into the store.

Order: the overrides and every cell they expand to are checked (no torch here); the run id and the store are
checked; one worker answers the pre-flight questions only torch and transformers can (the GPU is there, the model
is a causal LM whose shapes build and fit their positions); then the sweep runs (bench.run.schedule), or, with
hydra/launcher=NAME, Hydra's launcher runs each cell as a job (bench.cli.hydra_app). Any bad input is one line
and exit code 2 before a model loads; a store that fills up stops the run with one line and loses no row.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import socket
import sys
import time

from bench.cli import compose, progress
from bench.cli.args import UsageError, fail


def run_id() -> str:
    """This run's id (one per `bench run`; launcher jobs inherit it): KVBENCH_RUN_ID if set, checked."""
    from bench.store import check_run_id

    rid = os.environ.get("KVBENCH_RUN_ID")
    if rid is None:
        rid = f"{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{os.getpid()}"
    try:
        return check_run_id(rid)
    except ValueError as e:
        raise UsageError(str(e)) from None


def gpu_slots(gpus, worker) -> list[dict]:
    """One worker environment per GPU: gpus=all (every GPU the pre-flight worker sees) or gpus=0,1."""
    if gpus is None:
        return [{}]
    count = worker.device_count or 0
    ids = list(range(count)) if gpus == "all" else [int(g) for g in gpus.split(",")]
    if not ids:
        raise UsageError("gpus=all but torch sees no CUDA GPU here")
    bad = [i for i in ids if i >= count]
    if bad:
        raise UsageError(f"gpus={gpus} names GPU {bad[0]}, but torch sees {count} GPU(s) here (0-{count - 1})")
    return [{"CUDA_VISIBLE_DEVICES": str(i)} for i in ids]


def main(argv: list[str], multirun: bool) -> int:
    from bench.store import StoreWriteError, check_writable, files, read_rows

    cells = compose.cells(argv, multirun)
    rid = run_id()
    for store in sorted({c.store for c in cells}):
        try:
            check_writable(store)
        except OSError as e:
            raise UsageError(str(e)) from None
    if any(o.startswith("hydra/launcher=") for o in argv):
        return launch(argv, multirun, rid)
    head = cells[0]
    for key in ("rounds", "budget_s", "gpus", "isolate", "resume", "store", "threads"):
        values = {str(getattr(c, key)) for c in cells}
        if len(values) > 1:  # a sweep-wide setting swept
            raise UsageError(f"{key} is one setting of the whole sweep; it cannot take several values ({', '.join(sorted(values))})")
    from bench.run.schedule import Plan, Refused, Schedule
    from bench.run.worker import Worker
    from bench.store import RunFile

    env = {"KVBENCH_THREADS": str(head.threads)}
    slots, checker = [{}], None
    run_file = RunFile(head.store, rid)
    if not head.isolate:
        in_process()
    if head.isolate:
        checker = Worker(env)
        if not checker.start():
            return not_started(cells, rid, run_file, checker.broken)
        why = checker.preflight(cells)
        if why is None and checker.broken:  # it died answering: the cells would kill every worker alike
            return not_started(cells, rid, run_file, checker.broken)
        if why:
            checker.stop()
            raise UsageError(why)
        slots = gpu_slots(head.gpus, checker)
        if head.gpus is not None or not checker.alive():  # pinned workers start with their own GPU's environment
            checker.stop(graceful=True)
            checker = None
    skip = frozenset(r["cell_id"] for r in read_rows(files(head.store)) if r.get("status") in ("ok", "unavailable")) \
        if head.resume else frozenset()
    plan = Plan(rounds=head.rounds, budget_s=head.budget_s, slots=[{**env, **s} for s in slots], isolate=head.isolate,
                resume_skip=skip)
    bar = progress.Bar(len(cells) * head.rounds)

    def write(row: dict) -> None:
        run_file.put(row)

    try:
        Schedule(cells, rid, plan, write, progress.line, bar.step, started=checker).run()
    except Refused as e:
        bar.stop()
        return fail(str(e))
    except StoreWriteError as e:  # full, read-only, gone: what was written stays
        bar.stop()
        return fail(str(e))
    finally:
        bar.stop()
    if len(cells) == 1 and run_file.path is not None:
        progress.line(f"row written to {run_file.path}")
    return 0


def in_process() -> None:
    """isolate=false measures in this process: its torch and transformers must import here."""
    try:
        importlib.import_module("bench.run.cell")  # its import is the check
    except ImportError as e:
        raise UsageError(f"isolate=false runs cells in this process, which cannot import "
                         f"{e.name or 'torch or transformers'} ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None


def not_started(cells: list, rid: str, run_file, why: str) -> int:
    """No worker process could start here (a broken install, a process killed while importing): every cell gets an
    error row saying why, and the run stops with one line (exit code 2) instead of starting one more per cell."""
    from bench.run.record import failed_row
    from bench.store import StoreWriteError

    try:
        for c in cells:
            run_file.put(failed_row(c, "cuda" if c.device == "cuda" else "cpu", rid, why))
    except StoreWriteError as e:
        return fail(f"{why}; and {e}")
    return fail(f"{why}; no cell ran: {len(cells)} error row(s) in {run_file.path}")


def launch(argv: list[str], multirun: bool, rid: str) -> int:
    """Hydra's launcher (joblib, submitit_local, submitit_slurm) runs each cell as a job of bench.cli.hydra_app;
    the jobs share this run's id and each writes its own run file."""
    from hydra.core.global_hydra import GlobalHydra

    from bench.cli import hydra_app
    from bench.store import check_writable

    launcher = next(a.split("=", 1)[1] for a in argv if a.startswith("hydra/launcher="))
    for a in argv:
        if a.startswith("hydra.sweep.dir="):
            try:
                check_writable(a.split("=", 1)[1], "hydra.sweep.dir")
            except OSError as e:
                raise UsageError(str(e)) from None
    os.environ["KVBENCH_RUN_ID"] = rid
    os.environ.setdefault("KVBENCH_RUN_OWNER", str(os.getpid()))
    sys.argv = [f"{sys.argv[0]} run", *(["-m"] if multirun else []), *compose.normalize(argv)]
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises (rather than printing a traceback and exiting 1): one line
    # a launcher's own chatter (sbatch's errors, echoed by submitit) is held back: the error line says it; the jobs
    # of a launcher other than basic run in processes of their own, whose lines are not this process's stderr
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held) if launcher != "basic" else contextlib.nullcontext():
            hydra_app.main()
    except Exception as e:  # noqa: BLE001 - a launcher that cannot submit (no Slurm here), or a job's failure
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        return fail(f"hydra/launcher={launcher} could not run the sweep: {lines[-1]}")
    finally:
        os.environ.pop("HYDRA_FULL_ERROR") if saved is None else os.environ.__setitem__("HYDRA_FULL_ERROR", saved)
        GlobalHydra.instance().clear()  # a failed launch leaves Hydra initialised for this process
    sys.stderr.write(held.getvalue())
    return 0
