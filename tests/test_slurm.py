"""A sweep on a real Slurm (one node on localhost, tests/slurm_cluster.py) through hydra/launcher=submitit_slurm.

One sweep of two cells, each a Slurm job: the dynamic cell runs; the static cell sleeps once its model is in
(KVBENCH_FAULT=sleep:static:300) until `scancel` cancels its job. Every cell lands a row, each job in its own
file; the cancelled cell's row says it was cancelled; `resume=true` then completes the sweep. Two sweeps, not
three: on two cores each round of jobs costs ~20 s of imports. Skipped, with the reason, where Slurm is not
installed; CI installs it (.ci/run).
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import slurm_cluster
from tests.test_cli import _argv, bench, store_rows

SMALL = ["model=tiny-llama", "device=cpu", "prompt_len=8", "new_tokens=4", "repeats=2"]
SLEEP_MARK = "fault drill: the static cell sleeps"


@pytest.fixture(scope="module")
def slurm():
    why = slurm_cluster.missing()
    if why:
        pytest.skip(why)
    cluster = slurm_cluster.start()
    yield cluster
    slurm_cluster.stop(cluster)
    assert not slurm_cluster.cluster_pids(cluster.conf), "the cluster left processes behind"
    assert not cluster.root.exists(), "the cluster left its directory behind"


def on_slurm(cluster, folder: Path) -> list[str]:
    """What a cluster user adds to `bench run -m ...` (README): the launcher and its settings."""
    return ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={cluster.partition}",
            "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            f"hydra.launcher.submitit_folder={folder}/%j"]


@dataclass
class Sweep:
    cwd: Path
    args: list
    store: Path
    jobs: Path           # submitit's folder: one subfolder per job, with its logs
    cancelled_job: str   # the static cell's job, as squeue and scancel name it (<array id>_<index>)
    result: subprocess.CompletedProcess
    env: dict

    def log(self, job: str, kind: str) -> str:
        return next(self.jobs.glob(f"*/{job}_0_log.{kind}")).read_text(errors="replace")


def _sleeping_job(folder: Path, deadline: float) -> str:
    """The job whose log shows its cell asleep (file <job id>_<task>_log.err)."""
    while time.time() < deadline:
        for log in folder.glob("*/*_log.err"):
            if SLEEP_MARK in log.read_text(errors="replace"):
                return log.name.removesuffix("_log.err").rsplit("_", 1)[0]
        time.sleep(0.3)
    raise AssertionError(f"no job showed {SLEEP_MARK!r} in its log")


@pytest.fixture(scope="module")
def cancelled_sweep(slurm, subprocess_env, tmp_path_factory) -> Sweep:
    cwd = tmp_path_factory.mktemp("slurm-sweep")
    store, jobs = cwd / "store", cwd / "submitit"
    env = {**subprocess_env, "SLURM_CONF": slurm.env["SLURM_CONF"], "PATH": slurm.env["PATH"]}
    args = ["run", "-m", *SMALL, "cache=dynamic,static", f"store={store}", *on_slurm(slurm, jobs)]
    sweep = subprocess.Popen(_argv(args, cwd), cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**env, "KVBENCH_FAULT": "sleep:static:300"})
    try:
        job = _sleeping_job(jobs, time.time() + 150)
        slurm.run("scancel", job)
        out, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    return Sweep(cwd, args, store, jobs, job, subprocess.CompletedProcess(args, sweep.returncode, out, err), env)


def test_every_cell_of_a_sweep_on_slurm_lands_a_row(cancelled_sweep):
    assert cancelled_sweep.result.returncode == 0, cancelled_sweep.result.stderr[-3000:]
    files, rows = store_rows(cancelled_sweep.store)
    assert sorted((x["cache"], x["status"]) for x in rows) == [("dynamic", "ok"), ("static", "error")]
    # each Slurm job is its own process and writes its own file of the sweep's one run id
    assert len(files) == 2 and len({x["run_id"] for x in rows}) == 1
    assert len(list(cancelled_sweep.jobs.glob("*/*_log.err"))) == 2


def test_a_cell_cancelled_by_scancel_leaves_a_row_that_says_so(cancelled_sweep):
    job = cancelled_sweep.cancelled_job
    _, rows = store_rows(cancelled_sweep.store)
    by = {x["cache"]: x for x in rows}
    assert by["static"]["error"] == f"cancelled by Slurm (scancel, SIGTERM, job {job}) during this cell"
    # the row has the identity the cell had reached (its model loaded), as a killed worker's row does
    assert (by["static"]["dtype"], by["static"]["weights"]) == (by["dynamic"]["dtype"], by["dynamic"]["weights"])
    # Slurm cancelled the job, and the job wrote the row and ended on its own, before the SIGKILL that
    # follows KillWait (30 s) later
    assert "CANCELLED AT" in cancelled_sweep.log(job, "err")
    assert "Job completed successfully" in cancelled_sweep.log(job, "out")


def test_resume_completes_the_sweep(cancelled_sweep):
    s = cancelled_sweep
    r = bench([*s.args, "resume=true"], s.env, s.cwd, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    _, rows = store_rows(s.store)
    assert sorted((x["cache"], x["status"]) for x in rows) == [("dynamic", "ok"), ("static", "error"),
                                                               ("static", "ok")]
    # the cancelled row and the cell's ok row are one cell: the ok row, newer, is the cell's answer
    assert len({x["cell_id"] for x in rows if x["cache"] == "static"}) == 1
    logs = [p.read_text(errors="replace") for p in s.jobs.glob("*/*_log.err")]
    assert sum("skipped, already in" in t for t in logs) == 1  # dynamic's ok row stands
