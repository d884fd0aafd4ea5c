"""The edges, drilled as a new user would: bad inputs and faults of every verb through the real command line.

Each bad input must end in exactly one line on stderr, `error: ...`, naming the key and the value, exit code 2,
no traceback, no row written, nothing already on disk changed, and no model loaded. Valid inputs that used to be
refused (expect=0) must run. Store faults must lose no row and leave no partial file. tests/test_inputs.py holds
the first table; none of its cases is repeated here.

Cases run in this process through bench.cli.main.main (the code of `python -m bench`); a cell that gets past
every check "runs" without loading weights (tests/edges_support.py), so an input that slips through shows as a
written row in milliseconds. A few run through a real subprocess and a real worker process.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.cli.main import main
from tests.edges_support import Ctx, in_process_workers, rows_in, snapshot, stub_cells, verdict

ROOT = Path(__file__).resolve().parent.parent
T = ["model=tiny-llama", "device=cpu", "prompt_len=8", "new_tokens=4", "repeats=1", "rounds=1", "warmup=0",
     "store={store}"]
LONG = "a" * 5000


@dataclass
class Case:
    line: list            # the command line after `python -m bench`; {name}: a file of edges_support.Ctx
    words: tuple          # what the error line must hold (the key and the value)
    expect: int = 2       # exit code
    env: dict = field(default_factory=dict)
    rows: int | None = None   # expect=0: rows the run must leave in {store}
    warns: tuple = ()     # words of `warning:` lines the command must print (a malformed store is reported)
    cwd: str = "tmp"      # where it runs: a scratch directory (pr: the checkout, whose commits it measures)

    @property
    def id(self) -> str:
        text = " ".join(self.line) + "".join(f" {k}={v!r}" for k, v in self.env.items())
        return text if len(text) < 90 else text[:87] + "..."


def C(line, *words, **kw) -> Case:
    return Case(shlex.split(line) if isinstance(line, str) else list(line), words, **kw)


RUN = [
    # -m anywhere on the line (a valid sweep), duplicates, empty and repeated sweep values
    C("run cache=dynamic,static -m attn=sdpa", expect=0, rows=2),
    C("run cache=dynamic,static --multirun", expect=0, rows=2),
    C("run batch=1,2 -m -m", expect=0, rows=2),
    C("run -m cache=glob(dyn*)", expect=0, rows=1),
    C("run batch=2 batch=4", "batch", "batch=2", "batch=4"),
    C("run batch=2 batch=2", "batch", "batch=2"),
    C("run cache=dynamic cache=static", "cache", "cache=static"),
    C("run cache=quantized cache.nbits=2 cache.nbits=4", "cache.nbits", "cache.nbits=4"),
    C("run model.dtype=float32 model.dtype=float16", "model.dtype", "model.dtype=float16"),
    C("run batch=2 +batch=4", "batch"),
    C("run model.arch.hidden_size=64 model.arch.hidden_size=128", "model.arch.hidden_size"),
    C("run hydra.sweep.dir=/tmp/a hydra.sweep.dir=/tmp/b", "hydra.sweep.dir"),
    C("run -m cache=dynamic,static cache=none,dynamic", "cache", "cache=none,dynamic"),
    C("run -m batch=1,1", "batch=1,1", "twice"),
    C("run -m cache=dynamic,dynamic", "cache=dynamic,dynamic", "twice"),
    C("run -m batch=", "batch="),
    C("run -m batch=1,", "batch=1,"),
    C("run -m batch=,1", "batch=,1"),
    C("run -m cache=dynamic,", "cache=dynamic,"),
    C("run -m batch=range(1,1)", "batch=range(1,1)", "no value"),
    C("run -m cache=glob(nosuch*)", "cache=glob(nosuch*)", "no value"),
    C("run -m batch=range(0,2)", "batch=0"),
    C("run -m batch=interval(1,2)", "batch=interval(1,2)"),
    C("run -m batch=choice()", "batch=choice()"),
    C("run -m cache=dynamic,static rounds=1,2", "rounds", "1, 2"),
    C("run -m store={tmp}/a,{tmp}/b", "store"),
    # contradictions
    C("run device_map=auto", "device_map=auto", "device=cpu"),
    C("run weights=random quality=on", "quality=on", "weights=random"),
    C("run isolate=false cell_timeout_s=5", "cell_timeout_s=5", "isolate=false"),
    C("run isolate=false compile_budget_s=5", "compile_budget_s=5", "isolate=false"),
    C("run isolate=false threads=2", "threads=2", "isolate=false"),
    C("run precision=0.05", "precision=0.05", "repeats=1"),
    C("run max_repeats=10", "max_repeats=10", "repeats=1"),
    C("run cell_budget_s=10", "cell_budget_s=10", "repeats=1"),
    C("run cache=static_budget cache.max_cache_len=4", "cache.max_cache_len=4"),
    C("run weights=real", "weights=real", "tiny-llama"),
    C("run compile=off compile_mode=max-autotune", "compile_mode=max-autotune", "compile=off"),
    C("run attn=sdpa attn.name=eager", "attn.name=eager", "attn=eager"),
    C("run model.name=gpt2", "model.name=gpt2", "tiny-llama"),
    C("run model.name=", "model.name"),
    C("run cache._target_=bench.strategies.static.Static", "cache._target_"),
    C("run cache.name=static", "cache.name"),
    # run ids
    *[C("run", "KVBENCH_RUN_ID", shown, env={"KVBENCH_RUN_ID": rid}) for rid, shown in [
        ("../x", "../x"), ("", "''"), ("/tmp/abs-run", "/tmp/abs-run"), ("a/b", "a/b"), (".hidden", ".hidden"),
        ("x" * 200, "xxxx"), ("a b", "a b"), ("résumé", "résumé"), ("a\nb", "a\\nb"), ("-x", "-x"),
        ("x..y", "x..y")]],
    # models that are not what their name says, or not there
    C("run model.arch.model_type=bert", "tiny-llama", "bert"),
    C("run model.hub_id={bert}", "model.hub_id", "bert"),
    C("run model.hub_id={t5}", "model.hub_id", "t5"),
    C("run model.hub_id={missing}", "model.hub_id", "no-such-dir"),
    C("run model.hub_id={nocfg}", "model.hub_id", "config.json"),
    C("run model.hub_id={garbagecfg}", "model.hub_id", "config.json"),
    C("run model.hub_id={afile}", "model.hub_id", "afile.txt", "not a directory"),
    C("run +model.hub_id={gpt2_dir}", "model.hub_id", "gpt2"),
    C("run model.hub_id=", "model.hub_id"),
    C("run +model.hub_id={noweights}", "model.hub_id", "no weights"),
    C("run +model.hub_id={noweights} weights=random", expect=0, rows=1),
    C("run +model.hub_id={llama_dir}", expect=0, rows=1),
    C("run model.arch.model_type=nosuch", "model.arch", "nosuch"),
    C("run model.arch.model_type=", "model.arch"),
    C("run model.arch.num_hidden_layers=-1", "num_hidden_layers", "-1"),
    C("run model.arch.hidden_size=1.5", "hidden_size", "1.5"),
    C("run model.arch.vocab_size=0", "vocab_size", "0"),
    C("run model.arch.num_attention_heads=3", "model.arch", "attention heads (3)"),
    C("run model.arch=5", "model.arch", "5"),
    C("run model.arch.num_key_value_heads=3", "model.arch.num_key_value_heads=3", "num_attention_heads=4"),
    C("run model.arch.rope_scaling={type:bogus}", "rope", "bogus"),
    C("run model.gguf=nosuchpkg:x.gguf weights=real", "model.gguf", "nosuchpkg"),
    C("run model.gguf=nocolon", "model.gguf", "nocolon"),
    C("run model.hub_id=nobody/no-such-model weights=real", "model.hub_id=nobody/no-such-model", "weights=real"),
    C("run model.arch.max_position_embeddings=4", "12", "4"),
    # Hydra's own settings
    C("run hydra.run.dir=/proc/x", "hydra.run.dir"),
    C("run hydra.job.chdir=true", "hydra.job.chdir"),
    C("run hydra/launcher=nosuch", "hydra/launcher=nosuch"),
    C("run hydra.launcher.n_jobs=2", "hydra.launcher.n_jobs", "hydra/launcher"),
    C("run hydra/launcher=basic hydra.launcher.n_jobs=2", "hydra.launcher.n_jobs", "hydra/launcher=basic"),
    C("run hydra/job_logging=default", "hydra/job_logging"),
    C("run +hydra.foo=1", "hydra.foo"),
    C("run hydra.verbose=true", "hydra.verbose"),
    C("run -m cache=dynamic,static hydra/launcher=joblib hydra.sweep.dir=/proc/x", "hydra.sweep.dir=/proc/x"),
    C("run -m cache=dynamic,static hydra/launcher=submitit_slurm", "hydra/launcher=submitit_slurm", "no cluster",
      env={"PATH": "{fakebin}:" + os.environ["PATH"]}),
    # odd values
    C("run batch=nan", "batch=nan"),
    C("run precision=nan", "precision=nan"),
    C("run cell_budget_s=inf", "cell_budget_s=inf", "finite"),
    C("run cell_timeout_s=1e309", "cell_timeout_s", "finite"),
    C("run budget_s=nan", "budget_s=nan"),
    C("run budget_s=-0.0", "budget_s=-0"),
    C("run precision=-0.0", "precision=-0"),
    C("run warmup=-0", expect=0, rows=1),
    C("run seed=18446744073709551616", "seed=18446744073709551616"),
    C("run batch=99999999999999999999", "batch=99999999999999999999"),
    C(["run", "prompt_len=" + "9" * 5000], "prompt_len"),
    C(["run", "store=" + LONG], "store=aaaa"),
    C("run device=cpü", "device=cpü"),
    C("run cache=dynámic", "cache=dynámic"),
    C("run batch=２", "batch='２'"),
    C(["run", "batch=2\u200b"], "batch='2\\u200b'"),
    C("run store={tmp}/résultats-ü", expect=0, rows=None),
    C("run seed=1e3", "seed=1000"),
    C("run repeats=1.0", "repeats=1.0"),
    C("run precision=1%", "precision=1%"),
    C("run \"precision='0.01'\"", "precision='0.01'"),
    C("run threads=0", "threads=0"),
    C("run threads=1.5", "threads=1.5"),
    C("run gpus=-1", "gpus=-1"),
    C("run gpus=", "gpus="),
    C("run rounds=0", "rounds=0"),
    C("run compile_budget_s=0", "compile_budget_s=0"),
    C("run max_repeats=1e9", "max_repeats="),
    C("run new_tokens=true", "new_tokens=true"),
    C("run device=null", "device=null"),
    C("run store=null", "store=null"),
    C("run batch=[1,2]", "batch=[1, 2]"),
    C("run batch={a:1}", "batch="),
    C("run cache=[dynamic]", "cache="),
    C("run resume=yes", "resume=yes"),
    C("run fit_check=0", "fit_check=0"),
    C("run quality=", "quality="),
    C("run dtype=", "dtype="),
    C("run cache=quantized nbits=", "nbits="),
    C("run cache=", "cache="),
    C("run model=", "model="),
    C("run sweep=", "sweep="),
    C("run =5", "=5"),
    C("run batch==2", "batch==2"),
    C("run batch", "batch"),
    C("run --batch 2", "--batch"),
    C("run sweep=quick cache=nosuch", "cache=nosuch"),
    C("run cache=quantized nbits=4.0", "nbits=4.0"),
    # unknown keys, near misses
    C("run Batch=2", "Batch", "batch"),
    C("run batchsize=2", "batchsize", "batch"),
    C("run prompt_length=8", "prompt_length", "prompt_len"),
    C("run new_token=4", "new_token", "new_tokens"),
    C("run repeat=3", "repeat", "repeats"),
    C("run cache=quantized cache.nbit=4", "cache.nbit", "nbits"),
    C("run attn.sdpa_backends=flash", "attn.sdpa_backends", "attn.sdpa_backend"),
    C("run model.hubid=x", "model.hubid", "model.hub_id"),
    C("run devices=cpu", "devices", "device"),
    C("run batch.size=2", "batch.size"),
    C("run cache.nbits.x=1", "cache.nbits.x"),
    # stores
    C("run store={afile}", "store=", "afile.txt", "not a directory"),
    C("run store={afile}/sub", "store=", "afile.txt"),
    C("run resume=true store={mixed}", expect=0, rows=None, warns=("tpot_ms", "prompt_len", "batch")),
    C("run resume=true store={jsonldir}", expect=0, rows=None, warns=("odd.jsonl",)),
]

OTHER = [
    C("report store={afile}", "store=", "afile.txt", "no rows"),
    C("report store={empty}", "store=", "no rows"),
    C("report store={garbage}", "store=", "no rows", warns=("junk.jsonl",)),
    C("report store={newer}", "store=", "no rows", warns=("newer",)),
    C("report store={emptyfile}", "store=", "no rows"),
    C("report store={mixed} out={tmp}/o", expect=0, warns=("tpot_ms", "prompt_len", "batch")),
    C("gpu-report 'gpu=NVIDIA H200' store={jsonldir} out={tmp}/r.md", expect=0, warns=("odd.jsonl",)),
    *[C(f"report store={{{c}}} out={{tmp}}/o", "corrections.json") for c in
      ("corr_text", "corr_dict", "corr_type", "corr_cols", "corr_where", "corr_empty", "corr_binary")],
    C("report store={good} out=", "out="),
    C("report store={good} out={afile}/x", "out=", "afile.txt"),
    C("report store={good} store={good}", "store", "twice"),
    C("report --store results", "--store"),
    C("report results", "results"),
    C("report stor=results", "stor", "store"),
    C("report store={good}/good.jsonl@run_id=x", "store=", "does not exist"),
    C("compare", "expected 2", "got 0"),
    C("compare {good} {good} {good}", "expected 2", "got 3"),
    C("compare {good}@ {good}", "bad filter"),
    C("compare {good}@=abc {good}", "bad filter", "=abc"),
    C("compare {good}@git_sha= {good}", "bad filter", "git_sha="),
    C("compare {good}@nosuchcol=1 {good}", "nosuchcol"),
    C("compare {good}@batch=abc {good}", "batch", "abc"),
    C("compare @abc {good}", "store"),
    C("compare {empty} {good}", "no rows"),
    C("compare {garbage} {good}", "no rows", warns=("junk.jsonl",)),
    C("compare {good} {good} noise={afile}", "noise=", "afile.txt"),
    C("compare {good} {good} noise={tmp}", "noise="),
    C("compare {good} {good} pool=yes", "pool=yes"),
    C("compare {good} {good} out=", "out="),
    C("compare {good} {good} out=a out=b", "out", "twice"),
    C("compare --pool {good} {good}", "--pool"),
    C("compare {corr_dict} {good}", "corrections.json"),
    C("compare {good}@run_id=run-a@run_id=zzz {good}", "run_id", "zzz"),
    C("compare {good}@status=error {good}", "status", "error"),
    C("compare {good} {good} calibrate=true noise={afile}", "calibrate=true", "noise="),
    C("gpu-report", "gpu="),
    C("gpu-report gpu=", "gpu="),
    C("gpu-report 'gpu=NVIDIA H999' store={good}", "NVIDIA H999", "NVIDIA H200"),
    C("gpu-report 'gpu=NVIDIA H200' store={empty}", "store=", "no rows"),
    C("gpu-report 'gpu=NVIDIA H200' store={good} out={tmp}", "out=", "directory"),
    C("gpu-report 'gpu=NVIDIA H200' store={good} out=/proc/x/r.md", "out=/proc/x/r.md"),
    C("gpu-report 'gpu=NVIDIA H200' store={good} out={afile}/r.md", "out=", "afile.txt"),
    C("gpu-report 'gpu=NVIDIA H200' store={good} plots=", "plots="),
    C("gpu-report gpu=a gpu=b", "gpu", "twice"),
    C("gpu-report H200", "H200"),
    C("gpu-report 'gpu=NVIDIA H200' store={corr_text}", "corrections.json"),
    C("plan", "gpu="),
    C("plan model={t5} gpu=h100", "model=", "t5", "encoder-decoder"),
    C("plan model={bert} gpu=h100", "model=", "bert"),
    C("plan model={nocfg} gpu=h100", "model=", "config.json"),
    C("plan model={garbagecfg} gpu=h100", "model=", "config.json"),
    C("plan model={missing} gpu=h100", "model=", "no-such-dir"),
    C("plan model={afile} gpu=h100", "model=", "afile.txt", "not a directory"),
    C("plan model=tiny-llama gpu=h100 model.arch.model_type=bert", "tiny-llama", "bert"),
    C("plan model=tiny-llama gpu=0", "gpu=0"),
    C("plan model=tiny-llama gpu=-5", "gpu=-5"),
    C("plan model=tiny-llama gpu=nan", "gpu=nan"),
    C("plan model=tiny-llama gpu=inf", "gpu=inf"),
    C("plan model=tiny-llama gpu=h100 gpu=h200", "gpu", "twice"),
    C("plan model=tiny-llama gpu=h100 batch=", "batch="),
    C("plan model=tiny-llama gpu=h100 batch=1,2", "batch=1,2"),
    C("plan model=tiny-llama gpu=h100 -m", "-m"),
    C("plan model=tiny-llama gpu=h100 alloc=", "alloc="),
    C("plan model=tiny-llama gpu=h100 model.hub_id=", "model.hub_id"),
    C("plan model=tiny-llama gpu=h100 gpus=0", "gpus=0"),
    C("plan model=tiny-llama gpu=h100 gpus=two", "gpus=two"),
    C("plan model=tiny-llama gpu=h100 prompt_len=1e3", "prompt_len=1000"),
    C("plan model=tiny-llama gpu=h100 batch=4611686018427387904", "batch=4611686018427387904", "too large"),
    C("plan gpu=h100 model=", "model="),
    C("plan check store={corr_text}", "corrections.json"),
    C("plan check store={missing}", "store=", "does not exist"),
    C("plan check store={good} store={good}", "store", "twice"),
    C("plan check store={afile}", "store=", "no rows"),
    C("plan check stor=x", "stor"),
    C("pr", "BASE_REF", "got 0"),
    C("pr HEAD", "BASE_REF", "got 1"),
    C("pr HEAD HEAD HEAD", "BASE_REF", "got 3"),
    C("pr nosuchref HEAD out={tmp}/pr", "nosuchref"),
    C("pr HEAD nosuchref out={tmp}/pr", "nosuchref"),
    C("pr HEAD~100000 HEAD out={tmp}/pr", "HEAD~100000"),
    C("pr HEAD HEAD rounds=1", "rounds=1"),
    C("pr HEAD HEAD rounds=abc", "rounds=abc"),
    C("pr HEAD HEAD rounds=2 rounds=4", "rounds", "twice"),
    C("pr HEAD HEAD out=", "out="),
    C("pr HEAD HEAD out={afile}", "out=", "afile.txt"),
    C("pr HEAD HEAD out={prjunk}", "out=", "prjunk"),
    C("pr HEAD HEAD out={tmp}/pr -- store=x", "store="),
    C("pr HEAD HEAD out={tmp}/pr -- batch=abc", "batch=abc"),
    C("pr HEAD HEAD out={tmp}/pr -- -m cache=nosuch", "cache=nosuch"),
    C("pr -- HEAD HEAD", "BASE_REF", "got 0"),
    C("pr HEAD HEAD --rounds=3", "--rounds=3"),
    C("pr HEAD HEAD out={tmp}/pr", "git", cwd="git-less"),
    C("publish", "OUT"),
    C("publish {missing}", "no-such-dir", "pr.md"),
    C("publish {empty}", "pr.md"),
    C("publish {afile}", "afile.txt", "pr.md"),
    C("publish {prout} {prout}", "OUT", "got 2"),
    C("publish {prout} mode=nosuch", "mode=nosuch"),
    C("publish {prout}", "mode=push", "pr="),
    C("publish {prout} pr=1 run=2 repo=bad", "repo=bad"),
    C("publish {prout} pr=1/2 run=3 repo=a/b", "pr=1/2"),
    C("publish {prout} pr=1 run=../x repo=a/b", "run=../x"),
    C("publish {prout} mode=artifact md=nosuch.md", "nosuch.md"),
    C("publish {prout} mode=artifact md=", "md="),
    C("publish {prout} mode=artifact to=/proc/x/y.md", "to=/proc/x/y.md"),
    C("publish {prout} mode=artifact to={tmp}", "to="),
    C("publish {prout} prnum=1", "prnum", "pr"),
    C("publish {prout} mode=artifact mode=push", "mode", "twice"),
    C("env extra", "extra"),
    C("env -x", "-x"),
    C("env a=b", "a=b"),
    C("env --json", "--json"),
    C("RUN", "RUN", "run"),
    C("ru", "ru", "run"),
    C("--version", "--version"),
    C("-x", "-x"),
    C([""], "''"),
]
CASES = [c for c in RUN + OTHER]


@pytest.fixture(autouse=True)
def thread_errors(monkeypatch) -> list:
    """What a thread of the command died of: in the real command line its traceback would reach stderr."""
    import threading

    caught: list = []
    def hook(a) -> None:
        caught.append(f"\nTraceback (thread): {a.exc_type.__name__}: {a.exc_value}")

    monkeypatch.setattr(threading, "excepthook", hook)
    return caught


@pytest.fixture
def cells(monkeypatch):
    """Cells run without weights, workers answer in this process, and the signal handlers are given back."""
    from bench.run import signals

    in_process_workers(monkeypatch)
    loads = stub_cells(monkeypatch)
    monkeypatch.delenv("KVBENCH_RUN_ID", raising=False)
    monkeypatch.delenv("KVBENCH_FAULT", raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # a launcher run sets it for Hydra
    yield loads
    signals.uninstall()


def run_case(case: Case, tmp_path: Path, monkeypatch, capsys, threads: list) -> tuple[int, str, list]:
    ctx = Ctx(tmp_path)
    line = list(case.line)
    if line[:1] == ["run"]:
        given = {a.split("=", 1)[0].lstrip("+~") for a in line[1:]}
        line = ["run", *[t for t in T if t.split("=", 1)[0] not in given], *line[1:]]
    line = ctx.fill(line)
    for k, v in case.env.items():
        monkeypatch.setenv(k, ctx.fill([v])[0])
    monkeypatch.chdir(ROOT if case.cwd == "root" or (line[:1] == ["pr"] and case.cwd != "git-less") else tmp_path)
    before = snapshot(tmp_path)
    crashed = ""
    try:
        code = main(line)
    except SystemExit as e:
        code = e.code
    except BaseException as e:  # noqa: BLE001 - the drill records it
        code, crashed = None, f"\nTraceback (in process): {type(e).__name__}: {e}"
    err = capsys.readouterr().err + crashed + "".join(threads)
    return code, err, [before, snapshot(tmp_path), rows_in(Path(ctx["store"]))]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_edge(case: Case, tmp_path, monkeypatch, capsys, cells, thread_errors):
    code, err, (before, after, rows) = run_case(case, tmp_path, monkeypatch, capsys, thread_errors)
    lost = [p for p, b in before.items() if after.get(p) != b]
    wrote = bool(rows) or any(p.endswith(".jsonl") for p in set(after) - set(before))
    kind = verdict(code, err, case.words, case.expect, rows if wrote else [])
    if os.environ.get("EDGES_DRILL"):  # the drill's record: every case's class, before any assertion
        with open(os.environ["EDGES_DRILL"], "a") as f:
            f.write(json.dumps({"id": case.id, "verb": case.line[0] if case.line else "", "kind": kind,
                                "code": code, "err": err[-600:]}) + "\n")
    assert kind == "clear", f"{kind}: exit {code}\n{err[-3000:]}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    warnings = [ln for ln in lines if ln.startswith("warning: ")]
    for w in case.warns:
        assert any(w in ln for ln in warnings), (w, err)
    assert not lost, f"changed or lost: {lost}"
    if case.expect == 2:
        assert len([ln for ln in lines if not ln.startswith("warning: ")]) == 1, err
        assert not cells, "a model loaded before the input was checked"
    elif case.rows is not None:
        assert len(rows) == case.rows and all(r["status"] == "ok" for r in rows), rows


# ---- faults: not the user's input; each still one line, the documented exit code, nothing lost ----

SWEEP = ["run", "-m", "cache=dynamic,static", *T]


def _record(name: str, kind: str, code, err: str) -> None:
    if os.environ.get("EDGES_DRILL"):
        with open(os.environ["EDGES_DRILL"], "a") as f:
            f.write(json.dumps({"id": name, "verb": "fault", "kind": kind, "code": code, "err": err[-600:]}) + "\n")


def fault(name, line, tmp_path, monkeypatch, capsys, expect=2, words=(), threads=()) -> tuple[str, list]:
    """Run a faulty command in this process; the verdict recorded, then asserted: exactly one `error:` line
    holding `words`, exit code `expect`, no traceback, no partial or temporary file in the store."""
    ctx = Ctx(tmp_path)
    monkeypatch.chdir(ROOT)
    try:
        code, crash = main(ctx.fill(line)), ""
    except SystemExit as e:
        code, crash = e.code, ""
    except BaseException as e:  # noqa: BLE001
        code, crash = None, f"\nTraceback (in process): {type(e).__name__}: {e}"
    err = capsys.readouterr().err + crash + "".join(threads)
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    kind = ("traceback" if "Traceback" in err else "silently accepted" if code == 0 else
            "clear" if code == expect and len(errors) == 1 and all(w in errors[0] for w in words) else "unclear")
    _record(name, kind, code, err)
    assert kind == "clear", f"{kind}: exit {code}\n{err[-3000:]}"
    store = Path(ctx["store"])
    left = [p.name for p in store.glob(".tmp-*")] + [p.name for p in store.glob("*.jsonl") if p.stat().st_size == 0]
    assert not left, f"partial files left: {left}"
    return err, rows_in(store)


def _fail_writes(monkeypatch, errno_, after: int) -> None:
    """The store's writes fail with `errno_` from the (after+1)-th on: a disk that fills, or turns read-only."""
    from bench.store import runfile

    calls, real = [], os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) > after:
            raise OSError(errno_, os.strerror(errno_))
        return real(fd)

    monkeypatch.setattr(runfile.os, "fsync", fsync)


@pytest.mark.parametrize("errno_name, words", [("ENOSPC", ("store=", "full")), ("EDQUOT", ("store=", "full")),
                                                ("EROFS", ("store=", "Read-only"))])
def test_store_fails_after_the_first_row(errno_name, words, tmp_path, monkeypatch, capsys, cells, thread_errors):
    """A disk that fills (or a quota, or a store remounted read-only) after one cell: one line, that cell's row
    intact, no partial file."""
    import errno

    _fail_writes(monkeypatch, getattr(errno, errno_name), after=1)
    err, rows = fault(f"store {errno_name} after one row", SWEEP, tmp_path, monkeypatch, capsys, words=words,
                      threads=thread_errors)
    assert [r["cache"] for r in rows] == ["dynamic"] and rows[0]["status"] == "ok", err


def test_store_full_from_the_start(tmp_path, monkeypatch, capsys, cells, thread_errors):
    import errno

    _fail_writes(monkeypatch, errno.ENOSPC, after=0)
    err, rows = fault("store full from the start", ["run", *T], tmp_path, monkeypatch, capsys,
                      words=("store=", "full"), threads=thread_errors)
    assert rows == [] and not list((tmp_path / "store").iterdir()), "a 0-byte or partial run file"


@pytest.fixture
def tiny_mount(tmp_path):
    """A real 64 KiB tmpfs (root only): mount(8) needs privileges this test may not have."""
    import subprocess

    d = tmp_path / "mnt"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)],
                                           capture_output=True).returncode:
        pytest.skip("needs root to mount a tmpfs")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_a_really_full_disk(tiny_mount, tmp_path, monkeypatch, capsys, cells, thread_errors):
    """A tmpfs filled to the last byte: the cell is measured, its row cannot be written; one line, no 0-byte file."""
    with open(tiny_mount / "filler", "wb") as f:
        try:
            f.write(b"x" * (1 << 20))
        except OSError:
            pass
    store = tiny_mount / "store"
    line = ["run", *[t for t in T if not t.startswith("store=")], f"store={store}"]
    fault("tmpfs full", line, tmp_path, monkeypatch, capsys, words=(f"store={store}", "full"), threads=thread_errors)
    assert [p.name for p in store.iterdir()] == [] if store.exists() else True


def test_a_read_only_store(tiny_mount, tmp_path, monkeypatch, capsys, cells, thread_errors):
    import subprocess

    subprocess.run(["mount", "-o", "remount,ro", str(tiny_mount)], check=True)
    line = ["run", *[t for t in T if not t.startswith("store=")], f"store={tiny_mount}/s"]
    fault("read-only store", line, tmp_path, monkeypatch, capsys, words=(f"store={tiny_mount}/s", "writable"),
          threads=thread_errors)


def test_report_onto_a_full_disk(tiny_mount, tmp_path, monkeypatch, capsys, thread_errors):
    with open(tiny_mount / "filler", "wb") as f:
        try:
            f.write(b"x" * (1 << 20))
        except OSError:
            pass
    fault("report out= on a full disk", ["report", "store={good}", f"out={tiny_mount}/o"], tmp_path, monkeypatch,
          capsys, words=(f"out={tiny_mount}/o", "full"), threads=thread_errors)


def test_interrupted_sweep_keeps_its_rows(tmp_path, monkeypatch, capsys, cells, thread_errors):
    """Ctrl-C during the second cell: one line, exit 130, the first cell's row intact."""
    import signal

    from bench.run import cell

    measure = cell._measure

    def interrupt(rec, cfg, *a):
        if cfg.cache.name == "static":
            os.kill(os.getpid(), signal.SIGINT)
            import time
            time.sleep(5)  # the main thread takes the KeyboardInterrupt meanwhile
        return measure(rec, cfg, *a)

    monkeypatch.setattr(cell, "_measure", interrupt)
    err, rows = fault("interrupted", SWEEP, tmp_path, monkeypatch, capsys, expect=130, words=("interrupted",),
                      threads=thread_errors)
    assert [r["cache"] for r in rows] == ["dynamic"], err


def _shadow(tmp_path: Path, package: str, body: str) -> Path:
    d = tmp_path / "shadow"
    (d / package).mkdir(parents=True)
    (d / package / "__init__.py").write_text(body)
    return d


@pytest.mark.parametrize("what, body, words", [
    ("killed while starting", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", ("SIGKILL",)),
    ("cannot import torch", "raise ImportError('torch is broken on purpose')\n", ("ImportError", "on purpose")),
])
def test_a_worker_that_cannot_start(what, body, words, tmp_path, monkeypatch, capsys, thread_errors):
    """The real worker process, whose first import of torch dies (SIGKILL) or fails: every cell still leaves an
    error row saying why, and the command ends in one line."""
    from bench.run import signals

    monkeypatch.delenv("KVBENCH_RUN_ID", raising=False)
    monkeypatch.syspath_prepend(str(_shadow(tmp_path, "torch", body)))  # a spawned worker starts from this sys.path
    try:
        err, rows = fault(f"worker {what}", SWEEP, tmp_path, monkeypatch, capsys, words=("worker", *words),
                          threads=thread_errors)
    finally:
        signals.uninstall()
    assert sorted(r["cache"] for r in rows) == ["dynamic", "static"], err
    assert all(r["status"] == "error" and all(w in r["error"] for w in words) for r in rows), rows


def test_a_worker_without_transformers(tmp_path, subprocess_env):
    """`python -m bench run` whose worker imports a broken transformers (a shadowing package on PYTHONPATH)."""
    import subprocess
    import sys

    shadow = _shadow(tmp_path, "transformers", "raise ImportError('transformers is broken on purpose')\n")
    env = {**subprocess_env, "PYTHONPATH": f"{shadow}{os.pathsep}{ROOT}"}
    line = Ctx(tmp_path).fill(["run", *T])
    p = subprocess.run([sys.executable, "-m", "bench", *line], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    kind = ("traceback" if "Traceback" in p.stderr else "silently accepted" if p.returncode == 0 else
            "clear" if p.returncode == 2 and len(errors) == 1 and "transformers" in errors[0] else "unclear")
    _record("worker without transformers (subprocess)", kind, p.returncode, p.stderr)
    assert kind == "clear", p.stderr[-3000:]
    rows = rows_in(tmp_path / "store")
    assert len(rows) == 1 and rows[0]["status"] == "error" and "transformers" in rows[0]["error"], rows


@pytest.mark.parametrize("line, env, words", [
    ("run {T}", {"KVBENCH_RUN_ID": "../x"}, ("KVBENCH_RUN_ID", "../x")),
    ("run {T} isolate=false", {"PYTHONPATH": "{torchless}"}, ("torch",)),
    ("report store={corr_text}", {}, ("corrections.json",)),
    ("plan model={t5} gpu=h100", {}, ("t5", "encoder-decoder")),
])
def test_through_python_m_bench(line, env, words, tmp_path, subprocess_env):
    """The same through `python -m bench`, where a traceback, a hang or another exit code would show."""
    import subprocess
    import sys

    ctx = Ctx(tmp_path)
    torchless = _shadow(tmp_path, "torch", "raise ImportError('no torch here')\n")
    ctx["torchless"] = f"{torchless}{os.pathsep}{ROOT}"
    argv = ctx.fill([a for w in shlex.split(line) for a in (T if w == "{T}" else [w])])
    full = {**subprocess_env, **{k: ctx.fill([v])[0] for k, v in env.items()}}
    p = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=tmp_path, env=full, capture_output=True,
                       text=True, timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    kind = verdict(p.returncode, p.stderr, words, 2, rows_in(tmp_path / "store"))
    _record(f"python -m bench {line} {env}", kind, p.returncode, p.stderr)
    assert kind == "clear" and len(lines) == 1, p.stderr[-3000:]
