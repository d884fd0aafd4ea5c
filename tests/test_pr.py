"""bench pr on a throwaway git repository with a fake run command (KVBENCH_PR_RUN) that writes schema-2 rows whose
speed the measured commit sets (speed.txt): merge-base, ABBA order, worktrees, the A/A control, verdicts, a base
that cannot run, size limit; and bench.report.publish against a local bare repository standing in for GitHub."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.store.schema import Record
from bench.cli.main import main as bench_main
from bench.report import pr, publish


def pr_main(argv: list[str]) -> int:
    return bench_main(["pr", *argv])

CELLS = [(cache, attn) for cache in ("dynamic", "static", "none") for attn in ("sdpa", "eager")]

FAKE = r'''
import json, math, os, random, subprocess, sys, zlib
from pathlib import Path
rid = os.environ["KVBENCH_RUN_ID"]
with open(TRACE, "a") as f:
    f.write(json.dumps({"run_id": rid, "cwd": os.getcwd(), "pythonpath": os.environ.get("PYTHONPATH"),
                        "offline": os.environ.get("HF_HUB_OFFLINE"), "argv": sys.argv[1:]}) + "\n")
speed = Path("speed.txt").read_text().strip()
if speed == "fail":
    print("error: sweep=quick: no such sweep in this commit (conf/sweep/quick.yaml missing)", file=sys.stderr)
    sys.exit(2)
store = Path(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("store=")))
store.mkdir(parents=True, exist_ok=True)
sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
rnd = random.Random(zlib.crc32(rid.encode()))
drift = math.exp(rnd.gauss(0, 0.004))                 # the whole run a little faster or slower
rows = []
for i, row in enumerate(json.loads(Path(TEMPLATE).read_text())):
    med = (40.0 + 7 * i) * float(speed) * drift
    for m, scale in (("e2e", 1.0), ("ttft", 0.1), ("tpot", 0.03)):
        xs = [med * scale * math.exp(rnd.gauss(0, 0.01)) for _ in range(12)]
        row[m + "_samples_ms"] = xs
        row[m + "_ms"] = sorted(xs)[6]
    row.update(run_id=rid, git_sha=sha, timestamp="2026-01-01T00:00:%02d+00:00" % i)
    rows.append(json.dumps(row))
(store / (rid + ".jsonl")).write_text("\n".join(rows) + "\n")
print(f"{rid}: {len(rows)} rows")
'''


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, speed: str, msg: str) -> str:
    (repo / "speed.txt").write_text(speed + "\n")
    (repo / "notes.txt").write_text(msg + "\n")  # every commit changes something, whatever the speed
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A repo: main at the fork point, `feature` on top of it (speed from the test), main moved on afterwards
    (speed 'fail': measuring main's tip instead of the merge-base would fail the base)."""
    rows = [Record(model="tiny-llama", model_source="architecture config", weights="random", dtype="float32",
                   device="cpu", cache=c, strategy=c, attn=a, sdpa_backend="auto" if a == "sdpa" else "",
                   compile="auto", batch=1, prompt_len=64, new_tokens=32, warmup=1, repeats=12,
                   repeats_mode="fixed", status="ok", kv_cache_mib=2.0, peak_mem_mib=300.0).as_row()
            for c, a in CELLS]
    (tmp_path / "template.json").write_text(json.dumps(rows))
    trace = tmp_path / "trace.jsonl"
    fake = tmp_path / "fake_run.py"
    fake.write_text(f"TRACE = {str(trace)!r}\nTEMPLATE = {str(tmp_path / 'template.json')!r}\n" + FAKE)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    monkeypatch.chdir(repo)
    monkeypatch.setenv(pr.RUN_ENV, f"{sys.executable} {fake}")

    def make(base_speed="1.0", head_speed="1.0", moved="fail"):
        fork = commit(repo, base_speed, "fork point")
        git(repo, "checkout", "-q", "-b", "feature")
        head = commit(repo, head_speed, "the change")
        git(repo, "checkout", "-q", "main")
        commit(repo, moved, "main moved on")
        return fork, head
    return dict(repo=repo, make=make, out=tmp_path / "out", trace=trace)


def trace(env) -> list[dict]:
    return [json.loads(x) for x in env["trace"].read_text().splitlines()] if env["trace"].exists() else []


def worktrees(repo) -> list[str]:
    return [x for x in git(repo, "worktree", "list", "--porcelain").splitlines() if x.startswith("worktree ")]


def test_slowdown_flagged_against_merge_base_abba(env, capsys):
    fork, head = env["make"](head_speed="1.3")
    assert pr_main(["main", "feature", f"out={env['out']}"]) == 0
    out, runs = env["out"], trace(env)
    assert [r["run_id"] for r in runs] == ["base-r1", "head-r1", "head-r2", "base-r2"]       # ABBA
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("pr: [") for line in err), err          # one line a round
    assert [re.search(r"(base|head)-r\d", line).group(0) for line in err] == [r["run_id"] for r in runs]
    for r in runs:  # each side ran in its own worktree, importable from there, offline; all removed afterwards
        assert r["cwd"] == r["pythonpath"] and Path(r["cwd"]) != env["repo"] and r["offline"] == "1"
        assert r["argv"][:2] == ["sweep=quick", "model=tiny-llama"] and r["argv"][-1].startswith("store=")
        assert not Path(r["cwd"]).exists()
    assert len(worktrees(env["repo"])) == 1
    shas = {json.loads(line)["git_sha"] for p in (out / "stores" / "base").glob("*.jsonl")
            for line in p.read_text().splitlines()}
    assert shas == {fork}                                       # the merge-base, not main's tip
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["base-r1.log", "base-r2.log", "head-r1.log",
                                                                "head-r2.log"]
    noise = json.loads((out / "noise.json").read_text())
    assert noise["calibrated"] and noise["n_cells"] == 12
    md = (out / "pr.md").read_text()
    assert fork[:12] in md and head[:12] in md and "merge-base" in md
    assert "base r1 → head r1 → head r2 → base r2" in md
    n, m = map(int, re.search(r"flagged \*\*(\d+) of (\d+) cells\*\*", md).groups())
    assert m == 12 and n <= 1
    assert "6 slower" in md and "![head/base ratios](compare_ratios.png)" in md and (out / "compare_ratios.png").is_file()
    assert len(md) <= pr.MAX_CHARS and "\n### kvbench compare\n" in md and "\n#### Changes\n" in md


def test_identical_code_not_flagged(env):
    env["make"](head_speed="1.0")
    assert pr_main(["main", "feature", f"out={env['out']}", "--", "sweep=quick", "model=tiny-llama", "repeats=3"]) == 0
    md = (env["out"] / "pr.md").read_text()
    assert "6 within noise" in md and "None beyond noise." in md
    assert trace(env)[0]["argv"][:3] == ["sweep=quick", "model=tiny-llama", "repeats=3"]


def test_base_cannot_run_reports_head_alone(env, capsys):
    env["make"](base_speed="fail", head_speed="1.0")
    assert pr_main(["main", "feature", f"out={env['out']}"]) == 0
    out = env["out"]
    assert [r["run_id"] for r in trace(env)] == ["base-r1", "head-r1", "head-r2"]   # base not tried again
    md = (out / "pr.md").read_text()
    assert "base could not run the sweep" in md and "Head is reported alone" in md
    assert "conf/sweep/quick.yaml missing" in md                  # the tail of its log
    assert (out / "report.md").is_file() and not (out / "compare.md").exists()
    assert "head r1 vs r2" in md and "base r1 vs r2" not in md   # A/A from head alone
    assert len(worktrees(env["repo"])) == 1


def test_head_fails_exit_1(env):
    env["make"](head_speed="fail")
    assert pr_main(["main", "feature", f"out={env['out']}"]) == 1
    assert [r["run_id"] for r in trace(env)] == ["base-r1", "head-r1"]
    assert "head failed" in (env["out"] / "pr.md").read_text()
    assert len(worktrees(env["repo"])) == 1


def test_worktrees_removed_when_a_round_raises(env, monkeypatch):
    env["make"]()

    def boom(*a, **k):
        raise KeyboardInterrupt("cancelled")
    monkeypatch.setattr(pr, "run_round", boom)
    assert pr_main(["main", "feature", f"out={env['out']}"]) == 130  # Ctrl-C: one line, exit 130 (bench.cli.main)
    assert len(worktrees(env["repo"])) == 1


@pytest.mark.parametrize("argv, words", [
    (["nope", "feature"], "BASE_REF 'nope' is not a commit"),
    (["main"], "expected BASE_REF and HEAD_REF"),
    (["main", "feature", "rounds=1"], "rounds=1 must be"),
    (["main", "feature", "sweep=quick"], "sweep is not a setting of bench pr"),
    (["main", "feature", "--", "store=x"], "store= is set by pr"),
])
def test_bad_input_one_line_exit_2(env, capsys, argv, words):
    env["make"]()
    assert pr_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not trace(env)


def test_order_and_truncate():
    assert pr.order(4) == [("base", 1), ("head", 1), ("head", 2), ("base", 2),
                           ("base", 3), ("head", 3), ("head", 4), ("base", 4)]
    text = "## t\n<details>\n" + "".join(f"| row {i} | {'x' * 50} |\n" for i in range(3000))
    cut = pr.truncate(text)
    assert len(cut) <= pr.MAX_CHARS and "cut at 60,000 characters" in cut and cut.count("</details>") == 1
    assert "| row 0 |" in cut and all(line.endswith("|") for line in cut.split("\n</details>")[0].splitlines()[2:])
    assert pr.truncate("short\n") == "short\n"
    assert pr.demote("# a\n```\n# not\n```\n##### b") == "### a\n```\n# not\n```\n##### b"


@pytest.fixture
def remote(tmp_path):
    bare, work = tmp_path / "remote.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    commit(work, "1.0", "code")
    git(work, "remote", "add", "origin", str(bare))
    git(work, "push", "-q", "origin", "main")
    out = tmp_path / "report"
    out.mkdir()
    (out / "compare_ratios.png").write_bytes(b"\x89PNG fake ratios")
    (out / "latency_x.png").write_bytes(b"\x89PNG fake latency")
    (out / "pr.md").write_text("## r\n![head/base ratios](compare_ratios.png)\ntext ![lat](latency_x.png) "
                               "![ext](https://example.com/a.png)\n")
    return dict(bare=bare, work=work, out=out)


def test_publish_to_bare_remote(remote):
    bare, out = remote["bare"], remote["out"]
    urls = publish.publish(out, 7, "100-1", "octo/kv", cwd=remote["work"])
    tip = git(bare, "rev-parse", "refs/heads/kvbench-plots")
    blob = subprocess.run(["git", "-C", str(bare), "cat-file", "blob", f"{tip}:pr-7/100-1/compare_ratios.png"],
                          check=True, capture_output=True).stdout
    assert blob == (out / "compare_ratios.png").read_bytes()
    assert git(bare, "rev-list", "--count", tip) == "1"                       # orphan: no history of main
    assert "README.md" in git(bare, "ls-tree", "--name-only", tip).split()
    md = (out / "pr.md").read_text()
    assert f"![head/base ratios](https://github.com/octo/kv/blob/{tip}/pr-7/100-1/compare_ratios.png?raw=true)" in md
    assert urls["latency_x.png"] in md and "(https://example.com/a.png)" in md
    assert git(remote["work"], "rev-parse", "--abbrev-ref", "HEAD") == "main" and not git(remote["work"], "status",
                                                                                            "--porcelain")
    publish.publish(out, 7, "101-1", "octo/kv", cwd=remote["work"])          # a second run builds on the first
    tip2 = git(bare, "rev-parse", "refs/heads/kvbench-plots")
    assert git(bare, "rev-parse", f"{tip2}^") == tip
    assert {"100-1", "101-1"} == set(git(bare, "ls-tree", "--name-only", f"{tip2}:pr-7").split())


def test_publish_cli_fallback_and_artifact_mode(remote, tmp_path, monkeypatch, capsys):
    out = remote["out"]
    monkeypatch.chdir(remote["work"])
    git(remote["work"], "remote", "set-url", "origin", str(tmp_path / "missing.git"))
    assert bench_main(["publish", str(out), "pr=7", "run=1", "repo=octo/kv", "to=" + str(tmp_path / "c.md")]) == 0
    assert "::warning::" in capsys.readouterr().err
    c = (tmp_path / "c.md").read_text()
    assert "*figure head/base ratios: `compare_ratios.png` in the artifact of this run*" in c and "could not" in c
    assert bench_main(["publish", str(out), "mode=artifact", "artifact=kv-7", "to=" + str(tmp_path / "s.md")]) == 0
    assert "in the artifact `kv-7`" in (tmp_path / "s.md").read_text()
    assert bench_main(["publish", str(out), "pr=7"]) == 2 and "needs pr=N run=ID repo=" in capsys.readouterr().err
