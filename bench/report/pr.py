"""`bench pr BASE_REF HEAD_REF`: measure a pull request's head against its merge-base, interleaved, and compare.

Both commits are checked out into temporary git worktrees and measured in one place, alternating sides in the
order base head head base (again for rounds 3-4, ...) so that drift of the machine falls on both sides alike.
Each round is `python -m bench run OVERRIDES store=OUT/stores/SIDE` run inside that side's worktree with
PYTHONPATH set to it: the commit's own `bench` package and conf/, this environment's Python. The two rounds of a
side are the same code measured twice (an A/A pair): pooled, they calibrate the noise floor (OUT/noise.json),
and each pair is compared against that floor to show how often identical code gets flagged. The verdict pools
every round's samples (compare_report.write(pool=True)). OUT/pr.md is the pull-request comment.

KVBENCH_PR_RUN (a command line, shell-split) replaces `python -m bench run` as the round's command (tests).
Exit codes: 0 done (also when the base cannot run the sweep: head is reported alone), 1 head failed, 2 bad input.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


USAGE = ("pr BASE_REF HEAD_REF [out=pr-report] [rounds=2] [-- RUN_OVERRIDES...]  "
         "(run overrides default: sweep=quick model=tiny-llama)")
DEFAULT_OVERRIDES = ("sweep=quick", "model=tiny-llama")
RUN_ENV = "KVBENCH_PR_RUN"
MAX_CHARS = 60_000     # GitHub refuses comments over 65,536 characters; room left for publish's absolute URLs
WRITTEN = ("pr.md", "compare.md", "report.md", "noise.json")


class PrError(ValueError):
    """Bad input: one line, exit code 2."""


def git(repo, *args: str) -> str:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if p.returncode:
        raise PrError(f"git {' '.join(args)}: {(p.stderr.strip().splitlines() or ['failed'])[-1]}")
    return p.stdout.strip()


def order(rounds: int) -> list[tuple[str, int]]:
    """(side, round of that side) in run order: base head, head base, base head, ..."""
    return [(s, r) for r in range(1, rounds + 1) for s in (("base", "head") if r % 2 else ("head", "base"))]


def prepare_out(out: Path) -> None:
    """Empty what an earlier pr left in `out`; refuse a directory holding anything else."""
    if out.exists() and not out.is_dir():
        raise PrError(f"out={out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not ((out / "stores").is_dir() or (out / "pr.md").is_file()):
        raise PrError(f"out={out} is not empty and holds no earlier pr output; give a new directory")
    for sub in ("stores", "logs", "setups"):  # setups/: report.md's pages when head is reported alone
        shutil.rmtree(out / sub, ignore_errors=True)
    for p in [*out.glob("*.png"), *(out / n for n in WRITTEN)] if out.is_dir() else []:
        p.unlink(missing_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)


@dataclass
class Round:
    side: str
    n: int
    rc: int
    ok_rows: int
    seconds: float
    log: Path
    ok = property(lambda self: self.rc == 0 and self.ok_rows > 0)       # a round that failed or measured nothing
    run_id = property(lambda self: f"{self.side}-r{self.n}")


def _row(line: str) -> dict:
    try:
        row = json.loads(line)
    except ValueError:
        return {}
    return row if isinstance(row, dict) else {}


def count_ok(store: Path, run_id: str) -> int:
    """ok rows of one round, read as plain JSON lines: any commit's rows have run_id and status."""
    rows = [_row(x) for f in (sorted(store.glob("*.jsonl")) if store.is_dir() else []) for x in f.read_text().splitlines()]
    return sum(r.get("run_id") == run_id and r.get("status") == "ok" for r in rows)


def run_round(prefix: list[str], overrides: list[str], tree: Path, store: Path, log: Path, side: str, n: int) -> Round:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "KVBENCH_RUN_ID": f"{side}-r{n}"}
    env.pop("KVBENCH_RUN_OWNER", None)  # this round's process owns its run file
    cmd = [*prefix, *overrides, f"store={store}"]
    t0 = time.monotonic()
    with open(log, "w") as f:
        f.write(f"# {shlex.join(cmd)}\n# cwd={tree} KVBENCH_RUN_ID={side}-r{n}\n")
        f.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            f.write(f"could not start: {e}\n")
            return Round(side, n, 127, 0, time.monotonic() - t0, log)
        try:
            rc = proc.wait()
        except BaseException:  # interrupted or cancelled: stop the round's own process group, then clean up
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    return Round(side, n, rc, count_ok(store, f"{side}-r{n}"), time.monotonic() - t0, log)


def tail(log: Path, lines: int = 25) -> str:
    text = log.read_text(errors="replace").replace("```", "'''") if log.is_file() else "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def demote(md: str, by: int = 2) -> str:
    """Headings `by` levels down (an embedded report under pr.md's own title), code fences left alone."""
    out, fence = [], False
    for line in md.splitlines():
        fence ^= line.startswith("```")
        out.append(("#" * by + line if len(line) - len(line.lstrip("#")) + by <= 6 else line)
                   if not fence and re.match(r"#+ ", line) else line)
    return "\n".join(out)


def truncate(text: str, limit: int = MAX_CHARS, where: str = "the artifact") -> str:
    """At most `limit` characters, cut at a line end; open <details> and code fences closed; says so."""
    if len(text) <= limit:
        return text
    note = f"\n\n**… cut at {limit:,} characters (a PR comment holds 65,536): the full report is in {where}.**\n"
    cut = text[:limit - len(note) - 40].rsplit("\n", 1)[0]
    cut += "\n```" * (cut.count("\n```") % 2) + "\n</details>" * max(0, cut.count("<details>") - cut.count("</details>"))
    return cut + note


def aa_control(out: Path, done: list[Round]):
    """(floor, lines): the floor from both sides' A/A pairs pooled, and how many cells each pair flags against it."""
    from bench.stats import verdicts
    from bench.report import compare as cmp

    pairs, per = [], []
    for side in ("base", "head"):
        ok = [r for r in done if r.side == side and r.ok]
        if len(ok) < 2:
            continue
        df = cmp.side(_spec(out / "stores" / side), side)
        for a, b in zip(ok[0::2], ok[1::2]):
            da, db = (df[df["run_id"] == r.run_id].reset_index(drop=True) for r in (a, b))
            pairs += cmp.aa_pairs(da, db)
            per.append((f"{side} r{a.n} vs r{b.n}", da, db))
    try:
        floor = cmp.calibrate(pairs, "A/A pairs of bench pr: " + ", ".join(p[0] for p in per))
    except cmp.CompareError as e:
        floor = verdicts.DEFAULT_FLOOR
        return floor, [f"**A/A control**: not available ({e}); verdicts use the default floor ±{floor.floor:.1%}, "
                       "uncalibrated."]
    (out / "noise.json").write_text(json.dumps(floor.to_dict(), indent=1, sort_keys=True) + "\n")
    counts = []
    for name, da, db in per:
        cells = cmp.compare(da, db, floor).cells
        counts.append((name, sum(c.time.label in (verdicts.SLOWER, verdicts.FASTER) for c in cells), len(cells)))
    n, m = sum(c[1] for c in counts), sum(c[2] for c in counts)
    kind = "calibrated" if floor.calibrated else "not calibrated (no usable pair): the default"
    return floor, [f"**A/A control**: the same code measured twice flagged **{n} of {m} cells** against its own floor "
                   f"±{floor.floor:.1%} ({'; '.join(f'{a}: {b} of {c}' for a, b, c in counts)}); floor {kind}, "
                   f"from {floor.n_cells} cells, in `noise.json`."]


def report(out: Path, info: dict, done: list[Round], overrides: list[str], argv: list[str]) -> int:
    from bench.report import compare_report, markdown

    seq = " → ".join(r.run_id.replace("-", " ") for r in done)
    ran = {r.run_id for r in done}
    skipped = [f"{s} r{n}" for s, n in order(info["rounds"]) if f"{s}-r{n}" not in ran]
    seq += f"; not run after a failure: {', '.join(skipped)}" if skipped else ""
    cmd = shlex.join([*shlex.split(os.environ.get(RUN_ENV, "python -m bench run")), *overrides, "store=stores/SIDE"])
    lines = [f"## kvbench pr: `{info['head_ref']}` vs its merge-base with `{info['base_ref']}`", "",
             "| side | ref | commit |", "|---|---|---|",
             f"| base | merge-base of `{info['base_ref']}` (tip `{info['base_tip'][:12]}`) and `{info['head_ref']}` "
             f"| `{info['base'][:12]}` |", f"| head | `{info['head_ref']}` | `{info['head'][:12]}` |", "",
             f"**Command**: `python -m bench pr {shlex.join(argv)}`; each round runs `{cmd}` inside that commit's own "
             "worktree (its own `bench` and `conf/`, this environment's Python).", "",
             f"**Rounds**: {info['rounds']} a side, interleaved in one place: {seq} (logs in `logs/`).", ""]
    failed = {s: next((r for r in done if r.side == s and not r.ok), None) for s in ("base", "head")}
    usable = {s: any(r.ok for r in done if r.side == s) for s in ("base", "head")}
    for s, r in failed.items():
        if r is not None:
            why = f"exit {r.rc}" if r.rc else "no ok rows"
            head = "**head failed**" if s == "head" else "**base could not run the sweep**"
            what = "" if s == "head" else (" Head is reported alone below; nothing is compared." if not usable["base"]
                                           else " The compare below uses base's earlier rounds.")
            lines += [f"> [!WARNING]\n> {head}: round {r.run_id} at `{info[s][:12]}` ended with {why}.{what} "
                      f"The end of `logs/{r.log.name}`:", "", "```text", tail(r.log), "```", ""]
    body, rc = "", 0 if failed["head"] is None else 1
    if usable["head"]:
        floor, aa = aa_control(out, done)
        lines += aa + [""]
        if usable["base"]:
            compare_report.write(_spec(out / "stores" / "base"), _spec(out / "stores" / "head"), out, floor, pool=True)
            body = (out / "compare.md").read_text()
        else:
            markdown.write(_spec(out / "stores" / "head"), out)
            body = (out / "report.md").read_text()
    text = "\n".join(lines) + ("\n---\n\n" + demote(body) if body else "") + "\n"
    (out / "pr.md").write_text(truncate(text))
    return rc


@contextlib.contextmanager
def _instead(message: str):
    try:
        yield
    except PrError:
        raise PrError(message) from None


def _sigterm(*_):
    raise KeyboardInterrupt("SIGTERM")  # a cancelled CI job: stop the round and remove the worktrees


def _spec(p: Path) -> str:
    rel = os.path.relpath(p)
    return p.as_posix() if rel.startswith("..") else rel


def run(refs: list[str], out_arg: str, rounds: int, overrides: list[str], argv: list[str]) -> int:
    """Measure both refs (arguments checked by bench.cli.report.pr) and write the comment; the exit code."""
    trees, tmp, done = {}, None, []
    try:
        repo = Path(git(".", "rev-parse", "--show-toplevel"))
        sha = []
        for which, ref in zip(("BASE_REF", "HEAD_REF"), refs):
            with _instead(f"{which} {ref!r} is not a commit in {repo}"):
                sha.append(git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"))
        with _instead(f"{refs[0]} and {refs[1]} have no merge-base (unrelated histories)"):
            base = git(repo, "merge-base", sha[0], sha[1])
        info = dict(base_ref=refs[0], head_ref=refs[1], base_tip=sha[0], head=sha[1], base=base, rounds=rounds)
        out = Path(out_arg).resolve()
        prepare_out(out)
        prefix = shlex.split(os.environ[RUN_ENV]) if os.environ.get(RUN_ENV) else [sys.executable, "-m", "bench", "run"]
        term = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, _sigterm)
        except ValueError:  # not the main thread: no handler; worktrees are still removed on exceptions
            term = None
        tmp = Path(tempfile.mkdtemp(prefix="kvbench-pr-"))
        for s in ("base", "head"):
            git(repo, "worktree", "add", "--detach", "--quiet", str(tmp / s), info[s])
            trees[s] = tmp / s
        steps = order(rounds)
        for i, (side, n) in enumerate(steps, 1):
            if any(r.side == side and not r.ok for r in done):
                continue  # a side that failed once is not run again
            r = run_round(prefix, overrides, trees[side], out / "stores" / side, out / "logs" / f"{side}-r{n}.log", side, n)
            done.append(r)
            state = "ok" if r.ok else f"FAILED ({f'exit {r.rc}' if r.rc else 'no ok rows'})"
            print(f"pr: [{i}/{len(steps)}] {r.run_id} at {info[side][:12]}: {state}, {r.ok_rows} ok rows, "
                  f"{r.seconds:.1f} s (logs/{r.log.name})", file=sys.stderr, flush=True)
            if side == "head" and not r.ok:
                break  # nothing to compare against a head that does not run
        return report(out, info, done, overrides, list(argv))
    except (PrError, OSError) as e:
        print(f"error: {(str(e).splitlines() or [repr(e)])[0]}", file=sys.stderr)
        return 2
    finally:
        for path in trees.values():
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
            if term is not None:
                signal.signal(signal.SIGTERM, term)
