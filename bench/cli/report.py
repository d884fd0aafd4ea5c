"""`bench report` and `bench compare`: arguments checked before anything is drawn (one line, exit 2)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.stats import verdicts
from bench.store import check_writable
from bench.report import fmt

REPORT_HELP = "report [store=results] [out=plots]"
COMPARE_HELP = "compare BASE HEAD [out=plots] [noise=noise.json] [calibrate=true] [pool=true]"


class UsageError(ValueError):
    pass


def _pairs(argv: list[str], allowed: dict, usage: str, positional: int = 0) -> tuple[dict, list]:
    spec = lambda a: "@" not in a and "/" not in a.partition("=")[0] and not Path(a).exists()  # noqa: E731
    opts, pos, unknown = fmt.options(argv, allowed, spec)
    if unknown:
        raise UsageError(f"{unknown[0]} is not an option; usage: {usage}")
    if len(pos) != positional:
        raise UsageError(f"expected {positional or 'no'} positional argument(s), got {len(pos)}"
                         f"{' (' + ', '.join(map(repr, pos)) + ')' if pos else ''}; usage: {usage}")
    return opts, pos


def _bool(key: str, v: str) -> bool:
    if v.lower() not in ("true", "false"):
        raise UsageError(f"{key}={v} must be true or false")
    return v.lower() == "true"


def writable_dir(key: str, path: str) -> Path:
    """The output directory, made if need be; UsageError naming the key when it cannot hold files."""
    if not path:
        raise UsageError(f"{key}= is empty; give a directory")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{key}={path} is a file, not a directory")
    try:
        check_writable(p, key)
    except OSError as e:
        raise UsageError(str(e)) from None
    return p


def _store(path: str) -> str:
    if not path:
        raise UsageError("store= is empty; give the results directory or a .jsonl file")
    if not Path(path).exists():
        raise UsageError(f"store={path} does not exist; give the results directory or a .jsonl file")
    return path


def _fail(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def report(argv: list[str]) -> int:
    from bench.report import markdown

    try:
        opts, _ = _pairs(argv, {"store": "results", "out": "plots"}, REPORT_HELP)
        store, out = _store(opts["store"]), writable_dir("out", opts["out"])
    except UsageError as e:
        return _fail(e)
    paths = markdown.write(store, out)
    print(f"report: {len(paths)} files in {out} (open {out / 'report.md'})")
    return 0


def noise_floor(path: str) -> verdicts.NoiseFloor:
    try:
        return verdicts.NoiseFloor.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UsageError(f"noise={path} is not a noise file written by compare calibrate=true ({e})") from None


def compare(argv: list[str]) -> int:
    from bench.report import compare as cmp
    from bench.report import compare_report

    try:
        opts, (base, head) = _pairs(argv, {"out": "plots", "noise": "", "calibrate": "false", "pool": "false"},
                                    COMPARE_HELP, positional=2)
        calibrate, pool = _bool("calibrate", opts["calibrate"]), _bool("pool", opts["pool"])
        if calibrate and opts["noise"]:
            raise UsageError("calibrate=true measures the noise floor; it takes no noise= file")
        floor = noise_floor(opts["noise"]) if opts["noise"] else verdicts.DEFAULT_FLOOR
        out = writable_dir("out", opts["out"])
        paths = compare_report.write(base, head, out, floor, pool, calibrate)
    except (UsageError, cmp.CompareError) as e:
        return _fail(e)
    print(f"compare: {len(paths)} files in {out} (open {out / 'compare.md'})")
    return 0
