"""The decision report's figures: what each one plots (Drawn.data), drawn inside the figure, from synthetic rows.

Throughput against batch with the card's capacity and the OOMs, decode time against memory with its Pareto
front, the bandwidth floor on the latency figure, and CPU memory drawn as what it is (never device memory)."""
from __future__ import annotations

import math

import pytest

from bench.config import gpus
from bench.report import fig_capacity, fig_memory, fig_setup, fig_tradeoff, selection as select
from tests import test_figures as tf
from tests.test_figures import CPU, GPU, TITLE, assert_inside, failed, ok, setup_rows

pinned, figures = tf.pinned, tf.figures  # the same fixtures: matplotlib pinned, every saved figure kept


def family_rows(gpu: str = "NVIDIA H200") -> list:
    base = {**GPU, "gpu": gpu, "new_tokens": 17}
    out = []
    for n, b in enumerate((8, 32, 96)):
        g = {**base, "batch": b}
        out.append(ok(g, n, cache="dynamic", strategy="dynamic", reference=True, tpot_ms=10.0 + b / 8,
                      peak_mem_mib=13000.0 + 600 * b, peak_predicted_mib=13000.0 + 620 * b))
        out.append(ok(g, 10 + n, cache="quantized", strategy="quantized int4 (quanto)", nbits=4, tpot_ms=80.0,
                      peak_mem_mib=13000.0 + 200 * b))
    out.append(failed({**base, "batch": 160}, 30, "oom", "OutOfMemoryError: CUDA out of memory", cache="dynamic",
                      strategy="dynamic", reference=True))
    out.append(ok({**base, "batch": 160}, 31, cache="quantized", strategy="quantized int4 (quanto)", nbits=4,
                  tpot_ms=85.0, peak_mem_mib=45000.0, disturbed=True, disturbed_why="spread"))
    return out


def shown(rows: list):
    return select.pick(select.prepare(__import__("pandas").DataFrame(rows))).shown


def test_throughput_against_batch_with_capacity_and_oom(tmp_path, figures):
    fams = fig_capacity.families(shown(family_rows()))
    assert len(fams) == 1
    s, rows = fams[0]
    d = fig_capacity.throughput(rows, s, tmp_path / "t.png").data
    lines = {ln["label"]: ln for ln in d["lines"]}
    assert lines["dynamic / sdpa"]["batch"] == [8, 32, 96]
    assert lines["dynamic / sdpa"]["decode_tok_s"] == pytest.approx([8 * 1000 / 11, 32 * 1000 / 14, 96 * 1000 / 22])
    assert lines["quantized int4 (quanto) / sdpa"]["flagged"] == [False, False, False, True]  # the disturbed b160
    assert d["oom"] == [{"label": "dynamic / sdpa", "batch": 160}]
    assert d["capacity_gib"] == pytest.approx(gpus.GPU_MEMORY_GIB["h200"])
    pred = [p for p in d["peaks"] if p["kind"] == "predicted"]
    assert [p["peak_gib"] for p in pred] == pytest.approx([(13000 + 620 * b) / 1024 for b in (8, 32, 96)])
    assert_inside(figures[-1])


def test_throughput_without_a_known_gpu_has_no_capacity(tmp_path, figures):
    s, rows = fig_capacity.families(shown(family_rows("Some Future GPU")))[0]
    d = fig_capacity.throughput(rows, s, tmp_path / "t.png").data
    assert d["capacity_gib"] is None and d["oom"] and len(figures[-1].axes) == 1
    assert_inside(figures[-1])


def test_gpu_capacity_by_torch_name():
    assert gpus.capacity("NVIDIA H100 80GB HBM3") == ("h100", gpus.GPU_MEMORY_GIB["h100"])
    assert gpus.capacity("h200")[0] == "h200" and gpus.capacity("") is None and gpus.capacity("GB300") is None


def tradeoff_rows() -> list:
    return [ok(GPU, 0, cache="dynamic", strategy="dynamic", reference=True, tpot_ms=10.0, peak_mem_mib=20000.0),
            ok(GPU, 1, cache="static", strategy="static", tpot_ms=8.0, peak_mem_mib=21000.0),
            ok(GPU, 2, cache="quantized", strategy="quantized int4 (quanto)", nbits=4, tpot_ms=30.0,
               peak_mem_mib=15000.0),
            # less device memory than anything, but its KV lives in host memory: 13000 + 6000 in all
            ok(GPU, 3, cache="offloaded", strategy="offloaded", tpot_ms=200.0, peak_mem_mib=13000.0,
               kv_host_mib=6000.0),
            # faster than its own bandwidth floor: drawn, flagged, never on the front
            ok(GPU, 4, cache="quantized", strategy="quantized int2 (quanto)", nbits=2, tpot_ms=2.0,
               peak_mem_mib=14000.0, bandwidth_floor_ms=3.0, mbu=1.5),
            ok(GPU, 5, cache="none", strategy="none", holds_cache=False, tpot_ms=9.0, peak_mem_mib=25000.0,
               disturbed=True, disturbed_why="spread")]


def test_tradeoff_front_counts_host_memory_and_never_a_flagged_row(tmp_path, figures):
    rows = setup_rows(tradeoff_rows())
    d = fig_tradeoff.tradeoff(rows, TITLE, tmp_path / "t.png").data
    pts = {p["label"]: p for p in d["points"]}
    assert pts["offloaded / sdpa"]["x"] == 19000.0 and pts["offloaded / sdpa"]["host_mib"] == 6000.0
    assert d["front"] == ["quantized int4 (quanto) / sdpa", "dynamic / sdpa", "static / sdpa"]
    assert not pts["quantized int2 (quanto) / sdpa"]["clean"] and not pts["none / sdpa"]["clean"]
    assert math.isnan(pts["dynamic / sdpa"]["floor_ms"])  # no floor in that row: none drawn
    assert d["unit"] == "GiB" and d["x"] == "memory"
    assert_inside(figures[-1])


def test_tradeoff_on_a_cpu_uses_kv_bytes_or_the_cells_own_rss(tmp_path, figures):
    rows = [ok(CPU, 0, cache="dynamic", strategy="dynamic", reference=True, kv_cache_mib=8.0, peak_mem_mib=900.0),
            ok(CPU, 1, cache="quantized", strategy="quantized int4 (quanto)", nbits=4, kv_cache_mib=3.0,
               peak_mem_mib=2300.0, tpot_ms=12.0)]
    d = fig_tradeoff.tradeoff(setup_rows(rows), "cpu", tmp_path / "t.png").data
    assert d["x"] == "kv" and {p["x"] for p in d["points"]} == {8.0, 3.0}  # never the worker's RSS
    assert "no per-cell memory figure" in figures[-1].axes[0].get_xlabel()
    own = [dict(r, peak_rss_cell_mib=v) for r, v in zip(rows, (600.0, 550.0))]
    d = fig_tradeoff.tradeoff(setup_rows(own), "cpu", tmp_path / "t2.png").data
    assert d["x"] == "memory" and {p["x"] for p in d["points"]} == {600.0, 550.0}
    assert_inside(figures[-1])


def test_latency_draws_each_rows_bandwidth_floor_and_names_its_interval(tmp_path, figures):
    rows = setup_rows(tradeoff_rows())
    d = fig_setup.latency(rows, TITLE, tmp_path / "l.png").data
    bars = {b["label"]: b for b in d["bars"]}
    assert bars["quantized int2 (quanto) / sdpa"]["below_floor"] and bars["quantized int2 (quanto) / sdpa"]["floor_ms"] == 3.0
    assert not bars["dynamic / sdpa"]["below_floor"]
    assert {b["interval"] for b in bars.values()} == {"ci"}  # 8 raw samples each
    texts = [t.get_text() for t in figures[-1].axes[1].texts]
    assert any("BELOW FLOOR" in t for t in texts) and any("CI, n=8" in t for t in texts)
    assert_inside(figures[-1])


def test_cpu_memory_is_never_drawn_as_device_memory(tmp_path, figures):
    rows = [ok(CPU, 0, cache="dynamic", strategy="dynamic", reference=True, kv_cache_mib=8.0, peak_mem_mib=900.0,
               weights_mib=500.0),
            ok(CPU, 1, cache="quantized", strategy="quantized int4 (quanto)", nbits=4, kv_cache_mib=3.0,
               peak_mem_mib=2300.0, weights_mib=500.0)]
    d = fig_memory.memory(setup_rows(rows), "cpu", tmp_path / "m.png").data
    assert d["panels"] == ["held", "process RSS"]
    assert [(h["label"], h["weights_mib"] + h["kv_cache_mib"]) for h in d["held"]] == [
        ("dynamic / sdpa", 508.0), ("quantized int4 (quanto) / sdpa", 503.0)]
    assert [(r["mib"], r["own"], r["order"]) for r in d["rss"]] == [(900.0, False, 1), (2300.0, False, 2)]
    words = d["title"] + " ".join(a.get_xlabel() for a in figures[-1].axes)
    assert "device" not in words.replace("no device memory", "") and "not this cell" not in d["title"]
    assert "grows with the cells run before" in d["title"]
    assert_inside(figures[-1])
    own = [dict(r, peak_rss_cell_mib=v) for r, v in zip(rows, (600.0, 650.0))]
    d = fig_memory.memory(setup_rows(own), "cpu", tmp_path / "m2.png").data
    assert d["panels"] == ["held", "cell RSS"] and [r["mib"] for r in d["rss"]] == [600.0, 650.0]
    assert_inside(figures[-1])


def test_step_latency_panels_carry_the_bandwidth_floor(tmp_path, figures):
    from bench.report import fig_steps

    rows = setup_rows([ok(GPU, 0, cache="dynamic", strategy="dynamic", reference=True, bandwidth_floor_ms=4.0),
                       ok(GPU, 1, cache="static", strategy="static", tpot_ms=6.0)])
    d = fig_steps.steps(rows, TITLE, tmp_path / "s.png").data
    assert {p["label"]: p["floor_ms"] for p in d["panels"]} == {"dynamic / sdpa": 4.0, "static / sdpa": None}
    assert figures[-1].axes[0].get_ylim()[0] <= 4.0  # the floor is in view
    assert_inside(figures[-1])
