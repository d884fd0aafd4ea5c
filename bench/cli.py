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
from .store import RunFile, check_writable

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
ConfigStore.instance().store(name="run_config", node=RunConfig)
log = logging.getLogger("bench")

# One run id per process: every cell of a sweep lands in the same file of the store.
RUN_ID = os.environ.get("KVBENCH_RUN_ID") or f"{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{os.getpid()}"
_run_files: dict = {}


def describe(cfg: RunConfig) -> str:
    c = cfg.cache.name + (f" int{cfg.cache.nbits} {cfg.cache.backend}" if cfg.cache.name == "quantized" else "")
    a = cfg.attn.name + (f"[{cfg.attn.sdpa_backend}]" if cfg.attn.name == "sdpa" and cfg.attn.sdpa_backend != "auto" else "")
    return f"{cfg.model.name} cache={c} attn={a} b={cfg.batch} p={cfg.prompt_len} n={cfg.new_tokens}"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(dcfg: DictConfig) -> None:
    cfg: RunConfig = OmegaConf.to_object(dcfg)
    try:
        validate(cfg)
        check_writable(cfg.store)
    except (ConfigError, OSError) as e:
        progress.stop()
        raise SystemExit(f"error: {e}")
    from .runner import run_cell  # torch loads only once the input is known to be good

    desc = describe(cfg)
    progress.running(desc)
    rec = run_cell(cfg, RUN_ID)
    run_file = _run_files.setdefault(cfg.store, RunFile(cfg.store, RUN_ID))
    run_file.append(rec.as_row())
    line = (f"{desc}: {rec.status}" + (f" ({rec.error})" if rec.error else "") +
            (f" tpot={rec.tpot_ms:.2f} ms ttft={rec.ttft_ms:.1f} ms {rec.decode_tok_s:.0f} tok/s" if rec.status == "ok" else ""))
    progress.console.log(line)
    progress.finished(desc, rec.status)
    if not HydraConfig.get().mode.name == "MULTIRUN":
        progress.console.log(f"row written to {run_file.path}")
