"""The real command line, in a subprocess: `python -m bench run|env|...` from the repo root."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["model=tiny-gpt2", "prompt_len=8", "new_tokens=4", "repeats=1", "warmup=1", "device=cpu"]


def _argv(args, tmp_path) -> list[str]:
    # Hydra's own output dirs go to tmp, not outputs/ and multirun/ in the repo
    hydra_dirs = [f"hydra.run.dir={tmp_path}/hydra", f"hydra.sweep.dir={tmp_path}/hydra-multi"] if args[:1] == ["run"] else []
    return [sys.executable, "-m", "bench", *args, *hydra_dirs]


def bench(args, env, tmp_path, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(args, tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


class Launched:
    """A `python -m bench` started in the background; `result()` waits for it."""

    def __init__(self, args, env, tmp_path):
        self.store = tmp_path / "store"
        self.t0 = time.time()
        self.proc = subprocess.Popen(_argv([*args, f"store={self.store}"], tmp_path), cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self, timeout=300) -> tuple[subprocess.CompletedProcess, float]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err), time.time() - self.t0


@pytest.fixture(scope="module")
def real_runs(subprocess_env, tmp_path_factory):
    """The three commands that really measure, started together: most of each is imports and waits,
    so they overlap well even on two cores."""
    runs = {
        "single": ["run", *SMALL, "cache=quantized", "nbits=4"],
        "multirun": ["run", "-m", *SMALL, "cache=none,dynamic"],
        "sweep": ["run", "sweep=default", *SMALL, "attn=sdpa"],
    }
    launched = {k: Launched(a, subprocess_env, tmp_path_factory.mktemp(k)) for k, a in runs.items()}
    yield launched
    for l in launched.values():
        if l.proc.poll() is None:
            l.proc.kill()
            l.proc.communicate()


def store_rows(store: Path) -> tuple[list[Path], list[dict]]:
    files = sorted(store.glob("*.jsonl"))
    rows = [json.loads(ln) for f in files for ln in f.read_text().splitlines() if ln.strip()]
    return files, rows


def test_single_cell(real_runs):
    store = real_runs["single"].store
    p, _ = real_runs["single"].result()
    assert p.returncode == 0, p.stderr[-3000:]
    files, rows = store_rows(store)
    assert len(files) == 1 and len(rows) == 1
    r = rows[0]
    assert (r["cache"], r["nbits"], r["quant_backend"]) == ("quantized", 4, "quanto")
    assert (r["model"], r["prompt_len"], r["new_tokens"], r["repeats"]) == ("tiny-gpt2", 8, 4, 1)
    assert r["status"] == "ok", r["error"]
    assert len(r["step_ms"]) == 3
    assert r["weights"] == "random" and r["device"] == "cpu"
    assert r["transformers"] == transformers.__version__


def test_multirun_writes_one_file(real_runs):
    store = real_runs["multirun"].store
    p, _ = real_runs["multirun"].result()
    assert p.returncode == 0, p.stderr[-3000:]
    files, rows = store_rows(store)
    assert len(files) == 1, files
    assert sorted(r["cache"] for r in rows) == ["dynamic", "none"]
    assert len({r["run_id"] for r in rows}) == 1
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]


SWEEP = {  # (cache, nbits, quant_backend) -> status on a CPU
    ("none", None, None): "ok",
    ("dynamic", None, None): "ok",
    ("static", None, None): "ok",
    ("offloaded", None, None): "unavailable",
    ("offloaded_static", None, None): "unavailable",
    ("quantized", 4, "quanto"): "ok",
    ("quantized", 2, "quanto"): "ok",
    ("quantized", 4, "hqq"): "ok",
    ("paged", None, None): "ok",
}


def test_default_sweep_on_cpu(real_runs):
    store = real_runs["sweep"].store
    p, took = real_runs["sweep"].result()
    assert p.returncode == 0, p.stderr[-3000:]
    files, rows = store_rows(store)
    assert len(files) == 1
    got = {(r["cache"], r["nbits"], r["quant_backend"]): r for r in rows}
    assert len(rows) == len(got) == 9, "one row per cache"
    assert {k: r["status"] for k, r in got.items()} == SWEEP, {k: r["error"] for k, r in got.items()}
    assert all(r["attn"] == "sdpa" for r in rows)
    for k, r in got.items():
        if SWEEP[k] == "unavailable":
            assert "device=cuda" in r["error"]
    print(f"default sweep, 9 cells: {took:.1f} s (alongside the other two runs)")


@pytest.mark.parametrize("args, bad, allowed", [
    (["model=tiny-gpt2", "cache=quantized", "nbits=3"], "nbits=3", ["2", "4"]),
    (["model=tiny-gpt2", "prompt_len=0"], "prompt_len=0", ["positive integer"]),
    (["model=gpt2", "prompt_len=1000", "new_tokens=100"], "1100", ["1024"]),
    (["model=tiny-gpt2", "sdpa_backend=foo"], "sdpa_backend=foo", ["auto", "flash", "efficient", "cudnn", "math"]),
    (["model=tiny-gpt2", "cache=nosuch"], "cache=nosuch", ["dynamic", "quantized_int2", "paged"]),
    (["model=tiny-gpt2", "new_tokens=1"], "new_tokens=1", ["at least 2"]),
    (["model=tiny-gpt2", "device=tpu"], "device=tpu", ["auto", "cpu", "cuda"]),
    (["model=tiny-gpt2", "cache=paged", "attn=flash_attention_2", "cache.block_size=32"], "cache.block_size=32",
     ["multiple of 256", "flash_attention_2"]),
    (["model=tiny-gpt2", "cache=paged", "cache.block_size=0"], "cache.block_size=0", ["positive integer"]),
])
def test_bad_input_is_one_clear_line(subprocess_env, tmp_path, args, bad, allowed):
    store = tmp_path / "store"
    t = time.time()
    p = bench(["run", *args, f"store={store}"], subprocess_env, tmp_path, timeout=60)
    took = time.time() - t
    assert p.returncode != 0
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    assert bad in errors[0]
    for a in allowed:
        assert a in errors[0], (a, errors[0])
    assert "Traceback" not in p.stderr
    assert not store.exists() or not list(store.glob("*.jsonl")), "a bad input must not write a row"
    # caught before any model is built: offline, building gpt2 logs its RANDOM WEIGHTS warning
    assert "RANDOM WEIGHTS" not in p.stderr, f"a model was loaded before the input was checked ({took:.0f} s)"


def test_env_prints_versions(subprocess_env, tmp_path):
    import torch

    p = bench(["env"], subprocess_env, tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    fields = dict(ln.split(": ", 1) for ln in p.stdout.splitlines() if ": " in ln)
    assert fields["torch"] == torch.__version__
    assert fields["transformers"] == transformers.__version__
    assert fields["device"] in ("cpu", "cuda")


def test_unknown_command_exits_2(subprocess_env, tmp_path):
    p = bench(["nosuch"], subprocess_env, tmp_path, timeout=60)
    assert p.returncode == 2
    assert "nosuch" in p.stderr and "run" in p.stderr


def test_help_exits_0(subprocess_env, tmp_path):
    p = bench(["--help"], subprocess_env, tmp_path, timeout=60)
    assert p.returncode == 0 and "usage" in p.stdout


def test_fit_check_false_lets_the_device_answer(tmp_path, monkeypatch):
    """With a card the planner says is far too small, fit_check=true refuses the cell before loading and
    fit_check=false runs it (in process, so the planner's memory figure can be replaced)."""
    from bench import cli, fit

    monkeypatch.setattr(fit, "device_memory", lambda device: ("a 1 KiB card", 1024))
    store = tmp_path / "s"
    argv = ["bench", *SMALL, "cache=dynamic", "isolate=false", f"store={store}", f"hydra.run.dir={tmp_path}/h"]
    monkeypatch.setattr(sys, "argv", argv + ["fit_check=true"])
    with pytest.raises(SystemExit, match="a 1 KiB card"):
        cli.main()
    assert not list(store.glob("*.jsonl"))
    monkeypatch.setattr(sys, "argv", argv + ["fit_check=false"])
    cli.main()
    rows = [json.loads(line) for f in store.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok"]
