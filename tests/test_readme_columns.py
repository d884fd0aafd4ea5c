"""README's "What a row holds" names every column of the row schema once, and nothing else (no torch)."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from bench.store.schema import COLUMNS

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## What a row holds"
ENV_LEAD = "Environment columns"


def section(text: str) -> list[str]:
    """The lines of the section, from its heading to the next level-2 heading."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == SECTION)
    except StopIteration:
        raise AssertionError(f"README.md has no '{SECTION}' section") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start + 1:end]


def table_names(lines: list[str]) -> list[str]:
    """Every backticked name in the first cell of each table row (header, separator and group rows name none)."""
    names = []
    for line in lines:
        if line.lstrip().startswith("|"):
            first = line.strip().strip("|").split("|")[0]
            names += [n.strip() for n in re.findall(r"`([^`]*)`", first)]
    return names


def env_names(lines: list[str]) -> list[str]:
    """The backticked list of the paragraph "Environment columns ...: `cpu, driver, ...`." (up to its first '.')."""
    paragraphs = " ".join(line.strip() or "\n" for line in lines).split("\n")
    para = next((p.strip() for p in paragraphs if p.strip().startswith(ENV_LEAD)), None)
    assert para is not None, f"'{SECTION}' has no paragraph starting '{ENV_LEAD}'"
    assert ":" in para, f"the '{ENV_LEAD}' paragraph has no ':' before its list of columns"
    listed = para.split(":", 1)[1].split(".", 1)[0]
    return [n.strip() for span in re.findall(r"`([^`]*)`", listed) for n in span.split(",") if n.strip()]


def readme_columns(path: Path = README) -> tuple[list[str], list[str]]:
    """(names in the table's first cells, names in the environment paragraph) of the README at `path`."""
    lines = section(Path(path).read_text())
    return table_names(lines), env_names(lines)


def problems(path: Path = README) -> list[str]:
    """What the section gets wrong against bench.store.schema.COLUMNS ([] = nothing)."""
    table, env = readme_columns(path)
    named = Counter(table + env)
    schema = set(COLUMNS)
    out = []
    missing = [c for c in COLUMNS if c not in named]
    extra = sorted(set(named) - schema)
    twice = sorted(n for n, k in named.items() if k > 1)
    if missing:
        out.append(f"missing from README ({len(missing)}): {', '.join(missing)}")
    if extra:
        out.append(f"in README but not in the schema ({len(extra)}): {', '.join(extra)}")
    if twice:
        out.append(f"named more than once: {', '.join(twice)}")
    return out


def test_readme_names_every_schema_column_once():
    found = problems(README)
    assert not found, (f"README.md '{SECTION}' does not match bench/store/schema.py's {len(COLUMNS)} columns:\n  "
                       + "\n  ".join(found))
