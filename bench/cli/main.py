"""`python -m bench VERB ...`: one argparse command line for every verb.

Each verb is an argparse subcommand taking key=value options (and, for run, Hydra overrides); its arguments are
parsed intermixed, so a flag such as -m may stand anywhere on the line. Bad input of any verb is one line on
stderr and exit code 2 (bench.cli.args), before anything loads.
"""
from __future__ import annotations

import contextlib
import sys
import warnings

from bench.cli.args import Parser, UsageError, fail
from bench.config.checks import ConfigError

VERBS = {
    "run": "measure one cell, or a sweep (-m anywhere, or sweep=NAME): key=value Hydra overrides, see the README",
    "report": "plots/ and plots/report.md from the store: [store=results] [out=plots]",
    "compare": "what changed beyond noise between two result sets: BASE HEAD [out=plots] [noise=FILE] "
               "[calibrate=true] [pool=true]",
    "plan": "what fits, from the architecture alone: model=NAME gpu=NAME|GiB [gpus=N] [run settings]; "
            "`plan check [store=results]`: the planner against the store's GPU rows",
    "gpu-report": "one GPU's report from its rows, decision first: gpu=NAME [store=results] [out=FILE] [plots=DIR]",
    "pr": "measure two commits interleaved and compare: BASE_REF HEAD_REF [out=DIR] [rounds=2] [-- run overrides]",
    "publish": "CI: put a pr comment's figures where GitHub shows them: OUT [mode=push|artifact] [pr=N run=ID "
               "repo=OWNER/REPO ...]",
    "env": "the environment columns a row would carry here",
}


def parsers() -> tuple[Parser, dict[str, Parser]]:
    top = Parser(prog="python -m bench", description="kvbench: which KV-cache strategy, and what it costs.")
    sub = top.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    verbs = {}
    for name, text in VERBS.items():
        p = sub.add_parser(name, help=text, description=text, prog=f"python -m bench {name}")
        if name == "run":
            p.add_argument("-m", "--multirun", action="store_true", help="sweep every combination of the "
                           "comma-separated values (Hydra multirun)")
        p.add_argument("args", nargs="*", metavar="ARG", help="key=value options (and positionals where named)")
        verbs[name] = p
    return top, verbs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top, verbs = parsers()
    if not argv or argv[0] in ("-h", "--help", "help"):
        top.print_help()
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in verbs:
        return fail(f"unknown command {verb!r}; allowed: {', '.join(VERBS)}")
    tail: list[str] = []
    if verb == "pr" and "--" in rest:  # what follows -- is the run's own overrides
        cut = rest.index("--")
        rest, tail = rest[:cut], rest[cut + 1:]
    try:
        with one_line_warnings():
            ns = verbs[verb].parse_intermixed_args(rest)
            return dispatch(verb, ns, tail)
    except (UsageError, ConfigError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        kept = "; the rows of finished cells are in the store" if verb == "run" else ""
        fail(f"{verb} interrupted (Ctrl-C){kept}")
        return 130
    except OSError as e:  # the machine, not the input: a file that cannot be written or read
        where = f" {e.filename}" if e.filename else ""
        return fail(f"{verb}: cannot write or read{where} ({e.strerror or e})")


@contextlib.contextmanager
def one_line_warnings():
    """kvbench's own warnings (a store line that is not a row, skipped) as `warning: ...`, one line each, once."""
    seen: set[str] = set()
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not (issubclass(category, UserWarning) and category.__module__.startswith("bench.")):
            return previous(message, category, filename, lineno, file, line)
        text = " ".join(str(message).split())
        if text not in seen:
            seen.add(text)
            print(f"warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def dispatch(verb: str, ns, tail: list[str]) -> int:
    if verb == "run":
        from bench.cli import run
        return run.main(ns.args, ns.multirun)
    if verb == "plan":
        from bench.cli import plan
        return plan.main(ns.args)
    if verb == "report":
        from bench.cli import report
        return report.report(ns.args)
    if verb == "compare":
        from bench.cli import report
        return report.compare(ns.args)
    if verb == "gpu-report":
        from bench.cli import report
        return report.gpu_report(ns.args)
    if verb == "pr":
        from bench.cli import report
        return report.pr(ns.args, tail)
    if verb == "publish":
        from bench.cli import report
        return report.publish(ns.args)
    from bench.run import environment  # env
    if ns.args:
        raise UsageError(f"env takes no arguments, got {ns.args[0]!r}")
    print(environment.report())
    return 0
