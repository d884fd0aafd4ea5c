"""bench.store: one JSON-lines file per run, atomic appends, a tolerant loader."""
from __future__ import annotations

import json
import os
import warnings

import pandas as pd
import pytest

from bench import store
from bench.store.schema import COLUMNS, SCHEMA_VERSION, Record
from bench.store import RunFile

REQUIRED = ["model", "weights", "dtype", "device", "cache", "strategy", "attn", "batch", "prompt_len", "new_tokens",
            "status", "ttft_ms", "tpot_ms", "e2e_ms", "e2e_samples_ms", "decode_tok_s", "peak_mem_mib", "kv_cache_mib"]


def row(run_id="run-a", settings=None, **kw) -> dict:
    base = dict(model="tiny-gpt2", weights="random", dtype="float32", device="cpu", cache="dynamic", attn="sdpa",
                batch=1, prompt_len=8, new_tokens=4, ttft_ms=5.0, tpot_ms=1.0, e2e_ms=8.0, decode_tok_s=1000.0,
                peak_mem_mib=100.0, kv_cache_mib=0.01, step_ms=[1.0, 1.0, 1.0], run_id=run_id,
                e2e_samples_ms=[8.0, 8.1, 7.9])
    return Record(**{**base, **kw}, settings=settings or {}).as_row()


def lines(path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_append_keeps_earlier_rows(tmp_path):
    rf = RunFile(tmp_path, "run-a")
    for i in range(3):
        rf.append(row(prompt_len=8 + i))
        assert [r["prompt_len"] for r in lines(rf.path)] == list(range(8, 9 + i))
    assert rf.path.parent == tmp_path and rf.path.name.startswith("run-a") and rf.path.suffix == ".jsonl"
    assert [p.name for p in tmp_path.iterdir()] == [rf.path.name]


def test_two_runs_with_one_run_id_never_share_a_file(tmp_path):
    """Two processes started with the same KVBENCH_RUN_ID: each claims its own file, no row is lost."""
    a, b = RunFile(tmp_path, "same"), RunFile(tmp_path, "same")
    for i in range(2):
        a.append(row("same", prompt_len=10 + i))
        b.append(row("same", prompt_len=20 + i))
    assert a.path != b.path and {a.path.name, b.path.name} == {"same.jsonl", "same.2.jsonl"}
    assert sorted(store.load(tmp_path)["prompt_len"]) == [10, 11, 20, 21]


def test_run_id_owned_by_this_process_names_the_file(tmp_path):
    run_id = f"20240101T000000-host-{os.getpid()}"  # what the CLI makes: the pid ends the id
    rf = RunFile(tmp_path, run_id)
    rf.append(row(run_id))
    assert rf.path == tmp_path / f"{run_id}.jsonl"


def test_append_is_atomic(tmp_path, monkeypatch):
    """A failure mid-write leaves the file as it was: the new content goes to a temp file that
    replaces the run file in one step, and the loader never reads the temp file."""
    rf = RunFile(tmp_path, "run-a")
    rf.append(row(prompt_len=8))
    rf.append(row(prompt_len=9))
    before = rf.path.read_bytes()
    inode = rf.path.stat().st_ino

    def crash(*a, **k):
        raise OSError("disk vanished")

    monkeypatch.setattr(store.runfile.os, "replace", crash)
    with pytest.raises(OSError):
        rf.append(row(prompt_len=10))
    assert rf.path.read_bytes() == before
    assert rf.path.stat().st_ino == inode
    assert [p for p in tmp_path.iterdir() if p != rf.path] == []  # the half-done write is removed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = store.load(tmp_path)
    assert sorted(df["prompt_len"]) == [8, 9]
    monkeypatch.undo()
    rf.append(row(prompt_len=11))  # the failed row is not smuggled in by the next append
    assert sorted(store.load(tmp_path)["prompt_len"]) == [8, 9, 11]


def test_append_replaces_never_writes_in_place(tmp_path, monkeypatch):
    rf = RunFile(tmp_path, "run-a")
    rf.append(row())
    replaced = []
    real = os.replace
    monkeypatch.setattr(store.runfile.os, "replace", lambda src, dst: (replaced.append((src, dst)), real(src, dst)))
    rf.append(row(cache="none"))
    assert len(replaced) == 1
    src, dst = map(str, replaced[0])
    assert dst == str(rf.path) and os.path.dirname(src) == str(tmp_path) and src != dst


def test_two_runs_one_store(tmp_path):
    a, b = RunFile(tmp_path, "run-a"), RunFile(tmp_path, "run-b")
    a.append(row("run-a", cache="dynamic"))
    b.append(row("run-b", cache="static"))
    a.append(row("run-a", cache="none"))
    b.append(row("run-b", cache="quantized", settings={"nbits": 4}))
    assert a.path != b.path
    assert sorted(tmp_path.iterdir()) == sorted([a.path, b.path])
    df = store.load(tmp_path)
    assert len(df) == 4
    assert sorted(zip(df["run_id"], df["cache"])) == [("run-a", "dynamic"), ("run-a", "none"),
                                                       ("run-b", "quantized"), ("run-b", "static")]
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS
    # one file on its own loads only that run
    assert set(store.load(a.path)["run_id"]) == {"run-a"}


def test_truncated_line_and_foreign_file_are_skipped_with_warning(tmp_path):
    rf = RunFile(tmp_path, "run-a")
    rf.append(row(cache="dynamic"))
    rf.append(row(cache="static"))
    text = rf.path.read_text()
    rf.path.write_text(text[: len(text) - 40])  # a crash mid-line (no trailing newline)
    (tmp_path / "notes.jsonl").write_text('{"hello": "world"}\n[1, 2, 3]\nnot json at all\n')
    with pytest.warns(UserWarning) as caught:
        df = store.load(tmp_path)
    assert list(df["cache"]) == ["dynamic"]
    msgs = [str(w.message) for w in caught]
    assert any(f"{rf.path.name}:2" in m for m in msgs)
    assert sum("notes.jsonl" in m for m in msgs) == 3


def test_newer_schema_is_skipped(tmp_path):
    rf = RunFile(tmp_path, "run-a")
    rf.append(row(cache="dynamic"))
    rf.append({**row(cache="static"), "schema_version": SCHEMA_VERSION + 1})
    with pytest.warns(UserWarning, match="newer"):
        df = store.load(tmp_path)
    assert list(df["cache"]) == ["dynamic"]


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_load_without_rows_has_the_columns(tmp_path, where):
    d = tmp_path / where
    if where == "empty":
        d.mkdir()
    df = store.load(d)
    assert isinstance(df, pd.DataFrame) and len(df) == 0
    assert set(REQUIRED) <= set(df.columns)
    assert list(df.columns) == COLUMNS


def test_nan_and_inf_become_null(tmp_path):
    rf = RunFile(tmp_path, "run-a")
    rf.append(row(ttft_ms=float("nan"), tpot_ms=float("inf"), e2e_ms=-float("inf"), kv_cache_mib=2.5))

    def strict(c):
        raise ValueError(f"non-standard JSON constant {c}")

    raw = json.loads(rf.path.read_text().strip(), parse_constant=strict)  # valid JSON for any reader
    assert raw["ttft_ms"] is None and raw["tpot_ms"] is None and raw["e2e_ms"] is None
    assert raw["kv_cache_mib"] == 2.5
    df = store.load(tmp_path)
    assert df["ttft_ms"].isna().all() and df["tpot_ms"].isna().all()
    assert df["kv_cache_mib"].iloc[0] == 2.5


def test_rows_round_trip(tmp_path):
    r = row(cache="quantized", settings={"nbits": 2, "quant_backend": "hqq"}, status="ok", step_ms=[1.5, 2.5, 3.5])
    RunFile(tmp_path, "run-a").append(r)
    got = store.load(tmp_path).iloc[0].to_dict()
    for k in ("cache", "nbits", "quant_backend", "prompt_len", "status", "ttft_ms", "step_ms", "e2e_samples_ms",
              "strategy_keys", "cell_id", "schema_version"):
        assert got[k] == r[k], k
    assert got["strategy_keys"] == ["nbits", "quant_backend"]


@pytest.mark.parametrize("line, why", [
    ('{"schema_version": 1}', "without run_id, model, cache, status"),
    ('{"schema_version": 2, "run_id": "r", "model": "m", "cache": "dynamic", "status": "fine"}', "status 'fine'"),
    ('{"schema_version": 2, "run_id": "r", "model": "", "cache": "dynamic", "status": "ok"}', "without model"),
])
def test_a_malformed_row_is_skipped_with_a_warning(tmp_path, line, why):
    RunFile(tmp_path, "run-a").append(row(cache="dynamic"))
    (tmp_path / "odd.jsonl").write_text(line + "\n")
    with pytest.warns(UserWarning, match="odd.jsonl:1") as caught:
        df = store.load(tmp_path)
    assert list(df["cache"]) == ["dynamic"]
    assert any(why in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_schema_1_rows_load_with_todays_columns_and_identity(tmp_path):
    """A row written before strategy objects (schema 1) gets its label, roles and the same cell id as a
    schema-2 row of the same conditions."""
    old = {"schema_version": 1, "run_id": "old", "model": "m", "weights": "random", "dtype": "float32",
           "device": "cpu", "gpu": "", "cache": "quantized", "nbits": 4, "quant_backend": "quanto",
           "residual_length": 128, "q_group_size": 64, "axis_key": 0, "axis_value": 0, "block_size": None,
           "attn": "sdpa", "sdpa_backend": "auto", "compile": "auto", "batch": 1, "prompt_len": 8,
           "new_tokens": 4, "seed": 0, "status": "ok", "cell_id": "stale-old-id"}
    new = row("new", model="m", cache="quantized", status="ok", prompt_len=8, new_tokens=4, sdpa_backend="auto", compile="auto",
              settings={"nbits": 4, "quant_backend": "quanto", "residual_length": 128, "q_group_size": 64,
                        "axis_key": 0, "axis_value": 0})
    (tmp_path / "old.jsonl").write_text(json.dumps(old) + "\n")
    RunFile(tmp_path, "new").append(new)
    df = store.load(tmp_path).set_index("run_id")
    assert df.loc["old", "strategy"] == "quantized int4 (quanto)"
    assert not df.loc["old", "reference"] and df.loc["old", "holds_cache"]
    assert df.loc["old", "cell_id"] == df.loc["new", "cell_id"] == new["cell_id"]


def test_foreign_schema_version_type_is_skipped(tmp_path):
    RunFile(tmp_path, "run-a").append(row(cache="dynamic"))
    (tmp_path / "other-tool.jsonl").write_text('{"schema_version": "2.0", "name": "x"}\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = store.load(tmp_path)
    assert list(df["cache"]) == ["dynamic"]
    assert any("other-tool.jsonl" in str(w.message) for w in caught)


def test_corrections_blank_a_defective_figure_and_say_why(tmp_path):
    """A known defect (a run whose peaks included a leftover cache) is declared once beside the rows: readers
    get the figure empty with the reason; the rows on disk keep what was measured."""
    RunFile(tmp_path, "bad").append(row("bad", cache="dynamic", peak_mem_mib=900.0))
    RunFile(tmp_path, "bad2").append(row("bad", cache="paged", peak_mem_mib=800.0))
    RunFile(tmp_path, "good").append(row("good", cache="dynamic", peak_mem_mib=500.0))
    (tmp_path / "corrections.json").write_text(json.dumps([{"run_id": "bad", "columns": ["peak_mem_mib"],
                                                            "exempt_caches": ["paged"], "why": "leftover cache"}]))
    df = store.load(tmp_path).set_index("cache", append=True)
    got = {(r["run_id"], r["cache"]): (r["peak_mem_mib"], r["error"]) for _, r in store.load(tmp_path).iterrows()}
    assert pd.isna(got["bad", "dynamic"][0]) and got["bad", "dynamic"][1] == "leftover cache"
    assert got["bad", "paged"] == (800.0, "") and got["good", "dynamic"] == (500.0, "")
    assert '"peak_mem_mib": 900.0' in (tmp_path / "bad.jsonl").read_text()
    assert len(df) == 3
