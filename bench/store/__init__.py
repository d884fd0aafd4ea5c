"""The results store: the row schema, one cell identity, run files, reading (no torch)."""
from bench.store.read import StoreError, StoreWarning, files, load, read_rows, upgrade
from bench.store.runfile import BadRow, RunFile, StoreFull, StoreWriteError, check_run_id, check_writable

__all__ = ["BadRow", "RunFile", "StoreError", "StoreFull", "StoreWarning", "StoreWriteError", "check_run_id",
           "check_writable", "files", "load", "read_rows", "upgrade"]
