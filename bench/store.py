"""The results store: one JSON-lines file per run, written atomically, never rewritten.

Layout: <store>/<run_id>.jsonl, one Record per line (<run_id>-w<pid>.jsonl from a launcher worker process). A run appends each finished cell by
rewriting its own file through a temp file + os.replace, so a reader never sees half a line
and a crash loses at most the cell in flight. Other runs' files are never touched.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import pandas as pd

from .record import COLUMNS, SCHEMA_VERSION

SUFFIX = ".jsonl"


class RunFile:
    """The one file a run owns. `append` keeps every earlier row and adds one, atomically."""

    def __init__(self, store: str | os.PathLike, run_id: str):
        self.dir = Path(store)
        # A sweep's run id is shared with launcher workers (joblib, submitit) through the environment;
        # each of those processes writes its own file, so no two writers ever share one.
        owner = os.environ.get("KVBENCH_RUN_OWNER", str(os.getpid())) == str(os.getpid())
        self.path = self.dir / (f"{run_id}{SUFFIX}" if owner else f"{run_id}-w{os.getpid()}{SUFFIX}")
        self._lines: list[str] = []
        if self.path.exists():  # resuming a run id keeps what it already wrote
            self._lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]

    def append(self, row: dict) -> None:
        lines = self._lines + [json.dumps(_clean(row))]
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=SUFFIX)
        try:
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


def check_writable(store: str | os.PathLike) -> None:
    """Raise OSError with a clear message if rows could not be written to `store`."""
    d = Path(store)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OSError(f"store={store} is not writable ({e.strerror or e}); pass store=PATH to a writable directory") from None


def files(store: str | os.PathLike) -> list[Path]:
    d = Path(store)
    return sorted(p for p in d.glob(f"*{SUFFIX}") if not p.name.startswith(".")) if d.is_dir() else []


def read_rows(paths: Iterable[Path]) -> list[dict]:
    """Rows from store files; a truncated line or a foreign file is reported and skipped."""
    rows = []
    for p in paths:
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("schema_version"), int):
                    raise ValueError("not a kvbench record")
            except ValueError as e:
                warnings.warn(f"skipping {p.name}:{n}: {e}", stacklevel=2)
                continue
            if row["schema_version"] > SCHEMA_VERSION:
                warnings.warn(f"skipping {p.name}:{n}: schema {row['schema_version']} is newer than {SCHEMA_VERSION}")
                continue
            rows.append(row)
    return rows


def load(path: str | os.PathLike = "results") -> pd.DataFrame:
    """Every row of every run in the store (a directory, or one .jsonl file), schema columns first."""
    p = Path(path)
    rows = read_rows([p] if p.is_file() else files(p))
    df = pd.DataFrame(rows)
    for c in COLUMNS:  # older schemas or empty stores still give every column
        if c not in df.columns:
            df[c] = None
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + extra]
