"""From the command line to checked RunConfigs, before anything is run (no torch).

`cells(argv)` expands a `bench run` command into every cell it would run, exactly as Hydra's basic sweeper
does (the sweep file's params, then the command line's), composes each with Hydra and builds it with `build`,
so every input is checked before the first model loads. The Hydra job (bench.cli.hydra_app) builds its own cell with
the same `build`. Spellings of group settings (nbits, quant_backend, sdpa_backend, dtype) are resolved here,
once: a value the chosen preset or the command line already set differently is an error naming both.
"""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf

from bench import strategies
from bench.config.checks import ConfigError, unknown_key
from bench.config.paths import CONF_DIR
from bench.config.settings import AttnConfig, ModelConfig, RunConfig, field_names

GROUPS = ("model", "cache", "attn", "sweep")
# top-level spelling -> (group, setting)
SHORTCUTS = {"nbits": ("cache", "nbits"), "quant_backend": ("cache", "quant_backend"),
             "sdpa_backend": ("attn", "sdpa_backend"), "dtype": ("model", "dtype")}
TOP = tuple(k for k in field_names(RunConfig) if k not in GROUPS)


@dataclass
class Parsed:
    overrides: list          # hydra Override objects, in order
    multirun: bool


def normalize(argv: list[str]) -> list[str]:
    """`cache.X=v` becomes `++cache.X=v`: a strategy's settings differ by strategy, so Hydra must not refuse
    one the default cache lacks; `build` then names the setting and the strategy if it is wrong."""
    return [f"++{a}" if a.startswith("cache.") else a for a in argv]


def parse(argv: list[str]) -> Parsed:
    """Check each override's key (and group choice) before Hydra sees it: one line per mistake."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    multirun = False
    args = []
    for a in argv:
        if a in ("-m", "--multirun"):
            multirun = True
        elif a.startswith("-"):
            raise ConfigError(f"{a} is not an option of bench run; pass key=value overrides and -m to sweep")
        else:
            args.append(a)
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        raise ConfigError(f"cannot read the overrides: {str(e).splitlines()[0]}") from None
    for o in overrides:
        _check_key(o)
    return Parsed(overrides, multirun)


def _check_key(o) -> None:
    key = o.key_or_group
    if o.is_hydra_override():
        return
    if o.is_delete():
        raise ConfigError(f"~{key}: removing a setting is not supported; set it to another value")
    if key in GROUPS:
        allowed = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [str(o.value())]
        for v in values:
            if v not in allowed:
                raise ConfigError(f"{key}={v} is not a known {key}; choose one of: {', '.join(allowed)}")
    elif "." in key:
        group, _, rest = key.partition(".")
        known = {"model": field_names(ModelConfig), "attn": field_names(AttnConfig)}.get(group)
        if group == "cache" or (group == "model" and rest.startswith("arch.")):
            return  # a strategy's settings depend on the chosen cache: checked by build(); arch is free-form
        if known is None:
            raise unknown_key(key, (*TOP, *GROUPS), " of bench run")
        if rest not in known:
            raise unknown_key(key, [f"{group}.{k}" for k in known], f" of {group}")
    elif key not in TOP:
        # Hydra suggests '+key=' for unknown keys: that would only hide the typo
        raise unknown_key(key, (*TOP, *GROUPS), " of bench run")
    if o.is_add() and not key.startswith("model.arch."):
        raise ConfigError(f"+{key}: {key} exists already; write {key}=VALUE without the +")


def _pinned_by_preset(cache_choice: str) -> dict:
    """Settings a preset (a conf/cache file built on another) fixes: changing them means another preset."""
    path = CONF_DIR / "cache" / f"{cache_choice}.yaml"
    if not path.exists():
        return {}
    conf = OmegaConf.to_container(OmegaConf.load(path))
    if not conf.get("defaults"):
        return {}
    return {k: v for k, v in conf.items() if k not in ("defaults", "_target_")}


def _apply_shortcuts(d: dict, given: dict, cache_choice: str, sweeping: bool) -> set:
    """Move each given top-level spelling into its group; returns the spellings this cell used."""
    used = set()
    for short, (group, key) in SHORTCUTS.items():
        value = d.pop(short, None)
        if value is None:
            continue
        section = d[group]
        settings = (strategies.settings_of(section["_target_"], section) if group == "cache" and section.get("_target_")
                    else field_names(ModelConfig) if group == "model" else field_names(AttnConfig))
        if key not in settings:
            if sweeping:
                continue  # a sweep over caches: the spelling applies to the strategies that have it
            owner = f"cache={cache_choice}" if group == "cache" else f"{group}={section.get('name')}"
            raise ConfigError(f"{short}={value} does not apply to {owner}, which has no {key} setting")
        preset = _pinned_by_preset(cache_choice) if group == "cache" else {}
        full = f"{group}.{key}"
        if full in given and given[full] != value:
            raise ConfigError(f"{short}={value} contradicts {full}={given[full]}; give one of them")
        if key in preset and preset[key] != value:
            raise ConfigError(f"{short}={value} contradicts cache={cache_choice}, which sets {key}={preset[key]}; "
                              f"choose another cache preset (e.g. cache=quantized {short}={value})")
        section[key] = value
        used.add(short)
    return used


def build(d: dict, task_overrides: list[str], cache_choice: str, sweeping: bool,
          positions: bool = True) -> tuple[RunConfig, set]:
    """A checked RunConfig from Hydra's composed config (a plain dict, hydra key removed)."""
    d = dict(d)
    d.pop("hydra", None)
    for k in d:
        if k not in (*TOP, *GROUPS[:3]):
            raise unknown_key(k, (*TOP, *GROUPS), " of bench run")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(task_overrides)}
    d["model"], d["cache"], d["attn"] = dict(d["model"]), dict(d["cache"]), dict(d["attn"])
    used = _apply_shortcuts(d, given, cache_choice, sweeping)
    target = d["cache"].get("_target_")
    for k in [k for k in d["cache"] if f"cache.{k}" in given]:
        if target and k not in strategies.settings_of(target, d["cache"]) and sweeping:
            del d["cache"][k]  # a sweep over caches: a setting applies to the strategies that have it
        else:
            used.add(f"cache.{k}")
    model = _section(ModelConfig, d.pop("model"), "model")
    attn = _section(AttnConfig, d.pop("attn"), "attn")
    cache = strategies.build(d.pop("cache"), cache_choice)
    cfg = RunConfig(model=model, cache=cache, attn=attn, **d)
    cache.check_cell(cfg)
    if positions:  # the positions limit, where the model's conf file gives its shapes
        cfg.check_positions(model.arch.get("max_position_embeddings") or model.arch.get("n_positions"))
    return cfg, used


def _section(cls, values: dict, group: str):
    known = field_names(cls)
    for k in values:
        if k not in known:
            raise unknown_key(f"{group}.{k}", [f"{group}.{f}" for f in known], f" of {group}")
    return cls(**values)


def cells(argv: list[str], positions: bool = True) -> list[RunConfig]:
    """Every cell `bench run ARGV` would run, composed and checked; ConfigError (one line) at the first bad one."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = parse(normalize(argv))
    plain = [o.input_line for o in parsed.overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        first = [o.input_line if not o.is_sweep_override() else f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
                 for o in parsed.overrides]
        head = compose("config", overrides=first, return_hydra_config=True)
        sweeping = parsed.multirun or str(head.hydra.mode).endswith("MULTIRUN")
        if not sweeping:
            swept = [o.input_line for o in parsed.overrides if o.is_sweep_override()]
            if swept:
                raise ConfigError(f"{swept[0]} lists several values; add -m to sweep them")
            jobs = [plain]
        else:
            params = head.hydra.sweeper.get("params")
            params = [f"{k}={v}" for k, v in (OmegaConf.to_container(params) if params else {}).items()]
            jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + plain), None)[0]
        out, used = [], set()
        for job in jobs:
            conf = compose("config", overrides=list(job), return_hydra_config=True)
            choice = conf.hydra.runtime.choices.get("cache", "")
            d = OmegaConf.to_container(conf, resolve=True)
            cfg, u = build(d, [o for o in job if not o.startswith("hydra")], choice, sweeping, positions)
            out.append(cfg)
            used |= u
    asked = [o.key_or_group for o in parsed.overrides if o.key_or_group in SHORTCUTS or o.key_or_group.startswith("cache.")]
    unused = [s for s in asked if s not in used]
    if unused:
        raise ConfigError(f"{unused[0]}= applies to no cell of this sweep (no strategy in it has that setting)")
    return out
