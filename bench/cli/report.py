"""The verbs that read the store: report, compare, gpu-report, pr. Arguments are checked here, before anything is
drawn; the work is bench.report's (which never imports torch)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from bench.cli.args import (Option, UsageError, boolean, existing, nonempty, options, positive_int, writable_dir,
                            writable_file, written)


def _store_error(e: Exception) -> UsageError:
    return UsageError(str(e))


def report(argv: list[str]) -> int:
    from bench.report import markdown
    from bench.store import StoreError

    opts, pos = options(argv, {"store": Option("results", check=existing), "out": Option("plots")}, "report")
    if pos:
        raise UsageError(f"report takes only key=value options, not {pos[0]!r}; usage: report [store=results] [out=plots]")
    existing("store", opts["store"])
    out = writable_dir("out", opts["out"])
    try:
        has_rows(opts["store"])
        paths = markdown.write(opts["store"], out)
    except StoreError as e:
        raise _store_error(e) from None
    except OSError as e:  # a disk that fills while the figures are drawn
        raise written("out", opts["out"], e) from None
    print(f"report: {len(paths)} files in {out} (open {out / 'report.md'})")
    return 0


def has_rows(store: str) -> None:
    """UsageError when a store holds no row at all (its skipped lines are reported as warnings on the way)."""
    from bench.store import load

    if load(store).empty:
        raise UsageError(f"store={store} has no rows")


def _noise_floor(path: str):
    from bench.stats import verdicts

    try:
        return verdicts.NoiseFloor.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UsageError(f"noise={path} is not a noise file written by compare calibrate=true ({e})") from None


def compare(argv: list[str]) -> int:
    from bench.report import compare as cmp
    from bench.report import compare_report
    from bench.stats import verdicts
    from bench.store import StoreError

    usage = "compare BASE HEAD [out=plots] [noise=noise.json] [calibrate=true] [pool=true]"
    opts, pos = options(argv, {"out": Option("plots"), "noise": Option(""), "calibrate": Option("false", check=boolean),
                               "pool": Option("false", check=boolean)}, "compare")
    if len(pos) != 2:
        raise UsageError(f"expected 2 positional arguments (BASE HEAD), got {len(pos)}"
                         f"{' (' + ', '.join(map(repr, pos)) + ')' if pos else ''}; usage: {usage}")
    calibrate, pool = opts["calibrate"] is True, opts["pool"] is True
    if calibrate and opts["noise"]:
        raise UsageError("calibrate=true measures the noise floor; it takes no noise= file")
    floor = _noise_floor(opts["noise"]) if opts["noise"] else verdicts.DEFAULT_FLOOR
    out = writable_dir("out", opts["out"])
    try:
        paths = compare_report.write(pos[0], pos[1], out, floor, pool, calibrate)
    except (cmp.CompareError, StoreError) as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise written("out", opts["out"], e) from None
    print(f"compare: {len(paths)} files in {out} (open {out / 'compare.md'})")
    return 0


def gpu_report(argv: list[str]) -> int:
    from bench.report import gpu_report as gr
    from bench.store import StoreError

    opts, pos = options(argv, {"gpu": Option(""), "store": Option("results", check=existing), "out": Option(""),
                               "plots": Option("plots", check=nonempty)}, "gpu-report")
    if pos:
        raise UsageError(f"gpu-report takes only key=value options, not {pos[0]!r}")
    if not opts["gpu"]:
        raise UsageError("gpu-report needs gpu= (the gpu column's exact text, e.g. gpu=\"NVIDIA H200\")")
    existing("store", opts["store"])
    if opts["out"]:
        writable_file("out", opts["out"])
    try:
        path = gr.write(opts["store"], opts["gpu"], opts["out"], opts["plots"])
    except (gr.UsageError, StoreError) as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise written("out", opts["out"] or "(beside the store)", e) from None
    print(f"gpu report: {path}")
    return 0


def pr(argv: list[str], run_overrides: list[str]) -> int:
    from bench.report import pr as prmod

    try:
        opts, refs = options(argv, {"out": Option("pr-report", check=nonempty),
                                    "rounds": Option("2", check=lambda k, v: positive_int(k, v, 2))}, "pr")
    except UsageError as e:
        raise UsageError(f"{e}; the run's own overrides go after --") from None
    if len(refs) != 2:
        raise UsageError(f"expected BASE_REF and HEAD_REF, got {len(refs)} ref(s); usage: {prmod.USAGE}")
    overrides = run_overrides or list(prmod.DEFAULT_OVERRIDES)
    if any(o.split("=", 1)[0].lstrip("+~") == "store" for o in overrides):
        raise UsageError("store= is set by pr (OUT/stores/base and OUT/stores/head); leave it out of the run overrides")
    check_run_overrides(overrides)
    return prmod.run(refs, opts["out"], int(opts["rounds"]), overrides, [*argv, *(["--", *run_overrides] if run_overrides else [])])


def check_run_overrides(overrides: list[str]) -> None:
    """The run overrides of pr, checked by this checkout's bench run before any worktree is made: a typo is one line
    now, not a failed round minutes later."""
    from bench.cli import compose

    flags = [o for o in overrides if o.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        bad = next(f for f in flags if f not in ("-m", "--multirun"))
        raise UsageError(f"{bad} is not an option of bench run (after --: key=value overrides and -m)")
    try:
        compose.cells([o for o in overrides if o not in flags], multirun=bool(flags))
    except UsageError:
        raise
    except ValueError as e:  # ConfigError: the run's own message
        raise UsageError(f"{e} (in the run overrides after --)") from None


def publish(argv: list[str]) -> int:
    from bench.report import publish as pub

    opts, pos = options(argv, {k: Option(v) for k, v in pub.OPTIONS.items()}, "publish")
    if len(pos) != 1:
        raise UsageError(f"publish takes one OUT directory (holding {opts['md']}), got {len(pos)}")
    if not opts["md"].strip() or Path(opts["md"]).name != opts["md"]:
        raise UsageError(f"md={opts['md']} must name the comment's file inside OUT (e.g. md=pr.md)")
    for key in ("pr", "run", "repo"):
        form = pub.NAME if key == "repo" else r"[\w.-]+"
        if opts[key] and not re.fullmatch(form, opts[key]) or (key == "run" and opts[key] in (".", "..")):
            what = "OWNER/REPO" if key == "repo" else "a plain name (letters, digits, . _ -)"
            raise UsageError(f"{key}={opts[key]} must be {what}")
    if opts["to"]:
        writable_file("to", opts["to"])
    try:
        pub.check(opts, pos[0])
    except pub.PublishError as e:
        raise UsageError(str(e)) from None
    try:
        return pub.run(opts, pos[0])
    except OSError as e:
        raise written("to" if opts["to"] else "md", opts["to"] or opts["md"], e) from None
