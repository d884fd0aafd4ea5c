"""bench report: the summary first, winners per question, details folded, superseded rows out, no torch."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.cli import report as report_cli
from bench.report import markdown, tables
from tests.rows import row, store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def built(tmp_path):
    rows = [row("dynamic", e2e=200.0, kv=10.0, peak=500.0),
            row("static", e2e=100.0, kv=10.0, peak=510.0),
            row("quantized", e2e=300.0, kv=3.0, peak=450.0, cuda_alloc_conf="expandable_segments:True"),
            row("none", e2e=400.0, kv=0.0, peak=400.0),
            row("offloaded", status="oom", error="OutOfMemoryError: CUDA out of memory"),
            # an older row of the static cell: superseded by the newer one above
            row("static", e2e=900.0, ts="2026-11-01T10:00:00+00:00", run_id="old"),
            # a second setup (batch 8), disturbed fastest row must not win
            row("dynamic", batch=8, e2e=50.0), row("static", batch=8, e2e=10.0, disturbed=True,
                                                   disturbed_why="e2e spread too wide")]
    s = store(tmp_path / "store", rows)
    out = tmp_path / "out"
    assert report_cli.report([f"store={s}", f"out={out}"]) == 0
    return out, (out / "report.md").read_text()


def _section(md: str, title_part: str) -> str:
    parts = re.split(r"^## ", md, flags=re.M)
    return next(p for p in parts if p.startswith("tiny") and title_part in p.splitlines()[0])


def test_the_summary_comes_first_and_names_each_winner(built):
    _, md = built
    head = md.split("## tiny")[0]
    assert "Which cache?" in head
    b1 = _section(md, "batch 1,")
    summary = b1.split("<details>")[0]
    order = [ln.split("|")[1].strip() for ln in summary.splitlines() if ln.startswith("| ") and " / sdpa" in ln]
    assert order[:4] == ["static / sdpa", "dynamic / sdpa", "quantized int4 (quanto) / sdpa", "none / sdpa"]
    assert order[-1] == "offloaded / sdpa"  # a not-ok cell closes the table, with its status
    assert "**oom**" in summary
    winners = summary.split("**lowest latency:**")[1]
    assert winners.startswith(" static / sdpa")
    assert "**least memory:** quantized int4 (quanto) / sdpa" in summary  # of the caches, by peak... on a CPU by KV
    assert "random weights: no quality figures" in summary
    # the ratio to the dynamic cache, per row
    static = next(ln for ln in summary.splitlines() if ln.startswith("| static / sdpa"))
    assert "| 0.50× |" in static


def test_a_disturbed_row_is_marked_and_never_wins(built):
    _, md = built
    b8 = _section(md, "batch 8,")
    assert "⚠ disturbed" in b8
    assert "**lowest latency:** dynamic / sdpa" in b8


def test_conditions_that_vary_are_per_row_and_superseded_rows_stay_out(built):
    _, md = built
    b1 = _section(md, "batch 1,")
    assert "cuda_alloc_conf expandable" not in b1.split("|")[0]  # not a header
    assert "| cuda_alloc_conf |" in b1 or "cuda_alloc_conf" in b1.split("\n| ")[1]
    assert "900" not in b1  # the superseded static row
    assert "1 older rows of the same cells left out" in md


def test_glossary_once_and_figures_folded(built):
    out, md = built
    assert md.count("## Glossary") == 1 and md.count("decode ms/token** (`tpot_ms`)") == 1
    assert md.count("<details>") == md.count("</details>") == 3  # the setup's evidence, its figures, rows not ok
    not_ok = md.split("## Rows not ok", 1)[1].split("## Glossary")[0]
    assert re.search(r"^\d+ cells? whose newest row is not ok: .+\.$", not_ok.strip().splitlines()[0])
    assert "<details><summary>Each cell and why</summary>" in not_ok
    for img in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / img).exists(), img


def test_winners_use_kv_bytes_on_a_cpu_and_peak_on_a_gpu():
    import pandas as pd

    from bench.report import selection as select

    cpu = pd.DataFrame([row("dynamic", kv=10.0, peak=100.0), row("quantized", kv=3.0, peak=900.0)])
    rows = select.prepare(cpu)
    assert tables.winners(rows, "random")["least memory"][0].startswith("quantized")
    gpu = pd.DataFrame([row("dynamic", kv=10.0, peak=100.0, device="cuda", gpu="G"),
                        row("quantized", kv=3.0, peak=900.0, device="cuda", gpu="G")])
    assert tables.winners(select.prepare(gpu), "random")["least memory"][0].startswith("dynamic")


def test_same_store_byte_identical(built, tmp_path):
    out, md = built
    again = tmp_path / "again"
    assert report_cli.report([f"store={tmp_path / 'store'}", f"out={again}"]) == 0
    for f in sorted(out.iterdir()):
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name


def test_empty_store_and_no_torch(tmp_path):
    from tests.conftest import run_without_torch

    (tmp_path / "empty").mkdir()
    assert markdown.write(tmp_path / "empty", tmp_path / "o")[-1].read_text().startswith("# kvbench report")
    s = store(tmp_path / "s", [row("dynamic"), row("static")])
    p = run_without_torch(f"import sys; from bench.cli import report as cli; assert cli.report(['store={s}', "
                          f"'out={tmp_path / 'o2'}']) == 0", [], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]


def committed_store(dest: Path) -> Path:
    """results/ as committed: a user's own `make bench` rows added to the working store are not part of it."""
    import shutil
    import subprocess

    listed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True)
    names = [n for n in listed.stdout.split() if n.count("/") == 1] if listed.returncode == 0 else []
    dest.mkdir()
    for p in [ROOT / n for n in names] or [p for p in (ROOT / "results").iterdir() if p.is_file()]:
        shutil.copy(p, dest / p.name)
    return dest


def test_the_committed_store_reports_every_setup(tmp_path):
    """The old (schema 1) rows in results/ still make a report; a row with no loaded dtype makes no setup."""
    out = tmp_path / "r"
    assert report_cli.report([f"store={committed_store(tmp_path / 'results')}", f"out={out}"]) == 0
    md = (out / "report.md").read_text()
    assert ", , batch" not in md  # no setup with an empty dtype
    assert "## KV cache vs no cache" in md
    # what a reader sees unfolded stays short, and no paragraph is said twice
    visible = re.sub(r"<details>.*?</details>", "", md, flags=re.S)
    assert len(visible) < 50_000, len(visible)
    paragraphs = [p for p in md.split("\n\n") if len(p) > 200 and not p.startswith("|")]
    assert len(paragraphs) == len(set(paragraphs))


def test_best_quality_per_byte_saved_is_a_cache():
    """Keeping no cache saves every byte at no perplexity cost: it must not win 'best quality per byte saved'."""
    import pandas as pd

    from bench.report import selection as select

    rows = select.prepare(pd.DataFrame([
        row("dynamic", kv=10.0, weights="real", ppl=10.0, ppl_delta=0.0),
        row("none", kv=0.0, weights="real", ppl=10.0, ppl_delta=0.0),
        row("quantized", kv=3.0, weights="real", ppl=10.3, ppl_delta=0.3),
        row("quantized_int2", kv=2.0, weights="real", ppl=150.0, ppl_delta=140.0)]))
    assert tables.winners(rows, "real")["best quality per byte saved"][0] == "quantized int4 (quanto) / sdpa"


def test_least_memory_needs_every_rows_figure():
    """Peaks left out for some rows (a declared defect): the one row that kept its peak must not 'win'."""
    import pandas as pd

    from bench.report import selection as select

    gpu = dict(device="cuda", gpu="G")
    rows = select.prepare(pd.DataFrame([row("dynamic", peak=None, **gpu), row("static", peak=None, **gpu),
                                        row("quantized", peak=900.0, **gpu)]))
    label, why = tables.winners(rows, "random")["least memory"]
    assert label == "–" and "2 of 3" in why
