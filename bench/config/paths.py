"""Where the package's own files are: the repository root, the Hydra configs, the shipped data."""
import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout (bench/ and conf/ side by side)
CONF_DIR = ROOT / "conf"
DATA_DIR = ROOT / "bench" / "data"
# what kvbench keeps between processes (converted GGUF weights, random CPU weights, plans): KVBENCH_CACHE moves it
CACHE_DIR = Path(os.environ.get("KVBENCH_CACHE", Path.home() / ".cache" / "kvbench"))


def source_hash(*globs: str) -> str:
    """sha1 of the checkout's files matching `globs` (relative to ROOT): each file's path and bytes, in order.
    Names the code that ran (the rows' code_hash) and keys what is kept between processes (plans, figures)."""
    h = hashlib.sha1()
    for f in sorted({q for g in globs for q in ROOT.glob(g)}):
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()
