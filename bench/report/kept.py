"""Figures kept between reports: a figure is a function of its rows and the report's code, so one drawn from the
same rows by the same code (and matplotlib) is kept rather than drawn again. `out/.figures.json` records each
group's key and files. A store that gained one setup redraws that setup's figures, not every setup's (drawing
the 32 setups of the committed store took ~70 s of `make bench` on the 2-core CPU).
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import matplotlib

from bench.config import paths

MANIFEST = ".figures.json"


@functools.lru_cache(maxsize=1)
def _code_key() -> str:
    """What draws a figure: the report's and the store's code, and matplotlib."""
    return f"{matplotlib.__version__}:{paths.source_hash('bench/report/*.py', 'bench/store/*.py')}"


def key(what, rows) -> str:
    """What a group of figures is drawn from: its description, its rows (every column, in order), the code."""
    h = hashlib.sha1(_code_key().encode())
    h.update(json.dumps(what, sort_keys=True, default=str).encode())
    h.update(rows.reset_index(drop=True).to_json(orient="split", default_handler=str).encode())
    return h.hexdigest()


class Kept:
    def __init__(self, out: Path):
        self.out = out
        try:
            self.before = json.loads((out / MANIFEST).read_text())
        except (OSError, ValueError):
            self.before = {}
        self.now: dict = {}

    def figures(self, name: str, what, rows, draw: Callable[[], list]) -> list[Path]:
        """The figures of group `name`: the kept files where their key matches and they all exist, else drawn."""
        k = key(what, rows)
        old = self.before.get(name)
        paths: Optional[list[Path]] = None
        if isinstance(old, dict) and old.get("key") == k and isinstance(old.get("files"), list):
            paths = [self.out / f for f in old["files"]]
            if not all(p.is_file() for p in paths):
                paths = None
        if paths is None:
            paths = [Path(p) for p in draw()]
        self.now[name] = {"key": k, "files": [p.name for p in paths]}
        return paths

    def save(self) -> Path:
        path = self.out / MANIFEST
        path.write_text(json.dumps(self.now, indent=0, sort_keys=True) + "\n")
        return path
