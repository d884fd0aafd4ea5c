"""The results store: the row schema, one cell identity, run files, reading (no torch)."""
from bench.store.read import files, load, read_rows, upgrade
from bench.store.runfile import RunFile, check_writable

__all__ = ["RunFile", "check_writable", "files", "load", "read_rows", "upgrade"]
