"""The out-of-memory boundary on the GPU: the planner's largest batch against the measured one (issue 23, part 4).

    python scripts/boundary.py [budget_s=360] [store=results] [setups=dynamic,int4] [dynamic=B] [int4=B]

For Llama-2-7B shapes at 1024 + 16 tokens, sdpa, bf16, random weights, with the dynamic cache and with quanto int4:
ask the planner for the largest batch B that fits this GPU (bench.predict.planner.most_batch: the fit check's own
figures; `dynamic=B` / `int4=B` give it instead, to save the planning time), run B and about 1.1 B (`python -m bench
run ... fit_check=false repeats=2`, both in one worker, rows into the store), and where an outcome disagrees with the plan (B out of
memory, or 1.1 B running) bisect between a batch that ran and one that did not, until they are 2.5% apart or the
time budget is spent. Prints one summary line per setup; the rows carry run ids boundary-<setup>-<batch>-<time>.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GIB = 2**30
SETUPS = {"dynamic": ["cache=dynamic"], "int4": ["cache=quantized", "nbits=4", "quant_backend=quanto"]}
COMMON = ["model=llama-2-7b", "prompt_len=1024", "new_tokens=16", "attn=sdpa", "dtype=bfloat16", "weights=random",
          "device=cuda", "fit_check=false", "repeats=2", "rounds=1", "warmup=1", "cell_timeout_s=240",
          "compile_budget_s=300"]  # the first quanto cell on a machine builds its CUDA extension
CLOSE = 0.025  # stop bisecting when the batch that ran and the one that did not are this close


def gpu_bytes() -> int:
    """The card's memory as the fit check reads it, from a short-lived process (no CUDA context kept here)."""
    code = "import torch; print(torch.cuda.get_device_properties(0).total_memory)"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def plan(name: str, capacity: int) -> tuple[int, float]:
    """(largest batch, what it needs in bytes) by the planner."""
    from bench.cli import compose
    from bench.predict import planner
    from bench.predict.arch import arch_config, planned_dtype

    given = [a for a in COMMON if not a.startswith("device=")]  # planned here, where there may be no GPU in view
    cfg, = compose.cells([*given, *SETUPS[name], "batch=1", "device=cpu"], positions=False)
    config = arch_config(cfg.model)
    dtype = planned_dtype(cfg.model, config)
    expandable = planner.expandable_segments()
    b = planner.most_batch(config, dtype, cfg.cache, cfg.prompt_len, cfg.new_tokens, cfg.attn.name, capacity, expandable)
    return b, planner.peak(config, dtype, cfg.cache, b, cfg.prompt_len, cfg.new_tokens, cfg.attn.name).needed(expandable)


def run(name: str, batches: list[int], store: str) -> dict[int, dict]:
    """Cells through one bench run (a sweep over the batches, in order: one worker, one model load); per batch its
    row's status ('ok', 'oom', 'error') and peak, and the seconds the run took."""
    run_id = f"boundary-{name}-{'-'.join(map(str, batches))}-{time.strftime('%H%M%S')}"
    env = {**os.environ, "KVBENCH_RUN_ID": run_id, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    sweep = ["-m", f"batch={','.join(map(str, batches))}"] if len(batches) > 1 else [f"batch={batches[0]}"]
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "bench", "run", *sweep, *COMMON, *SETUPS[name], f"store={store}"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    rows = {r.get("batch"): r for f in sorted(Path(store).glob(f"{run_id}*.jsonl")) for ln in f.read_text().splitlines()
            if ln.strip().startswith("{") and (r := json.loads(ln))}
    out = {}
    for b in batches:
        row = rows.get(b) or {"status": "error", "error": (proc.stderr or proc.stdout).strip()[-300:]}
        print(f"  {name} batch={b}: {row['status']}"
              + (f", peak {row['peak_mem_mib'] / 1024:.2f} GiB" if row.get("peak_mem_mib") else "")
              + (f" ({str(row.get('error'))[:160]})" if row["status"] != "ok" else ""), flush=True)
        out[b] = {"status": row["status"], "peak_gib": (row.get("peak_mem_mib") or 0) / 1024,
                  "s": (time.time() - t0) / len(batches)}
    print(f"  [{time.time() - t0:.0f} s]", flush=True)
    return out


def boundary(name: str, planned: int, store: str, deadline: float) -> str:
    seen: dict[int, dict] = {}

    def ran(b: int) -> bool:
        if b not in seen:
            seen.update(run(name, [b], store))
        return seen[b]["status"] == "ok"

    up = max(planned + 1, math.ceil(1.1 * planned))
    seen.update(run(name, [planned, up], store))  # the plan's batch and 10% above it, in one worker
    as_planned = seen[planned]["status"] == "ok" and seen[up]["status"] != "ok"
    while not as_planned and time.time() < deadline:  # bisect only where the device disagrees with the plan
        ok = [b for b, r in seen.items() if r["status"] == "ok"]
        bad = [b for b, r in seen.items() if r["status"] != "ok"]
        lo, hi = max(ok, default=None), min(bad, default=None)
        if lo is not None and hi is not None and (hi - lo <= max(1, CLOSE * lo) or hi <= lo):
            break
        guess = (math.ceil(lo * 1.1) if hi is None else max(1, math.floor(hi / 1.1)) if lo is None else (lo + hi) // 2)
        slowest = max(r["s"] for r in seen.values())
        if time.time() + slowest > deadline:
            break
        ran(guess)
    ok = [b for b, r in seen.items() if r["status"] == "ok"]
    bad = [b for b, r in seen.items() if r["status"] != "ok"]
    lo, hi = max(ok, default=None), min(bad, default=None)
    agree = seen[planned]["status"] == "ok" and seen.get(up, {}).get("status") not in (None, "ok")
    measured = f"{lo if lo is not None else '?'} <= boundary < {hi if hi is not None else '?'}"
    err = f"{(planned - lo) / lo:+.1%}" if lo else "?"
    within = "yes" if lo and (agree or abs(planned - lo) <= 0.05 * lo) else "no"
    runs = ", ".join(f"{b}:{r['status']}" for b, r in sorted(seen.items()))
    return (f"{name}: planner B={planned}; B {seen[planned]['status']}, {up} {seen.get(up, {}).get('status', 'not run')};"
            f" measured {measured}; planner vs measured {err}; fits/OOM as planned: {'yes' if agree else 'no'};"
            f" within 5%: {within}; runs: {runs}")


def main(argv: list[str]) -> int:
    opts = dict(a.split("=", 1) for a in argv)
    budget, store = float(opts.get("budget_s", 360)), opts.get("store", "results")
    names = opts.get("setups", "dynamic,int4").split(",")
    t0 = time.time()
    capacity = gpu_bytes()
    print(f"GPU memory {capacity / GIB:.2f} GiB; budget {budget:.0f} s", flush=True)
    lines = []
    for i, name in enumerate(names):
        if name in opts:
            planned, note = int(opts[name]), "given"
        else:
            planned, need = plan(name, capacity)
            note = f"planned in {time.time() - t0:.0f} s, needs {need / GIB:.1f} GiB"
        print(f"{name}: largest batch {planned} ({note})", flush=True)
        share = (budget - (time.time() - t0)) / (len(names) - i)  # what is left, shared by the setups left
        lines.append(boundary(name, planned, store, time.time() + share))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
