"""`bench run ... hydra/launcher=NAME`: the Hydra application whose jobs are cells, for Hydra's launchers.

bench.cli.run has already composed and checked every cell of the command; each job here builds its own cell with
the same bench.cli.compose.build and measures it in its rounds (bench.run.schedule, one cell), writing its row to
its own run file of the shared run id (bench.store.runfile). The job process never imports torch unless
isolate=false; joblib's workers are processes already and cannot start children, so they run their cell in place.
"""
from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bench.cli import compose, progress
from bench.config.paths import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(dcfg: DictConfig) -> None:
    import os

    from bench.run.schedule import Plan, Schedule
    from bench.store import RunFile, files, read_rows

    hc = HydraConfig.get()
    sweeping = str(hc.mode).endswith("MULTIRUN")
    cfg, _ = compose.build(OmegaConf.to_container(dcfg, resolve=True), [o for o in hc.overrides.task],
                           hc.runtime.choices.get("cache", ""), sweeping)
    in_place = "joblib" in str(hc.launcher.get("_target_", ""))
    skip = frozenset(r["cell_id"] for r in read_rows(files(cfg.store)) if r.get("status") in ("ok", "unavailable")) \
        if cfg.resume else frozenset()
    plan = Plan(rounds=cfg.rounds, budget_s=None, slots=[{"KVBENCH_THREADS": str(cfg.threads)}],
                isolate=cfg.isolate and not in_place, resume_skip=skip, refuse_single=False)
    run_file = RunFile(cfg.store, os.environ["KVBENCH_RUN_ID"])
    Schedule([cfg], os.environ["KVBENCH_RUN_ID"], plan, run_file.put, progress.line).run()
