"""Writing the store: one JSON-lines file per run, written atomically, never rewritten by another run.

Layout: <store>/<run_id>.jsonl, one row per cell (<run_id>-w<pid>.jsonl from a launcher worker process). Every
write puts the run's whole file through a temp file in the store: the first one links it into place (never a
half-written or empty file, and never over another run's: two runs given one KVBENCH_RUN_ID get <run_id>.2.jsonl),
later ones replace it. A reader never sees half a line, a crash loses at most the cell in flight, and a full disk
loses nothing already written (StoreFull says so). A run id is a name, never a path (check_run_id).
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
from pathlib import Path

from bench.store.schema import problems

SUFFIX = ".jsonl"
_UMASK = os.umask(0)
os.umask(_UMASK)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StoreWriteError(OSError):
    """The store cannot take this row (read-only, gone, no permission): the rows written before are intact."""

    def __init__(self, errno_: int | None, message: str):
        super().__init__(message)  # str(e) is the message alone, without "[Errno N]"
        self.errno = errno_


class StoreFull(StoreWriteError):
    """The store cannot take more bytes (a full disk or quota): the rows written before are intact."""


class BadRow(ValueError):
    """A row that does not fit the schema: it is never written."""


def check_run_id(run_id: str, key: str = "KVBENCH_RUN_ID") -> str:
    """A run id names a file in the store: letters, digits, '.', '_' and '-', 1-128, not starting with a dot."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ValueError(f"{key}={run_id!r} is not a run id; use 1-128 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit (it names a file in the store, never a path)")
    return run_id


class RunFile:
    """The one file a run owns. `put` adds a cell's row, or replaces the row this run already wrote for it."""

    def __init__(self, store: str | os.PathLike, run_id: str):
        self.dir = Path(store)
        check_run_id(run_id)
        # A sweep's run id is shared with launcher workers (joblib, submitit) through the environment;
        # each of those processes writes its own file, so no two writers ever share one.
        owner = os.environ.get("KVBENCH_RUN_OWNER", str(os.getpid())) == str(os.getpid())
        self.stem = run_id if owner else f"{run_id}-w{os.getpid()}"
        self.path: Path | None = None
        self._rows: list[dict] = []

    def put(self, row: dict) -> Path:
        """Write `row`, replacing this run's earlier row of the same cell_id (a cell's row is written again after
        each of its rounds); BadRow if it breaks the schema."""
        return self._add(row, replace=True)

    def append(self, row: dict) -> Path:
        """Write `row` after every row this run wrote, whatever cell it is."""
        return self._add(row, replace=False)

    def _add(self, row: dict, replace: bool) -> Path:
        row = _clean(row)  # NaN and inf are null in JSON: checked as the reader will see them
        why = problems(row)
        if why:
            raise BadRow(f"row of {row.get('model')} cache={row.get('cache')} breaks the schema: {'; '.join(why)}")
        keep = [r for r in self._rows if not replace or r.get("cell_id") != row.get("cell_id")]
        self._write(keep + [row])
        self._rows = keep + [row]
        return self.path

    def _write(self, rows: list[dict]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=SUFFIX)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # a run file reads like any other file, not mkstemp's 0600
            with os.fdopen(fd, "w") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())
            if self.path is None:
                self.path = self._claim(tmp)
            else:
                os.replace(tmp, self.path)
        except OSError as e:
            kept = f"; the rows written before are intact in {self.path}" if self.path else "; no row was written"
            lost = f"the row of {rows[-1].get('model')} cache={rows[-1].get('cache')} could not be written"
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(e.errno, f"store={self.dir} is full ({e.strerror}): {lost}{kept}") from None
            raise StoreWriteError(e.errno, f"store={self.dir} cannot be written ({e.strerror or e}): {lost}{kept}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _claim(self, tmp: str) -> Path:
        n = 1
        while True:
            path = self.dir / (f"{self.stem}{SUFFIX}" if n == 1 else f"{self.stem}.{n}{SUFFIX}")
            try:
                os.link(tmp, path)  # atomic, and refuses a name another run holds
                return path
            except FileExistsError:
                n += 1
            except OSError as e:  # a filesystem without hard links: claim the name empty, then fill it
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                    raise
                try:
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    n += 1
                    continue
                try:
                    os.replace(tmp, path)
                except OSError:
                    path.unlink(missing_ok=True)  # never leave the empty claim behind
                    raise
                return path


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
        if d.exists() and not d.is_dir():
            raise OSError(f"{key}={store} is a file, not a directory")
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        if e.errno is None:  # ours: already says why
            raise
        raise OSError(f"{key}={store} is not writable ({e.strerror or e}); give a writable directory") from None

