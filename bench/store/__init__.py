"""The results store: the row schema, one cell identity, run files, reading (no torch).

Reading (bench.store.read) needs pandas; writing does not, so a worker process (and `bench run`'s parent) that
only writes rows never imports it: the names of `read` load on first use (PEP 562).
"""
from bench.store.runfile import BadRow, RunFile, StoreFull, StoreWriteError, check_run_id, check_writable

READ_NAMES = ("StoreError", "StoreWarning", "files", "load", "read_rows", "upgrade")
__all__ = ["BadRow", "RunFile", "StoreFull", "StoreWriteError", "check_run_id", "check_writable", *READ_NAMES]


def __getattr__(name: str):
    if name in READ_NAMES:
        from bench.store import read

        return getattr(read, name)
    raise AttributeError(f"module 'bench.store' has no attribute {name!r}")
