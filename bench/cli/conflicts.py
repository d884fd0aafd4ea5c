"""Settings given on one command line that contradict each other or relabel what runs: refused, one line naming both.

Only what the user gave counts (a default never contradicts): `given` maps each override's key to its value, as
bench.cli.compose.build parsed them. Contradictions between values alone (device_map=auto with device=cpu,
quality=on with weights=random) are the typed configs' own checks (bench.config.settings).
"""
from __future__ import annotations

from omegaconf import OmegaConf

from bench.config.checks import ConfigError, show
from bench.config.paths import CONF_DIR

AUTO_ONLY = ("precision", "max_repeats", "cell_budget_s")                 # what repeats=auto stops on
WORKER_ONLY = ("cell_timeout_s", "compile_budget_s", "threads", "gpus")   # what a worker process is held to


def check(cfg, given: dict) -> None:
    """ConfigError for the first contradiction among the given settings of this cell."""
    for k in AUTO_ONLY:
        if k in given and cfg.repeats != "auto":
            raise ConfigError(f"{k}={show(given[k])} applies to repeats=auto only, but repeats={cfg.repeats} times a "
                              "fixed number of calls; give one of them")
    for k in WORKER_ONLY:
        if k in given and not cfg.isolate:
            raise ConfigError(f"{k}={show(given[k])} applies to the worker process, but isolate=false runs cells in "
                              "this process; give one of them")
    if "attn.name" in given:
        raise ConfigError(f"attn.name={show(given['attn.name'])}: the attention path is chosen with attn=NAME "
                          f"(e.g. attn={show(given['attn.name'])}), which also brings its settings")
    if "cache._target_" in given:
        raise ConfigError(f"cache._target_={show(given['cache._target_'])}: the strategy class is chosen with "
                          "cache=NAME (conf/cache/NAME.yaml names it)")
    if "model.name" in given:
        _check_name(cfg.model, str(given["model.name"]))


def _check_name(model, name: str) -> None:
    """model.name labels every row: it may name a model of its own, never another shipped model's file."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.is_file() or _same(OmegaConf.to_container(OmegaConf.load(path)), model):
        return
    chosen = next((p.stem for p in sorted(path.parent.glob("*.yaml"))
                   if _same(OmegaConf.to_container(OmegaConf.load(p)), model)), "this model")
    raise ConfigError(f"model.name={name} would label {chosen}'s rows as {name}, another model of conf/model; "
                      f"use model={name}, or a name of its own")


def _same(conf: dict, model) -> bool:
    return all(conf.get(k) == getattr(model, k) for k in ("hub_id", "gguf")) and (conf.get("arch") or {}) == model.arch
