"""Writing the store: one JSON-lines file per run, written atomically, never rewritten by another run.

Layout: <store>/<run_id>.jsonl, one row per line (<run_id>-w<pid>.jsonl from a launcher worker process). A run
claims its file when it writes its first row; if another run already holds that name (two runs given the same
KVBENCH_RUN_ID), it takes <run_id>.2.jsonl, and so on. Each finished cell rewrites the run's own file through
a temp file + os.replace, so a reader never sees half a line and a crash loses at most the cell in flight.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

SUFFIX = ".jsonl"
_UMASK = os.umask(0)
os.umask(_UMASK)


class RunFile:
    """The one file a run owns. `append` keeps every earlier row and adds one, atomically."""

    def __init__(self, store: str | os.PathLike, run_id: str):
        self.dir = Path(store)
        # A sweep's run id is shared with launcher workers (joblib, submitit) through the environment;
        # each of those processes writes its own file, so no two writers ever share one.
        owner = os.environ.get("KVBENCH_RUN_OWNER", str(os.getpid())) == str(os.getpid())
        self.stem = run_id if owner else f"{run_id}-w{os.getpid()}"
        self.path: Path | None = None
        self._lines: list[str] = []

    def _claim(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        n = 1
        while True:
            path = self.dir / (f"{self.stem}{SUFFIX}" if n == 1 else f"{self.stem}.{n}{SUFFIX}")
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return path
            except FileExistsError:
                n += 1

    def append(self, row: dict) -> None:
        if self.path is None:
            self.path = self._claim()
        lines = self._lines + [json.dumps(_clean(row))]
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=SUFFIX)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # a run file reads like any other file, not mkstemp's 0600
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # nothing half-written stays behind; the row is not kept
            raise
        self._lines = lines


def _clean(value):
    # JSON has no NaN/inf: store them as null (lists such as step_ms too) so every reader agrees.
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def check_writable(store: str | os.PathLike, key: str = "store") -> None:
    """Raise OSError with a clear message (naming `key`) if files could not be written to the directory."""
    d = Path(store)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OSError(f"{key}={store} is not writable ({e.strerror or e}); give a writable directory") from None


