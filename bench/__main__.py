"""kvbench command line: run | report | compare | plan | env."""
from __future__ import annotations

import sys

USAGE = """usage: python -m bench COMMAND [key=value ...]
  run     measure one cell, or a sweep with -m / sweep=default   (Hydra overrides)
  report  write plots/ and plots/report.md from the store          [store=results out=plots]
  plan    KV memory and capacity for an architecture on a GPU      model=NAME gpu=NAME|GiB [cache=... nbits=...]
  env     print the environment columns a row would carry here"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        from . import cli
        sys.argv = [f"{sys.argv[0]} run", *rest]
        cli.main()
        return 0
    if cmd == "report":
        from . import report
        return report.main(rest)
    if cmd == "plan":
        from . import plan
        return plan.main(rest)
    if cmd == "env":
        from . import env
        print(env.report())
        return 0
    print(f"error: unknown command {cmd!r}; allowed: run, report, plan, env", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
