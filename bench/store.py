"""The results store: one JSON-lines file per run, written atomically, never rewritten by another run.

Layout: <store>/<run_id>.jsonl, one row per line (<run_id>-w<pid>.jsonl from a launcher worker process). A run
claims its file when it writes its first row; if another run already holds that name (two runs given the same
KVBENCH_RUN_ID), it takes <run_id>.2.jsonl, and so on. Each finished cell rewrites the run's own file through
a temp file + os.replace, so a reader never sees half a line and a crash loses at most the cell in flight.

Reading skips, with a warning, any line that is not a row (a truncated line, a foreign file, a row without
the conditions every row has) and upgrades rows of older schemas to today's columns (`upgrade`).
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

from . import identity
from .record import COLUMNS, SCHEMA_VERSION, STATUSES

SUFFIX = ".jsonl"
_UMASK = os.umask(0)
os.umask(_UMASK)
REQUIRED = ("run_id", "model", "cache", "status")  # without these a line identifies no cell


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


def files(store: str | os.PathLike) -> list[Path]:
    d = Path(store)
    return sorted(p for p in d.glob(f"*{SUFFIX}") if not p.name.startswith(".")) if d.is_dir() else []


def _problem(row) -> str:
    if not isinstance(row, dict) or not isinstance(row.get("schema_version"), int):
        return "not a kvbench row"
    if row["schema_version"] > SCHEMA_VERSION:
        return f"schema {row['schema_version']} is newer than {SCHEMA_VERSION}"
    missing = [k for k in REQUIRED if not isinstance(row.get(k), str) or not row[k]]
    if missing:
        return f"a row without {', '.join(missing)}"
    if row["status"] not in STATUSES:
        return f"status {row['status']!r} is not one of {', '.join(STATUSES)}"
    return ""


def upgrade(row: dict) -> dict:
    """A row of an older schema with today's columns; every row's cell_id recomputed by bench.identity.
    Schema 1 predates strategy objects: its label and roles are derived from the cache name here, once."""
    if row.get("schema_version", 1) < 2:
        cache = row.get("cache", "")
        quant = f" int{row.get('nbits')} ({row.get('quant_backend')})" if cache == "quantized" else ""
        blocks = f" ({row['block_size']}-token blocks)" if cache == "paged" and row.get("block_size") else ""
        row.setdefault("strategy", cache + quant + blocks)
        row.setdefault("reference", cache == "dynamic")
        row.setdefault("holds_cache", cache != "none")
        row.setdefault("repeats_mode", "fixed")
        row["strategy_keys"] = [k for k in identity.LEGACY_SETTING_KEYS if row.get(k) is not None]
    row["cell_id"] = identity.cell_id(row)
    return row


def read_rows(paths: Iterable[Path]) -> list[dict]:
    """Rows from store files, upgraded; a line that is not a row is reported and skipped."""
    rows = []
    for p in paths:
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                warnings.warn(f"skipping {p.name}:{n}: {e}", stacklevel=2)
                continue
            why = _problem(row)
            if why:
                warnings.warn(f"skipping {p.name}:{n}: {why}", stacklevel=2)
                continue
            rows.append(upgrade(row))
    return rows


CORRECTIONS = "corrections.json"


def corrections(store: Path) -> list[dict]:
    """Known defects of stored figures: [{"run_id", "columns", "why", optional "exempt_caches" and "where"
    (column: value)}] in <store>/corrections.json.
    The rows keep what was measured; a reader gets those columns empty and the reason in the row's note."""
    path = store / CORRECTIONS
    return json.loads(path.read_text()) if path.is_file() else []


def _correct(rows: list[dict], fixes: list[dict]) -> None:
    for fix in fixes:
        for r in rows:
            where = fix.get("where", {})  # only rows with these values
            if (r.get("run_id") == fix["run_id"] and r.get("cache") not in fix.get("exempt_caches", [])
                    and all(r.get(k) == v for k, v in where.items())):
                for c in fix["columns"]:
                    r[c] = None
                r["error"] = "; ".join(x for x in (r.get("error"), fix["why"]) if x)


def load(path: str | os.PathLike = "results") -> pd.DataFrame:
    """Every row of every run in the store (a directory, or one .jsonl file), schema columns first, with the
    store's corrections applied."""
    p = Path(path)
    rows = read_rows([p] if p.is_file() else files(p))
    _correct(rows, corrections(p.parent if p.is_file() else p))
    df = pd.DataFrame(rows)
    for c in COLUMNS:  # older schemas or empty stores still give every column
        if c not in df.columns:
            df[c] = None
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + extra]
