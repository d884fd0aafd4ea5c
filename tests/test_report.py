"""bench report: the answer per machine and model on the first screen, every label true, comparable things only,
one verdict (verdict.judge), pages per setup, byte-identical, no torch; on synthetic and held-out stores."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import report as report_cli
from bench.report import answers, margins, markdown, selection as select
from tests.rows import row, store

ROOT = Path(__file__).resolve().parent.parent
H200, H100 = dict(device="cuda", gpu="NVIDIA H200"), dict(device="cuda", gpu="NVIDIA H100 80GB HBM3")


def gpu_rows(gpu=H200, model="tiny") -> list[dict]:
    """Batch 1 (static wins), batch 8 (a disturbed and a below-floor row faster than the winner), batch 32 with
    an OOM reported two ways and an offloaded cache whose KV lives in host memory."""
    g = dict(model=model, **gpu)
    return [row("dynamic", e2e=200.0, peak=500.0, **g), row("static", e2e=100.0, peak=510.0, **g),
            row("quantized", e2e=300.0, peak=450.0, kv=3.0, **g), row("none", e2e=400.0, peak=400.0, kv=0.0, **g),
            row("dynamic", batch=8, e2e=50.0, **g),
            row("static", batch=8, e2e=10.0, disturbed=True, disturbed_why="e2e spread too wide", **g),
            row("quantized", batch=8, e2e=20.0, bandwidth_floor_ms=5.0, mbu=4.0, **g),
            row("quantized_int2", batch=8, e2e=80.0, **g),
            row("dynamic", batch=32, e2e=90.0, peak=9000.0, **g),
            row("static", batch=32, status="error", error="ShortGeneration: asked for 32 x 16 new tokens, produced "
                "32 x 0; Memory footprint 7 is more than available memory 6", **g),
            row("quantized", batch=32, e2e=400.0, peak=6000.0, kv=40.0, **g),
            row("offloaded", batch=32, e2e=4000.0, peak=3000.0, kv=400.0, kv_host_mib=4000.0, **g)]


def write(tmp_path: Path, rows: list[dict], name: str = "store") -> tuple[Path, str]:
    s = store(tmp_path / name, rows)
    out = tmp_path / f"{name}-out"
    assert report_cli.report([f"store={s}", f"out={out}"]) == 0
    return out, (out / "report.md").read_text()


def opening(md: str) -> str:
    return md.split("## Where to look next")[0]


def answer_line(md: str, question: str, batch: str) -> list[str]:
    """The cells of the front page's row for `question` at `batch`."""
    for ln in opening(md).splitlines():
        if ln.startswith("| ") and f"[{question}, b{batch} " in ln:
            return [c.strip() for c in ln.strip("|").split(" | ")]
    raise AssertionError(f"no {question} b{batch} row in:\n{opening(md)}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return write(tmp_path_factory.mktemp("r"), gpu_rows() + [row("static", e2e=900.0, ts="2026-11-01T10:00:00+00:00",
                                                                 run_id="old", **H200)])


def test_the_opening_answers_each_question_with_runner_up_margin_and_verdict(built):
    out, md = built
    _, q, use, runner, caveats = answer_line(md, "lowest latency", "1")
    assert use.startswith("**static / sdpa**") and "ms/token" in use
    assert runner.startswith("dynamic / sdpa") and "×2.00 [" in runner and "95% CI] beyond noise" in runner
    _, q, use, runner, caveats = answer_line(md, "most throughput", "32")
    assert use.startswith("**dynamic / sdpa**") and "decode tok/s" in use  # the largest batch that fits
    assert "OOM here: static / sdpa" in caveats
    # the link goes to the setup's own page, which exists
    target = re.search(rf"\[{re.escape(q.split('][')[1].rstrip(']'))}\]: (\S+)", md)[1]
    assert (out / target).is_file() and "## How each row was measured" in (out / target).read_text()


def test_flagged_rows_are_named_never_crowned(built):
    page = (built[0] / "setups").glob("tiny_random_cuda_nvidia-h200_float32_b8_*.md")
    text = next(page).read_text()
    here = text.split("**lowest decode ms/token here**: ")[1].split("\n")[0]
    assert here.startswith("dynamic / sdpa 3.00 ms/token; runner-up quantized int2 (quanto) / sdpa")
    assert "static / sdpa (0.600) not ranked: disturbed" in here
    assert "not ranked: below its bandwidth floor (MBU 4.00)" in text


def test_host_memory_counts_toward_least_memory(built):
    _, md = built
    _, _, use, runner, caveats = answer_line(md, "least memory", "32")
    assert use.startswith("**quantized int4 (quanto) / sdpa**")  # 6000 MiB, not offloaded's 3000 + 4000 host
    assert "vs the fastest here, dynamic / sdpa" in caveats and "beyond noise" in caveats


def test_counts_add_up_in_one_status_vocabulary(built):
    out, md = built
    m = re.search(r"\*\*(\d+) cells = (.+?)\*\*", md)
    parts = dict((s, int(n)) for n, s in re.findall(r"(\d+) (\w+)", m[2]))
    assert sum(parts.values()) == int(m[1]) == 12 and parts["ok"] == 11
    assert parts.get("oom") == 1 and "error" not in parts  # ShortGeneration out of memory is an oom
    not_ok = (out / "setups" / "not-ok.md").read_text()
    assert "1 cells whose newest row is not ok: 1 oom." in not_ok and "oom (stored as error)" in not_ok
    assert "1 older rows of the same cells left out" in md


def test_intervals_say_what_they_are(tmp_path):
    rows = [row("dynamic", e2e=200.0, n=2), row("static", e2e=100.0, n=3), row("quantized", e2e=300.0, n=8)]
    old = dict(row("none", e2e=400.0, n=1))
    old.update(e2e_samples_ms=None, ttft_samples_ms=None, tpot_samples_ms=None, repeats=5, schema_version=1,
               tpot_p10_ms=25.0, tpot_p50_ms=26.0, tpot_p90_ms=27.0, tpot_ms=26.0)
    out, md = write(tmp_path, rows + [old])
    page = (out / "setups" / "tiny_random_cpu_nogpu_float32_b1_p8_n16.md").read_text()
    table = page.split("| strategy / attention | decode")[1].split("\n\n")[0]
    line = {ln.split(" |")[0].strip("| "): ln for ln in table.splitlines()}
    assert "(min–max of 2 calls)" in line["dynamic / sdpa"] and "95% CI" not in line["dynamic / sdpa"]
    assert "(min–max of 3 calls)" in line["static / sdpa"]
    assert "(95% CI of the median, 8 calls)" in line["quantized int4 (quanto) / sdpa"]
    assert "[25.0–27.0] (p10–p90 of 5 calls" in line["none / sdpa"]
    _, _, _, runner, _ = answer_line(md, "lowest latency", "1")
    assert "n=3+2]" in runner and "95% CI" not in runner  # too few calls for a 95% CI: said so


def test_one_verdict_the_front_page_prints_is_judges(built):
    from bench.store import load

    out, md = built
    rows = select.pick(select.prepare(load(out.parent / "store"))).shown
    b1 = rows[(rows["batch"] == "1")]
    w = b1[b1["cache"] == "static"].iloc[0].to_dict()
    r = b1[b1["cache"] == "dynamic"].iloc[0].to_dict()
    m = margins.judge(w, r, "tpot_ms")
    assert m.short() in answer_line(md, "lowest latency", "1")[3]


def test_machines_are_never_mixed_and_cross_gpu_is_said(tmp_path):
    rows = gpu_rows(H200) + gpu_rows(H100)
    out, md = write(tmp_path, rows)
    heads = re.findall(r"^### (.+)$", opening(md), flags=re.M)
    assert heads == ["NVIDIA H100 80GB HBM3 · random weights", "NVIDIA H200 · random weights"]
    kv = (out / "setups" / "kv-vs-nocache.md").read_text()
    assert "| machine |" in kv and kv.count("| NVIDIA H200 |") == 1 and kv.count("| NVIDIA H100 80GB HBM3 |") == 1
    from bench.report import compare_report
    from bench.stats import verdicts

    s = tmp_path / "store"
    compare_report.write(f"{s}@gpu=NVIDIA H100 80GB HBM3", f"{s}@gpu=NVIDIA H200", tmp_path / "c",
                         verdicts.DEFAULT_FLOOR)
    assert "**A cross-GPU compare**" in (tmp_path / "c" / "compare.md").read_text()


def test_cpu_memory_is_kv_bytes_unless_a_cell_peak_exists(tmp_path):
    rows = [row("dynamic", kv=10.0, peak=100.0), row("quantized", kv=3.0, peak=900.0, e2e=150.0)]
    _, md = write(tmp_path, rows)
    _, _, use, runner, _ = answer_line(md, "fewest KV bytes", "1")
    assert use.startswith("**quantized int4 (quanto) / sdpa** KV 3") and "exact" in runner
    own = [dict(r, peak_rss_cell_mib=v) for r, v in zip(rows, (500.0, 520.0))]
    _, md = write(tmp_path, own, "own")
    _, _, use, _, _ = answer_line(md, "least memory", "1")
    assert use.startswith("**dynamic / sdpa** 500 MiB cell RSS")


def test_quality_only_where_weights_are_real(tmp_path):
    real = dict(weights="real")
    rows = [row("dynamic", kv=10.0, ppl=10.0, ppl_delta=0.0, **real), row("none", kv=0.0, ppl=10.0, ppl_delta=0.0, **real),
            row("quantized", kv=3.0, ppl=10.3, ppl_delta=0.3, **real),
            row("quantized_int2", kv=2.0, ppl=150.0, ppl_delta=140.0, **real)]
    _, md = write(tmp_path, rows + gpu_rows())
    _, _, use, runner, caveats = answer_line(md, "quantization's quality cost", "1")
    assert use.startswith("**quantized int4 (quanto) / sdpa** Δppl +0.300") and "quantized int2" in runner
    assert md.count("random weights") <= 3 and "Every row on NVIDIA H200 used **random weights**" in md


def answered(rows: list[dict]) -> tuple[str, list]:
    """The opening's answer tables and the overflow page's lines, without drawing a figure."""
    from bench.report import front, pages

    df = select.prepare(pd.DataFrame(rows))
    groups = answers.groups(select.setups(select.pick(df).shown))
    top, _, more = front.answers_section(groups, df, pages.PAGES)
    return "\n".join(top), more


def test_the_opening_stays_one_screen_however_many_setups():
    rows = []
    for b in (1, 2, 4, 8, 16, 32, 64):
        for p in (8, 16, 32, 64):
            rows += [row(c, batch=b, prompt_len=p, e2e=100.0 * (i + 1), seed=i) for i, c in enumerate(
                ("dynamic", "static", "quantized"))]
    top, more = answered(rows)
    assert len(top.splitlines()) <= 10 and len(top) < 2500 and not more, (len(top.splitlines()), len(top))
    assert "b64 64+16" in top  # the largest batch, the longest prompt


def test_many_models_overflow_to_a_page():
    from bench.report import front

    rows = [r for m in range(12) for r in (row("dynamic", model=f"m{m:02d}", e2e=200.0),
                                           row("static", model=f"m{m:02d}", e2e=100.0))]
    top, more = answered(rows)
    first = [m for m in (f"m{i:02d}" for i in range(12)) if f"| {m} |" in top]
    assert first == [f"m{i:02d}" for i in range(front.MAX_GROUPS)]
    assert "| m11 |" in "\n".join(more) and "| m00 |" not in "\n".join(more)


def test_malformed_and_held_out_rows(tmp_path):
    s = store(tmp_path / "s", gpu_rows(model="other-7b") + [row("dynamic", model="other-7b", device="cuda",
                                                                 gpu="AMD MI300X", e2e=70.0)])
    with open(s / "junk.jsonl", "w") as f:
        f.write("not json\n" + json.dumps({"schema_version": 2, "model": "x"}) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert report_cli.report([f"store={s}", f"out={tmp_path / 'o'}"]) == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "### AMD MI300X" in md and "### NVIDIA H200" in md


def test_same_store_byte_identical(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    assert report_cli.report([f"store={out.parent / 'store'}", f"out={again}"]) == 0
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        assert (again / f.relative_to(out)).read_bytes() == f.read_bytes(), f.name


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


def test_the_committed_store_answers_every_gpu_on_one_screen(tmp_path):
    """The old (schema 1) rows in results/ still make a report; every GPU gets its answers in the opening."""
    from bench.store import load

    res = committed_store(tmp_path / "results")
    df = select.prepare(load(res))
    picked = select.pick(df)
    groups = answers.groups(select.setups(picked.shown))
    gpus = sorted({m for (m, _), _ in groups if not m.startswith("CPU")})
    from bench.report import front, pages

    top, _, more = front.answers_section(groups, df, pages.PAGES)
    text = "\n".join(top)
    for g in gpus:
        assert f"### {g}" in text
    assert not more and len(top) <= 50 and len(text) < 7000, (len(top), len(text))
    assert ", , batch" not in text


def test_figures_are_kept_where_their_rows_are_unchanged_and_redrawn_where_not(tmp_path):
    """report/kept.py: a second report over a store that gained one setup draws that setup's figures only; the
    kept files are the ones a fresh draw gives (byte-identical), and a changed row redraws its setup."""
    s = store(tmp_path / "s", gpu_rows())
    out = tmp_path / "o"
    assert report_cli.report([f"store={s}", f"out={out}"]) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert first and json.loads((out / ".figures.json").read_text())
    (s / "more.jsonl").write_text(json.dumps(row("dynamic", batch=2, e2e=60.0, **H200)) + "\n")
    assert report_cli.report([f"store={s}", f"out={out}"]) == 0
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    redrawn = {n for n in first if now.get(n) != first[n]}
    new = set(now) - set(first)
    assert new and all("_b2_" in n for n in new if n.startswith("latency_")), new
    assert not {n for n in redrawn if n.startswith(("latency_", "memory_", "tradeoff_"))}, redrawn
    fresh = tmp_path / "fresh"
    assert report_cli.report([f"store={s}", f"out={fresh}"]) == 0
    for p in out.glob("*.png"):
        assert (fresh / p.name).read_bytes() == p.read_bytes(), p.name
    # a changed row of the batch-1 setup redraws its figures (and only those of its setup)
    rows = [json.loads(x) for x in next(s.glob("*.jsonl")).read_text().splitlines() if x.strip()]
    before = {n: t for n, t in now.items()}
    edited = [dict(r, e2e_ms=r["e2e_ms"] * 1.5) if r["cache"] == "static" and r["batch"] == 1 else r for r in rows]
    next(s.glob("*.jsonl")).write_text("".join(json.dumps(r) + "\n" for r in edited))
    assert report_cli.report([f"store={s}", f"out={out}"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    changed = {n for n in after if after[n] != before.get(n)}
    assert any(n.startswith("latency_") and "_b1_" in n for n in changed), changed
    assert not any(n.startswith("latency_") and "_b8_" in n for n in changed), changed
