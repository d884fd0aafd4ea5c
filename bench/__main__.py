"""kvbench command line: run | report | compare | plan | env."""
from __future__ import annotations

import sys

USAGE = """usage: python -m bench COMMAND [key=value ...]
  run     measure one cell, or a sweep with -m / sweep=default   (Hydra overrides)
  report  write plots/ and plots/report.md from the store          [store=results out=plots]
  compare BASE HEAD: what changed beyond noise between two result sets   [out=plots]
  plan    KV memory and capacity for an architecture on a GPU      model=NAME gpu=NAME|GiB [cache=... nbits=...]
  env     print the environment columns a row would carry here"""


GROUPS = ("model", "cache", "attn", "sweep")


def unknown_group_choice(overrides: list[str]) -> str:
    """One line for a config-group choice that has no conf/<group>/<name>.yaml (Hydra's is a screenful)."""
    from pathlib import Path

    conf = Path(__file__).resolve().parent.parent / "conf"
    for o in overrides:
        key, eq, value = o.partition("=")
        if eq and key in GROUPS and "(" not in value:
            allowed = sorted(p.stem for p in (conf / key).glob("*.yaml"))
            for v in value.split(","):
                if v.strip() not in allowed:
                    return f"{key}={v.strip()} is not a known {key}; choose one of: {', '.join(allowed)}"
    return ""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        bad = unknown_group_choice(rest)
        if bad:
            print(f"error: {bad}", file=sys.stderr)
            return 2
        from . import cli
        sys.argv = [f"{sys.argv[0]} run", *rest]
        cli.main()
        return 0
    if cmd == "report":
        from . import report
        return report.main(rest)
    if cmd == "compare":
        from . import compare
        return compare.main(rest)
    if cmd == "plan":
        from . import plan
        return plan.main(rest)
    if cmd == "env":
        from . import env
        print(env.report())
        return 0
    print(f"error: unknown command {cmd!r}; allowed: run, report, compare, plan, env", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
