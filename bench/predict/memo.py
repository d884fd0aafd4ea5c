"""Plans kept on disk between processes.

Every round of a sweep is a fresh worker process, and each used to measure a model's geometry and plan each cell
on the meta device again (gpt2: 5-8 s per cell on the 2-core CPU). A plan depends only on its inputs, the installed
torch and transformers, and kvbench's own code, so it is kept under KVBENCH_CACHE/plans keyed by all of them; a
change to any file of the bench package makes new keys. A failed plan is never kept.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
from typing import Callable, TypeVar

from bench.config import paths

T = TypeVar("T")


@functools.lru_cache(maxsize=1)
def _code_key() -> str:
    """The bench package's source, torch's and transformers' versions: what a plan was computed with."""
    import torch
    import transformers

    return f"{torch.__version__}:{transformers.__version__}:{paths.source_hash('bench/**/*.py')}"


def remembered(kind: str, key: str, make: Callable[[], T]) -> T:
    """`make()`'s value for `key`, from disk when an earlier process computed it with the same code."""
    path = paths.CACHE_DIR / "plans" / f"{kind}-{hashlib.sha1((_code_key() + key).encode()).hexdigest()[:20]}.pkl"
    try:
        return pickle.loads(path.read_bytes())
    except Exception:  # noqa: BLE001 - absent, or unreadable: compute it again
        pass
    value = make()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(pickle.dumps(value))
        os.replace(tmp, path)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        tmp.unlink(missing_ok=True)
    return value
