"""`python -m bench plan model=NAME gpu=NAME|GiB [run settings]`: what fits, from the architecture alone.

Nothing loads: the model is built on the meta device (bench.predict.geometry, bench.predict.activations, bench.predict.planner).
Run settings (cache=, nbits=, quant_backend=, dtype=, attn=, batch=, prompt_len=, new_tokens=) are checked by
the same code as `bench run`. `gpus=N` plans the model split over N such GPUs (accelerate's device map): the memory
per GPU. `python -m bench plan check [store=results]` sets the planner against every GPU row of a store: predicted
against measured peak, and whether it would have let the cell run.
"""
from __future__ import annotations

import sys
from pathlib import Path

from bench.cli import compose
from bench import predict
from bench.predict import geometry, formula, planner
from bench.predict.host import HostMemory, host_warning
from bench.config.checks import ConfigError, unknown_key
from bench.predict.arch import check_model, max_positions, planned_dtype
from bench.cli.progress import console

PLAN_KEYS = ("gpu", "alloc", "gpus", "host")
USAGE = ("usage: python -m bench plan model=NAME|HUB_ID|DIR gpu=NAME|GiB [cache=dynamic|quantized|...] [nbits=2|4] "
         "[quant_backend=quanto|hqq|fp8] [dtype=...] [attn=sdpa|eager|flash_attention_2] [batch=1] [prompt_len=4096] "
         "[new_tokens=128] [alloc=default|expandable] [gpus=N] [host=GiB]    |    python -m bench plan check [store=results]")
GIB = 2**30


def _largest(fits, lo: int, hi: int) -> int:
    """Largest n in [lo, hi] with fits(n) (fits is monotone), or lo - 1 when none: a doubling search, then halving."""
    if not fits(lo):
        return lo - 1
    n = lo
    while n * 2 <= hi and fits(n * 2):
        n *= 2
    top = min(n * 2, hi + 1)  # fits(n), not fits(top) (or top past the range)
    while top - n > max(1, n // 50):  # 2% is precise enough for a capacity figure
        mid = (n + top) // 2
        n, top = (mid, top) if fits(mid) else (n, mid)
    return n


def _line(label, config, dtype, cfg, gpu_bytes, expandable, notes: list, host_mem=None) -> str:
    def needed(b, p):
        pk = planner.peak(config, dtype, cfg.cache, b, p, cfg.new_tokens, cfg.attn.name)
        return pk.needed(expandable), pk

    need, pk = needed(cfg.batch, cfg.prompt_len)
    fits = need <= gpu_bytes
    limit = max_positions(config) or 1 << 20
    most = planner.most_batch(config, dtype, cfg.cache, cfg.prompt_len, cfg.new_tokens, cfg.attn.name, gpu_bytes,
                              expandable)
    longest = _largest(lambda p: needed(cfg.batch, p)[0] <= gpu_bytes, 1, max(1, limit - cfg.new_tokens))
    warn = host_warning(pk.host, host_mem)
    if warn:
        notes.append(f"{label}: {warn}")
    host = f"{pk.host / GIB:.2f}" if pk.host else "–"
    return (f"| {label} | {pk.kv_device / GIB:.2f} | {host} | {pk.allocated / GIB:.2f} | {need / GIB:.2f} | "
            f"{'yes' if fits else '**no**'} | {most:,} | {longest:,} |")


def check(argv: list[str]) -> int:
    """`plan check [store=results]`: the planner against each GPU cell's newest ok or out-of-memory row."""
    from bench.cli.args import Option, UsageError, existing, options
    from bench.cli.report import has_rows
    from bench.predict.check import table
    from bench.report import selection
    from bench.store import StoreError, load

    opts, pos = options(argv, {"store": Option("results", check=existing)}, "plan check")
    if pos:
        raise UsageError(f"plan check takes only store=, not {pos[0]!r}; usage: python -m bench plan check "
                         "[store=results]")
    try:
        has_rows(existing("store", opts["store"]))
        df = load(opts["store"])
    except StoreError as e:
        raise UsageError(str(e)) from None
    df = df[(df["device"] == "cuda") & df["status"].isin(["ok", "oom"])]
    df = df[~df["error"].fillna("").str.startswith("not run:")].reset_index(drop=True)  # refusals prove nothing
    shown = selection.pick(selection.prepare(df)).shown
    print(table([{**df.loc[i].to_dict(), "label": shown.loc[i, "label"]} for i in shown.index]))
    return 0


def split(cfg, config, dtype, gpus: int, gpu_name: str, gpu_bytes: int) -> None:
    """The memory per GPU of the model split over `gpus` of them (accelerate's device map), for the given cache."""
    rows = predict.split_plan(config, dtype, cfg.cache, cfg.batch, cfg.prompt_len, cfg.new_tokens, gpus, gpu_bytes,
                              cfg.attn.name)
    print(f"\n{cfg.cache.label()} split over {gpus} x {gpu_name} with device_map=auto (accelerate):\n")
    print("| device | layers | weights (GiB) | KV (GiB) | activations (GiB) | peak allocated (GiB) | needs (GiB) | fits |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['layers'] or '–'} | {r['weights_bytes'] / GIB:.2f} | {r['kv_bytes'] / GIB:.2f} | "
              f"{r['activation_bytes'] / GIB:.2f} | {r['peak_bytes'] / GIB:.2f} | {r['needed_bytes'] / GIB:.2f} | "
              f"{'yes' if r['fits'] else '**no**'} |")


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        return check(argv[1:])
    opts, run, seen = {}, [], {}
    for a in argv:
        k, eq, v = a.partition("=")
        if not eq:
            return _fail(f"{a!r} is not key=value; {USAGE}")
        if k in seen:
            return _fail(f"{k} is given twice ({seen[k]}, {a}); give it once")
        seen[k] = a
        if k in PLAN_KEYS:
            opts[k] = v
        elif k in compose.TOP or k in compose.GROUPS or "." in k:
            run.append(a)
        else:
            return _fail(str(unknown_key(k, (*PLAN_KEYS, *compose.TOP, *compose.GROUPS), " of bench plan")))
    if any(a.startswith(("nbits=", "quant_backend=")) for a in run) and not any(a.startswith("cache=") for a in run):
        run.append("cache=quantized")  # a bit width asks for the quantized cache
    try:
        if "gpu" not in opts:
            raise ConfigError("plan needs gpu= (a name such as h100, h200, a100-80gb, or a size in GiB)")
        try:
            gpu_name, gpu_bytes = formula.parse_gpu(opts["gpu"])
        except ValueError as e:
            raise ConfigError(f"gpu={opts['gpu']}: {e}") from None
        if gpu_bytes <= 0:
            raise ConfigError(f"gpu={opts['gpu']} holds no memory; give a GPU name or a size in GiB above 0")
        if opts.get("alloc", "default") not in ("default", "expandable"):
            raise ConfigError(f"alloc={opts['alloc']} is not allowed; choose one of: default, expandable")
        host_mem = None  # this machine's, unless host= names the one the cells will run on
        if "host" in opts:
            try:
                host_gib = float(opts["host"].lower().removesuffix("gib"))
            except ValueError:
                host_gib = -1.0
            if not host_gib > 0:
                raise ConfigError(f"host={opts['host']} must be the host's memory in GiB, e.g. host=128")
            host_mem = HostMemory(int(host_gib * GIB), int(host_gib * GIB))
        gpus = opts.get("gpus", "1")
        if not gpus.isdigit() or not 1 <= int(gpus) <= 64:
            raise ConfigError(f"gpus={gpus} must be a whole number of GPUs from 1 to 64")
        spec = next((a.split("=", 1)[1] for a in run if a.startswith("model=")), None)
        if spec is None:
            raise ConfigError("plan needs model= (a conf/model name, a hub id or a local directory)")
        shipped = (compose.CONF_DIR / "model" / f"{spec}.yaml").exists()
        run = [a for a in run if shipped or not a.startswith("model=")]
        asked_prompt = any(a.startswith("prompt_len=") for a in run)
        run = ["device=cpu", "prompt_len=4096", "new_tokens=128"] + run
        merged = {a.split("=", 1)[0]: a for a in run}
        cfg, = compose.cells(list(merged.values()), positions=False)
        if not shipped:
            check_dir(spec)
        if not shipped:
            from bench.config.settings import ModelConfig
            if Path(spec).is_dir() and not (Path(spec) / "config.json").exists():
                raise ConfigError(f"model={spec}: the directory has no config.json")
            cfg.model = ModelConfig(name=Path(spec).name, hub_id=spec, dtype=cfg.model.dtype)
        try:
            config = check_model(cfg.model)
        except ConfigError as e:
            raise ConfigError(f"model={spec}: {e}") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"model={spec}: no shipped config, local config.json or reachable hub id "
                              f"({str(e).splitlines()[0]})") from None
        if not asked_prompt:  # 4096 tokens, or as many as the architecture's positions leave room for
            cfg.prompt_len = max(1, min(4096, (max_positions(config) or 1 << 30) - cfg.new_tokens))
        cfg.check_positions(max_positions(config))
    except ConfigError as e:
        return _fail(str(e))
    dtype = planned_dtype(cfg.model, config)
    expandable = opts.get("alloc") == "expandable"
    try:  # a size the meta device cannot even hold (batch=2**62) is input, said before the table starts
        planner.peak(config, dtype, cfg.cache, cfg.batch, cfg.prompt_len, cfg.new_tokens, cfg.attn.name)
    except planner.CANNOT_PLAN:
        pass  # the table says so, row by row
    except (RuntimeError, OverflowError, MemoryError) as e:
        return _fail(f"batch={cfg.batch} x {cfg.prompt_len}+{cfg.new_tokens} tokens is too large to plan "
                     f"({(str(e).strip().splitlines() or [type(e).__name__])[0]})")
    geo = geometry.kv_geometry(config, dtype)
    print(f"{cfg.model.name} on {gpu_name} ({gpu_bytes / GIB:.1f} GiB), {dtype}, attention {cfg.attn.name}: "
          f"architecture only, no weights loaded")
    print(f"weights {formula.weight_bytes(config, dtype) / GIB:.2f} GiB; KV per token (batch 1) "
          f"{geo.bytes(cfg.prompt_len, 0, 1) / cfg.prompt_len / 1024:.1f} KiB at {cfg.prompt_len} tokens")
    print(geo.explain(cfg.prompt_len))
    print(f"\nbatch {cfg.batch} x ({cfg.prompt_len} prompt + {cfg.new_tokens} new tokens); allocator "
          f"{'expandable_segments (no fragmentation)' if expandable else 'default (fragmentation simulated)'}; "
          f"{planner.CONTEXT_BYTES / GIB:.0f} GiB kept for the CUDA context\n")
    if int(opts.get("gpus", "1")) > 1:
        split(cfg, config, dtype, int(opts["gpus"]), gpu_name, gpu_bytes)
        return 0
    print("| cache | KV on device (GiB) | host (GiB) | peak allocated (GiB) | needs (GiB) | fits | largest batch | "
          "longest prompt |")
    print("|---|---|---|---|---|---|---|---|")
    notes: list[str] = []
    given = any(a.startswith(("cache=", "nbits=", "quant_backend=")) for a in argv)
    variants = [cfg] if given else [cfg] + [compose.cells(list(merged.values()) + v, positions=False)[0] for v in
                                           (["cache=quantized", "nbits=4"], ["cache=quantized", "nbits=2"])]
    for c in variants[1:]:
        c.model, c.prompt_len = cfg.model, cfg.prompt_len
    for c in variants:
        try:
            # tens of seconds per cache on a 7B (meta runs at each step of two searches): a spinner on stderr
            with console.status(f"planning {c.cache.label()}: the peak, the largest batch, the longest prompt"):
                line = _line(c.cache.label(), config, dtype, c, gpu_bytes, expandable, notes, host_mem)
            print(line)
        except planner.CANNOT_PLAN as e:  # e.g. QuantizedCache refuses a sliding-window model
            print(f"| {c.cache.label()} | – | – | – | – | cannot run: {str(e).splitlines()[0]} | – | – |")
    for n in notes:
        print(f"\n{n}")
    print("\nThe peak is the prefill's or the last step's, whichever is larger; 'needs' adds the allocator's "
          "segments (simulated) and the context. Activations are measured on the meta device for this attention path; "
          "host is the pinned host memory a strategy that offloads holds.")
    return 0


def check_dir(spec: str) -> None:
    """A model given as a path must be a directory holding config.json (a hub id is tried as such)."""
    from bench.config.settings import ModelConfig
    from bench.predict.arch import check_local, looks_local

    if not spec:
        raise ConfigError("model= is empty; give a conf/model name, a hub id or a local directory")
    if looks_local(spec) and not Path(spec).expanduser().exists():
        raise ConfigError(f"model={spec}: no such directory, and not a shipped model (conf/model) or a hub id ORG/NAME")
    check_local(ModelConfig(name=Path(spec).name or spec, hub_id=spec), "random", key="model")


def _fail(message: str) -> int:
    from bench.cli.args import fail

    return fail(message)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
