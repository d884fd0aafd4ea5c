"""Formatting shared by tables, figures and markdown: numbers, labels, titles, file names, pinned matplotlib.

Everything here is deterministic, so the same store gives byte-identical files.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from bench.store.identity import text

__all__ = ["text", "num", "nat", "fixed", "md", "slug", "setup_slug", "setup_title", "RC", "save", "figure", "GIB",
           "MIB"]

GIB, MIB = 2**30, 2**20
# Pinned so the PNG bytes depend on the rows only, not on a user's matplotlibrc.
RC = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs everywhere
    "font.size": 9,
    "axes.titlesize": 9,
    "figure.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "svg.hashsalt": "kvbench",
    "path.simplify": False,
}
STATUS_TEXT = {"oom": "OOM", "unavailable": "unavailable", "error": "error"}


def num(v) -> float:
    """A float, or NaN for anything that is not a number."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def nat(v) -> tuple:
    """Sort key: numbers by value, text by text, numbers first."""
    s = text(v)
    try:
        x = float(s)
        return (0, x if math.isfinite(x) else 0.0, s)
    except ValueError:
        return (1, 0.0, s)


def fixed(v, nd: int = 2, dash: str = "–") -> str:
    x = num(v)
    return dash if math.isnan(x) else f"{x:.{nd}f}"


def sig(v, n: int = 3) -> str:
    """n significant digits, no exponent for everyday magnitudes."""
    x = num(v)
    if math.isnan(x):
        return "–"
    if x == 0:
        return "0"
    digits = max(0, n - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{digits}f}"


def md(v) -> str:
    """Safe inside a markdown table cell."""
    return text(v).replace("|", "\\|").replace("\n", " ").strip() or "–"


def slug(*parts) -> str:
    return re.sub(r"[^a-z0-9._]+", "-", "_".join(text(p) or "none" for p in parts).lower()).strip("-")


def machine_slug(s: dict) -> str:
    """The machine in a file name: the GPU's name as before; a CPU's model, or 'nogpu' where not recorded."""
    if s.get("device") == "cuda" or not text(s.get("machine")).startswith("CPU: "):
        return text(s.get("gpu")) or "nogpu"
    return text(s["machine"])[len("CPU: "):][:32]


def setup_slug(s: dict) -> str:
    """One setup's name in file names: its figures and its page."""
    return slug(s["model"], s["weights"], s["device"], machine_slug(s), s["dtype"], f"b{s['batch']}",
                f"p{s['prompt_len']}", f"n{s['new_tokens']}")


def machine_text(s: dict) -> str:
    """'cuda (NVIDIA H200)', 'cpu (Intel Xeon ...)', 'cpu (model not recorded)'."""
    if s.get("device") == "cuda":
        return f"cuda ({s['gpu']})" if s.get("gpu") else "cuda"
    m = text(s.get("machine"))
    return f"cpu ({m[len('CPU: '):]})" if m.startswith("CPU: ") else "cpu (model not recorded)" if m else "cpu"


def setup_title(s: dict) -> str:
    w = "RANDOM WEIGHTS" if s.get("weights") == "random" else f"{s.get('weights')} weights"
    dev = machine_text(s)
    return (f"{s['model']}, {w}, {dev}, {s['dtype']}, batch {s['batch']}, "
            f"prompt {s['prompt_len']} + {s['new_tokens']} new tokens")


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def wrap(title: str, width: int = 110) -> str:
    """A long title broken at spaces so constrained layout never clips it."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))
