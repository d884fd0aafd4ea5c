"""From the command line to checked RunConfigs, before anything is run (no torch).

`cells(argv)` expands a `bench run` command into every cell it would run, exactly as Hydra's basic sweeper
does (the sweep file's params, then the command line's), composes each with Hydra and builds it with `build`,
so every input is checked before the first model loads. The Hydra job (bench.cli.hydra_app) builds its own cell with
the same `build`. Spellings of group settings (nbits, quant_backend, sdpa_backend, dtype) are resolved here,
once: a value the chosen preset or the command line already set differently is an error naming both.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from omegaconf import OmegaConf

from bench import strategies
from bench.cli import conflicts, sweeps
from bench.config.checks import ConfigError, short, unknown_key
from bench.predict.arch import check_local
from bench.config.paths import CONF_DIR
from bench.config.settings import AttnConfig, ModelConfig, RunConfig, field_names

GROUPS = ("model", "cache", "attn", "sweep")
# top-level spelling -> (group, setting)
SHORTCUTS = {"nbits": ("cache", "nbits"), "quant_backend": ("cache", "quant_backend"),
             "sdpa_backend": ("attn", "sdpa_backend"), "dtype": ("model", "dtype")}
TOP = tuple(k for k in field_names(RunConfig) if k not in GROUPS)


# Hydra overrides bench run takes: a launcher and its settings (scale-out), and where a sweep's multirun.yaml goes
HYDRA_KEYS = ("hydra/launcher", "hydra.launcher.", "hydra.sweep.dir")


@dataclass
class Parsed:
    overrides: list          # hydra Override objects, in order
    multirun: bool


def normalize(argv: list[str]) -> list[str]:
    """`cache.X=v` and `model.X=v` become `++cache.X=v` / `++model.X=v`: a strategy's settings differ by strategy and
    a model's conf file names only the fields it sets, so Hydra must not refuse one the chosen file lacks;
    `build` then checks the setting against the strategy or ModelConfig and names it if it is wrong. A plain value
    with letters beyond ASCII (store=résultats) is quoted: Hydra's grammar reads those only quoted."""
    out = []
    for a in argv:
        bare = a.lstrip("+")
        a = f"++{bare}" if bare.startswith(("cache.", "model.")) and "=" in bare else a
        key, eq, value = a.partition("=")
        if eq and not value.isascii() and not any(c in value for c in ",()[]{}'\"$\\"):
            a = f"{key}='{value}'"
        out.append(a)
    return out


def parse(argv: list[str], multirun: bool = False) -> Parsed:
    """Check each override's key (and group choice) before Hydra sees it: one line per mistake, each key once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    for a in argv:
        if a.startswith("-"):
            raise ConfigError(f"{a} is not an option of bench run; pass key=value overrides and -m to sweep")
    parser, overrides = OverridesParser.create(), []
    for a in argv:
        try:
            overrides += parser.parse_overrides([a])
        except (HydraException, ValueError) as e:  # ValueError: Python refuses an integer of over 4300 digits
            raise ConfigError(f"cannot read {short(a.lstrip('+'))} as key=value ({sweeps.why(a, e)}); "
                              "quote a value that holds spaces or ( ) [ ] { } , = : characters") from None
    seen: dict[str, str] = {}
    for o in overrides:
        _check_key(o)
        if o.is_sweep_override():
            sweeps.values(o, GROUPS)
        key = o.key_or_group
        if key in seen:
            raise ConfigError(f"{key} is given twice ({seen[key]}, {o.input_line.lstrip('+')}); give it once")
        seen[key] = o.input_line.lstrip("+")
    loose = next((k for k in seen if k.startswith("hydra.launcher.")), None)
    if loose and "hydra/launcher" not in seen:
        raise ConfigError(f"{seen[loose]} sets a launcher that is not chosen; add hydra/launcher=NAME "
                          f"({', '.join(n for n in sweeps.launchers() if n != 'basic')})")
    return Parsed(overrides, multirun)


def _check_key(o) -> None:
    key = o.key_or_group
    if not key:
        raise ConfigError(f"{short(o.input_line)}: the key is empty; write key=value (e.g. batch=8)")
    if key.startswith("hydra") or o.is_hydra_override():
        if not key.startswith(HYDRA_KEYS):
            raise ConfigError(f"{key} is not a Hydra setting bench run uses (rows go to store=, Hydra writes nothing "
                              "where you run); allowed: hydra/launcher=NAME, hydra.launcher.*, hydra.sweep.dir")
        if key == "hydra/launcher":
            known = sweeps.launchers()
            if str(o.value()) not in known:
                raise ConfigError(f"hydra/launcher={o.value()} is not an installed Hydra launcher; choose one of: "
                                  f"{', '.join(known)}")
        return
    if o.is_delete():
        raise ConfigError(f"~{key}: removing a setting is not supported; set it to another value")
    if key in GROUPS:
        allowed = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
        values = sweeps.values(o, GROUPS) if o.is_sweep_override() else [str(o.value())]
        for v in values:
            if v not in allowed:
                raise ConfigError(f"{key}={v} is not a known {key}; choose one of: {', '.join(allowed)}")
    elif "." in key:
        group, _, rest = key.partition(".")
        known = {"model": field_names(ModelConfig), "attn": field_names(AttnConfig)}.get(group)
        if group == "cache" and "." in rest:
            raise ConfigError(f"{key} is not a setting: a cache setting is one name (e.g. cache.nbits=4)")
        if group == "cache" or (group == "model" and rest.startswith("arch.")):
            return  # a strategy's settings depend on the chosen cache: checked by build(); arch is free-form
        if known is None:
            raise unknown_key(key, (*TOP, *GROUPS), " of bench run")
        if rest not in known:
            raise unknown_key(key, [f"{group}.{k}" for k in known], f" of {group}")
        return  # model.X / attn.X: the + forms mean the same
    elif key not in TOP:
        # Hydra suggests '+key=' for unknown keys: that would only hide the typo
        raise unknown_key(key, (*TOP, *GROUPS), " of bench run")
    if o.is_add():
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
    for spelling, (group, key) in SHORTCUTS.items():
        value = d.pop(spelling, None)
        if value is None:
            continue
        section = d[group]
        settings = (strategies.settings_of(section["_target_"], section) if group == "cache" and section.get("_target_")
                    else field_names(ModelConfig) if group == "model" else field_names(AttnConfig))
        if key not in settings:
            if sweeping:
                continue  # a sweep over caches: the spelling applies to the strategies that have it
            owner = f"cache={cache_choice}" if group == "cache" else f"{group}={section.get('name')}"
            raise ConfigError(f"{spelling}={value} does not apply to {owner}, which has no {key} setting")
        preset = _pinned_by_preset(cache_choice) if group == "cache" else {}
        full = f"{group}.{key}"
        if full in given and given[full] != value:
            raise ConfigError(f"{spelling}={value} contradicts {full}={given[full]}; give one of them")
        if key in preset and preset[key] != value:
            raise ConfigError(f"{spelling}={value} contradicts cache={cache_choice}, which sets {key}={preset[key]}; "
                              f"choose another cache preset (e.g. cache=quantized {spelling}={value})")
        section[key] = value
        used.add(spelling)
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
    conflicts.check(cfg, given)
    check_local(cfg.model, cfg.weights)
    if positions:  # the positions limit, where the model's conf file gives its shapes
        cfg.check_positions(model.arch.get("max_position_embeddings") or model.arch.get("n_positions"))
    return cfg, used


def _section(cls, values: dict, group: str):
    known = field_names(cls)
    for k in values:
        if k not in known:
            raise unknown_key(f"{group}.{k}", [f"{group}.{f}" for f in known], f" of {group}")
    return cls(**values)


def jobs(params: list[str], overrides: list) -> list[list[str]]:
    """Every job of a sweep as its override list: the sweep file's params, then the command line's (which replaces
    a param of the same key), each comma list expanded, all combinations in order (Hydra's basic sweeper's rule)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    merged: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(params) + list(overrides):
        key = o.get_key_element()
        values = [f"{key}={v}" for v in sweeps.values(o, GROUPS)] if o.is_sweep_override() else [o.input_line]
        merged.pop(o.key_or_group, None)
        merged[o.key_or_group] = values
    return [list(job) for job in itertools.product(*merged.values())]


def cells(argv: list[str], multirun: bool = False, positions: bool = True) -> list[RunConfig]:
    """Every cell `bench run [-m] ARGV` would run, composed and checked; ConfigError (one line) at the first bad one."""
    parsed = parse(normalize(argv), multirun)
    try:
        return _cells(parsed, positions)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra and OmegaConf refuse a composition in many types, all input
        lines = str(e).strip().splitlines() or [repr(e)]
        missing = re.match(r"Could not override '(hydra\.launcher\.[^']+)'", lines[0])
        if missing:  # Hydra's advice ('+key=') would only hide the typo
            chosen = next((o.input_line for o in parsed.overrides if o.key_or_group == "hydra/launcher"), "")
            raise ConfigError(f"{missing.group(1)} is not a setting of {chosen or 'the basic launcher'}") from None
        hint = next((f" ({ln.strip()})" for ln in lines[1:] if "append" in ln), "")  # Hydra's '+key=' advice
        raise ConfigError(f"cannot compose the overrides: {lines[0]}{hint}") from None


def _cells(parsed: Parsed, positions: bool) -> list[RunConfig]:
    from hydra import compose, initialize_config_dir

    plain = [o.input_line for o in parsed.overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        first = [f"{o.get_key_element()}={sweeps.values(o, GROUPS)[0]}" if o.is_sweep_override() else o.input_line
                 for o in parsed.overrides]
        head = compose("config", overrides=first, return_hydra_config=True)
        sweeping = parsed.multirun or str(head.hydra.mode).endswith("MULTIRUN")
        if not sweeping:
            swept = [o.input_line for o in parsed.overrides if o.is_sweep_override()]
            if swept:
                raise ConfigError(f"{swept[0]} lists several values; add -m to sweep them")
            todo = [plain]
        else:
            params = head.hydra.sweeper.get("params")
            params = [f"{k}={v}" for k, v in (OmegaConf.to_container(params) if params else {}).items()]
            todo = jobs(params, parsed.overrides)
        out, used = [], set()
        for job in todo:
            conf = compose("config", overrides=job, return_hydra_config=True)
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
