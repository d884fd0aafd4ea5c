"""Publish a `bench pr` report's figures so that its PR comment shows them inline, with nothing outside GitHub.

mode=push (same-repository pull requests): the PNGs of OUT are committed to a dedicated branch of the same
repository (kvbench-plots, created as an orphan when missing) under pr-<N>/<run>/, pushed to the checkout's remote
with the checkout's own credentials (actions/checkout keeps the job token; the job needs `contents: write`), and the
image links of OUT/pr.md are rewritten to absolute URLs. The commit is built with git plumbing (hash-object,
a temporary index, commit-tree) on top of the branch's fetched tip, so the checkout's working tree, index and
branches are never touched; a push that lost a race with another job is rebuilt on the new tip and retried.

URL form: https://github.com/OWNER/REPO/blob/<commit>/pr-N/RUN/file.png?raw=true. GitHub's "Basic writing and
formatting syntax" gives `…/blob/main/…?raw=true` as the image link for issues, pull requests and comments, and
notes that it works for a private repository when the viewer has read access: the page loads it with the
viewer's own session and github.com redirects to a short-lived signed raw URL. A bare raw.githubusercontent.com
link is proxied through Camo, which fetches anonymously, and a private repository answers it with 404 (it needs
a `?token=` that expires), so it would show a broken image in private repositories. The commit (not the branch
name) pins each figure: a later run never changes what an old comment shows.

mode=artifact (forks, whose token cannot push): links become a note naming the figure in the run's artifact.

python -m bench.report.publish OUT pr=N run=ID repo=OWNER/REPO [branch=kvbench-plots] [remote=origin]
                               [server=https://github.com] [md=pr.md] [to=FILE]
python -m bench.report.publish OUT mode=artifact [artifact=NAME] [md=pr.md] [to=FILE]
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from bench.report.pr import truncate

BRANCH = "kvbench-plots"
NAME = r"[\w.-]+/[\w.-]+"
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
BOT = ("github-actions[bot]", "41898282+github-actions[bot]@users.noreply.github.com")
README = ("# kvbench plots\n\nFigures of `bench pr` reports, one folder per pull request and workflow run "
          "(pr-N/RUN/), written by .github/workflows/kvbench-compare.yml so that PR comments show them inline. "
          "Nothing else lives on this branch; it can be deleted at any time (old comments then lose their figures).\n")


class PublishError(RuntimeError):
    pass


def local(target: str) -> bool:
    return not re.match(r"^([a-z][a-z0-9+.-]*:|/|#)", target, re.I)


def rewrite(text: str, url: Callable[[str, str], str | None]) -> str:
    """Every image with a relative target replaced by url(alt, target): a URL, or a whole replacement line."""
    def one(m):
        alt, target = m.group(1), m.group(2)
        if not local(target):
            return m.group(0)
        new = url(alt, target)
        return m.group(0) if new is None else new
    return IMAGE.sub(one, text)


def artifact_text(text: str, artifact: str = "") -> str:
    where = f"the artifact `{artifact}`" if artifact else "the artifact"
    return rewrite(text, lambda alt, t: f"*figure {alt or t}: `{t}` in {where} of this run*")


def _git(cwd, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if check and p.returncode:
        raise PublishError(f"git {args[0]}: {(p.stderr.strip().splitlines() or ['failed'])[-1]}")
    return p


def push_files(files: dict[str, Path], message: str, cwd=".", remote: str = "origin", branch: str = BRANCH,
               tries: int = 3) -> str:
    """Commit {path in branch: file} on top of remote's `branch` (an orphan with a README when missing) and push;
    returns the commit's sha. Retries when another job pushed in between."""
    ident = {"GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", BOT[0]),
             "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", BOT[1]),
             "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", BOT[0]),
             "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", BOT[1])}
    blobs = {path: _git(cwd, "hash-object", "-w", "--", str(f)).stdout.strip() for path, f in files.items()}
    err = ""
    for _ in range(tries):
        heads = _git(cwd, "ls-remote", "--heads", remote, f"refs/heads/{branch}").stdout.split()
        parent = None
        if heads:
            _git(cwd, "fetch", "--quiet", "--no-tags", "--depth=1", remote, f"refs/heads/{branch}")
            parent = _git(cwd, "rev-parse", "FETCH_HEAD").stdout.strip()
        with tempfile.TemporaryDirectory(prefix="kvbench-publish-") as tmp:
            idx = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            _git(cwd, "read-tree", *([parent] if parent else ["--empty"]), env=idx)
            entries = dict(blobs)
            if not parent:
                readme = Path(tmp) / "README.md"
                readme.write_text(README)
                entries.setdefault("README.md", _git(cwd, "hash-object", "-w", "--", str(readme)).stdout.strip())
            for path, blob in entries.items():
                _git(cwd, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=idx)
            tree = _git(cwd, "write-tree", env=idx).stdout.strip()
        commit = _git(cwd, "commit-tree", tree, *(["-p", parent] if parent else []), "-m", message,
                      env=ident).stdout.strip()
        p = _git(cwd, "push", "--quiet", remote, f"{commit}:refs/heads/{branch}", check=False)
        if p.returncode == 0:
            return commit
        err = (p.stderr.strip().splitlines() or ["failed"])[-1]
        if not re.search(r"fetch first|non-fast-forward|rejected|stale info|cannot lock ref", p.stderr):
            break
    raise PublishError(f"git push to {remote} {branch}: {err}")


def publish(out, pr: int | str, run: str, repo: str, *, cwd=".", remote: str = "origin", branch: str = BRANCH,
            server: str = "https://github.com", md: str = "pr.md", to=None) -> dict[str, str]:
    """Push OUT's PNGs to `branch` under pr-<pr>/<run>/ and rewrite the image links of OUT/md (or write `to`);
    returns {file name: URL}. PublishError when there is nothing to publish or git fails (links untouched)."""
    out = Path(out)
    text = (out / md).read_text()
    pngs = sorted(out.glob("*.png"))
    folder = f"pr-{pr}/{run}"
    if not (re.fullmatch(NAME, repo or "") and re.fullmatch(NAME, folder)):
        raise PublishError(f"repo={repo!r} must be OWNER/REPO, pr={pr!r} and run={run!r} plain names")
    urls = {}
    if pngs:
        commit = push_files({f"{folder}/{p.name}": p for p in pngs}, f"kvbench plots: PR #{pr}, run {run}", cwd,
                            remote, branch)
        urls = {p.name: f"{server.rstrip('/')}/{repo}/blob/{commit}/{folder}/{p.name}?raw=true" for p in pngs}
    new = rewrite(text, lambda alt, t: f"![{alt}]({urls[t]})" if t in urls else None)
    Path(to or out / md).write_text(truncate(new))
    return urls


OPTIONS = {"mode": "push", "pr": "", "run": "", "repo": "", "branch": BRANCH, "remote": "origin",
           "server": "https://github.com", "md": "pr.md", "to": "", "artifact": ""}


def check(opts: dict, out: str) -> None:
    """PublishError (one line) for options that cannot publish (bench.cli.report.publish parsed them)."""
    if not (Path(out) / opts["md"]).is_file():
        raise PublishError(f"give OUT, the directory holding {opts['md']} (got {out})")
    if opts["mode"] not in ("push", "artifact"):
        raise PublishError(f"mode={opts['mode']} must be push or artifact")
    if opts["mode"] == "push" and not (opts["pr"] and opts["run"] and opts["repo"]):
        raise PublishError("mode=push needs pr=N run=ID repo=OWNER/REPO")
    if opts["mode"] == "push" and not (re.fullmatch(NAME, f"pr-{opts['pr']}/{opts['run']}")
                                       and re.fullmatch(NAME, opts["repo"])):
        raise PublishError("pr=, run= and repo=OWNER/REPO must be plain names (letters, digits, . _ -)")


def run(opts: dict, out: str) -> int:
    """Publish OUT's comment: its figures pushed (mode=push) or pointed to in the artifact."""
    md, to = Path(out) / opts["md"], Path(opts["to"] or Path(out) / opts["md"])
    if opts["mode"] == "push":
        try:
            urls = publish(out, opts["pr"], opts["run"], opts["repo"], remote=opts["remote"], branch=opts["branch"],
                           server=opts["server"], md=opts["md"], to=to)
            print(f"publish: {len(urls)} figure(s) on {opts['branch']} under pr-{opts['pr']}/{opts['run']}/")
            return 0
        except (PublishError, OSError) as e:  # the numbers still go out; the figures stay in the artifact
            print(f"::warning::kvbench figures not published ({e}); the comment points to the artifact", file=sys.stderr)
            note = f"\n\n*Figures could not be published to branch `{opts['branch']}` ({e}); they are in the artifact.*\n"
            to.write_text(truncate(artifact_text(md.read_text(), opts["artifact"]).rstrip("\n") + note))
            return 0
    to.write_text(truncate(artifact_text(md.read_text(), opts["artifact"])))
    return 0

