"""Shared fixtures: offline, a private KVBENCH_CACHE, Hydra-composed RunConfigs, tiny models only.

Environment is set in pytest_configure, before any test module imports bench: bench.run.models reads
KVBENCH_CACHE when it is imported, and torch reads OMP_NUM_THREADS when it starts.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_CACHE_DIR: Path | None = None


def pytest_configure(config):
    global _CACHE_DIR
    _CACHE_DIR = Path(tempfile.mkdtemp(prefix="kvbench-test-cache-"))
    os.environ["HF_HUB_OFFLINE"] = "1"          # never reach for the hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["KVBENCH_CACHE"] = str(_CACHE_DIR)
    # Tiny matmuls on a 2-thread pool cost ~20 ms each in wake-ups on small VMs; these tests check
    # correctness, not speed, so one thread keeps the suite fast. Override by exporting it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def pytest_unconfigure(config):
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def kvbench_cache() -> Path:
    """The session's KVBENCH_CACHE: a fresh temp dir, and the one bench.run.models really uses."""
    from bench.run import models

    assert os.environ["KVBENCH_CACHE"] == str(_CACHE_DIR)
    assert models.CACHE_DIR == _CACHE_DIR, "bench.run.models was imported before conftest set KVBENCH_CACHE"
    return _CACHE_DIR


@pytest.fixture(scope="session", autouse=True)
def _offline_env(kvbench_cache):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    yield


# Small enough for seconds per cell on a CPU; each test overrides what it checks.
SMALL = ("device=cpu", "attn=sdpa", "prompt_len=8", "new_tokens=4", "repeats=2", "warmup=1")


def compose_cfg(*overrides: str, small: bool = True):
    """A RunConfig exactly as the CLI composes and checks it (bench.cli.compose), from Hydra overrides."""
    from bench.cli import compose

    merged: dict[str, str] = {}
    for o in (SMALL if small else ()) + tuple(overrides):  # later overrides of a key win
        merged[o.split("=", 1)[0]] = o
    (cfg,) = compose.cells(list(merged.values()))
    return cfg


@pytest.fixture(scope="session")
def make_cfg():
    return compose_cfg


@pytest.fixture
def fresh_models(monkeypatch):
    """An empty per-process model cache for this test (state such as a static cache's remembered
    length cannot leak in from earlier tests); the session's cache comes back afterwards."""
    from bench.run import cell as runner

    monkeypatch.setattr(runner, "_loaded", {})
    return runner


@pytest.fixture(scope="session")
def subprocess_env(kvbench_cache) -> dict:
    """Environment for `python -m bench` subprocesses: the repo importable, offline, private cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["KVBENCH_CACHE"] = str(kvbench_cache)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("KVBENCH_RUN_ID", None)
    env.pop("KVBENCH_FAULT", None)
    env["COLUMNS"] = "200"  # rich wraps long lines at the terminal width; keep an error on one line
    return env


def run_without_torch(code: str, args: list, tmp_path: Path):
    """Run `code` in a subprocess where torch/transformers are empty stand-ins; `code` ends by asserting
    neither landed in sys.modules (an import, even lazy or guarded, would put them there)."""
    import subprocess

    fake = tmp_path / "fake"
    for m in ("torch", "transformers"):
        (fake / m).mkdir(parents=True)
        (fake / m / "__init__.py").write_text("")
    code += "; bad = {'torch', 'transformers'} & set(sys.modules); assert not bad, bad"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
