"""`python -m bench run ...`: the Hydra application. One job = one sweep cell = one store row."""
from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import progress
from .config import ConfigError, RunConfig, validate
from .fit import check_fits
from .isolation import Worker, failed_row
from .record import conditions
from .store import RunFile, check_writable, files, read_rows

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
ConfigStore.instance().store(name="run_config", node=RunConfig)
log = logging.getLogger("bench")

# One run id per process: every cell of a sweep lands in the same file of the store.
RUN_ID = os.environ.setdefault(
    "KVBENCH_RUN_ID", f"{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{os.getpid()}")
os.environ.setdefault("KVBENCH_RUN_OWNER", str(os.getpid()))  # launcher workers inherit both
_run_files: dict = {}
_worker = Worker()


def _device(cfg: RunConfig) -> str:
    if cfg.isolate:
        return _worker.device(cfg)
    from .env import resolve_device
    return resolve_device(cfg.device)


def _recorded(store: str) -> set:
    """Cells the store already holds with a final answer (failures are tried again)."""
    return {r.get("cell_id") for r in read_rows(files(store)) if r.get("status") in ("ok", "unavailable")}


def describe(cfg: RunConfig) -> str:
    c = cfg.cache.name + (f" int{cfg.cache.nbits} {cfg.cache.backend}" if cfg.cache.name == "quantized" else "")
    a = cfg.attn.name + (f"[{cfg.attn.sdpa_backend}]" if cfg.attn.name == "sdpa" and cfg.attn.sdpa_backend != "auto" else "")
    return f"{cfg.model.name} cache={c} attn={a} b={cfg.batch} p={cfg.prompt_len} n={cfg.new_tokens}"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(dcfg: DictConfig) -> None:
    cfg: RunConfig = OmegaConf.to_object(dcfg)
    sweeping = HydraConfig.get().mode.name == "MULTIRUN"
    try:
        arch = cfg.model.arch  # the positions limit, checked before any model loads where the config says it
        validate(cfg, arch.get("max_position_embeddings") or arch.get("n_positions"))
        check_writable(cfg.store)
    except (ConfigError, OSError) as e:
        progress.stop()
        raise SystemExit(f"error: {e}")
    desc = describe(cfg)
    progress.running(desc)
    try:
        if cfg.fit_check:
            check_fits(cfg)
    except ConfigError as e:
        if not sweeping:  # one cell asked for: say why, write nothing
            progress.stop()
            raise SystemExit(f"error: {e}")
        # in a sweep the other cells go on; this one gets a row saying the planner refused it
        row = failed_row(cfg, cfg.device if cfg.device != "auto" else _device(cfg), RUN_ID,
                         f"not run: the planner predicts it cannot fit: {e} (fit_check=false runs it anyway)", "oom")
        _write(cfg, row, desc, sweeping)
        return
    if cfg.resume and conditions(cfg, _device(cfg)).cell_id in _recorded(cfg.store):
        progress.console.log(f"{desc}: skipped, already in {cfg.store} (resume=true)")
        progress.finished(desc, "skipped")
        return
    # joblib's workers are already separate processes (and cannot start children of their own)
    cfg.isolate = cfg.isolate and "joblib" not in str(HydraConfig.get().launcher.get("_target_", ""))
    if cfg.isolate:
        row = _worker.run(cfg, RUN_ID, cfg.cell_timeout_s)
    else:
        from .runner import run_cell  # torch loads only once the input is known to be good
        row = run_cell(cfg, RUN_ID).as_row()
    _write(cfg, row, desc, sweeping)


def _write(cfg: RunConfig, row: dict, desc: str, sweeping: bool) -> None:
    run_file = _run_files.setdefault(cfg.store, RunFile(cfg.store, RUN_ID))
    run_file.append(row)
    line = (f"{desc}: {row['status']}" + (f" ({row['error']})" if row["error"] else "") +
            (f" tpot={row['tpot_ms']:.2f} ms ttft={row['ttft_ms']:.1f} ms {row['decode_tok_s']:.0f} tok/s"
             if row["status"] == "ok" else ""))
    progress.console.log(line)
    progress.finished(desc, row["status"])
    if not sweeping:
        progress.console.log(f"row written to {run_file.path}")
