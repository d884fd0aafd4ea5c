"""bench.report.gpu_report from synthetic schema-2 rows: the decision table names the winners with their own
numbers, follows the rows when they change, never crowns a disturbed row, reports OOM as OOM, and is
byte-identical for the same rows. CPU only, seconds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.stats import verdicts
from bench.store.schema import Record
from bench.report import gpu_report as reference, selection as select, verdict
from bench.store import load
from tests.conftest import run_without_torch
from bench.cli.main import main as bench_main


def gpu_report_main(argv: list[str]) -> int:
    return bench_main(["gpu-report", *argv])


GPU = "NVIDIA H200"
BASE = dict(model="tiny-llama", model_source="architecture config", weights="random", dtype="bfloat16", device="cuda",
            gpu=GPU, sdpa_backend="auto", compile="auto", prompt_len=512, new_tokens=33, warmup=1, repeats=5,
            repeats_mode="fixed", driver="570.1", cuda="12.8", cudnn="90800", torch="2.9.0", transformers="5.0.0",
            flash_attn="2.8.3", weights_mib=1000.0)
LABELS = {"dynamic": "dynamic", "static": "static", "none": "none", "paged": "paged (256-token blocks)",
          "quantized": "quantized int4 (quanto)"}


def row(cache, attn="sdpa", batch=1, tpot=10.0, ts="2026-01-01T00:00:00+00:00", run="run-a", **kw) -> dict:
    """A schema-2 row whose figures all follow from tpot (ms per decode step) and its raw samples."""
    ttft = 20.0
    e2e = ttft + tpot * (BASE["new_tokens"] - 1)
    spread = (-0.01, 0.0, 0.01, 0.005, -0.005)
    settings = {"block_size": 256} if cache == "paged" else {"nbits": 4} if cache == "quantized" else {}
    fig = dict(tpot_ms=tpot, ttft_ms=ttft, e2e_ms=e2e, decode_tok_s=batch * 1000 / tpot,
               e2e_tok_s=batch * BASE["new_tokens"] * 1000 / e2e, e2e_samples_ms=[e2e * (1 + d) for d in spread],
               tpot_samples_ms=[tpot * (1 + d) for d in spread], ttft_samples_ms=[ttft] * 5,
               peak_mem_mib=1000.0 + 10 * batch, kv_cache_mib=0.0 if cache == "none" else 8.0 * batch,
               step_ms=[tpot] * (BASE["new_tokens"] - 1), compiled=cache == "static", graph_breaks=0,
               recompile_limit_hits=0, mbu=0.5)
    fig.update(kw)
    return Record(**{**BASE, "batch": batch, "cache": cache, "strategy": LABELS[cache], "reference": cache == "dynamic",
                     "holds_cache": cache != "none", "attn": attn, "attn_used": attn, "timestamp": ts, "run_id": run,
                     "settings": settings, **fig}).as_row()


def failed(cache, status, error, attn="sdpa", batch=1, **kw) -> dict:
    """A row that left no figures: an OOM, a crashed worker."""
    return Record(**{**BASE, "batch": batch, "cache": cache, "strategy": LABELS[cache], "reference": cache == "dynamic",
                     "holds_cache": cache != "none", "attn": attn, "timestamp": "2026-01-01T00:00:00+00:00",
                     "run_id": "run-a", "status": status, "error": error, **kw}).as_row()


def rows(**change) -> list[dict]:
    """Two setups: batch 1 (static wins, 4.0 ms) and batch 32 (paged + flash-attn wins); `change` overrides by key."""
    out = {
        "b1 dynamic": row("dynamic", tpot=12.0),
        "b1 static": row("static", tpot=4.0),
        "b1 none": row("none", tpot=11.0),
        "b1 quantized": row("quantized", tpot=20.0),
        "b32 dynamic fa": row("dynamic", attn="flash_attention_2", batch=32, tpot=40.0),
        "b32 paged fa": row("paged", attn="flash_attention_2", batch=32, tpot=10.0),
        "b32 dynamic": row("dynamic", batch=32, tpot=38.0),
        "b32 static": failed("static", "oom", "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
                                              "has a total capacity of 139.8 GiB", batch=32),
    }
    for k, v in change.items():
        out[k] = v
    return list(out.values())


def write(tmp_path: Path, rs: list[dict], name: str = "store") -> Path:
    """A store of one file per run, rows in the order given."""
    store = tmp_path / name
    store.mkdir(parents=True, exist_ok=True)
    for r in rs:
        with open(store / f"{r['run_id']}.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
    return store


def report(tmp_path: Path, rs: list[dict], name: str = "store") -> str:
    store = write(tmp_path, rs, name)
    out = tmp_path / f"{name}-report.md"
    assert gpu_report_main([f"store={store}", f"gpu={GPU}", f"out={out}", f"plots={tmp_path / 'plots'}"]) == 0
    return out.read_text()


def section(text: str, title: str) -> str:
    """The body of the numbered section with this title."""
    after = text.split(f". {title}\n", 1)[1]
    return after.split("\n## ", 1)[0]


def decision(text: str, need: str) -> list[str]:
    """The decision-table row whose first cell starts with `need`, as its four cells."""
    head = text.index("| you need | use | measured | instead of / avoid |")
    for line in text[head:].split("\n\n")[0].splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if cells[0].startswith(need):
            return cells
    raise AssertionError(f"no decision row {need!r} in:\n{text[head:head + 3000]}")


def test_winners_with_their_numbers(tmp_path):
    md = report(tmp_path, rows())
    need, use, measured, avoid = decision(md, "lowest latency, batch 1")
    assert "512 + 33 tokens" in need and use == "`static / sdpa`"
    assert measured.startswith("4.00 ms/token")
    assert avoid.startswith("`none / sdpa` 11.0 ms/token: ×2.75 [") and avoid.endswith("beyond noise")
    assert "n=5+5]" in avoid  # 5 calls a side: not called a 95% CI
    need, use, measured, avoid = decision(md, "most throughput at the largest batch that fits")
    assert "batch 32" in need and use == "`paged (256-token blocks) / flash_attention_2`"
    assert measured.startswith("3200 decode tok/s") and "OOM here: static / sdpa" in measured
    assert avoid.startswith("`dynamic / sdpa` 842 decode tok/s: ×3.80 [")
    _, use, measured, _ = decision(md, "nothing special")
    assert use == "`dynamic`" and "ok in 2 of 2 setups" in measured
    assert "**Every row used RANDOM WEIGHTS**" in md and "driver 570.1" in md and "flash-attn 2.8.3" in md


def test_the_decisions_are_report_mds_answers(tmp_path):
    """One verdict everywhere: the reference report's decision rows are the front page's answers, word for word."""
    from bench.report import answers

    store = write(tmp_path, rows())
    df = select.prepare(load(store))
    groups = select.setups(select.pick(df).shown)
    found = [a for (_, _), setups in answers.groups(groups) for a in answers.answers(setups, df)]
    md = report(tmp_path, rows(), "again")
    for a in found:
        if a.margin is not None:
            assert a.margin.short() in md


def test_a_changed_number_changes_the_text(tmp_path):
    a = report(tmp_path, rows(), "a")
    b = report(tmp_path, rows(**{"b1 static": row("static", tpot=4.25),
                                 "b32 paged fa": row("paged", attn="flash_attention_2", batch=32, tpot=16.0)}), "b")
    assert decision(a, "lowest latency")[2].startswith("4.00 ms/token")
    assert decision(b, "lowest latency")[2].startswith("4.25 ms/token")
    assert "×2.59 [" in decision(b, "lowest latency")[3]
    assert decision(b, "most throughput")[2].startswith("2000 decode tok/s")
    assert "×2.38 [" in decision(b, "most throughput")[3]
    assert "4.00 ms" not in b.split("| you need")[1].split("\n\n")[0]


def test_a_disturbed_row_never_wins(tmp_path):
    md = report(tmp_path, rows(**{"b1 quantized": row("quantized", tpot=1.0, disturbed=True,
                                                      disturbed_why="spread")}))
    assert decision(md, "lowest latency")[1] == "`static / sdpa`"
    assert "not ranked: disturbed" in decision(md, "lowest latency")[2]
    assert "⚠ disturbed" in section(md, "Lowest latency for one sequence")  # shown among the evidence, marked


def test_a_row_faster_than_its_bandwidth_floor_never_wins(tmp_path):
    md = report(tmp_path, rows(**{"b1 quantized": row("quantized", tpot=1.0, bandwidth_floor_ms=2.0, mbu=2.0)}))
    assert decision(md, "lowest latency")[1] == "`static / sdpa`"
    assert "not ranked: below its bandwidth floor (MBU 2.00)" in decision(md, "lowest latency")[2]


def test_oom_is_reported_as_oom(tmp_path):
    short_gen = failed("static", "error", "ShortGeneration: asked for 32 x 33 new tokens, continuous batching "
                       "produced 32 x 0; Memory footprint 77828849664 is more than available memory 63465239347",
                       batch=32)
    for md in (report(tmp_path, rows(), "a"), report(tmp_path, rows(**{"b32 static": short_gen}), "b")):
        assert "OOM here: static / sdpa" in decision(md, "most throughput")[2]
    assert "OOM (asked 2.00 GiB)" in section(report(tmp_path, rows(), "c"), "Throughput at batch > 1")


def test_a_crash_and_a_partial_compile_are_fast_paths_that_break(tmp_path):
    crash = failed("static", "error", "the worker process died during this cell (signal SIGSEGV); the cell left "
                   "no result", attn="eager")
    part = row("static", attn="flash_attention_2", tpot=30.0, graph_breaks=33, recompile_limit_hits=1)
    md = report(tmp_path, rows(crash=crash, part=part))
    assert decision(md, "a compiled fast path")[3] == "`static / flash_attention_2`: compiled in part"
    assert "decode step is ×7.5 the compiled one's, beyond noise in 1 of 1 setup" in decision(md, "a compiled fast path")[2]
    assert "(SIGSEGV)" in decision(md, "a run that does not crash")[3]


def test_byte_identical_whatever_the_file_order(tmp_path):
    rs = rows()
    a = report(tmp_path, rs, "a")
    assert report(tmp_path, rs, "b") == a
    assert report(tmp_path, list(reversed(rs)), "c") == a


def test_repeats_quote_the_compare_verdict(tmp_path):
    again = row("dynamic", tpot=15.0, ts="2026-01-02T00:00:00+00:00", run="run-b")
    md = report(tmp_path, rows(again=again))
    df = select.prepare(load(tmp_path / "store"))
    first, second = (df[(df["cache"] == "dynamic") & (df["batch"] == "1")].iloc[i].to_dict() for i in (0, 1))
    v, _ = verdict.judge(first, second, verdicts.DEFAULT_FLOOR)
    assert v.label == "slower"
    body = section(md, "How far repeats agree")
    assert f"{v.ratio:.2f} [{v.lo:.2f}–{v.hi:.2f}, n=5+5]: slower" in body and ": 1 slower." in body
    # the newest row is the one shown everywhere else
    assert "| | dynamic | dynamic / sdpa | 15.0 |" in section(md, "Lowest latency for one sequence")


def test_kv_cache_vs_no_cache_ratio(tmp_path):
    md = report(tmp_path, rows())
    kv, nokv = 20.0 + 12.0 * 32, 20.0 + 11.0 * 32  # e2e = TTFT + tpot x (new tokens - 1)
    body = section(md, "KV cache vs no cache")
    assert f"| {nokv / kv:.2f} [" in body and "no cache is faster in 1 of 1 pairs" in body
    assert "95% CI" not in body.split("| setup |")[1]  # 5 calls a side


@pytest.mark.parametrize("argv, says", [
    (["store={store}"], "needs gpu="),
    (["store={store}", "gpu=NVIDIA A100"], "has no rows"),
    (["store={store}", f"gpu={GPU}", "colour=red"], "is not a setting of bench gpu-report"),
    (["store={store}/nowhere", f"gpu={GPU}"], "does not exist"),
    (["store={store}", f"gpu={GPU}", "out={store}"], "is a directory"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, says):
    store = write(tmp_path, rows())
    assert gpu_report_main([a.format(store=store) for a in argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_default_out_and_gpu_slug(tmp_path):
    store = write(tmp_path, rows())
    assert reference.gpu_slug("NVIDIA H100 80GB HBM3") == "h100" and reference.gpu_slug(GPU) == "h200"
    assert gpu_report_main([f"store={store}", f"gpu={GPU}", f"plots={tmp_path / 'plots'}"]) == 0
    md = (store / "h200-report.md").read_text()
    assert "(../plots/latency_tiny-llama_random_cuda_nvidia-h200_bfloat16_b1_p512_n33.png)" in md


def test_no_torch(tmp_path):
    store = write(tmp_path, rows())
    res = run_without_torch("import sys; from bench.cli.main import main; "
                            "assert main(['gpu-report', *sys.argv[1:]]) == 0",
                            [f"store={store}", f"gpu={GPU}", f"out={tmp_path / 'r.md'}"], tmp_path)
    assert res.returncode == 0, res.stderr


def test_throughput_below_the_largest_batch_never_sets_a_row_against_itself(tmp_path):
    fa = "flash_attention_2"
    md = report(tmp_path, rows(**{"b8 dynamic fa": row("dynamic", attn=fa, batch=8, tpot=40.0),
                                  "b8 paged fa": row("paged", attn=fa, batch=8, tpot=10.0, bandwidth_floor_ms=12.0,
                                                     mbu=1.2)}))
    need, use, measured, avoid = decision(md, "throughput, batch 8")
    assert use == "`dynamic / flash_attention_2`" and avoid == "–"
    assert "`paged (256-token blocks) / flash_attention_2` 800 not ranked: below its bandwidth floor (MBU 1.20)" in measured
