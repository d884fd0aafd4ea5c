"""`python -m bench plan model=NAME gpu=NAME|GiB ...`: what fits, from the architecture alone (no weights)."""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from . import kvmath
from .config import NBITS, QUANT_BACKENDS, ConfigError, ModelConfig, _one_of

CONF_MODEL = Path(__file__).resolve().parent.parent / "conf" / "model"
KEYS = ("model", "gpu", "cache", "nbits", "backend", "dtype", "seq_len", "batch", "reserve")
USAGE = ("usage: python -m bench plan model=NAME|HUB_ID|DIR gpu=NAME|GiB [cache=dynamic|quantized] [nbits=2|4] "
         "[backend=quanto|hqq] [dtype=float16] [seq_len=4096] [batch=1] [reserve=0.1]")


def model_config(spec: str) -> ModelConfig:
    """A shipped conf/model/<spec>.yaml, else a local dir with config.json, else a hub id."""
    path = CONF_MODEL / f"{spec}.yaml"
    if path.exists():
        return ModelConfig(**OmegaConf.to_container(OmegaConf.load(path)))
    if Path(spec).is_dir() and not (Path(spec) / "config.json").exists():
        raise ConfigError(f"model={spec}: the directory has no config.json")
    return ModelConfig(name=Path(spec).name, hub_id=spec)


def main(argv: list[str]) -> int:
    args = {}
    for a in argv:
        k, eq, v = a.partition("=")
        if not eq or k not in KEYS:
            print(f"error: {a!r} is not a plan option; allowed keys: {', '.join(KEYS)}\n{USAGE}", file=sys.stderr)
            return 2
        args[k] = v
    if "model" not in args or "gpu" not in args:
        print(f"error: plan needs model= and gpu=\n{USAGE}", file=sys.stderr)
        return 2
    try:
        from .models import arch_config, planned_dtype
        mc = model_config(args["model"])
        try:
            config = arch_config(mc)
        except OSError as e:
            raise ConfigError(f"model={args['model']}: no shipped config, local config.json or reachable hub id ({str(e).splitlines()[0]})")
        gpu_name, gpu_bytes = kvmath.parse_gpu(args["gpu"])
        dtype = planned_dtype(args.get("dtype") or "auto", mc, config)
        backend = args.get("backend", "quanto")
        _one_of("backend", backend, QUANT_BACKENDS)
        caches = [(f"{dtype} (full precision)", None)]
        if "nbits" in args or args.get("cache") == "quantized":
            nbits = int(args.get("nbits", 4))
            _one_of("nbits", nbits, NBITS)
            caches.append((f"{backend} int{nbits}", nbits))
        elif args.get("cache", "quantized") in ("quantized", "dynamic", "static"):
            caches += [(f"{backend} int4", 4), (f"{backend} int2", 2)]
        rows = kvmath.plan(config, gpu_bytes, dtype=dtype, seq_len=int(args.get("seq_len", 4096)),
                           batch=int(args.get("batch", 1)), reserve_frac=float(args.get("reserve", 0.1)),
                           caches=caches, backend=backend)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{mc.name} on {gpu_name}: architecture only, no weights loaded")
    print(kvmath.format_plan(rows, config=config, gpu_name=gpu_name))
    return 0
