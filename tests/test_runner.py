"""bench.run.cell.run_cell end to end on the tiny random-weight models, CPU, tiny lengths.

Every figure checked here is computed independently in the test (from the model's shapes, or from
the row's own raw timings), never copied from an earlier run.
"""
from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch

from bench.measure import clock as measure, memory, watch
from bench.run import models, cell as runner
from bench.run.cell import run_cell

MODELS = ("tiny-gpt2", "tiny-llama")
# conf/cache choice -> (record.cache, nbits, quant_backend)
OK_CACHES = {
    "none": ("none", None, None),
    "dynamic": ("dynamic", None, None),
    "static": ("static", None, None),
    "quantized": ("quantized", 4, "quanto"),
    "quantized_int2": ("quantized", 2, "quanto"),
    "quantized_hqq": ("quantized", 4, "hqq"),
    "quantized_fp8": ("quantized", None, "fp8"),
    "paged": ("paged", None, None),
}
P, N, B = 8, 4, 2  # prompt_len, new_tokens, batch for the shared rows
MIB = 1024 * 1024


def _kv_bytes_per_token(arch: dict, elem_bytes: int = 4) -> int:
    """K and V, every layer, every KV head, one token: worked out from the config.json fields by hand."""
    if arch["model_type"] == "gpt2":
        layers, heads, hidden = arch["n_layer"], arch["n_head"], arch["n_embd"]
        kv_heads = heads
    else:
        layers, heads, hidden = arch["num_hidden_layers"], arch["num_attention_heads"], arch["hidden_size"]
        kv_heads = arch.get("num_key_value_heads", heads)
    return 2 * layers * kv_heads * (hidden // heads) * elem_bytes


@pytest.fixture(scope="module")
def rows(make_cfg):
    """One row per (model, cache), repeats=1 so each median is that one run's figure."""
    out = {}
    for m in MODELS:
        # a fresh model per model: no static-cache length remembered from other test modules
        runner._loaded.clear()
        for choice in OK_CACHES:
            cfg = make_cfg(f"model={m}", f"cache={choice}", f"prompt_len={P}", f"new_tokens={N}",
                           f"batch={B}", "repeats=1", "warmup=1")
            out[m, choice] = (cfg, cell(cfg, "test-run"))
    return out


class Row(dict):
    """A stored row, read by attribute like the Record it came from (strategy columns included)."""
    __getattr__ = dict.get


def cell(cfg, run_id: str = "t") -> Row:
    return Row(run_cell(cfg, run_id).as_row())


# ---- (a) every cache runs on CPU with sdpa, and the row records the request ----

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("choice", list(OK_CACHES))
def test_cache_runs_ok_and_row_matches_request(rows, model, choice):
    cfg, r = rows[model, choice]
    assert r.status == "ok", r.error
    assert r.error == ""
    cache, nbits, backend = OK_CACHES[choice]
    assert (r.model, r.cache, r.nbits, r.quant_backend) == (model, cache, nbits, backend)
    assert (r.batch, r.prompt_len, r.new_tokens) == (B, P, N)
    assert (r.repeats, r.warmup) == (1, 1)
    assert r.weights == "random" and r.device == "cpu" and r.dtype == "float32"
    assert r.attn == "sdpa" and r.sdpa_backend == "auto"
    assert r.attn_used == cfg.cache.attention("sdpa")  # paged: paged|sdpa (transformers 5.17) or sdpa (5.24)
    assert r.run_id == "test-run" and len(r.cell_id) == 12
    assert r.torch == torch.__version__
    assert r.strategy == cfg.cache.label() and r.strategy_keys == sorted(cfg.cache.settings())
    assert len(r.e2e_samples_ms) == len(r.ttft_samples_ms) == len(r.tpot_samples_ms) == r.repeats == 1
    for k in ("ttft_ms", "tpot_ms", "e2e_ms", "decode_tok_s", "e2e_tok_s", "peak_mem_mib", "weights_mib", "launch_us"):
        v = getattr(r, k)
        assert v is not None and math.isfinite(v) and v > 0, (k, v)


def test_conditions_differ_per_cell(rows):
    ids = {r.cell_id for _, r in rows.values()}
    assert len(ids) == len(rows), "two different cells share a cell_id"


# ---- (b) exactly new_tokens, and the timing formulas ----

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("choice", list(OK_CACHES))
def test_timing_figures_are_consistent(rows, model, choice):
    _, r = rows[model, choice]
    assert r.status == "ok", r.error
    assert len(r.step_ms) == N - 1  # one prefill token, then N-1 decode steps
    assert all(s > 0 for s in r.step_ms)
    assert 0 < r.ttft_ms < r.e2e_ms
    decode_ms = r.e2e_ms - r.ttft_ms
    # repeats=1: every median is that single run's figure, so the formulas hold exactly
    assert r.tpot_ms == pytest.approx(decode_ms / (N - 1), rel=1e-9)
    assert r.decode_tok_s == pytest.approx(B * (N - 1) / (decode_ms / 1e3), rel=1e-9)
    assert r.e2e_tok_s == pytest.approx(B * N / (r.e2e_ms / 1e3), rel=1e-9)
    # the token marks lie inside the call: first token, N-1 steps, then the end
    assert r.ttft_ms + sum(r.step_ms) <= r.e2e_ms + 1e-3
    for name in ("ttft", "tpot", "e2e"):
        assert getattr(r, f"{name}_samples_ms") == [pytest.approx(getattr(r, f"{name}_ms"), abs=1e-3)]


@pytest.mark.parametrize("choice", ["dynamic", "static", "quantized", "none",
                                    "paged"])
def test_e2e_ends_at_the_last_token(make_cfg, choice):
    """tpot and decode_tok_s come from e2e - ttft: nothing but the decode steps may sit in between."""
    cfg = make_cfg("model=tiny-llama", f"cache={choice}", "prompt_len=8", "new_tokens=6", "repeats=1", "warmup=1")
    gc.disable()  # no automatic collection pauses inside the timed call (explicit gc.collect still runs)
    try:
        r = cell(cfg, "test-run")
    finally:
        gc.enable()
    assert r.status == "ok", r.error
    tail = r.e2e_ms - r.ttft_ms - sum(r.step_ms)
    assert -1e-3 <= tail <= 10 + max(r.step_ms), (tail, r.step_ms)


def test_raw_samples_are_kept_and_the_medians_are_theirs(make_cfg):
    cfg = make_cfg("model=tiny-gpt2", "cache=dynamic", "repeats=4", "warmup=1", "batch=2")
    r = cell(cfg, "test-run")
    assert r.status == "ok", r.error
    assert len(r.step_ms) == cfg.new_tokens - 1
    assert r.ttft_ms < r.e2e_ms
    # both are medians of the same per-repeat decode time (e2e - ttft), one over new_tokens - 1 steps,
    # the other as a rate for the batch: they agree exactly whatever the number of repeats
    assert r.decode_tok_s * r.tpot_ms / 1e3 == pytest.approx(2, rel=1e-9)
    assert r.repeats == 4 and r.repeats_mode == "fixed" and r.stop_reason == "fixed"
    for name in ("ttft", "tpot", "e2e"):
        raw = getattr(r, f"{name}_samples_ms")
        assert len(raw) == 4 and all(v > 0 for v in raw)
        assert getattr(r, f"{name}_ms") == pytest.approx(float(np.median(raw)), abs=1e-3)
    # each call's tpot is its own (e2e - ttft) / (new_tokens - 1)
    for e, t, p in zip(r.e2e_samples_ms, r.ttft_samples_ms, r.tpot_samples_ms):
        assert p == pytest.approx((e - t) / (cfg.new_tokens - 1), abs=1e-3)
    assert r.cold_e2e_ms is not None and r.cold_e2e_ms > 0


def test_repeats_auto_stops_at_the_precision_or_the_budget(make_cfg):
    """Adaptive repeats: fast cells repeat until the median's interval is within `precision`; a budget
    that allows fewer calls stops them first, and the row says which and the precision reached."""
    fast = cell(make_cfg("model=tiny-gpt2", "repeats=auto", "precision=0.5", "max_repeats=40", "rounds=1"), "t")
    assert fast.stop_reason == "precision" and 6 <= fast.repeats < 40 and fast.precision <= 0.5
    assert fast.precision_target == 0.5 and fast.repeats_mode == "auto"
    tight = cell(make_cfg("model=tiny-gpt2", "repeats=auto", "precision=0.0001", "cell_budget_s=0.05",
                                  "max_repeats=40", "rounds=1"), "t")
    assert tight.stop_reason == "budget" and 6 <= tight.repeats < 40 and tight.precision > 0.0001  # 6: the interval's minimum
    # with rounds, a round's median needs only 3 calls: the interval comes from the spread between processes
    round_ = cell(make_cfg("model=tiny-gpt2", "repeats=auto", "precision=0.0001", "cell_budget_s=0.05",
                           "max_repeats=40", "rounds=3"), "t")
    assert round_.stop_reason == "budget" and 3 <= round_.repeats < 6


# ---- (c) measured KV bytes against a hand computation ----

@pytest.mark.parametrize("model", MODELS)
def test_dynamic_kv_bytes_by_hand(rows, model):
    cfg, r = rows[model, "dynamic"]
    # generate feeds back every new token but the last: prompt + new - 1 positions are cached
    expected = _kv_bytes_per_token(cfg.model.arch) * (P + N - 1) * B
    assert r.kv_cache_mib * MIB == expected
    assert r.kv_theory_mib * MIB == expected


def test_gqa_counts_kv_heads_not_query_heads(rows):
    cfg, r = rows["tiny-llama", "dynamic"]
    arch = cfg.model.arch
    assert arch["num_key_value_heads"] == 2 and arch["num_attention_heads"] == 4
    # 2 (K,V) * 2 layers * 2 KV heads * 16 dims * 4 bytes = 512 bytes per token, per sequence
    assert r.kv_cache_mib * MIB == 512 * (P + N - 1) * B


@pytest.mark.parametrize("model", MODELS)
def test_static_kv_bytes_by_hand(make_cfg, fresh_models, model):
    # A fresh model: generate() sizes a StaticCache to max(this call, the longest earlier call).
    cfg = make_cfg(f"model={model}", "cache=static", f"prompt_len={P}", f"new_tokens={N}", f"batch={B}",
                   "repeats=1")
    r = cell(cfg, "test-run")
    assert r.status == "ok", r.error
    # transformers (5.x) preallocates max_length - 1 = prompt_len + new_tokens - 1 positions
    expected = _kv_bytes_per_token(cfg.model.arch) * (P + N - 1) * B
    assert r.kv_cache_mib * MIB == expected
    assert r.kv_theory_mib * MIB == expected


def test_static_cache_not_sized_by_an_earlier_cell(make_cfg, fresh_models):
    long = cell(make_cfg("model=tiny-llama", "cache=static", "prompt_len=16", "new_tokens=8", "repeats=1"), "t")
    assert long.status == "ok" and long.kv_cache_mib == long.kv_theory_mib
    cfg = make_cfg("model=tiny-llama", "cache=static", "prompt_len=8", "new_tokens=4", "repeats=1")
    short = cell(cfg, "t")
    assert short.status == "ok", short.error
    assert short.kv_cache_mib * MIB == _kv_bytes_per_token(cfg.model.arch) * (8 + 4 - 1)


@pytest.mark.parametrize("model", MODELS)
def test_none_holds_no_cache(rows, model):
    _, r = rows[model, "none"]
    assert r.kv_cache_mib == 0 and r.kv_theory_mib == 0


@pytest.mark.parametrize("model", MODELS)
def test_quantized_is_smaller_and_int2_smaller_than_int4(rows, model):
    dyn = rows[model, "dynamic"][1].kv_cache_mib
    q4 = rows[model, "quantized"][1]
    q2 = rows[model, "quantized_int2"][1]
    hqq = rows[model, "quantized_hqq"][1]
    assert 0 < q2.kv_cache_mib < q4.kv_cache_mib < dyn
    assert 0 < hqq.kv_cache_mib < dyn
    for r in (q4, q2, hqq):
        assert 0 < r.kv_quantized_share <= 1
        # residual_length (128) > new tokens: the prefilled prompt is quantized, the fed-back tokens are not
        assert r.kv_quantized_share == pytest.approx(P / (P + N - 1))
        assert r.kv_cache_mib == pytest.approx(r.kv_theory_mib, rel=1e-9)
    assert rows[model, "dynamic"][1].kv_quantized_share is None


def _assert_pool_of_blocks(r, arch: dict, batch: int, block: int) -> None:
    """The paged row's KV bytes are its block pool: whole blocks, the ones the batch needs plus at most a few
    that transformers reserves (trash/sentinel)."""
    per_block = _kv_bytes_per_token(arch) * block
    blocks = batch * math.ceil((P + N) / block)
    pool = r.kv_cache_mib * MIB
    assert pool % per_block == 0
    assert blocks * per_block <= pool <= (blocks + 4) * per_block


@pytest.mark.parametrize("model", MODELS)
def test_paged_pool_holds_the_batch(rows, model):
    cfg, r = rows[model, "paged"]
    block = cfg.cache.block_size
    assert r.block_size == block == 256  # conf/cache/paged.yaml: transformers' default
    _assert_pool_of_blocks(r, cfg.model.arch, B, block)
    assert r.kv_theory_mib is None
    assert rows[model, "dynamic"][1].block_size is None


def test_paged_block_size_is_a_condition(make_cfg, fresh_models):
    """cache.block_size reaches continuous batching (the pool is whole blocks of it) and the row's cell id."""
    cfg = make_cfg("model=tiny-gpt2", "cache=paged", "cache.block_size=4", f"prompt_len={P}", f"new_tokens={N}",
                   "batch=1", "repeats=1")
    r = cell(cfg, "t")
    assert r.status == "ok", r.error
    assert r.block_size == 4
    _assert_pool_of_blocks(r, cfg.model.arch, 1, 4)
    default = cell(make_cfg("model=tiny-gpt2", "cache=paged", f"prompt_len={P}", f"new_tokens={N}", "batch=1",
                                "repeats=1"), "t")
    assert default.block_size == 256 and default.cell_id != r.cell_id


# ---- (d) what cannot run on a CPU says so ----

@pytest.mark.parametrize("overrides, needle", [
    (("model=tiny-gpt2", "cache=offloaded"), "device=cuda"),
    (("model=tiny-gpt2", "cache=offloaded_static"), "device=cuda"),
    (("model=tiny-llama", "cache=offloaded"), "device=cuda"),
    (("model=tiny-gpt2", "attn=flash_attention_2"), "CUDA"),
    (("model=tiny-llama", "attn=flash_attention_2", "cache=static"), "CUDA"),
    (("model=tiny-gpt2", "attn=flex_attention"), "flex_attention"),
    (("model=tiny-gpt2", "sdpa_backend=flash"), "CUDA"),
])
def test_unavailable_with_reason(make_cfg, overrides, needle):
    cfg = make_cfg(*overrides)
    r = cell(cfg, "test-run")
    assert r.status == "unavailable"
    assert needle in r.error
    assert r.ttft_ms is None and r.kv_cache_mib is None
    assert r.cache == cfg.cache.name and r.attn == cfg.attn.name


def test_flex_reason_names_the_model_class(make_cfg):
    r = cell(make_cfg("model=tiny-gpt2", "attn=flex_attention"), "test-run")
    assert "GPT2LMHeadModel" in r.error


# ---- (e) failures become rows ----

@pytest.mark.parametrize("exc, status, text", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom", "OutOfMemoryError"),
    (RuntimeError("kaboom in the kernel"), "error", "RuntimeError: kaboom in the kernel"),
])
def test_failure_in_generate_gives_a_row(make_cfg, monkeypatch, exc, status, text):
    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(measure, "time_generate", boom)
    cfg = make_cfg("model=tiny-gpt2", "cache=dynamic")
    r = cell(cfg, "test-run")  # must not raise
    assert r.status == status
    assert text in r.error
    assert r.ttft_ms is None and r.e2e_ms is None
    assert (r.cache, r.prompt_len, r.new_tokens) == ("dynamic", cfg.prompt_len, cfg.new_tokens)
    # the spies on the shared model are gone, and the model still works for the next cell
    model = runner._loaded[next(iter(runner._loaded))].model
    assert "get_compiled_call" not in vars(model) and "set_attn_implementation" not in vars(model)
    monkeypatch.undo()
    assert cell(cfg, "test-run").status == "ok"


# ---- (f) a short generation is caught ----

def test_short_generation_is_an_error(make_cfg, monkeypatch):
    cfg = make_cfg("model=tiny-gpt2", "cache=dynamic", "new_tokens=6")
    model = runner.get_model(cfg, "cpu").model
    real = model.generate

    def short(*a, **k):
        k["max_new_tokens"] = k["min_new_tokens"] = k["max_new_tokens"] - 2
        return real(*a, **k)

    monkeypatch.setattr(model, "generate", short)
    r = cell(cfg, "test-run")
    assert r.status == "error"
    assert "ShortGeneration" in r.error and "asked for 6" in r.error and "produced 4" in r.error


def test_short_continuous_batch_is_an_error(make_cfg, monkeypatch):
    cfg = make_cfg("model=tiny-llama", "cache=paged", "new_tokens=6")
    model = runner.get_model(cfg, "cpu").model
    real = model.generate_batch

    def short(*a, generation_config, **k):
        generation_config.max_new_tokens -= 2
        return real(*a, generation_config=generation_config, **k)

    monkeypatch.setattr(model, "generate_batch", short)
    r = cell(cfg, "test-run")
    assert r.status == "error"
    assert "ShortGeneration" in r.error and "6" in r.error and "4" in r.error


# ---- (g) one load per model per process ----

def test_model_loaded_once_across_cells(make_cfg, fresh_models, monkeypatch):
    calls = []
    real = models.load

    def spy(mc, *a, **k):
        calls.append(mc.name)
        return real(mc, *a, **k)

    monkeypatch.setattr(models, "load", spy)
    for cache in ("dynamic", "none", "quantized"):
        assert cell(make_cfg("model=tiny-gpt2", f"cache={cache}", "repeats=1"), "t").status == "ok"
    assert calls == ["tiny-gpt2"]
    # the spy does count: another model is a second load
    assert cell(make_cfg("model=tiny-llama", "repeats=1"), "t").status == "ok"
    assert calls == ["tiny-gpt2", "tiny-llama"]


# ---- (h) weights=real with no weights anywhere ----

def test_weights_real_without_weights_is_an_error_row(make_cfg, fresh_models):
    cfg = make_cfg("model=tiny-gpt2")
    cfg.weights = "real"  # the command line refuses this before any cell (tests/test_edges.py); in process, a row
    r = cell(cfg, "test-run")  # a row, not an exception
    assert r.status == "error"
    assert "WeightsUnavailable" in r.error and "hub_id" in r.error
    assert r.weights == "real"  # what was requested; nothing loaded
    assert r.ttft_ms is None and r.weights_mib is None
    assert fresh_models._loaded == {}
    # a whole row: the store keeps it (a row without its run id or device was dropped as malformed)
    assert r.run_id == "test-run" and r.device == "cpu" and r.torch and r.cpu
    import json
    import tempfile
    from pathlib import Path

    from bench import store

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "r.jsonl").write_text(json.dumps(dict(r)) + "\n")
        assert [x["status"] for x in store.read_rows([Path(d) / "r.jsonl"])] == ["error"]


def test_weights_auto_falls_back_to_random(rows):
    _, r = rows["tiny-gpt2", "dynamic"]
    assert r.weights == "random" and "random" in r.model_source


# ---- (i) compile switch ----

@pytest.mark.parametrize("compile_, expect", [("off", False), ("auto", True)])
def test_compile_switch(make_cfg, monkeypatch, compile_, expect):
    """Pretend this CPU qualifies for generate()'s auto-compile (without paying for inductor): the row
    must say compiled only when generate really asked for the compiled forward."""
    cfg = make_cfg("model=tiny-gpt2", "cache=static", f"compile={compile_}", "repeats=1", "warmup=0")
    cls = type(runner.get_model(cfg, "cpu").model)
    monkeypatch.setattr(cls, "_valid_auto_compile_criteria",
                        lambda self, model_kwargs, gen_cfg: not gen_cfg.disable_compile, raising=True)
    monkeypatch.setattr(cls, "get_compiled_call", lambda self, compile_config: self.__call__, raising=True)
    r = cell(cfg, "test-run")
    assert r.status == "ok", r.error
    assert r.compile == compile_
    assert r.compiled is expect


def test_graph_breaks_in_the_compiled_forward_are_counted(make_cfg, monkeypatch):
    """A real dynamo compile (backend=eager: no inductor) of a forward that breaks its graph once per call
    site: the row says compiled, and how many graph breaks dynamo met; an uncompiled cell says 0."""
    cfg = make_cfg("model=tiny-gpt2", "cache=static", "repeats=1", "warmup=1")
    cls = type(runner.get_model(cfg, "cpu").model)

    def compiled_call(self, compile_config):
        def forward(*a, **k):
            torch._dynamo.graph_break()
            return self.__call__(*a, **k)
        return torch.compile(forward, backend="eager")

    monkeypatch.setattr(cls, "_valid_auto_compile_criteria", lambda self, mk, gc: True, raising=True)
    monkeypatch.setattr(cls, "get_compiled_call", compiled_call, raising=True)
    torch._dynamo.reset()
    r = cell(cfg, "test-run")
    assert r.status == "ok", r.error
    assert r.compiled is True
    assert r.graph_breaks >= 1 and r.recompile_limit_hits == 0
    monkeypatch.undo()
    plain = cell(make_cfg("model=tiny-gpt2", "cache=dynamic", "repeats=1"), "test-run")
    assert plain.compiled is False and plain.graph_breaks == 0 and plain.recompile_limit_hits == 0


def test_compile_off_on_cpu_records_not_compiled(make_cfg):
    r = cell(make_cfg("model=tiny-llama", "cache=static", "compile=off"), "test-run")
    assert r.status == "ok", r.error
    assert r.compile == "off" and r.compiled is False


# ---- (j) EOS cannot end a generation early ----

@pytest.mark.parametrize("choice", ["dynamic", "static", "quantized", "paged"])
def test_eos_cannot_stop_early(make_cfg, choice):
    cfg = make_cfg("model=tiny-gpt2", f"cache={choice}", "new_tokens=5", "repeats=1")
    model = runner.get_model(cfg, "cpu").model
    eos = model.generation_config.eos_token_id
    assert eos == 999

    def favour_eos(module, inputs, output):
        output[..., eos] += 1e4
        return output

    handle = model.lm_head.register_forward_hook(favour_eos)
    try:
        # control: left to itself, greedy decoding now ends at the first token
        ids = models.prompt_ids(1000, 1, 8)
        with torch.inference_mode():
            plain = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                                   pad_token_id=0)
        assert plain.shape[1] - 8 == 1 and int(plain[0, -1]) == eos
        r = cell(cfg, "test-run")
    finally:
        handle.remove()
    assert r.status == "ok", r.error
    assert len(r.step_ms) == 5 - 1


def test_several_eos_ids(make_cfg, monkeypatch):
    cfg = make_cfg("model=tiny-gpt2", "cache=dynamic", "repeats=1")
    model = runner.get_model(cfg, "cpu").model
    monkeypatch.setattr(model.generation_config, "eos_token_id", [999, 998])
    r = cell(cfg, "test-run")
    assert r.status == "ok", r.error


# ---- (k) what ran: the SDPA profile is short, the environment names the host CPU and the code ----

def test_sdpa_profile_covers_prefill_and_four_steps_then_stops(make_cfg, monkeypatch):
    """Profiling a whole long call cost minutes on the H100: the profiler must stop after 4 decode steps
    while the call itself still runs to its full length."""
    import torch.profiler as tp

    cfg = make_cfg("model=tiny-gpt2", "cache=dynamic", "attn=sdpa")
    model = runner.get_model(cfg, "cpu").model
    ids = models.prompt_ids(model.config.vocab_size, 1, 8)
    events = []
    put, stop = measure.TokenMarks.put, tp.profile.stop
    monkeypatch.setattr(measure.TokenMarks, "put", lambda self, v: (events.append("token"), put(self, v))[1])
    monkeypatch.setattr(tp.profile, "stop", lambda self: (events.append("stop"), stop(self))[1])
    seen = watch.sdpa_backends_seen(lambda: measure.time_generate(model, ids, 20, {}, "cpu"))
    assert events.count("stop") == 1
    # the prompt's put, then 5 new tokens (prefill's token + 4 steps), then the stop, then the rest
    assert events.index("stop") == 6 and events.count("token") == 21
    assert seen in ("flash (cpu)", "math", "efficient")  # an SDPA kernel was seen in the profiled part


def test_rows_name_the_host_cpu_and_the_code(rows):
    from bench.run.environment import _code_hash, _cpu

    r = rows["tiny-gpt2", "dynamic"][1]
    assert r.cpu and r.cpu == _cpu()
    assert len(r.code_hash) == 12 and r.code_hash == _code_hash()


# ---- (k) what torch.compile met ----

def test_compile_watch_counts_breaks_and_the_recompile_limit():
    """Real dynamo on a toy: one graph break per layer call site, and a guard on each layer's own int that
    makes dynamo recompile per layer until it hits recompile_limit (as gpt2's attention did on the H100)."""
    class Layer(torch.nn.Module):
        def __init__(self, i):
            super().__init__()
            self.i = i

        def forward(self, x):
            y = x * self.i
            return y + int(y.sum().item())  # .item(): a graph break

    layers = [Layer(i) for i in range(6)]

    def net(x):
        for m in layers:
            x = m(x)
        return x

    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=2), watch.compile_watch() as seen:
        torch.compile(net, backend="eager")(torch.ones(3))
    assert seen["graph_breaks"] >= 2
    assert seen["recompile_limit_hits"] >= 1
    with watch.compile_watch() as nothing:
        net(torch.ones(3))  # not compiled
    assert nothing == {"graph_breaks": 0, "recompile_limit_hits": 0}


def test_launch_us_sees_a_busy_host():
    """launch_us is the host's speed at issuing ops: another process sharing our one core must raise it."""
    import os
    import subprocess
    import sys
    import time

    cores = os.sched_getaffinity(0)
    core = min(cores)
    os.sched_setaffinity(0, {core})
    try:
        memory.launch_us("cpu")
        quiet = min(memory.launch_us("cpu") for _ in range(3))  # the fastest of 3: a parallel test may share the core
        # two spinners, so our share of the core at least halves even when another test already shares it
        hogs = [subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{core}}}); "
                                  "print('spinning', flush=True)\nwhile True: pass"], stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
        try:
            assert all(h.stdout.readline().strip() == "spinning" for h in hogs)  # on our core and busy first
            time.sleep(0.1)
            busy = max(memory.launch_us("cpu") for _ in range(3))  # the slowest of 3 windows
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    finally:
        os.sched_setaffinity(0, cores)
    assert 0 < quiet < 1000
    assert busy > 1.4 * quiet, (quiet, busy)


def test_rows_record_the_cuda_allocator_settings(monkeypatch):
    """PYTORCH_CUDA_ALLOC_CONF changes what fits, so a CUDA row carries it ('' = PyTorch's defaults)."""
    from bench.run import environment as env

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(env, "_driver", lambda: "1.0")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert env.environment.__wrapped__("cuda")["cuda_alloc_conf"] == "expandable_segments:True"
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    assert env.environment.__wrapped__("cuda")["cuda_alloc_conf"] == ""
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert env.environment.__wrapped__("cpu")["cuda_alloc_conf"] == ""  # no CUDA allocator on a CPU row


@pytest.mark.parametrize("raised, status, said", [
    # flash-attn's block-size check, as on the H100: a failure, named
    (RuntimeError("Paged KV cache block size must be divisible by 256"), "error", "divisible by 256"),
    # continuous batching's own refusal of a pool that does not fit (batch 96 of Llama-2-7B on the H100): an OOM
    (MemoryError("Memory footprint 77828849664 is more than available memory 63465239347"), "oom",
     "more than available memory"),
])
def test_a_failure_inside_continuous_batching_is_named_in_the_row(make_cfg, monkeypatch, raised, status, said):
    """generate_batch runs its loop in a thread that logs an error and returns no tokens: the row must carry
    that error, not only the missing tokens, and a memory refusal must read oom, as a CUDA OOM does."""
    cfg = make_cfg("model=tiny-llama", "cache=paged", "new_tokens=6", "repeats=1")
    model = runner.get_model(cfg, "cpu").model

    def broken(*a, **k):
        raise raised

    monkeypatch.setattr(model, "forward", broken)
    r = cell(cfg, "test-run")
    assert r.status == status, (r.status, r.error)
    assert "ShortGeneration" in r.error and "produced 1 x 0" in r.error
    assert "its thread logged" in r.error and said in r.error


def test_a_stored_schema_1_row_is_the_same_cell_today(make_cfg):
    """A row the H100 wrote before strategy objects existed (results/, schema 1) and today's row of the
    same conditions, as loaded, have one identity, so resume, report and compare match them."""
    import json
    from pathlib import Path

    from bench import store
    from bench.store import identity
    from bench.run.record import conditions

    stored = [json.loads(ln) for ln in (Path(__file__).parent.parent / "results" /
                                        "20261123T150955-vm-1329.jsonl").read_text().splitlines()]
    old = store.upgrade(next(x for x in stored if (x["cache"], x["attn"]) == ("dynamic", "eager")))
    cfg = make_cfg("model=gpt2", "cache=dynamic", "attn=eager", "prompt_len=128", "new_tokens=128")
    row = conditions(cfg, "cuda", old["gpu"]).as_row()
    row.update(weights="random", dtype="float32")  # as the H100 loaded it
    assert identity.cell_id(row) == old["cell_id"]
    row.update(batch=2)
    assert identity.cell_id(row) != old["cell_id"]


def test_every_timed_paged_call_prefills_its_whole_prompt(make_cfg):
    """Continuous batching's manager persists across warmup and repeats, which send the same prompts: with
    prefix caching on, every call after the first skipped its prefill (the H100's 7B paged cells showed a TTFT
    of 11 ms for 1024 tokens, below what the GPU's FLOPs allow). Each call must run the whole prompt again."""
    block, prompt, new = 4, 16, 4  # the prompt fills whole blocks: a shared prefix would cover all of it
    cfg = make_cfg("model=tiny-llama", "cache=paged", f"cache.block_size={block}", f"prompt_len={prompt}",
                   f"new_tokens={new}", "batch=1", "warmup=1", "repeats=2")
    model = runner.get_model(cfg, "cpu").model
    fed = []  # tokens the model ran through its embedding, per forward
    hook = model.get_input_embeddings().register_forward_hook(lambda m, a, out: fed.append(a[0].numel()))
    try:
        r = cell(cfg, "test-run")
    finally:
        hook.remove()
    assert r.status == "ok", r.error
    calls = fed.count(prompt)  # warmup + repeats (+ a second series if a busy host disturbed the first)
    assert calls in (1 + 2, 1 + 2 + 2)
    assert sum(fed) == calls * (prompt + new - 1)  # each call opened with a full-length prefill: none reused a prompt


def test_fp8_cache_bytes_by_hand_and_against_transformers_benchmark(rows, make_cfg):
    """fp8 (transformers >= 5.24): one float8 byte per cached element and one float32 scale per layer's keys and
    one per its values; no full-precision window. transformers' own quantized-cache benchmark counts 3,675,120
    bytes for SmolLM2-135M in bf16 at 256 + 64 tokens (the shapes decide it, so random weights give it too)."""
    r = rows["tiny-llama", "quantized_fp8"][1]
    layers, kv_heads, head_dim = 2, 2, 16  # conf/model/tiny-llama.yaml
    assert r.kv_cache_mib * MIB == layers * (B * kv_heads * (P + N - 1) * 2 * head_dim * 1 + 2 * 4)
    assert r.kv_theory_mib == r.kv_cache_mib and r.kv_quantized_share == 1.0
    smol = cell(make_cfg("model=smollm2-135m", "weights=random", "dtype=bfloat16", "cache=quantized_fp8",
                         "prompt_len=256", "new_tokens=64", "repeats=1", "warmup=0"))
    assert smol.status == "ok", smol.error
    assert smol.kv_cache_mib * MIB == smol.kv_theory_mib * MIB == 3_675_120


@pytest.mark.parametrize("repeats", ["2", "auto"])
def test_no_earlier_call_holds_its_cache_while_the_peak_is_measured(make_cfg, monkeypatch, repeats):
    """The peak counter resets before the timed calls: no warm-up (or discarded series) output may still hold
    its cache then, or every peak carries a second cache (an H200 session measured batch-32 peaks 16 GiB high
    and batch-96 OOMs that way)."""
    import weakref

    from bench.strategies.base import Strategy

    caches, alive_at_reset = [], []
    real = Strategy.timed_call

    def spy(self, *a, **k):
        t, out = real(self, *a, **k)
        caches.append(weakref.ref(out.past_key_values))
        return t, out

    def reset(device):
        gc.collect()
        alive_at_reset.append(sum(c() is not None for c in caches))

    monkeypatch.setattr(Strategy, "timed_call", spy)
    monkeypatch.setattr(memory, "reset_peak", reset)
    r = cell(make_cfg("model=tiny-llama", "cache=dynamic", "warmup=2", f"repeats={repeats}",
                      *(["max_repeats=8"] if repeats == "auto" else [])))  # max_repeats is repeats=auto's
    assert r.status == "ok", r.error
    assert alive_at_reset and alive_at_reset == [0] * len(alive_at_reset), alive_at_reset
