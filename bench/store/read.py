"""Reading the store: every run file's rows, checked, upgraded to today's columns, with the store's corrections.

Reading skips, with a warning, any line that is not a row (a truncated line, a foreign file, a row without
the conditions every row has) and upgrades rows of older schemas to today's columns (`upgrade`).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterable

import pandas as pd

from bench.store import identity
from bench.store.runfile import SUFFIX
from bench.store.schema import COLUMNS, SCHEMA_VERSION, STATUSES, problems

REQUIRED = ("run_id", "model", "cache", "status")  # without these a line identifies no cell
SHOWN = 10  # lines of one file reported one by one; past that, one warning counts the rest


class StoreWarning(UserWarning):
    """A line or file of the store that is not a row, skipped: the command line shows it as `warning: ...`."""


def files(store: str | os.PathLike) -> list[Path]:
    """The run files of a store (a directory named *.jsonl among them is reported when read, never opened)."""
    d = Path(store)
    return sorted(p for p in d.glob(f"*{SUFFIX}") if not p.name.startswith(".")) if d.is_dir() else []


def _lines(p: Path) -> list[str]:
    if p.is_dir():
        warnings.warn(f"skipping {p.name}: a directory, not a run file", StoreWarning, stacklevel=3)
        return []
    try:
        return p.read_text(errors="replace").splitlines()
    except OSError as e:
        warnings.warn(f"skipping {p.name}: cannot read it ({e.strerror or e})", StoreWarning, stacklevel=3)
        return []


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
    """A row of an older schema with today's columns; every row's cell_id recomputed by bench.store.identity.
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
        skipped = 0
        for n, line in enumerate(_lines(Path(p)), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                row, why = None, str(e)
            else:
                why = _problem(row)
                if not why:
                    row = upgrade(row)
                    why = "; ".join(problems(row))
            if why:
                skipped += 1
                if skipped <= SHOWN:
                    warnings.warn(f"skipping {p.name}:{n}: {why}", StoreWarning, stacklevel=2)
                continue
            rows.append(row)
        if skipped > SHOWN:
            warnings.warn(f"skipping {skipped - SHOWN} more lines of {p.name} that are not rows", StoreWarning,
                          stacklevel=2)
    return rows


CORRECTIONS = "corrections.json"


class StoreError(ValueError):
    """The store itself is malformed (not a row: a file the reader needs): one line naming the file."""


def corrections(store: Path) -> list[dict]:
    """Known defects of stored figures: [{"run_id", "columns", "why", optional "exempt_caches" and "where"
    (column: value)}] in <store>/corrections.json.
    The rows keep what was measured; a reader gets those columns empty and the reason in the row's note."""
    path = store / CORRECTIONS
    if not path.is_file():
        return []
    try:
        fixes = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{path} is not valid JSON ({e}); fix or remove it") from None
    form = 'a list of {"run_id": str, "columns": [str, ...], "why": str}'
    if not isinstance(fixes, list):
        raise StoreError(f"{path} must hold {form}")
    for i, f in enumerate(fixes):
        ok = (isinstance(f, dict) and isinstance(f.get("run_id"), str) and isinstance(f.get("why"), str)
              and isinstance(f.get("columns"), list) and all(isinstance(c, str) for c in f["columns"])
              and isinstance(f.get("where", {}), dict) and isinstance(f.get("exempt_caches", []), list))
        if not ok:
            raise StoreError(f"{path}: entry {i + 1} is not {form} (optional where: {{column: value}}, "
                             "exempt_caches: [cache, ...])")
    return fixes


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
