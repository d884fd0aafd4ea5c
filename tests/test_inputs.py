"""Bad input, a table of it, through the real command line: one line naming the key, the value and what is
allowed, exit code 2, no traceback, no row written and no model loaded.

Most cases call `bench.__main__.main` in this process (the same code path as `python -m bench`, at a
fraction of the start-up cost); a few go through a real subprocess to prove the entry point behaves the same.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import __main__ as entry
from bench.run import cell as runner

ROOT = Path(__file__).resolve().parent.parent
T = ["model=tiny-gpt2", "device=cpu", "prompt_len=8", "new_tokens=4"]

RUN_CASES = [
    # (argv after `run`, words the error line must hold)
    (["cache=quantized", "nbits=3"], ["nbits", "=3", "2, 4"]),
    (["cache=quantized", "quant_backend=hqq", "nbits=5"], ["nbits", "=5", "1, 2, 3, 4, 8"]),
    (["cache=quantized", "cache.axis_key=2"], ["cache.axis_key", "=2", "0, -1"]),
    (["cache=quantized", "cache.q_group_size=0"], ["cache.q_group_size=0", "positive integer"]),
    (["cache=quantized", "quant_backend=int8"], ["quant_backend=int8", "quanto, hqq"]),
    (["cache=quantized_int2", "nbits=4"], ["nbits=4", "cache=quantized_int2", "nbits=2"]),
    (["cache=quantized_hqq", "quant_backend=quanto"], ["quant_backend=quanto", "quant_backend=hqq"]),
    (["cache=quantized", "cache.nbits=2", "nbits=4"], ["nbits=4", "cache.nbits=2"]),
    (["cache=dynamic", "nbits=2"], ["nbits=2", "cache=dynamic", "no nbits"]),
    (["-m", "cache=dynamic,static", "cache.block_size=512"], ["cache.block_size", "no cell"]),
    (["cache.foo=1"], ["cache.foo", "cache=dynamic"]),
    (["cache=paged", "cache.block_size=0"], ["cache.block_size=0", "positive integer"]),
    (["cache=paged", "attn=flash_attention_2", "cache.block_size=32"], ["cache.block_size=32", "multiple of 256"]),
    (["cache=nosuch"], ["cache=nosuch", "dynamic", "quantized_int2", "paged"]),
    (["attn=nosuch"], ["attn=nosuch", "sdpa", "eager"]),
    (["model=nosuch"], ["model=nosuch", "tiny-llama"]),
    (["sweep=nosuch"], ["sweep=nosuch", "default", "quick"]),
    (["sdpa_backend=foo"], ["sdpa_backend=foo", "auto, flash, efficient, cudnn, math"]),
    (["attn=eager", "sdpa_backend=bogus"], ["sdpa_backend=bogus", "auto, flash"]),
    (["attn=eager", "sdpa_backend=flash"], ["sdpa_backend=flash", "attn=sdpa only"]),
    (["model.dtype=float16", "dtype=bfloat16"], ["dtype=bfloat16", "model.dtype=float16"]),
    (["dtype=float64"], ["dtype=float64", "float32, float16, bfloat16"]),
    (["prompt_len=0"], ["prompt_len=0", "positive integer"]),
    (["new_tokens=1"], ["new_tokens=1", "at least 2"]),
    (["model=gpt2", "prompt_len=1000", "new_tokens=100"], ["1100", "1024"]),
    (["batch=abc"], ["batch=abc", "integer"]),
    (["batch=8.0"], ["batch=8.0", "integer"]),
    (["batch=true"], ["batch=true", "integer"]),
    (["batch="], ["batch=", "integer"]),
    (["batch=1,8"], ["batch=1,8", "-m"]),
    (["repeats=0"], ["repeats=0", "auto or a positive integer"]),
    (["repeats=many"], ["repeats=many", "auto or a positive integer"]),
    (["precision=0"], ["precision=0", "> 0"]),
    (["precision=1.5"], ["precision=1.5", "<= 1"]),
    (["max_repeats=0"], ["max_repeats=0", "positive integer"]),
    (["cell_budget_s=0"], ["cell_budget_s=0", "> 0"]),
    (["cell_timeout_s=-5"], ["cell_timeout_s=-5", "> 0"]),
    (["warmup=-1"], ["warmup=-1", ">= 0"]),
    (["seed=-1"], ["seed=-1", ">= 0"]),
    (["device=tpu"], ["device=tpu", "auto, cpu, cuda"]),
    (["device_map=balanced"], ["device_map=balanced", "auto"]),
    (["weights=fake"], ["weights=fake", "auto, real, random"]),
    (["compile=on"], ["compile=on", "auto, off"]),
    (["quality=maybe"], ["quality=maybe", "auto, on, off"]),
    (["resume=maybe"], ["resume=maybe", "true or false"]),
    (["isolate=2"], ["isolate=2", "true or false"]),
    (["store="], ["store=", "non-empty"]),
    (["store=/proc/kvbench-store"], ["store=/proc/kvbench-store", "not writable"]),
    (["+foo=1"], ["foo", "not a setting"]),
    (["+cach=static"], ["cach", "did you mean cache"]),
    (["cach=static"], ["cach", "did you mean cache"]),
    (["promt_len=8"], ["promt_len", "did you mean prompt_len"]),
    (["model.foo=1"], ["model.foo", "model.hub_id"]),
    (["attn.backend=flash"], ["attn.backend", "attn.sdpa_backend"]),
    (["+batch=2"], ["+batch", "without the +"]),
    (["~batch"], ["~batch", "not supported"]),
    (["-x"], ["-x", "not an option"]),
    (["batch=[1"], ["cannot read", "batch=[1"]),
]

OTHER_CASES = [
    (["report", "store=/nonexistent"], ["store=/nonexistent", "does not exist"]),
    (["report", "store="], ["store=", "empty"]),
    (["report", "bogus=1"], ["bogus", "not a setting of bench report"]),
    (["report", "out=/proc/kvbench-out"], ["out=/proc/kvbench-out", "not writable"]),
    (["compare", "results"], ["expected 2", "BASE"]),
    (["compare", "/nonexistent-a", "/nonexistent-b"], ["base store", "not found"]),
    (["compare", "results", "results", "calibrate=maybe"], ["calibrate=maybe", "true or false"]),
    (["compare", "results", "results", "noise=/nonexistent.json"], ["noise=/nonexistent.json", "noise file"]),
    (["compare", "results@git_sha=zzzz", "results"], ["git_sha", "zzzz", "matches no rows"]),
    (["compare", "results", "results", "metric=tpot"], ["metric", "not a setting of bench compare"]),
    (["plan", "model=gpt2", "gpu=h100", "batch=0"], ["batch=0", "positive integer"]),
    (["plan", "model=gpt2", "gpu=h100", "batch=-1"], ["batch=-1", "positive integer"]),
    (["plan", "model=gpt2", "gpu=h100", "prompt_len=0"], ["prompt_len=0", "positive integer"]),
    (["plan", "model=gpt2", "gpu=h100", "prompt_len=abc"], ["prompt_len=abc", "integer"]),
    (["plan", "model=gpt2", "gpu=h100", "prompt_len=2000"], ["2128", "1024"]),
    (["plan", "model=gpt2", "gpu=h100", "alloc=huge"], ["alloc=huge", "default, expandable"]),
    (["plan", "model=/nonexistent-dir-or-hub-id", "gpu=h100"], ["model=/nonexistent-dir-or-hub-id"]),
    (["plan", "model=gpt2", "gpu=nosuch"], ["gpu=nosuch", "h100"]),
    (["plan", "model=gpt2"], ["gpu=", "needs"]),
    (["plan", "model=gpt2", "gpu=h100", "reserve=1.5"], ["reserve", "not a setting of bench plan"]),
    (["plan", "model=gpt2", "gpu=h100", "nbits=3"], ["nbits=3", "2, 4"]),
    (["plan", "model=gpt2", "gpu=h100", "colour=red"], ["colour", "not a setting of bench plan"]),
    (["plan", "check", "store"], ["store", "plan check"]),
    (["nosuch"], ["nosuch", "run, report, compare"]),
]


def _one_line(capsys, code: int, words: list[str]) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("argv, words", RUN_CASES, ids=[" ".join(a) for a, _ in RUN_CASES])
def test_bad_run_input(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "_loaded", {})
    store = tmp_path / "store"
    extra = [] if any(a.startswith("store=") for a in argv) else [f"store={store}"]
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv}
    base = [t for t in T if t.split("=", 1)[0] not in given]  # each key once: the case's value replaces T's
    code = entry.main(["run", *base, *argv, *extra])
    _one_line(capsys, code, words)
    assert not list(store.glob("*.jsonl")), "a bad input wrote a row"
    assert not runner._loaded, "a model loaded before the input was checked"


@pytest.mark.parametrize("argv, words", OTHER_CASES, ids=[" ".join(a) for a, _ in OTHER_CASES])
def test_bad_input_of_the_other_commands(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    _one_line(capsys, entry.main(argv), words)


def test_report_out_that_is_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    f = tmp_path / "a-file"
    f.write_text("x")
    _one_line(capsys, entry.main(["report", f"out={f}"]), [f"out={f}", "is a file"])


@pytest.mark.parametrize("argv, words", [
    (["run", *T, "cache=quantized_int2", "nbits=4"], ["nbits=4", "quantized_int2"]),
    (["run", *T, "model.arch.n_layer=abc"], ["model.arch", "tiny-gpt2", "n_layer"]),
    (["run", *[t for t in T if not t.startswith("device=")], "device=cuda"], ["device=cuda", "no CUDA GPU"]),
    (["plan", "model=gpt2", "gpu=h100", "batch=0"], ["batch=0"]),
])
def test_the_real_entry_point(argv, words, subprocess_env, tmp_path):
    """The same through `python -m bench`, where a hang, a traceback or exit code 1 would show."""
    store = [f"store={tmp_path}/s"] if argv[0] == "run" else []
    p = subprocess.run([sys.executable, "-m", "bench", *argv, *store], cwd=tmp_path, env=subprocess_env, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert len(lines) == 1 and all(w in lines[0] for w in words), p.stderr
    assert not list(tmp_path.rglob("*.jsonl")) and not list(tmp_path.rglob("*.yaml")), "wrote files"
