"""bench.compare on two synthetic stores with planted changes: verdicts, matching, unmatched cells, filters,
reproducibility, no torch, bad arguments."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

from bench import compare as cmp
from tests.conftest import run_without_torch
from bench.record import CELL_KEYS, Record
from bench.store import RunFile, load

ROOT = Path(__file__).resolve().parent.parent
GPU = dict(model="tiny-gpt2", weights="real", device="cuda", dtype="float16", batch=1, prompt_len=16, new_tokens=9)
CPU = dict(model="tiny-llama", weights="random", device="cpu", dtype="float32", batch=2, prompt_len=64, new_tokens=32)
BASE_ENV = dict(gpu="NVIDIA H100 80GB HBM3", torch="2.5.1", transformers="4.56.0", git_sha="aaaa1111cccc",
                run_id="run-base")
HEAD_ENV = dict(gpu="NVIDIA H200", torch="2.6.0", transformers="4.57.0", git_sha="bbbb2222dddd-dirty",
                run_id="run-head")
SLUG_GPU = "tiny-gpt2_real_cuda_nvidia-h100-80gb-hbm3-vs-nvidia-h200_float16_b1_p16_n9"
SLUG_CPU = "tiny-llama_random_cpu_nogpu_float32_b2_p64_n32"
QUANT = dict(cache="quantized", nbits=4, quant_backend="quanto", residual_length=128, q_group_size=64, axis_key=0,
             axis_value=0)
LABEL_Q4 = "quantized int4 (quanto) / sdpa"
LABEL_CPU = "dynamic / sdpa [seed=0]"  # head also has seed=1 of it: labels tell the two apart


def row(setup, env, ts, *, cache="dynamic", attn="sdpa", tpot=(9.9, 10.0, 10.1), e2e=(84.0, 85.0, 86.0),
        ppl=None, **kw) -> dict:
    """One ok row; tpot/e2e are (p10, median, p90); decode_tok_s follows tpot like measure.py's does."""
    gpu = env["gpu"] if setup["device"] == "cuda" else ""
    fig = dict(cache=cache, attn=attn, sdpa_backend="auto" if attn == "sdpa" else "", compile="auto",
               warmup=1, repeats=5, ttft_ms=5.0, ttft_p10_ms=4.5, ttft_p90_ms=5.5,
               tpot_p10_ms=tpot[0], tpot_ms=tpot[1], tpot_p90_ms=tpot[2],
               e2e_p10_ms=e2e[0], e2e_ms=e2e[1], e2e_p90_ms=e2e[2],
               decode_tok_s=setup["batch"] * 1000.0 / tpot[1], weights_mib=10.0, kv_cache_mib=2.0,
               peak_mem_mib=20.0, timestamp=ts)
    r = Record(**{**setup, **env, "gpu": gpu, **fig, **kw}).as_row()
    if ppl is not None:
        r["ppl"] = ppl  # a column newer than this schema: carried through as an extra column
    return r


def base_rows() -> list[dict]:
    T = "2024-01-01T00:00:0{}+00:00".format
    e = BASE_ENV
    return [
        row(GPU, e, T(0), cache="dynamic", ppl=20.0),                                   # real: tpot 10 -> 13
        row(GPU, e, T(1), cache="static", tpot=(9.5, 10.0, 10.5)),                      # noise: 10 -> 10.3, overlap
        row(GPU, e, T(2), cache="dynamic", attn="eager", tpot=(9.99, 10.0, 10.01)),     # apart, but only +1%
        row(GPU, e, T(3), cache="none", tpot=(5.0, 10.0, 15.0)),                        # +30%, but wide overlap
        row(GPU, e, T(4), **QUANT, ppl=20.0),                                           # memory + ppl changes
        row(GPU, e, T(5), cache="offloaded"),                                           # only in base
        row(GPU, e, T(6), cache="paged"),                                               # head: error
        row(CPU, e, T(7), cache="dynamic", kv_cache_mib=0.046875, peak_mem_mib=300.0),  # tiny KV doubles
    ]


def head_rows() -> list[dict]:
    T = "2024-02-01T00:00:{:02d}+00:00".format
    e = HEAD_ENV
    return [
        row(GPU, e, T(0), cache="dynamic", ppl=20.0),                                   # older: superseded
        row(GPU, e, T(10), cache="dynamic", tpot=(12.9, 13.0, 13.1), e2e=(108.0, 109.0, 110.0), ppl=20.1),
        row(GPU, e, T(1), cache="static", tpot=(9.8, 10.3, 10.8), e2e=(84.5, 86.0, 87.5), peak_mem_mib=20.5),
        Record(**GPU, **e, cache="static", attn="sdpa", sdpa_backend="auto", compile="auto", status="oom",
               error="CUDA out of memory", timestamp=T(11)).as_row(),                   # newer, not ok
        row(GPU, e, T(2), cache="dynamic", attn="eager", tpot=(10.09, 10.1, 10.11)),
        row(GPU, e, T(3), cache="none", tpot=(8.0, 13.0, 18.0)),
        row(GPU, e, T(4), **QUANT, peak_mem_mib=30.0, kv_cache_mib=1.0, ppl=22.0),
        Record(**GPU, **e, cache="paged", attn="sdpa", sdpa_backend="auto", compile="auto", status="error",
               error="RuntimeError: boom", timestamp=T(5)).as_row(),
        row(GPU, e, T(6), **{**QUANT, "nbits": 2}),                                     # only in head
        row(CPU, e, T(7), cache="dynamic", seed=1),                                     # only in head (seed)
        row(CPU, e, T(8), cache="dynamic", kv_cache_mib=0.09375, peak_mem_mib=300.4),
    ]


# exactly what is beyond noise: (strategy, metric) -> verdict
EXPECTED = {
    ("dynamic / sdpa", "tpot_ms"): "slower",
    ("dynamic / sdpa", "e2e_ms"): "slower",
    ("dynamic / sdpa", "decode_tok_s"): "slower",
    (LABEL_Q4, "peak_mem_mib"): "bigger",
    (LABEL_Q4, "kv_cache_mib"): "smaller",
    (LABEL_Q4, "ppl"): "worse",
    ("tiny-llama", "kv_cache_mib"): "bigger",
}


def _write(store: Path, rows: list[dict]) -> Path:
    files: dict = {}
    for r in rows:
        files.setdefault(r["run_id"], RunFile(store, r["run_id"])).append(r)
    return store


@pytest.fixture
def stores(tmp_path):
    return _write(tmp_path / "base", base_rows()), _write(tmp_path / "head", head_rows())


@pytest.fixture
def both(tmp_path):
    """One store holding both runs: sides are picked by filters."""
    return _write(tmp_path / "both", base_rows() + head_rows())


@pytest.fixture
def delta(stores):
    return cmp.compare(load(stores[0]), load(stores[1]))


def _key(r) -> tuple:
    return ("tiny-llama" if r["model"] == "tiny-llama" else r["strategy"], r["metric"])


def _get(delta, strategy, metric, model="tiny-gpt2"):
    sel = delta[(delta["strategy"] == strategy) & (delta["metric"] == metric) & (delta["model"] == model)]
    assert len(sel) == 1, (strategy, metric, len(sel))
    return sel.iloc[0]


def test_cell_is_cell_keys_plus_dtype():
    # record.CELL_KEYS (+ dtype, which cell_id also hashes) and nothing of the environment
    assert set(cmp.COND) == set(CELL_KEYS) | {"dtype"}
    assert not set(cmp.COND) & {"gpu", "torch", "transformers", "git_sha", "driver", "host", "run_id"}


def test_flags_exactly_the_real_changes(delta):
    flagged = {_key(r): r["verdict"] for _, r in delta[delta["changed"]].iterrows()}
    assert flagged == EXPECTED
    assert set(delta.loc[~delta["changed"], "verdict"]) == {cmp.NOISE, cmp.NO_DATA}
    # 'no data' only where a side lacks the figure: ppl, carried by two cells only
    no_data = delta[delta["verdict"] == cmp.NO_DATA]
    assert set(no_data["metric"]) == {"ppl"} and len(no_data) == 6 - 2
    assert list(delta.columns[:1]) == ["cell"]
    for c in ("metric", "base", "head", "ratio", "verdict"):
        assert c in delta.columns


def test_noise_band_cases(stores, delta):
    real = _get(delta, "dynamic / sdpa", "tpot_ms")
    assert (real["base"], real["head"]) == (10.0, 13.0) and real["ratio"] == pytest.approx(1.3)
    noisy = _get(delta, "static / sdpa", "tpot_ms")            # +3%, intervals overlap
    assert noisy["verdict"] == cmp.NOISE and noisy["ratio"] == pytest.approx(1.03)
    wide = _get(delta, "none / sdpa", "tpot_ms")               # +30%, intervals overlap
    assert wide["verdict"] == cmp.NOISE and wide["ratio"] == pytest.approx(1.3)
    small = _get(delta, "dynamic / eager", "tpot_ms")          # intervals apart, +1% < 2%
    assert small["verdict"] == cmp.NOISE and small["head_lo"] > small["base_hi"]
    # the threshold is what keeps it out: lowered, it counts
    loose = cmp.compare(load(stores[0]), load(stores[1]), min_change=0.005)
    assert _get(loose, "dynamic / eager", "tpot_ms")["verdict"] == "slower"
    assert _get(loose, "none / sdpa", "tpot_ms")["verdict"] == cmp.NOISE
    # memory: +0.5 MiB peak (2.5%) is under the 1 MiB floor; a 0.05 MiB KV doubling is a real change
    assert _get(delta, "static / sdpa", "peak_mem_mib")["verdict"] == cmp.NOISE
    assert _get(delta, LABEL_CPU, "kv_cache_mib", model="tiny-llama")["verdict"] == "bigger"
    assert _get(delta, LABEL_CPU, "peak_mem_mib", model="tiny-llama")["verdict"] == cmp.NOISE
    assert _get(delta, "dynamic / sdpa", "ppl")["verdict"] == cmp.NOISE  # +0.5%


def test_decode_interval_from_tpot(delta):
    d = _get(delta, "dynamic / sdpa", "decode_tok_s")
    assert (d["base_lo"], d["base_hi"]) == (pytest.approx(1000 / 10.1), pytest.approx(1000 / 9.9))
    assert (d["head_lo"], d["head_hi"]) == (pytest.approx(1000 / 13.1), pytest.approx(1000 / 12.9))
    cpu = _get(delta, LABEL_CPU, "decode_tok_s", model="tiny-llama")  # batch 2
    assert (cpu["base_lo"], cpu["base"], cpu["base_hi"]) == (pytest.approx(2000 / 10.1), pytest.approx(200.0),
                                                             pytest.approx(2000 / 9.9))
    # static: tok/s -2.9% would pass the 2% threshold; tpot's overlapping intervals keep it within noise
    s = _get(delta, "static / sdpa", "decode_tok_s")
    assert abs(s["ratio"] - 1) > cmp.MIN_CHANGE and s["verdict"] == cmp.NOISE


def test_verdict_rule():
    v = cmp.verdict
    assert v("tpot_ms", 10, 13, (9.9, 10.1), (12.9, 13.1)) == "slower"
    assert v("tpot_ms", 13, 10, (12.9, 13.1), (9.9, 10.1)) == "faster"
    assert v("decode_tok_s", 100, 130, (99, 101), (129, 131)) == "faster"
    assert v("tpot_ms", 10, 13, (9, 12), (11, 14)) == cmp.NOISE
    assert v("tpot_ms", 10, 13) == "slower"  # no spread: a point, only the threshold applies
    assert v("peak_mem_mib", 0, 2) == "bigger" and v("kv_cache_mib", 0, 0) == cmp.NOISE
    assert v("peak_mem_mib", 1000, 1009) == cmp.NOISE and v("peak_mem_mib", 1000, 990) == cmp.NOISE
    assert v("peak_mem_mib", 1000, 980) == "smaller"
    assert v("ppl", 10, 9) == "better"
    assert v("tpot_ms", 10, math.nan) == cmp.NO_DATA


def test_matching_newest_ok_row_across_environments(stores, delta):
    # different GPU / torch / transformers / git_sha on each side: cells still match
    cells = sorted(set(delta["cell"]))
    assert len(cells) == 6
    # head has an older identical dynamic row and a newer oom static row: the newest *ok* row is used
    assert _get(delta, "dynamic / sdpa", "tpot_ms")["head"] == 13.0
    assert _get(delta, "static / sdpa", "tpot_ms")["head"] == 10.3
    # sorted by setup, then strategy, metrics in their default order (+ ppl, present in the rows)
    order = list(dict.fromkeys(delta["cell"]))
    gpu = [c for c in order if c.startswith("tiny-gpt2")]
    assert order[:len(gpu)] == gpu and gpu == sorted(gpu)
    first = delta[delta["cell"] == order[0]]["metric"].tolist()
    assert first == list(cmp.DEFAULT_METRICS) + ["ppl"]
    no_ppl = [load(s).assign(ppl=None) for s in stores]  # ppl only joins the default metrics when a row has one
    assert "ppl" not in cmp.compare(*no_ppl)["metric"].values


def test_unmatched(stores):
    only_base, only_head = cmp.unmatched(load(stores[0]), load(stores[1]))
    assert [c.split(" | ")[1] for c in only_base] == ["offloaded / sdpa", "paged / sdpa"]
    assert [c.split(" | ")[1] for c in only_head] == ["quantized int2 (quanto) / sdpa", "dynamic / sdpa [seed=1]"]
    assert only_head[1].startswith("tiny-llama (random weights), cpu float32, b2 p64 n32 | ")  # setups: gpt2 first


def test_markdown(stores, tmp_path):
    paths = cmp.write_compare(str(stores[0]), str(stores[1]), tmp_path / "out")
    md = (tmp_path / "out" / "compare.md").read_text()
    lines = md.splitlines()
    # summary table: exactly the planted changes, bold verdicts
    summary = md.split("## Summary")[1].split("## ")[0]
    srows = [ln for ln in summary.splitlines() if ln.startswith("| ") and not ln.startswith("| setup")]
    assert len(srows) == len(EXPECTED)
    assert any("dynamic / sdpa" in ln and "| tpot_ms |" in ln and "**slower**" in ln and "+30.0%" in ln
               and "10.00 (9.90–10.10)" in ln and "13.00 (12.90–13.10)" in ln for ln in srows)
    assert "- changes beyond noise: 7 (2 bigger, 3 slower, 1 smaller, 1 worse)" in md
    assert "- matched cells: 6; only in base: 2; only in head: 2" in md
    # conditions of both sides, and the rule
    assert "| gpu | NVIDIA H100 80GB HBM3 | NVIDIA H200 |" in md
    assert "| git_sha | aaaa1111cccc | bbbb2222dddd-dirty |" in md
    assert "| torch | 2.5.1 | 2.6.0 |" in md and "| transformers | 4.56.0 | 4.57.0 |" in md
    assert "Environment differs in: gpu, torch, transformers, git_sha." in md
    assert "## Noise rule" in md and "do not overlap" in md and "exceeds 2%" in md
    # per-setup delta tables: sorted by strategy, every metric, noise not bold
    sec = md.split("## tiny-gpt2")[1].split("\n## ")[0]
    strat = [ln.split("|")[1].strip() for ln in sec.splitlines() if ln.startswith("| ") and "strategy" not in ln]
    assert strat == sorted(strat) and len(strat) == 5 * 7
    assert ("| static / sdpa | tpot_ms | 10.00 (9.50–10.50) | 10.30 (9.80–10.80) | 1.030 | +3.0% | within noise |"
            in sec)
    none_tpot = [ln for ln in sec.splitlines() if ln.startswith("| none / sdpa | tpot_ms |")]
    assert len(none_tpot) == 1 and "+30.0%" in none_tpot[0] and "**" not in none_tpot[0]
    # unmatched cells, with what the other side has; rows not ok on either side
    unm = md.split("## Unmatched cells")[1].split("## Rows not ok")[0]
    only_base, only_head = unm.split("### Only in head")
    assert "| offloaded / sdpa | absent |" in only_base and "| paged / sdpa | error: RuntimeError: boom |" in only_base
    assert "| dynamic / sdpa [seed=1] | absent |" in only_head and "quantized int2 (quanto) / sdpa" in only_head
    not_ok = md.split("## Rows not ok")[1]
    statuses = [tuple(c.strip() for c in ln.split("|")[3:5]) for ln in not_ok.splitlines() if ln.startswith("| ")]
    assert statuses[1:] == [("paged / sdpa", "error"), ("static / sdpa", "oom")]  # header, then sorted; none in base
    assert "CUDA out of memory" in not_ok and "RuntimeError: boom" in not_ok
    # images linked relatively, files named stably
    names = sorted(p.name for p in paths)
    expected = sorted(["compare.md"] + [f"compare_{m}_{s}.png" for m in ("tpot_ms", "peak_mem_mib")
                                        for s in (SLUG_GPU, SLUG_CPU)])
    assert names == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == expected
    assert f"](compare_tpot_ms_{SLUG_GPU}.png)" in md
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths if p.suffix == ".png")
    assert not [ln for ln in lines if "nan" in ln.lower().split()]


def test_filter_forms(stores, both, tmp_path):
    direct = cmp.compare(load(stores[0]), load(stores[1]))
    for b, h in ((f"{both}@git_sha=aaaa", f"{both}@git_sha=bbbb2222"),   # prefix
                 (f"{both}@aaaa1111", f"{both}@bbbb"),                     # bare: git_sha prefix
                 (f"{both}@run_id=run-base", f"{both}@run_id=run-h"),      # run_id: exact or prefix
                 (f"{both}@gpu=NVIDIA H100 80GB HBM3@model=tiny-gpt2", f"{both}@bbbb@model=tiny-gpt2")):
        got = cmp.compare(cmp.select_side(b), cmp.select_side(h))
        if "model=" in b:
            want = direct[direct["model"] == "tiny-gpt2"].reset_index(drop=True)
        else:
            want = direct
        cols = ["cell", "metric", "verdict"]
        assert got[cols].values.tolist() == want[cols].values.tolist(), b
    # a single .jsonl file is a store too
    assert len(cmp.select_side(str(stores[0] / "run-base.jsonl"))) == len(base_rows())
    # through the command line, into a report
    assert cmp.main([f"{both}@git_sha=aaaa", f"{both}@git_sha=bbbb", f"out={tmp_path / 'f'}"]) == 0
    md = (tmp_path / "f" / "compare.md").read_text()
    assert "- changes beyond noise: 7 " in md and "@git_sha=aaaa` |" in md


def test_byte_identical(stores, tmp_path):
    a = cmp.write_compare(str(stores[0]), str(stores[1]), tmp_path / "a")
    with matplotlib.rc_context({"font.size": 20, "lines.linewidth": 5}):  # a user's rcParams must not leak in
        b = cmp.write_compare(str(stores[0]), str(stores[1]), tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
        assert b"matplotlib" not in pa.read_bytes(), f"{pa.name} carries a version stamp"
    # rewriting into the same directory: same bytes, stale compare figures removed
    stale = tmp_path / "a" / "compare_tpot_ms_old-setup.png"
    stale.write_bytes(b"x")
    c = cmp.write_compare(str(stores[0]), str(stores[1]), tmp_path / "a")
    assert not stale.exists() and [p.read_bytes() for p in c] == [p.read_bytes() for p in b]


def test_pinned_matplotlib_settings(stores, tmp_path, monkeypatch):
    # figures are drawn under report.RC whatever the caller's rcParams, which are restored afterwards
    from bench.report import RC
    seen = []
    real_save = cmp._save
    monkeypatch.setattr(cmp, "_save", lambda fig, path: (seen.append({k: matplotlib.rcParams[k] for k in RC}),
                                                          real_save(fig, path))[1])
    with matplotlib.rc_context({"font.size": 20, "font.family": "serif"}):
        cmp.write_compare(str(stores[0]), str(stores[1]), tmp_path / "rc")
        assert matplotlib.rcParams["font.size"] == 20
    assert len(seen) == 4 and all(s == {k: matplotlib.rcParams.validate[k](v) for k, v in RC.items()} for s in seen)


def test_no_torch_import(stores, tmp_path):
    res = run_without_torch("import sys, bench.compare as c; rc = c.main(sys.argv[1:]); assert rc == 0, rc",
                            [stores[0], stores[1], f"out={tmp_path / 'o'}"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o" / "compare.md").exists()


@pytest.mark.parametrize("args, words", [
    ([], ["BASE and HEAD", "got 0"]),
    (["{base}"], ["BASE and HEAD", "got 1"]),
    (["{base}", "{head}", "{head}"], ["got 3"]),
    (["{base}", "{head}", "colour=red"], ["colour", "out=", "metrics="]),
    (["{base}", "{head}", "metrics=tpot_ms,speed"], ["speed", "tpot_ms", "peak_mem_mib"]),
    (["{base}", "{head}", "metrics="], ["metrics="]),
    (["{base}", "{head}", "min_change=lots"], ["min_change", "0.02"]),
    (["{base}", "{head}", "min_change=1.5"], ["min_change"]),
    (["{tmp}/nowhere", "{head}"], ["base store", "not found", "STORE@key=value"]),
    (["{base}", "{tmp}/nowhere@abc"], ["head store", "not found"]),
    (["{both}@git_sha=zzzz", "{head}"], ["base", "matches no rows", "git_sha", "aaaa1111cccc"]),
    (["{base}", "{both}@gpu=NVIDIA A100"], ["head", "matches no rows", "NVIDIA H200"]),
    (["{both}@colour=red", "{head}"], ["unknown column", "colour", "git_sha"]),
    (["{both}@git_sha=", "{head}"], ["bad filter", "STORE@key=value"]),
    (["{empty}", "{head}"], ["has no rows"]),
])
def test_bad_arguments(stores, both, tmp_path, capsys, args, words):
    (tmp_path / "empty").mkdir()
    fill = dict(base=stores[0], head=stores[1], both=both, tmp=tmp_path, empty=tmp_path / "empty")
    argv = [a.format(**fill) for a in args] + [f"out={tmp_path / 'never'}"]
    assert cmp.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "never").exists()


def test_dispatch_through_python_m_bench(stores, tmp_path):
    """`python -m bench compare` once bench/__main__.py routes it; until then bench.compare runs as a module."""
    main_src = (ROOT / "bench" / "__main__.py").read_text()
    mod = ["-m", "bench", "compare"] if "compare.main" in main_src else ["-m", "bench.compare"]
    res = subprocess.run([sys.executable, *mod, str(stores[0]), str(stores[1]), f"out={tmp_path / 'm'}"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "compare.md" in res.stdout
    bad = subprocess.run([sys.executable, *mod, str(stores[0])], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_side_without_ok_rows(stores, tmp_path):
    # head only failed: nothing matches, nothing crashes, every base cell is listed with head's status
    _write(tmp_path / "failed", [Record(**GPU, **HEAD_ENV, cache="dynamic", attn="sdpa", sdpa_backend="auto",
                                        compile="auto", status="error", error="ImportError: no kernels",
                                        timestamp="2024-03-01T00:00:00+00:00").as_row()])
    assert cmp.compare(load(stores[0]), load(tmp_path / "failed")).empty
    assert cmp.main([str(stores[0]), str(tmp_path / "failed"), f"out={tmp_path / 'o'}"]) == 0
    md = (tmp_path / "o" / "compare.md").read_text()
    assert "- matched cells: 0; only in base: 8; only in head: 0" in md and "- changes beyond noise: 0" in md
    assert "| dynamic / sdpa | error: ImportError: no kernels |" in md


def test_conditions_show_the_host_speed_and_cpu(tmp_path):
    """A launch-bound cell follows the host: each side's launch_us (median, range) and cpu are in Conditions."""
    T = "2024-01-01T00:00:0{}+00:00".format
    env_a = {**BASE_ENV, "gpu": "NVIDIA H100 80GB HBM3", "cpu": "Xeon A"}
    env_b = {**BASE_ENV, "gpu": "NVIDIA H100 80GB HBM3", "cpu": "Xeon B"}
    a = _write(tmp_path / "a", [row(GPU, env_a, T(0), run_id="ra", launch_us=5.0),
                                row(GPU, env_a, T(1), run_id="ra", cache="none", launch_us=6.0)])
    b = _write(tmp_path / "b", [row(GPU, env_b, T(2), run_id="rb", launch_us=9.0),
                                row(GPU, env_b, T(3), run_id="rb", cache="none")])  # an older row: no figure
    cmp.write_compare(str(a), str(b), tmp_path / "out")
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| launch_us (median; host speed) | 5.50 (5.00–6.00) | 9.00 (9.00–9.00) |" in md
    assert "| cpu | Xeon A | Xeon B |" in md and "Environment differs in: cpu." in md


def test_a_row_written_without_a_loaded_model_is_matched_to_its_cell(tmp_path):
    """A crashed worker's row has no loaded dtype or GPU (as the H100's offloaded_static + compile rows):
    compare must place it in its setup, as the report does, so the cell reads 'error', not 'absent'."""
    b, h = tmp_path / "b", tmp_path / "h"
    RunFile(b, "rb").append(row(GPU, BASE_ENV, "2024-01-01T00:00:00+00:00", cache="offloaded_static"))
    f = RunFile(h, "rh")
    f.append(row(GPU, HEAD_ENV, "2024-01-02T00:00:00+00:00", cache="dynamic"))
    f.append(Record(**{**GPU, **HEAD_ENV, "weights": "auto", "dtype": "", "gpu": ""}, cache="offloaded_static",
                    attn="sdpa", sdpa_backend="auto", compile="auto", status="error",
                    error="the worker process died during this cell (signal SIGSEGV)",
                    timestamp="2024-01-02T00:00:01+00:00").as_row())
    cmp.write_compare(str(b), str(h), out=tmp_path / "out")
    md = (tmp_path / "out" / "compare.md").read_text()
    only_base = md.split("### Only in base")[1].split("### Only in head")[0]
    assert "| offloaded_static / sdpa | error: the worker process died during this cell (signal SIGSEGV) |" in only_base
    not_ok = md.split("## Rows not ok")[1]
    assert "real weights" in not_ok.split("SIGSEGV")[0].splitlines()[-1]  # listed under its setup, not "auto"
