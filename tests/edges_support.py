"""What tests/test_edges.py needs around the real command line: a cell that "runs" without loading weights, an
in-process stand-in for the worker process, the files a case points at, and the one verdict of a case.

Everything a cell does before it loads weights is real (compose, checks, run id, store, the worker's pre-flight,
run_cell's model check and fit check, rounds, merging, writing); only loading and timing are replaced
(`bench.run.cell.get_model` and `_measure`), so a bad input that slips through shows as a written row in
milliseconds instead of a real measurement.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from tests.rows import row as good_row

# ---- a cell without weights ----


def stub_cells(monkeypatch) -> list:
    """Replace loading and timing in bench.run.cell; returns the list of cells that would have loaded."""
    from bench.run import cell, models

    loads: list = []

    def get_model(cfg, device):
        loads.append(cfg)
        return models.Loaded(model=None, source="stub", weights="random", dtype="float32")

    def measure(rec, cfg, loaded, on_timing, first_round):
        on_timing()
        n = cfg.new_tokens
        rec.e2e_samples_ms, rec.ttft_samples_ms = [10.0], [2.0]
        rec.tpot_samples_ms = [8.0 / (n - 1)]
        rec.e2e_ms, rec.ttft_ms, rec.tpot_ms = 10.0, 2.0, 8.0 / (n - 1)
        rec.decode_tok_s, rec.e2e_tok_s = cfg.batch * 1000 / rec.tpot_ms, cfg.batch * n * 100.0
        rec.repeats, rec.stop_reason = 1, "fixed"

    monkeypatch.setattr(cell, "get_model", get_model)
    monkeypatch.setattr(cell, "_measure", measure)
    return loads


class InProcessWorker:
    """bench.run.worker.Worker's interface, answered in this process by the same functions the worker runs."""

    def __init__(self, env=None):
        self.env, self.cuda, self.threads, self.device_count, self.broken = dict(env or {}), False, 1, 0, ""
        self.proc, self.started = None, False

    def start(self) -> bool:
        self.started = True
        return True

    def alive(self) -> bool:
        return self.started

    ensure = start

    def stop(self, graceful: bool = False) -> None:
        self.started = False

    def preflight(self, cells):
        from bench.run.preflight import preflight

        return preflight(cells)

    def run(self, cfg, run_id, skip=frozenset(), first=True):
        from bench.run.cell import run_cell
        from bench.run.worker import Outcome

        t0 = time.monotonic()
        rec = run_cell(cfg, run_id, skip, first_round=first)
        return Outcome(rec.as_row() if rec is not None else None, time.monotonic() - t0)


def in_process_workers(monkeypatch) -> None:
    from bench.run import schedule, worker

    monkeypatch.setattr(worker, "Worker", InProcessWorker)
    monkeypatch.setattr(schedule, "Worker", InProcessWorker)


# ---- files a case points at ({name} in its argv) ----

TINY_LLAMA = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 1024}
CONFIGS = {
    "bert": {"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 64, "architectures": ["BertForMaskedLM"]},
    "t5": {"model_type": "t5", "vocab_size": 100, "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1,
           "num_heads": 2, "is_encoder_decoder": True, "architectures": ["T5ForConditionalGeneration"]},
    "llama_dir": TINY_LLAMA,
    "gpt2_dir": {"model_type": "gpt2", "vocab_size": 100, "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 64},
}
BAD_ROWS = {"tpot_ms": "fast", "prompt_len": None, "batch": "1"}  # the three, each beside a good row


def _dir(path: Path, config_text: str | None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if config_text is not None:
        (path / "config.json").write_text(config_text)
    return path


def _rows(path: Path, rows: list[dict], name: str = "good.jsonl") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / name, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def good_rows() -> list[dict]:
    """Three ok cells of one setup, CPU; and one GPU cell (gpu-report, plan check)."""
    out = [good_row(c, e2e=100.0 + 10 * i, seed=i, ts="2026-12-01T10:00:00+00:00")
           for i, c in enumerate(("dynamic", "static", "none"))]
    out.append(good_row("dynamic", device="cuda", gpu="NVIDIA H200", ts="2026-12-01T10:00:00+00:00"))
    return out


def bad_beside_good() -> list[dict]:
    """The good dynamic row, then newer rows of the same cell, each wrong in one field."""
    good = good_rows()[0]
    return [good] + [{**good, field: value, "timestamp": "2026-12-02T10:00:00+00:00", "tpot_ms": 0.001}
                     if field != "tpot_ms" else {**good, field: value, "timestamp": "2026-12-02T10:00:00+00:00"}
                     for field, value in BAD_ROWS.items()]


class Ctx(dict):
    """Fixture paths by name, made on first use under one test's tmp_path."""

    def __init__(self, tmp: Path):
        super().__init__(tmp=str(tmp), store=str(tmp / "store"), missing=str(tmp / "no-such-dir"))
        self.tmp = tmp

    def __missing__(self, name: str) -> str:
        t = self.tmp
        if name in CONFIGS:  # a config and a weights file (the checks look at its name only)
            p = _dir(t / name, json.dumps(CONFIGS[name]))
            (p / "model.safetensors").write_bytes(b"")
        elif name == "noweights":
            p = _dir(t / name, json.dumps(TINY_LLAMA))
        elif name == "nocfg":
            p = _dir(t / "nocfg", None)
        elif name == "garbagecfg":
            p = _dir(t / "garbagecfg", "{not json")
        elif name == "afile":
            p = t / "afile.txt"
            p.write_text("not a directory\n")
        elif name == "good":
            p = _rows(t / "good", good_rows())
        elif name == "mixed":
            p = _rows(t / "mixed", bad_beside_good())
        elif name == "garbage":
            p = _rows(t / "garbage", [])
            (p / "junk.jsonl").write_bytes(b"\x00\xff garbage\n{\"half\": \n[1,2]\n\"text\"\n")
        elif name == "empty":
            p = _dir(t / "empty", None)
        elif name == "newer":
            p = _rows(t / "newer", [{**good_rows()[0], "schema_version": 99}])
        elif name == "jsonldir":
            p = _rows(t / "jsonldir", good_rows())
            (p / "odd.jsonl").mkdir()
        elif name == "emptyfile":
            p = t / "empty.jsonl"
            p.write_text("")
        elif name == "nanrow":
            p = _rows(t / "nanrow", good_rows())
            (p / "nan.jsonl").write_text(json.dumps(good_rows()[1]).replace('"e2e_ms": ', '"e2e_ms": NaN, "x": ')
                                         + "\n")
        elif name.startswith("corr_"):
            p = _rows(t / name, good_rows())
            (p / "corrections.json").write_bytes(CORRECTIONS[name].encode("utf-8", "surrogateescape"))
        elif name == "prjunk":
            p = _dir(t / "prjunk", None)
            (p / "keep.txt").write_text("mine")
        elif name == "fakebin":  # an sbatch that finds no cluster
            p = _dir(t / "fakebin", None)
            (p / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: no cluster here' >&2\nexit 1\n")
            (p / "sbatch").chmod(0o755)
        elif name == "prout":
            p = _dir(t / "prout", None)
            (p / "pr.md").write_text("# pr\n![fig](a.png)\n")
        else:
            raise KeyError(name)
        self[name] = str(p)
        return self[name]

    def fill(self, args: list[str]) -> list[str]:
        return [re.sub(r"\{(\w+)\}", lambda m: self[m.group(1)] if m.group(1) in self or _known(m.group(1))
                       else m.group(0), a) for a in args]


def _known(name: str) -> bool:
    return name in CONFIGS or name in CORRECTIONS or name in (
        "nocfg", "garbagecfg", "afile", "good", "mixed", "garbage", "empty", "newer", "jsonldir", "emptyfile",
        "nanrow", "prjunk", "prout", "fakebin", "noweights")


CORRECTIONS = {
    "corr_text": "this is not json",
    "corr_dict": '{"run_id": "run-a", "columns": ["peak_mem_mib"], "why": "x"}',
    "corr_type": '[{"run_id": 1, "columns": ["peak_mem_mib"], "why": "x"}]',
    "corr_cols": '[{"run_id": "run-a", "columns": "peak_mem_mib", "why": "x"}]',
    "corr_where": '[{"run_id": "run-a", "columns": ["peak_mem_mib"], "why": "x", "where": [1]}]',
    "corr_empty": "",
    "corr_binary": "\udcff\udcfe",
}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (its bytes): what a case must not lose."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            try:
                out[str(p)] = p.read_bytes()
            except OSError:
                pass
    return out


def rows_in(store: Path) -> list[dict]:
    if not store.is_dir():
        return []
    return [json.loads(ln) for f in sorted(store.glob("*.jsonl")) if f.is_file() and not f.name.startswith(".")
            for ln in f.read_text().splitlines() if ln.strip()]


# ---- the verdict of one case ----

def verdict(code, err: str, words, expect: int, rows: list) -> str:
    """clear | unclear | late | silently accepted | traceback (the issue's classes) for a case expecting `expect`;
    `rows`: the rows it wrote."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if "Traceback" in err:
        return "traceback"
    if expect == 0:
        return "clear" if code == 0 and not errors else "refused"
    if rows and expect == 2:  # it ran: an error row is a late refusal, an ok row a silent acceptance
        return "late" if any(r.get("status") != "ok" for r in rows) else "silently accepted"
    if code == 0:
        return "silently accepted"
    if code != expect or len(errors) != 1 or any(w not in errors[0] for w in words):
        return "unclear"
    return "clear"
