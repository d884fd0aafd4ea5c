"""Cache strategies: one class per module, named by `_target_` in conf/cache/<name>.yaml.

Adding a strategy is one module here (a Strategy subclass, see base.py) and one YAML file in conf/cache/.
`build` turns a composed conf/cache entry into its object; nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import importlib

from bench.config.checks import ConfigError, unknown_key
from bench.strategies.base import NotApplicable, Strategy

__all__ = ["NotApplicable", "Strategy", "build", "from_row", "reference", "settings_of"]

REFERENCE = "bench.strategies.dynamic.Dynamic"  # what quality and the report measure every strategy against


def _class(target: str) -> type[Strategy]:
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"cache _target_={target} names no class; give module.Class under bench/strategies/") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"cache _target_={target} is not a Strategy subclass (bench/strategies/base.py)")
    return cls


def settings_of(target: str, values: dict | None = None) -> tuple[str, ...]:
    """The settings of a strategy class; with `values` (its composed entry), those that apply to them."""
    cls = _class(target)
    return cls.applicable(values) if values is not None else tuple(f.name for f in dataclasses.fields(cls))


def build(spec: dict, choice: str = "") -> Strategy:
    """The strategy object for a composed conf/cache entry ({'_target_': ..., setting: value, ...})."""
    spec = dict(spec)
    target = spec.pop("_target_", None)
    if not target:
        raise ConfigError(f"cache={choice or '?'} has no _target_ naming its class in conf/cache/{choice or '<name>'}.yaml")
    cls = _class(target)
    known = settings_of(target)
    for k in spec:
        if k not in known:
            raise unknown_key(f"cache.{k}", known, f" of cache={choice or cls.name}")
    return cls(**spec)


def from_row(row: dict) -> Strategy:
    """The strategy object a stored row ran with: the class whose name is its `cache`, with its settings."""

    import yaml

    from bench.config.paths import CONF_DIR

    conf = CONF_DIR / "cache"
    for path in sorted(conf.glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        if target and _class(target).name == row.get("cache"):
            keys = row.get("strategy_keys")
            keys = keys if isinstance(keys, list) else settings_of(target)
            values = {k: row[k] for k in keys if k in settings_of(target) and row.get(k) is not None and row[k] == row[k]}
            # a reader may have turned ints into floats (pandas, next to missing values)
            values = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in values.items()}
            return build({"_target_": target, **values}, row["cache"])
    raise ConfigError(f"cache={row.get('cache')} names no strategy in conf/cache/")


def reference() -> Strategy:
    return build({"_target_": REFERENCE})
