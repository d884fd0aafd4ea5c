"""The real command line, in a subprocess: `python -m bench run|env|...` from the repo root."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers

from bench.store import files as run_files

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["model=tiny-gpt2", "prompt_len=8", "new_tokens=4", "repeats=1", "warmup=1", "device=cpu", "rounds=1"]


def small(*over: str) -> list[str]:
    """SMALL with some of its settings replaced (a key is given once on a command line)."""
    keys = {o.split("=", 1)[0] for o in over}
    return [a for a in SMALL if a.split("=", 1)[0] not in keys] + list(over)


def _argv(args, tmp_path) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def bench(args, env, tmp_path, timeout=240) -> subprocess.CompletedProcess:
    """Run from tmp_path: whatever Hydra or the run would leave in the working directory shows there."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(_argv(args, tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


class Launched:
    """A `python -m bench` started in the background; `result()` waits for it."""

    def __init__(self, args, env, tmp_path):
        self.store = tmp_path / "store"
        self.t0 = time.time()
        self.cwd = tmp_path
        self.proc = subprocess.Popen(_argv([*args, f"store={self.store}"], tmp_path), cwd=tmp_path, env=env,
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
        "sweep": ["run", "sweep=default", *SMALL, "attn=sdpa", "budget_s=1"],  # its race: the first pass only
    }
    launched = {k: Launched(a, subprocess_env, tmp_path_factory.mktemp(k)) for k, a in runs.items()}
    yield launched
    for l in launched.values():
        if l.proc.poll() is None:
            l.proc.kill()
            l.proc.communicate()


def store_rows(store: Path) -> tuple[list[Path], list[dict]]:
    files = run_files(store)  # not the .tmp- file a process killed mid-append leaves behind
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
    # quiet: one line for the cell (saying RANDOM WEIGHTS) and where its row went; nothing else
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2 and "[RANDOM WEIGHTS]: ok" in lines[0] and lines[1].startswith("row written to"), p.stderr
    # Hydra and the run left nothing in the working directory but the store
    assert sorted(x.name for x in real_runs["single"].cwd.iterdir()) == ["store"]


def test_multirun_writes_one_file(real_runs):
    store = real_runs["multirun"].store
    p, _ = real_runs["multirun"].result()
    assert p.returncode == 0, p.stderr[-3000:]
    files, rows = store_rows(store)
    assert len(files) == 1, files
    assert sorted(r["cache"] for r in rows) == ["dynamic", "none"]
    assert len({r["run_id"] for r in rows}) == 1
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2 and all("tiny-gpt2 cache=" in ln for ln in lines), p.stderr


def test_the_parent_of_bench_run_never_imports_torch(subprocess_env, tmp_path):
    """torch stays in the worker: the parent composes, checks, launches and writes rows without it."""
    code = ("import atexit, sys, runpy; "
            "atexit.register(lambda: print('TORCH IN PARENT' if 'torch' in sys.modules else 'parent clean'));"
            f"sys.argv = ['bench', 'run', *{SMALL!r}, 'cache=dynamic', 'store={tmp_path}/s']; "
            "runpy.run_module('bench', run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env, capture_output=True, text=True,
                       timeout=240)
    assert "parent clean" in p.stdout, (p.stdout, p.stderr[-2000:])
    assert store_rows(tmp_path / "s")[1][0]["status"] == "ok"


def test_the_timeout_counts_the_cell_not_the_worker_start(subprocess_env, tmp_path):
    """A fresh worker spends seconds importing torch and building the model; a 3 s timeout must still
    let each 0.3 s cell finish (it used to kill every cell)."""
    r = bench(["run", "-m", *SMALL, "cache=dynamic,static", "cell_timeout_s=3", f"store={tmp_path}/s"],
              subprocess_env, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x["status"] for x in store_rows(tmp_path / "s")[1]] == ["ok", "ok"]


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
    got = {(r["cache"], r.get("nbits"), r.get("quant_backend")): r for r in rows}
    assert len(rows) == len(got) == 9, "one row per cache"
    assert {k: r["status"] for k, r in got.items()} == SWEEP, {k: r["error"] for k, r in got.items()}
    assert all(r["attn"] == "sdpa" for r in rows)
    for k, r in got.items():
        if SWEEP[k] == "unavailable":
            assert "device=cuda" in r["error"]
    print(f"default sweep, 9 cells: {took:.1f} s (alongside the other two runs)")


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


def test_fit_check_false_lets_the_device_answer(tmp_path, monkeypatch, capsys):
    """With a card the planner says is far too small, fit_check=true refuses the cell before loading and
    fit_check=false runs it (in process, so the planner's memory figure can be replaced)."""
    from bench import __main__ as entry
    from bench.predict import planner
    from bench.run import cell as runner

    monkeypatch.setattr(planner, "capacity", lambda device: ("a 1 KiB card", 1024))
    monkeypatch.setattr(runner, "_loaded", {})
    store = tmp_path / "s"
    argv = ["run", *SMALL, "cache=dynamic", "isolate=false", f"store={store}"]
    assert entry.main(argv + ["fit_check=true"]) == 2 and "a 1 KiB card" in capsys.readouterr().err
    assert not list(store.glob("*.jsonl")) and not runner._loaded
    assert entry.main(argv + ["fit_check=false"]) == 0
    rows = [json.loads(line) for f in store.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok"]


def test_the_overhead_check_script_runs(subprocess_env, tmp_path):
    """scripts/overhead_check.py, which the README quotes, still runs against today's package."""
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "overhead_check.py"), "model=tiny-llama", "cache=dynamic",
                        "prompt_len=8", "new_tokens=8", "--calls=2", "--tolerance=10"], cwd=tmp_path, env=subprocess_env,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads(p.stdout[p.stdout.index("{"):])
    assert result["harness_decode_tok_s"] > 0 and result["bare_decode_tok_s"] > 0 and result["within_tolerance"]


def test_plan_of_a_model_given_by_its_directory(subprocess_env, tmp_path):
    """bench plan with a local config.json (not a shipped conf/model): a table, not a traceback."""
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512).save_pretrained(tmp_path / "m")
    p = subprocess.run([sys.executable, "-m", "bench", "plan", f"model={tmp_path / 'm'}", "gpu=24"], cwd=ROOT,
                       env=subprocess_env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| dynamic |" in p.stdout and "| quantized int4 (quanto) |" in p.stdout
    assert "384 prompt + 128 new tokens" in p.stdout  # 4096 capped at the 512 positions the config allows
