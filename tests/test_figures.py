"""bench.report's figures from synthetic rows: what each draws (Drawn.data), nothing clipped, byte-identical PNGs."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from bench.store.schema import COLUMNS, Record
from bench.report import fig_compare, fig_memory, fig_pairs, fig_quality, fig_setup, fig_steps, fmt
from bench.report import selection as select
from tests.conftest import run_without_torch

GPU = dict(model="llama-2-7b", weights="random", device="cuda", gpu="NVIDIA H100 80GB HBM3", dtype="bfloat16",
           batch=8, prompt_len=64, new_tokens=17, torch="2.11.0", transformers="5.17.0")
CPU = dict(model="smollm2-135m", weights="real", device="cpu", gpu="", dtype="float32", batch=1, prompt_len=128,
           new_tokens=33, torch="2.11.0", transformers="5.17.0")
TITLE = "llama-2-7b, RANDOM WEIGHTS, cuda (NVIDIA H100 80GB HBM3), bfloat16, batch 8, prompt 64 + 17 new tokens"


def ok(base, n=0, **kw) -> dict:
    """An ok row with 8 raw samples per timing and per-step medians."""
    tpot, ttft = kw.pop("tpot_ms", 10.0), kw.pop("ttft_ms", 50.0)
    spread = np.linspace(0.95, 1.05, 8)
    figures = dict(attn="sdpa", sdpa_backend="auto", compile="auto", repeats=8, ttft_ms=ttft, tpot_ms=tpot,
                   e2e_ms=ttft + 16 * tpot, decode_tok_s=base["batch"] * 1000 / tpot,
                   ttft_samples_ms=list(ttft * spread), tpot_samples_ms=list(tpot * spread),
                   e2e_samples_ms=list((ttft + 16 * tpot) * spread), step_ms=[tpot] * (base["new_tokens"] - 1),
                   weights_mib=12000.0, kv_cache_mib=4000.0, kv_theory_mib=4000.0, peak_mem_mib=20000.0,
                   mbu=0.3, bandwidth_gb_s=3000.0, timestamp=f"2026-01-01T00:00:{n:02d}+00:00", run_id="run-a")
    return record({**base, **figures, **kw})


def record(fields: dict) -> dict:
    """A row; fields that are not Record columns are the strategy's settings (e.g. nbits)."""
    return Record(**{k: v for k, v in fields.items() if k in COLUMNS},
                  settings={k: v for k, v in fields.items() if k not in COLUMNS}).as_row()


def failed(base, n, status, error, **kw) -> dict:
    return record({**base, "attn": "sdpa", "run_id": "run-a", "status": status, "error": error,
                   "timestamp": f"2026-01-01T00:01:{n:02d}+00:00", **kw})


def setup_rows(rows: list[dict]) -> pd.DataFrame:
    """The rows as the report sees them: prepared, picked, one setup."""
    groups = select.setups(select.pick(select.prepare(pd.DataFrame(rows))).shown)
    assert len(groups) == 1
    return groups[0][1]


@pytest.fixture(scope="module")
def gpu_rows() -> pd.DataFrame:
    return setup_rows([
        ok(GPU, 0, cache="dynamic", strategy="dynamic", reference=True, cuda_alloc_conf="expandable_segments:True"),
        ok(GPU, 1, cache="none", strategy="none", holds_cache=False, kv_cache_mib=0.0, kv_theory_mib=0.0,
           tpot_ms=30.0, step_ms=[10.0 + 2 * i for i in range(16)], peak_mem_mib=15000.0),
        ok(GPU, 2, cache="offloaded", strategy="offloaded", kv_host_mib=3800.0, peak_mem_mib=13000.0, tpot_ms=40.0),
        ok(GPU, 3, cache="quantized", strategy="quantized int4 (quanto)", nbits=4, kv_cache_mib=1100.0,
           kv_theory_mib=1000.0, peak_mem_mib=14000.0, disturbed=True, disturbed_why="spread"),
        failed(GPU, 4, "oom", "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", cache="static",
               strategy="static"),
        failed(GPU, 5, "unavailable", "attn=flash_attention_2 needs the flash-attn package; install it",
               cache="paged", strategy="paged"),
        failed(GPU, 6, "error", "the worker process died during this cell (signal SIGSEGV); see the log",
               cache="offloaded_static", strategy="offloaded_static"),
    ])


@pytest.fixture(scope="module")
def quality_rows() -> pd.DataFrame:
    q = dict(quality_tokens=608, kv_host_mib=None)
    return setup_rows([
        ok(CPU, 0, cache="dynamic", strategy="dynamic", reference=True, kv_cache_mib=8.0, ppl=10.0, ppl_delta=0.0,
           agreement=1.0, first_divergence=64, **q),
        ok(CPU, 1, cache="quantized", strategy="quantized int4 (quanto)", nbits=4, kv_cache_mib=3.5, ppl=10.23,
           ppl_delta=0.23, agreement=0.08, first_divergence=1, **q),
        ok(CPU, 2, cache="quantized", strategy="quantized int2 (quanto)", nbits=2, kv_cache_mib=3.2, ppl=149.0,
           ppl_delta=139.0, agreement=0.04, first_divergence=1, **q),
        ok(CPU, 3, cache="none", strategy="none", holds_cache=False, kv_cache_mib=0.0, ppl=10.0,
           ppl_delta=2.4e-6, agreement=1.0, first_divergence=64, **q),
    ])


@pytest.fixture(autouse=True)
def pinned():
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(fmt.RC)
        yield


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved during the test, kept open for layout checks."""
    kept, save = [], fmt.save
    monkeypatch.setattr(fmt, "save", lambda fig, path: (kept.append(fig), save(fig, path))[1])
    return kept


def assert_inside(fig) -> None:
    """The suptitle, and everything drawn that takes part in the layout (titles, labels, ticks, annotations,
    legends), lie inside the figure: nothing clipped."""
    fig.draw_without_rendering()
    r = fig.canvas.get_renderer()
    title = fig.get_suptitle()
    assert title
    inside = lambda e, box: box.x0 - 1 <= e.x0 and e.x1 <= box.x1 + 1 and box.y0 - 1 <= e.y0 and e.y1 <= box.y1 + 1
    for t in fig.texts:  # suptitle, the shared x and y labels, figure notes
        assert inside(t.get_window_extent(r), fig.bbox), f"clipped: {t.get_text()!r}"
    tight = fig.get_tightbbox(r)  # inches
    assert inside(tight, fig.bbox_inches), f"something drawn lies outside the figure: {tight} vs {fig.bbox_inches}"


def by_label(items) -> dict:
    return {d["label"]: d for d in items}


# ---------------------------------------------------------------- latency, memory, MBU

def test_latency_bars_placeholders_and_disturbed(gpu_rows, tmp_path, figures):
    d = fig_setup.latency(gpu_rows, TITLE, tmp_path / "latency.png").data
    bars = by_label(d["bars"])
    assert set(bars) == {"dynamic / sdpa", "none / sdpa", "offloaded / sdpa", "quantized int4 (quanto) / sdpa"}
    dyn = bars["dynamic / sdpa"]
    assert dyn["tpot_ms"]["value"] == 10.0 and dyn["ttft_ms"]["value"] == 50.0
    r = gpu_rows[gpu_rows["label"] == "dynamic / sdpa"].iloc[0]
    assert (dyn["tpot_ms"]["lo"], dyn["tpot_ms"]["hi"]) == pytest.approx(select.interval(r, "tpot_ms"))
    assert dyn["tpot_ms"]["lo"] < 10.0 < dyn["tpot_ms"]["hi"]  # a real interval from the raw samples
    assert dyn["decode_tok_s"]["lo"] == pytest.approx(8000 / dyn["tpot_ms"]["hi"])
    assert bars["quantized int4 (quanto) / sdpa"]["disturbed"] and not dyn["disturbed"]
    assert bars["quantized int4 (quanto) / sdpa"]["hatched"] and not dyn["hatched"]  # never drawn as clean
    assert any("[disturbed]" in lab for lab in d["rows"])
    holders = by_label(d["placeholders"])
    assert {k: v["status"] for k, v in holders.items()} == {
        "static / sdpa": "oom", "paged / sdpa": "unavailable", "offloaded_static / sdpa": "error"}
    assert holders["static / sdpa"]["text"].startswith("OOM: CUDA out of memory")
    assert len(d["rows"]) == len(gpu_rows) == 7  # every cell keeps its row
    assert_inside(figures[-1])


def test_memory_keeps_host_kv_off_the_device(gpu_rows, tmp_path, figures):
    d = fig_memory.memory(gpu_rows, TITLE, tmp_path / "memory.png").data
    assert d["panels"] == ["device", "host"] and d["unit"] == "GiB"
    dev = by_label(d["device"])
    off = dev["offloaded / sdpa"]
    assert off["device_kv_mib"] == pytest.approx(200.0)  # 4000 held, 3800 of it on the host
    assert off["peak_mem_mib"] == 13000.0  # the real device peak, not weights + the whole cache
    assert off["weights_mib"] + off["device_kv_mib"] + off["other_mib"] == pytest.approx(13000.0)
    assert off["kv_theory_mib"] is None  # the whole-cache prediction is drawn on the host panel
    for e in dev.values():
        assert e["weights_mib"] + e["device_kv_mib"] <= e["peak_mem_mib"]
    assert [h["label"] for h in d["host"]] == ["offloaded / sdpa"] and d["host"][0]["kv_host_mib"] == 3800.0
    assert dev["dynamic / sdpa"]["kv_theory_mib"] == 4000.0
    assert {p["status"] for p in d["placeholders"]} == {"oom", "unavailable", "error"}
    alloc = [lab for lab in d["rows"] if "expandable_segments:True" in lab]
    assert alloc == ["dynamic / sdpa\nPYTORCH_CUDA_ALLOC_CONF: expandable_segments:True"]
    assert_inside(figures[-1])


def test_memory_without_host_kv_has_one_panel(gpu_rows, tmp_path):
    rows = gpu_rows[gpu_rows["label"] != "offloaded / sdpa"]
    d = fig_memory.memory(rows, TITLE, tmp_path / "m.png").data
    assert d["panels"] == ["device"] and d["host"] == []


def test_mbu(gpu_rows, tmp_path, figures):
    d = fig_steps.mbu(gpu_rows, TITLE, tmp_path / "mbu.png").data
    assert {b["label"]: b["mbu"] for b in d["bars"]}["dynamic / sdpa"] == 0.3
    assert len(d["placeholders"]) == 3
    assert_inside(figures[-1])


# ---------------------------------------------------------------- per-step latency

def test_steps_one_panel_per_cached_row_with_the_uncached_line(gpu_rows, tmp_path, figures):
    d = fig_steps.steps(gpu_rows, TITLE, tmp_path / "steps.png").data
    panels = by_label(d["panels"])
    assert set(panels) == {"dynamic / sdpa", "offloaded / sdpa", "quantized int4 (quanto) / sdpa"}
    for p in panels.values():
        kinds = sorted((ln["label"], ln["cached"]) for ln in p["lines"])
        assert kinds == sorted([(p["label"], True), ("none / sdpa", False)])
        assert p["lines"][0]["x"][0] == 64 + 1  # prompt_len + position + 1
    assert panels["quantized int4 (quanto) / sdpa"]["disturbed"]
    assert d["left_out"] == "not drawn: 1 OOM, 1 error, 1 unavailable"
    assert d["yscale"] == "linear"  # step times within LOG_SPAN of each other
    ax = figures[-1].axes
    assert len({a.get_ylim() for a in ax if a.get_visible()}) == 1  # one y scale
    assert_inside(figures[-1])


def test_steps_one_row_of_panels_on_a_log_scale_keeps_its_labels_inside(gpu_rows, tmp_path, figures):
    """An uncached line far above the cached ones puts the panels on a log scale, whose longer y label once ran
    off a figure with one row of panels."""
    rows = gpu_rows.copy()
    none = rows.index[rows["cache"] == "none"][0]
    rows.at[none, "step_ms"] = [1000.0 + 50 * i for i in range(16)]
    d = fig_steps.steps(rows, TITLE, tmp_path / "steps.png").data
    assert d["yscale"] == "log" and len(d["panels"]) <= 4  # one row
    assert_inside(figures[-1])


# ---------------------------------------------------------------- quality

def test_quality_int4_stands_clear_of_zero_next_to_int2(quality_rows, tmp_path, figures):
    d = fig_quality.quality(quality_rows, "smollm2-135m, real weights", tmp_path / "q.png").data
    pts = by_label(d["points"])
    int4, int2 = pts["quantized int4 (quanto) / sdpa"], pts["quantized int2 (quanto) / sdpa"]
    assert d["yscale"]["name"] == "symlog"
    assert int4["y_frac"] - d["zero_frac"] > 0.15  # a visible margin, not flattened onto the zero line
    assert int2["y_frac"] - int4["y_frac"] > 0.15
    assert abs(pts["none / sdpa"]["y_frac"] - d["zero_frac"]) < 0.05  # 2.4e-6 reads as no change
    assert d["x"] == "kv_saved_pct"
    assert int4["x"] == pytest.approx(100 * (1 - 3.5 / 8.0)) and pts["none / sdpa"]["x"] == 100.0
    assert pts["dynamic / sdpa"]["reference"] and pts["dynamic / sdpa"]["x"] == 0.0
    assert int4["first_divergence"] == 1 and int4["agreement"] == 0.08
    assert "drifts" in figures[-1].axes[1].get_title()  # agreement is explained in the figure
    assert_inside(figures[-1])


def test_quality_none_without_quality_figures(gpu_rows, tmp_path):
    assert fig_quality.quality(gpu_rows, TITLE, tmp_path / "q.png") is None


# ---------------------------------------------------------------- compare

def cells(n: int) -> pd.DataFrame:
    verdicts = ["slower", "faster", "within noise", "disturbed", "no interval"]
    ratio = {"slower": 1.2, "faster": 0.8, "within noise": 1.01, "disturbed": 1.3, "no interval": 0.97}
    out = []
    for i in range(n):
        v = verdicts[i % 5]
        r = ratio[v]
        lo, hi = (math.nan, math.nan) if v == "no interval" else (r * 0.95, r * 1.05)
        out.append({"setup": f"setup {i % 3}", "label": f"cell {i:03d}", "ratio": r, "lo": lo, "hi": hi,
                    "verdict": v})
    return pd.DataFrame(out).sort_values(["setup", "label"], kind="stable")


def test_compare_ratios_each_verdict(tmp_path, figures):
    d = fig_compare.ratios(cells(10), 0.05, False, "tpot_ms: base vs head", tmp_path / "c.png").data
    assert d["band"] == pytest.approx([1 / 1.05, 1.05]) and d["calibrated"] is False
    assert sorted({c["verdict"] for c in d["cells"]}) == sorted(
        ["slower", "faster", "within noise", "disturbed", "no interval"])
    assert len(d["cells"]) == 10 and len(d["pages"]) == 1
    ni = [c for c in d["cells"] if c["verdict"] == "no interval"][0]
    assert math.isnan(ni["lo"]) and "[" not in ni["text"]
    assert d["xlim"][0] < 0.8 * 0.95 and d["xlim"][1] > 1.3 * 1.05  # every interval in view
    assert "UNCALIBRATED" in d["titles"][0]
    assert_inside(figures[-1])


def test_compare_many_cells_split_into_pages(tmp_path, figures):
    d = fig_compare.ratios(cells(100), 0.03, True, "e2e", tmp_path / "c.png").data
    assert len(d["pages"]) == 2 and len(d["cells"]) == 100
    assert sorted(c["label"] for c in d["cells"]) == sorted(cells(100)["label"])  # each once
    assert max(c["line"] for c in d["cells"]) < fig_compare.ROWS_PER_PAGE
    for fig in figures:
        assert_inside(fig)


# ---------------------------------------------------------------- pairs and architectures

def test_cache_vs_none_pairs_and_ratio(gpu_rows, tmp_path, figures):
    pp = fig_pairs.pairs(gpu_rows)
    assert len(pp) == 1 and pp.iloc[0]["label_kv"] == "dynamic / sdpa" and pp.iloc[0]["label_nokv"] == "none / sdpa"
    d = fig_pairs.cache_vs_none(pp, TITLE, tmp_path / "p.png").data
    lines = {ln["kind"]: ln for ln in d["lines"]}
    assert set(lines) == {"cache", "no cache", "ratio"}
    kv = 50.0 + np.concatenate([[0.0], np.cumsum([10.0] * 16)])
    nokv = 50.0 + np.concatenate([[0.0], np.cumsum([10.0 + 2 * i for i in range(16)])])
    assert lines["cache"]["seconds"] == pytest.approx(list(kv / 1e3))
    assert lines["ratio"]["ratio"] == pytest.approx(list(nokv / kv))
    assert_inside(figures[-1])
    sec = fig_pairs.cache_vs_none_section(pp, tmp_path)
    assert sec.paths and any("dynamic" not in ln and "sdpa" in ln for ln in sec.lines)


def test_architectures(tmp_path, figures):
    base = {**GPU, "model": "m"}
    rows = select.prepare(pd.DataFrame([
        ok({**base, "model": "qwen-mha"}, 0, cache="dynamic", reference=True, kv_heads=14, kv_cache_mib=89.0),
        ok({**base, "model": "qwen-mqa"}, 1, cache="dynamic", reference=True, kv_heads=1, kv_cache_mib=6.4),
        ok({**base, "model": "other", "batch": 1}, 2, cache="dynamic", reference=True, kv_heads=2)]))
    groups = fig_pairs.architecture_groups(rows)
    assert len(groups) == 1 and list(groups[0][1]["model"]) == ["qwen-mha", "qwen-mqa"]
    d = fig_pairs.architectures(groups[0][1], fig_pairs.arch_title(groups[0][0]), tmp_path / "a.png").data
    assert [(r["model"], r["kv_heads"], r["kv_cache_mib"]) for r in d["rows"]] == [
        ("qwen-mha", 14.0, 89.0), ("qwen-mqa", 1.0, 6.4)]
    assert_inside(figures[-1])


# ---------------------------------------------------------------- every figure: reproducible, no torch

def draw_all(gpu_rows, quality_rows, out) -> list:
    out.mkdir()
    pp = fig_pairs.pairs(gpu_rows)
    return [fig_setup.latency(gpu_rows, TITLE, out / "l.png"), fig_memory.memory(gpu_rows, TITLE, out / "m.png"),
            fig_steps.mbu(gpu_rows, TITLE, out / "b.png"), fig_steps.steps(gpu_rows, TITLE, out / "s.png"),
            fig_quality.quality(quality_rows, "q", out / "q.png"),
            fig_compare.ratios(cells(12), 0.05, True, "c", out / "c.png"),
            fig_pairs.cache_vs_none(pp, TITLE, out / "p.png")]


def test_byte_identical_twice(gpu_rows, quality_rows, tmp_path):
    a = draw_all(gpu_rows, quality_rows, tmp_path / "a")
    b = draw_all(gpu_rows.iloc[::-1], quality_rows.iloc[::-1], tmp_path / "b")  # row order does not matter
    for x, y in zip(a, b):
        assert x.path.read_bytes() == y.path.read_bytes(), x.path.name
        assert repr(x.data).replace("/b/", "/a/") == repr(y.data).replace("/b/", "/a/")


def test_figures_import_without_torch(tmp_path):
    mods = ", ".join(f"bench.report.{m}" for m in ("fig_setup", "fig_steps", "fig_quality", "fig_compare", "fig_pairs",
                                                   "fig_memory", "fig_capacity", "fig_tradeoff", "answers", "front",
                                                   "pages", "margins", "facts")) + ", bench.config.gpus"
    res = run_without_torch(f"import sys, {mods}", [], tmp_path)
    assert res.returncode == 0, res.stderr


def test_the_clipping_check_catches_an_unwrapped_title(gpu_rows, tmp_path, figures, monkeypatch):
    """Guards the guard: without fmt.wrap a long title runs past the figure, and assert_inside says so."""
    monkeypatch.setattr(fig_setup, "title", lambda fig, text, width: fig.suptitle(text * 3).get_text())
    fig_setup.latency(gpu_rows, TITLE, tmp_path / "l.png")
    with pytest.raises(AssertionError):
        assert_inside(figures[-1])
