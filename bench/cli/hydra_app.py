"""`python -m bench run ...`: the Hydra application. One job = one sweep cell = one store row.

bench.__main__ has already composed and checked every cell of the command (bench.cli.compose.cells) and made sure
a GPU exists where one is asked for, so a job here only builds its cell, hands it to the worker and writes
the row. The parent never imports torch unless isolate=false runs cells in this process.
"""
from __future__ import annotations

import atexit
import os
import socket
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bench.cli import compose, progress
from bench.run.worker import Worker
from bench.store import RunFile, files, read_rows

CONF_DIR = str(compose.CONF_DIR)

# One run id per process: every cell of a sweep lands in the same file of the store.
RUN_ID = os.environ.setdefault(
    "KVBENCH_RUN_ID", f"{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{os.getpid()}")
os.environ.setdefault("KVBENCH_RUN_OWNER", str(os.getpid()))  # launcher workers inherit both
_run_files: dict = {}
worker = Worker()
atexit.register(worker.stop, graceful=True)


def usage_error(message: str) -> None:
    """One line on stderr and exit code 2: the user's input was wrong."""
    progress.stop()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def gpu_missing(cells) -> bool:
    """Whether some cell asks for CUDA that torch cannot see (the worker, or this process, looks)."""
    cuda = [c for c in cells if c.device == "cuda"]
    if not cuda:
        return False
    if all(c.isolate for c in cuda):
        return worker.device("auto") != "cuda"
    import torch  # isolate=false: the cells run in this process anyway

    return not torch.cuda.is_available()


def recorded(store: str) -> frozenset:
    """Cells the store already holds with a final answer (failures are tried again)."""
    return frozenset(r["cell_id"] for r in read_rows(files(store)) if r.get("status") in ("ok", "unavailable"))


def describe(cfg) -> str:
    a = cfg.attn.name + (f"[{cfg.attn.sdpa_backend}]" if cfg.attn.sdpa_backend != "auto" else "")
    return f"{cfg.model.name} cache={cfg.cache.label()} attn={a} b={cfg.batch} p={cfg.prompt_len} n={cfg.new_tokens}"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(dcfg: DictConfig) -> None:
    hc = HydraConfig.get()
    sweeping = str(hc.mode).endswith("MULTIRUN")
    cfg, _ = compose.build(OmegaConf.to_container(dcfg, resolve=True), [o for o in hc.overrides.task],
                           hc.runtime.choices.get("cache", ""), sweeping)
    desc = describe(cfg)
    progress.running(desc)
    skip = recorded(cfg.store) if cfg.resume else frozenset()
    # joblib's workers are already separate processes (and cannot start children of their own)
    if cfg.isolate and "joblib" not in str(hc.launcher.get("_target_", "")):
        row = worker.run(cfg, RUN_ID, skip)
    else:
        from bench.run.cell import run_cell  # torch loads only once the input is known to be good
        rec = run_cell(cfg, RUN_ID, skip)
        row = rec.as_row() if rec is not None else None
    if row is None:
        progress.line(f"{desc}: skipped, already in {cfg.store} (resume=true)")
        progress.finished(desc, "skipped")
        return
    if not sweeping and row["status"] == "oom" and row["error"].startswith("not run:"):
        usage_error(row["error"])  # one cell asked for and the planner refused it: say why, write nothing
    if not sweeping and row["status"] == "error" and row["error"].startswith("bad input: "):
        usage_error(row["error"].removeprefix("bad input: "))  # input only the worker could check (torch-side)
    _write(cfg, row, desc, sweeping)


def _write(cfg, row: dict, desc: str, sweeping: bool) -> None:
    run_file = _run_files.setdefault(cfg.store, RunFile(cfg.store, RUN_ID))
    run_file.append(row)
    prec = f", ±{row['precision']:.1%}" if row.get("precision") is not None else ""
    figures = (f" tpot={row['tpot_ms']:.2f} ms ttft={row['ttft_ms']:.1f} ms {row['decode_tok_s']:.0f} tok/s "
               f"({row['repeats']} calls{prec})" if row["status"] == "ok" else "")
    flag = f" DISTURBED: {row['disturbed_why']}" if row.get("disturbed") else ""
    weights = " [RANDOM WEIGHTS]" if row.get("weights") == "random" else ""
    progress.line(f"{desc}{weights}: {row['status']}" + (f" ({row['error']})" if row["error"] else "") + figures + flag)
    progress.finished(desc, row["status"])
    if not sweeping:
        progress.line(f"row written to {run_file.path}")
