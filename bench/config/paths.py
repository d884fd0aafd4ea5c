"""Where the package's own files are: the repository root, the Hydra configs, the shipped data."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout (bench/ and conf/ side by side)
CONF_DIR = ROOT / "conf"
DATA_DIR = ROOT / "bench" / "data"
# what kvbench keeps between processes (converted GGUF weights, random CPU weights, plans): KVBENCH_CACHE moves it
CACHE_DIR = Path(os.environ.get("KVBENCH_CACHE", Path.home() / ".cache" / "kvbench"))
