"""Fault drills through the real command line: killed workers, hung cells, a killed sweep, resume,
concurrent writers, a cell that cannot fit, and a parallel launcher. The store is counted against
the cells launched."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.test_cli import SMALL, Launched, _argv, bench, small, store_rows


def _by_cache(rows):
    return {r["cache"]: r for r in rows}


def test_a_killed_worker_costs_one_cell(subprocess_env, tmp_path):
    env = {**subprocess_env, "KVBENCH_FAULT": "kill:dynamic"}
    store = tmp_path / "s"
    r = bench(["run", "-m", *SMALL, "cache=none,dynamic,static", f"store={store}"], env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    _, rows = store_rows(store)
    assert len(rows) == 3
    by = _by_cache(rows)
    assert by["dynamic"]["status"] == "error" and "SIGKILL" in by["dynamic"]["error"]
    # the worker died after loading: the row has the identity it had reached (loaded dtype and weights)
    assert by["dynamic"]["dtype"] == "float32" and by["dynamic"]["weights"] == "random"
    assert by["none"]["status"] == "ok" and by["static"]["status"] == "ok"  # after it, a fresh worker ran


def test_a_hung_cell_is_killed_at_its_timeout(subprocess_env, tmp_path):
    store = tmp_path / "s"
    # 2000 new tokens on the tiny model take far longer than 0.5 s; the next cell still runs
    r = bench(["run", "-m", *small("new_tokens=400", "repeats=3"), "cache=dynamic", "cell_timeout_s=0.5",
               f"store={store}"], subprocess_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    _, rows = store_rows(store)
    assert [row["status"] for row in rows] == ["error"]
    assert "cell_timeout_s=0.5" in rows[0]["error"]


def test_killed_sweep_then_resume_runs_only_the_rest(subprocess_env, tmp_path):
    caches = "none,dynamic,static,quantized,quantized_int2"
    run = Launched(["run", "-m", *SMALL, f"cache={caches}"], subprocess_env, tmp_path)
    store = run.store
    deadline = time.time() + 240
    while time.time() < deadline:  # kill the whole sweep once two cells are in the store
        if len(store_rows(store)[1]) >= 2:
            break
        time.sleep(0.2)
    os.kill(run.proc.pid, signal.SIGKILL)
    run.result()
    _, before = store_rows(store)
    assert 2 <= len(before) < 5  # readable, nothing half-written
    r = bench(["run", "-m", *SMALL, f"cache={caches}", "resume=true", f"store={store}"], subprocess_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    _, after = store_rows(store)
    got = sorted((x["cache"], x.get("nbits") or 0) for x in after)
    assert got == sorted([("none", 0), ("dynamic", 0), ("static", 0), ("quantized", 4), ("quantized", 2)])
    assert r.stderr.count("skipped, already in") + r.stdout.count("skipped, already in") == len(before)


def test_concurrent_sweeps_lose_no_rows(subprocess_env, tmp_path):
    store = tmp_path / "store"
    procs = [subprocess.Popen(_argv(["run", "-m", *SMALL, "cache=none,dynamic", f"seed={i}", f"store={store}"],
                                    tmp_path / f"h{i}"), cwd=tmp_path, env=subprocess_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    files, rows = store_rows(store)
    assert len(files) == 3 and len(rows) == 6
    assert len({(r["seed"], r["cache"]) for r in rows}) == 6


def test_a_batch_that_cannot_fit_is_refused_before_loading(subprocess_env, tmp_path):
    r = bench(["run", "model=llama-2-7b", "batch=100000", "prompt_len=1000", "new_tokens=24", "device=cpu",
               f"store={tmp_path}/s"], subprocess_env, tmp_path)
    assert r.returncode == 2
    line = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(line) == 1 and "batch=100000" in line[0] and "needs ~" in line[0] and "GiB" in line[0], r.stderr
    assert "RANDOM WEIGHTS" not in r.stderr  # no model was built
    assert not list((tmp_path / "s").glob("*.jsonl"))


def test_in_a_sweep_a_cell_that_cannot_fit_gets_a_row_and_the_others_run(subprocess_env, tmp_path):
    store = tmp_path / "s"
    r = bench(["run", "-m", *SMALL, "batch=1,1000000000", "cache=dynamic", f"store={store}"], subprocess_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    _, rows = store_rows(store)
    by_batch = {row["batch"]: row for row in rows}
    assert sorted(by_batch) == [1, 1000000000]
    assert by_batch[1]["status"] == "ok"
    refused = by_batch[1000000000]
    assert refused["status"] == "oom" and "planner predicts it cannot fit" in refused["error"]
    assert "needs ~" in refused["error"] and refused["tpot_ms"] is None
    # the refused row is the same setup's (weights and dtype as they would have loaded), so a report shows it there
    assert (refused["weights"], refused["dtype"]) == (by_batch[1]["weights"], by_batch[1]["dtype"])


def test_joblib_launcher_runs_cells_in_parallel_processes(subprocess_env, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    store = tmp_path / "s"
    r = bench(["run", "-m", *SMALL, "cache=none,dynamic,static", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", f"store={store}"], subprocess_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    files, rows = store_rows(store)
    assert sorted(x["cache"] for x in rows) == ["dynamic", "none", "static"]
    assert all(x["status"] == "ok" for x in rows)
    assert len({x["run_id"] for x in rows}) == 1  # one sweep, one id, a file per worker process


def test_submitit_local_executor_runs_the_sweep(subprocess_env, tmp_path):
    """The Slurm path (hydra-submitit-launcher) through submitit's local executor."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    store = tmp_path / "s"
    r = bench(["run", "-m", *SMALL, "cache=none,dynamic", "hydra/launcher=submitit_local",
               "hydra.launcher.timeout_min=10", f"store={store}"], subprocess_env, tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    files, rows = store_rows(store)
    assert sorted(x["cache"] for x in rows) == ["dynamic", "none"] and all(x["status"] == "ok" for x in rows)
    assert len(files) == 2  # each submitit job is its own process and writes its own file


def test_a_warm_up_past_its_compile_budget_ends_the_cell_with_a_row_that_says_so(subprocess_env, tmp_path):
    """A cell whose warm-up (compile included) outlives compile_budget_s is killed there, names the budget and the
    strategy and attention path, and the next cell still runs."""
    env = {**subprocess_env, "KVBENCH_FAULT": "sleep:dynamic:60"}  # the dynamic cell hangs before its warm-up ends
    store = tmp_path / "s"
    t0 = time.time()
    r = bench(["run", "-m", *SMALL, "cache=dynamic,none", "compile_budget_s=2", f"store={store}"], env, tmp_path)
    took = time.time() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    by = _by_cache(store_rows(store)[1])
    assert by["dynamic"]["status"] == "error" and by["none"]["status"] == "ok"
    assert "warm-up still compiling after compile_budget_s=2 s" in by["dynamic"]["error"]
    assert "dynamic cache + sdpa" in by["dynamic"]["error"] and "compile=off" in by["dynamic"]["error"]
    assert took < 55, took  # ended at its budget, not after the 60 s sleep
