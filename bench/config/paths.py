"""Where the package's own files are: the repository root, the Hydra configs, the shipped data."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout (bench/ and conf/ side by side)
CONF_DIR = ROOT / "conf"
DATA_DIR = ROOT / "bench" / "data"
