"""kvbench command line: run | report | compare | plan | pr | env."""
from __future__ import annotations

import sys

USAGE = """usage: python -m bench COMMAND [key=value ...]
  run     measure one cell, or a sweep with -m / sweep=default   (Hydra overrides; see README)
  report  write plots/ and plots/report.md from the store          [store=results out=plots]
  compare BASE HEAD: what changed beyond noise between two result sets   [out=plots noise=FILE calibrate=true pool=true]
  plan    KV memory, peak and capacity for an architecture on a GPU    model=NAME gpu=NAME|GiB [prompt_len= batch= ...]
          plan check [store=results]: the planner against the store's GPU rows
  reference  the reference report of one GPU's rows: decision table first  gpu=NAME [store=results out=...]
  pr      BASE_REF HEAD_REF: measure two commits interleaved and compare them   [out=DIR rounds=2 -- run overrides]
  env     print the environment columns a row would carry here"""
COMMANDS = ("run", "report", "compare", "plan", "reference", "pr", "env")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run(argv: list[str]) -> int:
    """Check every cell of the command before anything loads, then hand it to Hydra."""
    from bench.cli import compose
    from bench.config.checks import ConfigError
    from bench.store import check_writable

    try:
        cells = compose.cells(argv)
        for store in sorted({c.store for c in cells}):
            check_writable(store)
    except (ConfigError, OSError) as e:
        return fail(str(e))
    from bench.cli import hydra_app as cli, progress
    from bench.config.settings import NO_GPU

    if cli.gpu_missing(cells):
        return fail(NO_GPU)
    progress.expect(len(cells))
    sys.argv = [f"{sys.argv[0]} run", *compose.normalize(argv)]
    cli.main()
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        return run(rest)
    if cmd == "report":
        from bench.cli import report as report_cli
        return report_cli.report(rest)
    if cmd == "compare":
        from bench.cli import report as report_cli
        return report_cli.compare(rest)
    if cmd == "reference":
        from bench.report import gpu_report as reference
        return reference.main(rest)
    if cmd == "pr":
        from bench.report import pr
        return pr.main(rest)
    if cmd == "plan":
        from bench.cli import plan
        return plan.main(rest)
    if cmd == "env":
        from bench.run import environment
        print(environment.report())
        return 0
    return fail(f"unknown command {cmd!r}; allowed: {', '.join(COMMANDS)}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
