"""Measure the harness's own sources of drift: a cell's position in its worker process, and the thread count.

    python scripts/drift_check.py [processes=6] [model=tiny-llama] [cache=dynamic] [prompt_len=16] [new_tokens=16]
                                  [threads=auto,1] [repeats=15] [process_warmup_s=0]

Each of `processes` fresh worker processes (one per thread setting, interleaved: A B A B ...) times the same cell
four times in a row with a fixed number of calls. Within one process the four medians share the process's speed,
so position 1 against positions 2-4 shows what running first costs; across processes of one thread setting, the
spread of their medians shows what that setting leaves between processes. Prints one JSON object.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cli import compose  # noqa: E402
from bench.run.worker import Worker  # noqa: E402


def main(argv: list[str]) -> dict:
    opts = {"processes": "6", "model": "tiny-llama", "cache": "dynamic", "prompt_len": "16", "new_tokens": "16",
            "threads": "auto,1", "repeats": "15", "process_warmup_s": "0"}
    for a in argv:
        k, _, v = a.partition("=")
        if k not in opts:
            raise SystemExit(f"error: {k} is not an option; known: {', '.join(opts)}")
        opts[k] = v
    cfg, = compose.cells([f"model={opts['model']}", f"cache={opts['cache']}", "device=cpu", "attn=sdpa",
                          f"prompt_len={opts['prompt_len']}", f"new_tokens={opts['new_tokens']}",
                          f"repeats={opts['repeats']}", "rounds=1", "warmup=1", "store=/tmp/kvbench-drift",
                          f"process_warmup_s={opts['process_warmup_s']}"])
    out: dict = {"cell": f"{opts['model']} {opts['cache']} p{opts['prompt_len']} n{opts['new_tokens']}",
                 "process_warmup_s": opts["process_warmup_s"], "by_threads": {}}
    settings = opts["threads"].split(",")
    runs: dict = {t: [] for t in settings}
    for i in range(int(opts["processes"])):
        t = settings[i % len(settings)]
        w = Worker({"KVBENCH_THREADS": t})
        medians = []
        for _ in range(4):
            row = w.run(cfg, "drift", first=False).row
            medians.append(row["e2e_ms"])
        w.stop(graceful=True)
        runs[t].append({"threads_in_effect": row["threads"], "medians_ms": medians})
    for t, procs in runs.items():
        first = [p["medians_ms"][0] / statistics.median(p["medians_ms"][1:]) for p in procs]
        later = [statistics.median(p["medians_ms"][1:]) for p in procs]
        out["by_threads"][t] = {
            "threads_in_effect": procs[0]["threads_in_effect"],
            "first_over_later": [round(x, 3) for x in first],
            "first_over_later_median": round(statistics.median(first), 3),
            "between_process_spread": round(statistics.stdev(later) / statistics.mean(later), 4) if len(later) > 1 else None,
            "later_median_ms": round(statistics.median(later), 3),
        }
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
