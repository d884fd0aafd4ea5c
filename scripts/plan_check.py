"""The planner against every GPU row of a store, until `bench plan check` is wired to bench.predict.check.table:

    python scripts/plan_check.py [store=results] [out=FILE.md]

Rows: each GPU cell's newest ok or out-of-memory row (bench.report.selection, as the report picks them), the
planner's own refusals ("not run: ...") left out, as they prove nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def gpu_rows(store: str) -> list[dict]:
    from bench.report import selection
    from bench.store import load

    df = load(store)
    df = df[(df["device"] == "cuda") & df["status"].isin(["ok", "oom"])]
    df = df[~df["error"].fillna("").str.startswith("not run:")].reset_index(drop=True)
    shown = selection.pick(selection.prepare(df)).shown
    return [{**df.loc[i].to_dict(), "label": shown.loc[i, "label"]} for i in shown.index]


def main(argv: list[str]) -> int:
    from bench.predict.check import table

    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    text = table(gpu_rows(opts.get("store", "results")))
    if "out" in opts:
        Path(opts["out"]).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
