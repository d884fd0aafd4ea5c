"""Copy a store with every timing multiplied by a factor: a known change, to see what `bench compare` calls it.

    python scripts/shift_store.py SRC DST [factor=1.10]

Timings (medians, raw per-call samples, per-step medians) are multiplied, throughputs divided; everything else,
memory included, is copied as it is. The copy's rows say so in their run_id (suffix '-x1.10').
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

TIMES = ("ttft_ms", "tpot_ms", "e2e_ms", "cold_e2e_ms", "ttft_samples_ms", "tpot_samples_ms", "e2e_samples_ms",
         "step_ms", "round_e2e_ms", "round_tpot_ms", "ttft_p10_ms", "ttft_p90_ms", "tpot_p10_ms", "tpot_p90_ms",
         "e2e_p10_ms", "e2e_p90_ms")
RATES = ("decode_tok_s", "e2e_tok_s")


def shift(row: dict, factor: float) -> dict:
    out = dict(row)
    for k in TIMES:
        v = out.get(k)
        out[k] = [x * factor for x in v] if isinstance(v, list) else v * factor if isinstance(v, (int, float)) else v
    for k in RATES:
        if isinstance(out.get(k), (int, float)):
            out[k] = out[k] / factor
    out["run_id"] = f"{row.get('run_id', '')}-x{factor:.2f}"
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and not argv[2].startswith("factor=")):
        print("usage: python scripts/shift_store.py SRC DST [factor=1.10]", file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    factor = float(argv[2].split("=", 1)[1]) if len(argv) == 3 else 1.10
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.jsonl")):
        rows = [shift(json.loads(line), factor) for line in f.read_text().splitlines() if line.strip()]
        (dst / f.name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
