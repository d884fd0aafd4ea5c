"""bench.report from a synthetic store: file names, markdown content, reproducibility, no torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from tests.conftest import run_without_torch
from bench import report
from bench.record import Record
from bench.store import RunFile, load

ROOT = Path(__file__).resolve().parent.parent
GPU = dict(model="tiny-gpt2", weights="real", device="cuda", gpu="NVIDIA H100 80GB HBM3", dtype="float16",
           batch=1, prompt_len=16, new_tokens=9, driver="550.54", torch="2.5.1", transformers="4.56.0",
           cuda="12.4", cudnn="90100")
CPU = dict(model="tiny-llama", weights="random", device="cpu", gpu="", dtype="float32",
           batch=2, prompt_len=32, new_tokens=9, torch="2.5.1", transformers="4.56.0")
SLUG_GPU = "tiny-gpt2_real_cuda_nvidia-h100-80gb-hbm3_float16_b1_p16_n9"
SLUG_CPU = "tiny-llama_random_cpu_nogpu_float32_b2_p32_n9"
# Bandwidth floor and quality figures of the real-weights GPU setup (none on the CPU setup's mbu).
FLOOR = dict(bandwidth_gb_s=2000.0, bandwidth_floor_ms=0.05)
SAME = dict(ppl=20.0, ppl_delta=0.0, agreement=1.0, first_divergence=64, quality_tokens=600)


def row(base, ts, sha="aaaa111", **kw) -> dict:
    run_id = "run-old" if sha == "aaaa111" else "run-new"
    figures = dict(attn="sdpa", sdpa_backend="auto", compile="auto", attn_used="sdpa", sdpa_backend_used="flash",
                   compiled=False, ttft_ms=5.0, ttft_p10_ms=4.5, ttft_p90_ms=5.5, tpot_ms=1.0, tpot_p10_ms=0.9,
                   tpot_p90_ms=1.1, e2e_ms=13.0, decode_tok_s=1000.0, cold_e2e_ms=900.0, weights_mib=10.0,
                   kv_cache_mib=2.0, kv_theory_mib=2.0, peak_mem_mib=20.0, other_peak_mib=8.0,
                   step_ms=[1.0] * 8, timestamp=ts, git_sha=sha, run_id=run_id)
    return Record(**{**base, **figures, **kw}).as_row()


@pytest.fixture
def store(tmp_path):
    s = tmp_path / "store"
    old, new = RunFile(s, "run-old"), RunFile(s, "run-new")
    old.append(row(GPU, "2024-01-01T00:00:00+00:00", cache="dynamic", tpot_ms=7.777, tpot_p10_ms=7.7, tpot_p90_ms=7.9))
    new.append(row(GPU, "2024-02-01T00:00:00+00:00", sha="bbbb222", cache="dynamic",
                   tpot_ms=3.333, tpot_p10_ms=3.2, tpot_p90_ms=3.5, mbu=0.015, **FLOOR, **SAME))
    new.append(row(GPU, "2024-02-01T00:00:01+00:00", sha="bbbb222", cache="none", kv_cache_mib=0.0,
                   kv_theory_mib=0.0, step_ms=[1.0 + 0.5 * i for i in range(8)], mbu=0.05, **FLOOR, **SAME))
    new.append(row(GPU, "2024-02-01T00:00:02+00:00", sha="bbbb222", cache="quantized", nbits=4,
                   quant_backend="quanto", kv_cache_mib=0.6, kv_theory_mib=0.5, mbu=0.05, **FLOOR, ppl=20.5,
                   ppl_delta=0.5, agreement=0.875, first_divergence=12, quality_tokens=600, kv_quantized_share=0.75))
    new.append(Record(**GPU, run_id="run-new", cache="static", attn="flash_attention_2", status="unavailable",
                      error="flash_attn is not installed", timestamp="2024-02-01T00:00:03+00:00").as_row())
    # Stray quality figures on a random-weights row (quality=on): they must not give it a quality figure.
    new.append(row(CPU, "2024-02-01T00:00:04+00:00", sha="bbbb222", cache="dynamic", kv_cache_mib=4.1,
                   kv_theory_mib=4.0, ppl=3.0e4, ppl_delta=0.0, agreement=1.0, first_divergence=64))
    return s


@pytest.fixture
def built(store, tmp_path):
    paths = report.write_report(store, tmp_path / "out")
    return paths, (tmp_path / "out" / "report.md").read_text()


def test_files(built, tmp_path):
    paths, _ = built
    names = sorted(p.name for p in paths)
    expected = sorted(["report.md", f"mbu_{SLUG_GPU}.png", f"quality_{SLUG_GPU}.png"]
                      + [f"{k}_{s}.png" for k in ("latency", "memory", "step_latency") for s in (SLUG_GPU, SLUG_CPU)])
    assert names == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == expected
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths if p.suffix == ".png")


def test_markdown_content(built):
    _, md = built
    lines = md.splitlines()
    # the failed row, with its error, in the not-ok list
    failed = [ln for ln in lines if "flash_attn is not installed" in ln]
    assert failed and all("unavailable" in ln and "static" in ln for ln in failed)
    assert "## Rows not ok" in md
    # the newest of two runs of one cell, not the older one
    assert "3.33 (3.20–3.50)" in md
    assert "7.78" not in md and "7.70" not in md
    assert "newest ok row (by timestamp)" in md and "1 older row(s) left out" in md
    # KV mismatch flag names only the quantized row (+20%), not the 0/0 or the 2.5% rows
    flags = [ln for ln in lines if ln.startswith("**KV cache differs")]
    assert len(flags) == 1
    assert "quantized int4 (quanto) / sdpa" in flags[0] and "+20%" in flags[0]
    assert "dynamic" not in flags[0] and "none /" not in flags[0]
    assert md.count("within 5% of theory") == 1  # the CPU setup
    # images linked relatively, cold-call note, random-weights explanation, conditions
    for k in ("latency", "memory", "step_latency"):
        assert f"]({k}_{SLUG_GPU}.png)" in md
    assert "cold_e2e_ms is the first warm-up call" in md
    assert "RANDOM WEIGHTS" in md and "Random weights:" in md
    assert md.count("Random weights:") == 1  # only for the random setup
    assert "- gpu: NVIDIA H100 80GB HBM3" in md and "aaaa111 … bbbb222" in md


def _section(md: str, model: str) -> str:
    return md.split(f"## {model}")[1].split("\n## ")[0]


def _header(section: str) -> list[str]:
    head = next(ln for ln in section.splitlines() if ln.startswith("| strategy |"))
    return [c.strip() for c in head.strip("|").split("|")]


def _table_rows(section: str) -> dict[str, dict[str, str]]:
    cols = _header(section)
    body = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| strategy |")]
    return {r["strategy"]: r for r in (dict(zip(cols, [c.strip() for c in ln.strip("|").split("|")])) for ln in body)}


def test_quality_and_mbu_columns(built):
    _, md = built
    gpu, cpu = _section(md, "tiny-gpt2"), _section(md, "tiny-llama")
    extra = ["kv_quantized_share", "mbu", "ppl", "ppl_delta", "agreement", "first_divergence"]
    assert _header(gpu)[-len(extra):] == extra
    # random weights: no quality columns even with stray values, and no mbu column (no row has one)
    assert not set(extra) & set(_header(cpu))
    rows = _table_rows(gpu)
    q = rows["quantized int4 (quanto) / sdpa"]
    assert (q["mbu"], q["ppl"], q["ppl_delta"], q["agreement"], q["first_divergence"], q["kv_quantized_share"]) == \
        ("0.050", "20.50", "+0.500", "87.5%", "12", "75.0%")
    assert rows["dynamic / sdpa"]["ppl_delta"] == "+0.000" and rows["dynamic / sdpa"]["kv_quantized_share"] == "–"
    assert rows["static / flash_attention_2"]["ppl"] == "–"  # the never-ok row keeps its place, empty
    # cold_x: the first call over a steady one (900 / 13 ms), empty without timings
    assert rows["dynamic / sdpa"]["cold_x"] == "69.2x" and rows["static / flash_attention_2"]["cold_x"] == "–"
    # the new images are linked and explained in the real setup only
    assert f"](mbu_{SLUG_GPU}.png)" in gpu and f"](quality_{SLUG_GPU}.png)" in gpu
    assert "quality_" not in cpu and "mbu_" not in cpu
    assert md.count("MBU (memory-bandwidth utilisation) = bandwidth_floor_ms / tpot_ms") == 1
    assert "far below 1" in gpu and "2000 GB/s" in gpu
    assert md.count("Quality against KV memory") == 1 and "Dynamic-cache perplexity: 20.00." in gpu


def test_quality_points():
    ok = report.select(pd.DataFrame([
        row(GPU, "2024-01-01T00:00:00+00:00", cache="dynamic", attn="eager", sdpa_backend="", kv_cache_mib=2.0),
        row(GPU, "2024-01-01T00:00:01+00:00", cache="dynamic", kv_cache_mib=4.0),
        row(GPU, "2024-01-01T00:00:02+00:00", cache="quantized", nbits=2, quant_backend="hqq", kv_cache_mib=1.0),
        row(GPU, "2024-01-01T00:00:03+00:00", cache="static", kv_cache_mib=8.0),
        row(GPU, "2024-01-01T00:00:04+00:00", cache="none", kv_cache_mib=0.0),
    ]))[1].sort_values("strategy")
    pts = report.quality_points(ok).set_index("strategy")["kv_saved_pct"].to_dict()
    # measured against the dynamic cache of the same attention path (sdpa: 4.0 MiB), not the eager one
    assert pts == {"dynamic / eager": 0.0, "dynamic / sdpa": 0.0, "none / sdpa": 100.0,
                   "quantized int2 (hqq) / sdpa": 75.0, "static / sdpa": -100.0}
    no_dyn = report.quality_points(ok[ok["cache"] != "dynamic"])
    assert no_dyn["kv_saved_pct"].isna().all() and list(no_dyn["kv_cache_mib"]) == [0.0, 1.0, 8.0]


def test_figures_only_where_values(tmp_path):
    s = tmp_path / "s"
    f = RunFile(s, "run-new")
    f.append(row(GPU, "2024-02-01T00:00:00+00:00", cache="dynamic"))  # real weights, no ppl, no mbu
    f.append(row(CPU, "2024-02-01T00:00:01+00:00", cache="dynamic", mbu=0.3, **FLOOR))  # random, mbu only
    names = {p.name for p in report.write_report(s, tmp_path / "o")}
    assert f"quality_{SLUG_GPU}.png" not in names and f"mbu_{SLUG_GPU}.png" not in names
    assert f"mbu_{SLUG_CPU}.png" in names and f"quality_{SLUG_CPU}.png" not in names
    md = (tmp_path / "o" / "report.md").read_text()
    assert "ppl" not in _header(_section(md, "tiny-gpt2")) and "mbu" not in _header(_section(md, "tiny-gpt2"))
    assert "mbu" in _header(_section(md, "tiny-llama"))


def test_table_sorted_by_strategy(built):
    _, md = built
    gpu_section = md.split("## tiny-gpt2")[1].split("## ")[0]
    labels = [ln.split("|")[1].strip() for ln in gpu_section.splitlines() if ln.startswith("| ") and "strategy" not in ln]
    assert labels == sorted(labels) and len(labels) == 4


def test_byte_identical(store, tmp_path):
    a = report.write_report(store, tmp_path / "a")
    with matplotlib.rc_context({"font.size": 20, "lines.linewidth": 5}):  # a user's rcParams must not leak in
        b = report.write_report(store, tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
        assert b"matplotlib" not in pa.read_bytes(), f"{pa.name} carries a version stamp"


def test_no_torch_import(store, tmp_path):
    res = run_without_torch("import sys, bench.report as r; r.write_report(sys.argv[1], sys.argv[2])",
                            [store, tmp_path / "o"], tmp_path)
    assert res.returncode == 0, res.stderr


def test_cli(store, tmp_path, capsys):
    assert report.main(["colour=red"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "colour" in err and "store=" in err and "out=" in err
    assert report.main([f"store={store}", f"out={tmp_path / 'cli'}"]) == 0
    assert (tmp_path / "cli" / "report.md").exists()


# ---------------------------------------------------------------- architectures side by side

QWEN = dict(weights="random", device="cuda", gpu="NVIDIA H100 80GB HBM3", dtype="bfloat16", batch=1,
            prompt_len=1024, new_tokens=32, torch="2.5.1", transformers="4.56.0")
ARCH_SLUG = "random_cuda_nvidia-h100-80gb-hbm3_bfloat16_b1_p1024_n32_dynamic_sdpa_auto_compile-auto_s0"
# 24 layers x 64 head_dim x 2 (K, V) x 2 bytes x 1055 cached tokens = 6.18 MiB per KV head
PER_HEAD = 24 * 64 * 2 * 2 * (1024 + 32 - 1) / 2**20


def _arch_store(s: Path, variants) -> None:
    f = RunFile(s, "run-arch")
    for i, (model, heads, tpot) in enumerate(variants):
        kv = None if heads is None else PER_HEAD * heads
        f.append(row({**QWEN, "model": model}, f"2024-03-01T00:00:0{i}+00:00", sha="cccc333", cache="dynamic",
                     kv_heads=heads, kv_cache_mib=kv, kv_theory_mib=kv, tpot_ms=tpot, tpot_p10_ms=tpot * 0.95,
                     tpot_p90_ms=tpot * 1.05, decode_tok_s=1000 / tpot, weights_mib=942.0, peak_mem_mib=1100.0))


# written in no particular order: the table sorts by kv_heads, most first
ARCH = [("qwen2.5-0.5b-mqa", 1, 18.0), ("qwen2.5-0.5b-mha", 14, 20.0), ("qwen2.5-0.5b", 2, 18.2)]


def _arch_rows(md: str) -> list[list[str]]:
    sec = md.split("## Architectures side by side")[1].split("\n## ")[0]
    body = [ln for ln in sec.splitlines() if ln.startswith("| ") and not ln.startswith("| model |")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in body]


def test_architectures(tmp_path):
    s = tmp_path / "s"
    _arch_store(s, ARCH)
    RunFile(s, "run-other").append(row(CPU, "2024-03-02T00:00:00+00:00", cache="dynamic", kv_heads=4))  # alone
    names = {p.name for p in report.write_report(s, tmp_path / "o")}
    assert {n for n in names if n.startswith("architectures_")} == {f"architectures_{ARCH_SLUG}.png"}
    assert (tmp_path / "o" / f"architectures_{ARCH_SLUG}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "o" / "report.md").read_text()
    assert md.count("## Architectures side by side") == 1 and f"](architectures_{ARCH_SLUG}.png)" in md
    rows = _arch_rows(md)
    assert [(r[0], r[1]) for r in rows] == [("qwen2.5-0.5b-mha", "14"), ("qwen2.5-0.5b", "2"),
                                            ("qwen2.5-0.5b-mqa", "1 (MQA)")]
    # KiB per cached token = kv_cache_mib * 1024 / (batch * (prompt + new - 1)): 6 KiB per KV head here
    assert [r[4] for r in rows] == ["84.00", "12.00", "6.00"]
    assert rows[0][5] == "20.00 (19.00–21.00)" and rows[0][6] == "50.0"
    # the caption states what the rows show: 14x the KV bytes, 1.11x the decode time
    cap = next(ln for ln in md.splitlines() if ln.startswith("From 14 KV heads"))
    assert "14.00× fewer" in cap and "(14.00× less)" in cap and "20.00 to 18.00 ms (1.11× less)" in cap
    assert "KV bytes scale with KV heads" in cap and "decode time only partly (1.11×)" in cap
    assert "not a like-for-like" not in cap
    # the setup sections are untouched: each model still has its own
    assert md.count("## qwen2.5-0.5b") == 3


def test_architectures_flags_unlike_models(tmp_path):
    s = tmp_path / "s"
    _arch_store(s, ARCH[:2])
    RunFile(s, "run-x").append(row({**QWEN, "model": "other-arch"}, "2024-03-03T00:00:00+00:00", cache="dynamic",
                                   kv_heads=4, kv_cache_mib=PER_HEAD * 8, kv_theory_mib=PER_HEAD * 8))
    report.write_report(s, tmp_path / "o")
    assert "not a like-for-like comparison" in (tmp_path / "o" / "report.md").read_text()


def test_no_architectures_without_groups(store, tmp_path):
    # the shared fixture has no kv_heads at all; then one kv_heads value only, and a null beside it
    for i, variants in enumerate(([], [("qwen2.5-0.5b", 2, 18.0), ("qwen2.5-0.5b-x", 2, 18.0),
                                       ("qwen2.5-0.5b-old", None, 18.0)])):
        s = tmp_path / f"s{i}"
        if variants:
            _arch_store(s, variants)
        else:
            s = store
        names = {p.name for p in report.write_report(s, tmp_path / f"o{i}")}
        assert not any(n.startswith("architectures_") for n in names)
        assert not any(p.name.startswith("architectures_") for p in (tmp_path / f"o{i}").iterdir())
        assert "Architectures side by side" not in (tmp_path / f"o{i}" / "report.md").read_text()


def test_architectures_byte_identical(tmp_path):
    s = tmp_path / "s"
    _arch_store(s, ARCH + [("qwen2.5-0.5b-gqa7", 7, 19.0)])
    a = report.write_report(s, tmp_path / "a")
    with matplotlib.rc_context({"font.size": 20, "lines.linewidth": 5}):
        b = report.write_report(s, tmp_path / "b")
    assert any(p.name.startswith("architectures_") for p in a)
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_cache_vs_no_cache_pairs_ratios_and_figure(tmp_path):
    """The headline comparison: cumulative time from step medians, ratio by token, one figure per setup."""
    long = {**GPU, "weights": "random", "prompt_len": 8, "new_tokens": 300}
    grow = [5.0 + 0.1 * i for i in range(299)]
    s = tmp_path / "s"
    f = RunFile(s, "r")
    for batch in (1, 4):
        f.append(row(long, "2024-03-01T00:00:00+00:00", cache="dynamic", batch=batch, ttft_ms=10.0,
                     step_ms=[5.0] * 299, e2e_ms=10.0 + 5.0 * 299))
        f.append(row(long, "2024-03-01T00:00:01+00:00", cache="none", batch=batch, ttft_ms=10.0, step_ms=grow,
                     e2e_ms=10.0 + sum(grow)))
    # a no-cache row with another attention path has no cached partner: no pair
    f.append(row(long, "2024-03-01T00:00:02+00:00", cache="none", attn="eager", step_ms=grow, e2e_ms=1.0))
    paths = report.write_report(s, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    sec = md.split("## KV cache vs no cache")[1].split("\n## ")[0]
    body = [ln for ln in sec.splitlines() if ln.startswith("| tiny-gpt2")]
    assert len(body) == 2  # batch 1 and 4 with sdpa; the lone eager row pairs with nothing
    cells = [c.strip() for c in body[0].strip("|").split("|")]
    head = [c.strip() for c in next(ln for ln in sec.splitlines() if ln.startswith("| model")).strip("|").split("|")]
    got = dict(zip(head, cells))
    assert got["batch"] == "1" and got["attn"] == "sdpa"
    assert got["e2e cache (s)"] == "1.50" and got["e2e no cache (s)"] == "5.96" and got["ratio"] == "3.96x"
    assert got["ratio @100"] == "1.96" and got["ratio @250"] == f"{(10 + sum(grow[:249])) / (10 + 5 * 249):.2f}"
    assert "ratio @500" not in head  # no row generated that many
    # median of the last 20 steps: 5 + 0.1 * median(279..298)
    assert got["last 20 steps cache (ms)"] == "5.00" and got["last 20 steps no cache (ms)"] == "33.85"
    fig = [p for p in paths if p.name.startswith("kv_vs_nocache_")]
    assert [p.name for p in fig] == ["kv_vs_nocache_tiny-gpt2_random_cuda_nvidia-h100-80gb-hbm3_float16_ball_p8_n300.png"]
    assert f"]({fig[0].name})" in md


def test_a_row_written_without_a_loaded_model_joins_its_setup(tmp_path):
    """A crashed worker's row has no loaded dtype or GPU: it belongs in its model's one setup, not its own."""
    s = tmp_path / "s"
    f = RunFile(s, "r")
    f.append(row(GPU, "2024-03-01T00:00:00+00:00", cache="dynamic", run_id="r"))
    crashed = {**GPU, "weights": "auto", "dtype": "", "gpu": ""}
    f.append(Record(**crashed, run_id="r", cache="offloaded_static", attn="sdpa", status="error",
                    error="the worker process died during this cell (signal SIGSEGV)",
                    timestamp="2024-03-01T00:00:01+00:00").as_row())
    # another model with no loaded row to borrow from keeps a setup of its own
    f.append(Record(**{**crashed, "model": "other"}, run_id="r", cache="static", status="error", error="boom",
                    timestamp="2024-03-01T00:00:02+00:00").as_row())
    # a later run loads tiny-gpt2 in another dtype: two setups fit, and a crashed row of that run joins its own
    g = RunFile(s, "r2")
    g.append(row({**GPU, "dtype": "float32"}, "2024-03-02T00:00:00+00:00", cache="dynamic", run_id="r2"))
    g.append(Record(**crashed, run_id="r2", cache="offloaded", attn="sdpa", status="error", error="SIGSEGV too",
                    timestamp="2024-03-02T00:00:01+00:00").as_row())
    report.write_report(s, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    heads = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert "## tiny-gpt2, real weights, cuda (NVIDIA H100 80GB HBM3), float16, batch 1, prompt 16 tok, 9 new tok" in heads
    assert not any(h.startswith("## tiny-gpt2, auto weights") for h in heads)
    assert any(h.startswith("## other, auto weights") for h in heads)
    rows = _table_rows(_section(md, "tiny-gpt2"))
    assert rows["offloaded_static / sdpa"]["status"] == "error" and "offloaded / sdpa" not in rows
    fp32 = md.split("## tiny-gpt2, real weights, cuda (NVIDIA H100 80GB HBM3), float32")[1].split("\n## ")[0]
    assert _table_rows(fp32)["offloaded / sdpa"]["status"] == "error"
    assert load(s).query("cache == 'offloaded_static'")["dtype"].tolist() == [""]  # the store is untouched


def test_compiled_column_says_partly_when_dynamo_broke_the_graph(tmp_path):
    """compiled: yes only for a whole graph; breaks or a recompile-limit hit make it 'partly (...)'. Rows from
    before these columns existed (no figures) stay a plain yes. Paged rows name their block size."""
    s = tmp_path / "s"
    f = RunFile(s, "r")
    f.append(row(GPU, "2024-03-01T00:00:00+00:00", cache="static", compiled=True, graph_breaks=0,
                 recompile_limit_hits=0))
    f.append(row(GPU, "2024-03-01T00:00:01+00:00", cache="static", attn="flash_attention_2", compiled=True,
                 graph_breaks=8, recompile_limit_hits=1))
    f.append(row(GPU, "2024-03-01T00:00:02+00:00", cache="static", attn="eager", compiled=True, graph_breaks=1))
    f.append(row(GPU, "2024-03-01T00:00:03+00:00", cache="offloaded_static", compiled=True))
    f.append(row(GPU, "2024-03-01T00:00:04+00:00", cache="dynamic", graph_breaks=0, recompile_limit_hits=0))
    f.append(row(GPU, "2024-03-01T00:00:05+00:00", cache="paged", block_size=256))
    report.write_report(s, tmp_path / "out")
    rows = _table_rows(_section((tmp_path / "out" / "report.md").read_text(), "tiny-gpt2"))
    got = {k: v["compiled"] for k, v in rows.items()}
    assert got == {"static / sdpa": "yes",
                   "static / flash_attention_2": "partly (8 graph breaks, recompile limit hit)",
                   "static / eager": "partly (1 graph break)",
                   "offloaded_static / sdpa": "yes",
                   "dynamic / sdpa": "no",
                   "paged (256-token blocks) / sdpa": "no"}
