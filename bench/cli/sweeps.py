"""What Hydra's override grammar leaves to us: the values a sweep lists, why a token does not parse, and the
launchers installed (bench.cli.compose checks every override with these before Hydra composes anything)."""
from __future__ import annotations

from bench.config.checks import ConfigError, short
from bench.config.paths import CONF_DIR


def why(token: str, e: Exception) -> str:
    """Why Hydra could not read `token`, in a few words (its grammar's message without the grammar)."""
    value = token.partition("=")[2]
    if "=" not in token:
        return "no ="
    if value.endswith(",") or value.startswith(",") or ",," in value:
        return "an empty value in a comma list"
    lines = [ln.strip() for ln in str(e).splitlines()
             if ln.strip() and not ln.startswith(("Error parsing override", "See https://")) and ln.strip() != "^"]
    return short((lines[0] if lines else type(e).__name__).split(" expecting {")[0], 120)


def values(o, groups: tuple) -> list[str]:
    """The values a sweep override lists, as text: each once, at least one (glob() over a group's files)."""
    from hydra.core.override_parser.types import Glob, IntervalSweep

    key, given = o.key_or_group, o.input_line.lstrip("+")
    if isinstance(o.value(), IntervalSweep):
        raise ConfigError(f"{given}: an interval has no values to list (it is for optimizers); sweep a list a,b, "
                          "range(start,stop) or glob(pattern)")
    if isinstance(o.value(), Glob):
        if key not in groups:
            raise ConfigError(f"{given}: glob() picks among a group's files ({', '.join(groups)}), not values of {key}")
        listed = o.value().filter(sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml")))
    else:
        listed = [str(v) for v in o.sweep_string_iterator()]
    if not listed:
        raise ConfigError(f"{given} gives no value to sweep; list at least one")
    twice = next((v for i, v in enumerate(listed) if v in listed[:i]), None)
    if twice is not None:
        raise ConfigError(f"{given} lists {twice} twice; give each value once")
    return listed


def launchers() -> list[str]:
    """The Hydra launchers installed here (basic, and the plugins': joblib, submitit_local, submitit_slurm)."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # discovers the plugins, which register their launcher configs
    return sorted(n.removesuffix(".yaml") for n in ConfigStore.instance().list("hydra/launcher"))
