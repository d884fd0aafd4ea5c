"""One cell: load (reused across cells), check it can run, time it, count its memory, and make its row.

What is specific to a cache strategy is asked of the strategy object (cfg.cache); what is specific to an
attention path, of bench.run.attention. A failing cell never raises: its row says what happened.
"""
from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import asdict
from typing import Callable, Optional

import torch
from transformers.utils import logging as hf_logging

from bench.run import attention, models, quality, repeats
from bench import predict
from bench.predict import geometry, formula, planner
from bench.predict.arch import check_model, max_positions
from bench.measure import memory
from bench.measure.cachebytes import cache_payload
from bench.config.checks import ConfigError
from bench.run.environment import environment, resolve_device
from bench.measure.watch import compile_watch, sdpa_backends_seen
from bench.run.preflight import visible_gpu
from bench.run.record import conditions
from bench.store.schema import Record
from bench.strategies import NotApplicable

log = logging.getLogger("bench")
logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)  # per-call chatter of generate_batch
# the console carries one line per cell: transformers' own warnings and progress bars (GGUF conversion) stay off
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
MIB = memory.MIB
GEOMETRY_COLUMNS = ("kv_heads", "head_dim_k", "head_dim_v", "kv_layers", "window_tokens", "window_layers",
                    "kv_token_bytes", "state_bytes")

# One loaded model per process: a sweep over caches and attention paths loads it once.
_loaded: dict = {}


def _model_key(cfg, device: str) -> tuple:
    return json.dumps(asdict(cfg.model), sort_keys=True), device, cfg.weights, cfg.seed, cfg.device_map


def get_model(cfg, device: str) -> models.Loaded:
    key = _model_key(cfg, device)
    if key not in _loaded:
        _loaded.clear()
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        _loaded[key] = models.load(cfg.model, device, cfg.weights, cfg.seed, cfg.device_map)
        process_warmup(_loaded[key].model, cfg, device)
    return _loaded[key]


def process_warmup(model, cfg, device: str) -> None:
    """Before a fresh process's first cell: plain generate() calls at the cell's lengths for process_warmup_s
    seconds, so that what a process initialises once (thread pools, allocator, kernels' first use) is not timed
    in whichever cell happens to run first (scripts/drift_check.py measures the effect)."""
    if cfg.process_warmup_s <= 0:
        return
    from bench.measure.clock import pad_id

    ids = models.prompt_ids(model.config.get_text_config().vocab_size, cfg.batch, cfg.prompt_len, cfg.seed).to(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - t0 < cfg.process_warmup_s:
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=cfg.new_tokens,
                           min_new_tokens=cfg.new_tokens, do_sample=False, pad_token_id=pad_id(model))


def _spy(obj, name: str) -> list:
    """Shadow obj.name with a wrapper recording each call's positional args (undo with `del obj.name`)."""
    calls, target = [], getattr(obj, name)

    def wrapper(*a, **k):
        calls.append(a)
        return target(*a, **k)

    setattr(obj, name, wrapper)
    return calls


def classify(e: BaseException) -> tuple[str, str]:
    msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
    # continuous batching refuses a block pool that will not fit ("Memory footprint N is more than available
    # memory M") inside its thread: that is an OOM too, not a bug
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)) or any(
            s in str(e).lower() for s in ("out of memory", "more than available memory")):
        return "oom", msg
    if "No available kernel" in str(e) or isinstance(e, (ImportError, NotImplementedError)):
        return "unavailable", msg
    return "error", msg


def _quality(rec: Record, cfg, loaded: models.Loaded) -> None:
    """Fill the quality columns; a failure here is noted but keeps the cell's timings."""
    if loaded.weights != "real":
        _note(rec, "quality=on skipped: random weights have no meaningful quality")
        return
    try:
        if loaded.tokenizer is None:
            loaded.tokenizer = models.load_tokenizer(cfg.model)
        with attention.sdpa_context(cfg.attn):
            for k, v in quality.measure(loaded.model, loaded.tokenizer, cfg).items():
                setattr(rec, k, v)
    except NotApplicable as e:
        _note(rec, f"quality: {e}")
    except Exception as e:  # noqa: BLE001
        _note(rec, f"quality failed: {classify(e)[1]}")


def _note(rec: Record, text: str) -> None:
    """Add a note to an ok row's error column, keeping the ones already there."""
    rec.error = "; ".join(x for x in (rec.error, text) if x)


def _start(cfg, run_id: str) -> Record:
    """The row as far as it is known before anything can fail: conditions requested, device, environment."""
    device = resolve_device(cfg.device)
    env = environment(device)
    rec = conditions(cfg, device, env["gpu"])
    rec.run_id = run_id
    for k, v in env.items():
        setattr(rec, k, v)
    rec.threads, rec.gpu_index = torch.get_num_threads(), visible_gpu()
    if cfg.weights == "auto" and not (cfg.model.hub_id or cfg.model.gguf):
        rec.weights = "random"  # nothing to load real weights from: known before loading
    return rec


def _prepare(rec: Record, cfg) -> Optional[models.Loaded]:
    """The planner's verdict, then the model; the row gets the conditions as they will run."""
    check_model(cfg.model)  # input: a causal LM whose shapes build, checked before loading (ConfigError)
    held = _loaded.get(_model_key(cfg, rec.device))
    # no plan for a cell that cannot run here with the model this worker holds: _measure says why
    runs = held is None or _unavailable(cfg, held.model, rec.device) is None
    refusal = predict.preflight(cfg, rec.device) if cfg.fit_check and runs else None  # the one question asked
    if refusal:
        rec.status, rec.error = "oom", f"not run: the planner predicts it cannot fit: {refusal} (fit_check=false runs it anyway)"
        rec.dtype = predict.load_dtype(cfg)
        return None
    loaded = get_model(cfg, rec.device)
    rec.model_source, rec.weights, rec.dtype = loaded.source, loaded.weights, loaded.dtype
    return loaded


def _unavailable(cfg, model, device: str) -> Optional[str]:
    """Why this cell's strategy or attention path cannot run here with this model (None: it can)."""
    return cfg.cache.unavailable_reason(model, device) or attention.unavailable_reason(cfg.attn, model, device)


def compile_kwargs(cfg) -> dict:
    """generate() arguments of the compile settings: off, or a torch.compile mode for the compile it does itself."""
    if cfg.compile == "off":
        return {"disable_compile": True}
    if cfg.compile_mode != "auto":
        from transformers import CompileConfig

        return {"compile_config": CompileConfig(mode=cfg.compile_mode)}
    return {}


def _measure(rec: Record, cfg, loaded: models.Loaded, on_timing: Callable[[], None], first_round: bool) -> None:
    model, device, strategy = loaded.model, rec.device, cfg.cache
    weight_bytes = memory.model_bytes(model)
    rec.weights_mib = weight_bytes / MIB
    try:  # the geometry the architecture's code caches (a Falcon multi_query model: 1 KV head), not the formula's
        geo_cols = predict.columns(model.config, loaded.dtype)
    except Exception:  # noqa: BLE001 - code that cannot run on meta: the textbook figure, and no window
        geo_cols = {"kv_heads": formula.kv_heads_and_dims(model.config)[1]}
    for k in GEOMETRY_COLUMNS:
        setattr(rec, k, geo_cols.get(k))
    cfg.check_positions(max_positions(model.config))
    reason = _unavailable(cfg, model, device)
    if reason is None:
        try:
            rec.attn_used = attention.set_attention(model, strategy.attention(cfg.attn.name))
        except (ImportError, ValueError) as e:
            reason = str(e).strip().splitlines()[0]
    if reason:
        rec.status, rec.error = "unavailable", reason
        return
    geo = geometry.kv_geometry(model.config, loaded.dtype)
    P, N, B = cfg.prompt_len, cfg.new_tokens, cfg.batch
    theory = strategy.predicted_bytes(geo, P, N, B)
    rec.kv_theory_mib = None if theory is None else theory / MIB
    rec.kv_formula_mib = (formula.kv_cache_bytes(model.config, P + N - 1, B, dtype=loaded.dtype) / MIB
                          if strategy.holds_cache else 0.0)
    ids = models.prompt_ids(model.config.get_text_config().vocab_size, B, P, cfg.seed).to(device)
    extra = compile_kwargs(cfg)

    def call():
        return strategy.timed_call(model, ids, N, device, extra)

    # Spies, not guesses: generate calls get_compiled_call only when it compiles, and continuous
    # batching swaps the attention implementation through set_attn_implementation.
    compiled, attn_switched = _spy(model, "get_compiled_call"), _spy(model, "set_attn_implementation")
    try:
        with torch.inference_mode(), attention.sdpa_context(cfg.attn), compile_watch() as dynamo:
            t0 = time.perf_counter()
            for i in range(cfg.warmup):  # exact shapes: every decode length is seen before timing
                t = call()[0]  # its output (and the cache in it) is dropped here, before the peak counter resets
                if i == 0:
                    rec.cold_e2e_ms = t.e2e_ms
            rec.warmup_s = time.perf_counter() - t0
            on_timing()
            series = repeats.measure(call, cfg, device, lambda: memory.reset_peak(device))
            peak, reserved = memory.peak_bytes(device)
            payload = cache_payload(strategy.cache_of(model, series.last_out), device)
            series.last_out = None
            # profiled after the timed calls, so it cannot slow them
            if first_round and cfg.attn.name == "sdpa" and strategy.profiled:
                rec.sdpa_backend_used = sdpa_backends_seen(lambda: call()[1])
    finally:
        del model.get_compiled_call, model.set_attn_implementation
    rec.compiled = bool(compiled)
    rec.graph_breaks, rec.recompile_limit_hits = dynamo["graph_breaks"], dynamo["recompile_limit_hits"]
    if attn_switched:  # something inside generate changed the attention path: record the last
        rec.attn_used = str(attn_switched[-1][0])
    for k, v in repeats.summarise(series, B).items():
        setattr(rec, k, v)
    rec.kv_cache_mib = payload.total_bytes / MIB
    rec.extra = strategy.extra_columns(payload)
    rec.error = strategy.caveat(device)  # _quality adds its own notes after this one
    host = payload.host_bytes if device == "cuda" else 0
    rec.peak_mem_mib = peak / MIB
    if device == "cpu" and series.start_bytes is not None:  # the process's RSS history is not this cell's
        rec.peak_rss_cell_mib = (peak - series.start_bytes) / MIB
    rec.peak_reserved_mib = reserved / MIB if reserved is not None else None
    rec.other_peak_mib = rec.peak_mem_mib - rec.weights_mib - (payload.total_bytes - host) / MIB
    predicted = planner.predicted_peak(cfg, model.config, loaded.dtype, device)
    rec.peak_predicted_mib = None if predicted is None else predicted / MIB
    # A decode step must read every weight and the cache at its current length: the mean length's bytes over the
    # measured copy bandwidth is the step's floor. Measured in the cell's first round (later rounds keep it).
    if first_round:
        rec.bandwidth_gb_s = memory.copy_bandwidth_gb_s(device)
        kv_mean = strategy.predicted_bytes(geo, P, N // 2 + 1, B) or 0.0
        rec.bandwidth_floor_ms = formula.bandwidth_floor_ms(weight_bytes, kv_mean, rec.bandwidth_gb_s)
        rec.mbu = rec.bandwidth_floor_ms / rec.tpot_ms
    if first_round and (cfg.quality == "on" or (cfg.quality == "auto" and loaded.weights == "real")):
        _quality(rec, cfg, loaded)  # deterministic: once per cell, in its first round


def run_cell(cfg, run_id: str, skip: frozenset = frozenset(), on_loaded: Optional[Callable[[dict], None]] = None,
             on_timing: Callable[[], None] = lambda: None, first_round: bool = True) -> Optional[Record]:
    """Measure one cell (one round of it) and return its row; None when `skip` (resume) already holds its identity.
    `on_loaded` receives the conditions as they will run, once the model is in (a crash after that still leaves a
    row with the right identity); `on_timing` is called when the warm-up (and any compile) is done. Quality and
    the SDPA kernel profile are taken in the first round only."""
    try:
        rec = _start(cfg, run_id)
    except ConfigError as e:  # the device asked for is not here (the parent checks first; this is in-process use)
        rec = conditions(cfg, cfg.device)
        rec.run_id, rec.status, rec.error = run_id, "error", f"bad input: {e}"
        return rec
    try:
        loaded = _prepare(rec, cfg)
        if loaded is None:
            return rec
        row = rec.as_row()
        if row["cell_id"] in skip:
            return None
        if on_loaded:
            on_loaded(row)
        _measure(rec, cfg, loaded, on_timing, first_round)
    except ConfigError as e:  # a condition only the loaded model could check (e.g. its positions)
        rec.status, rec.error = "error", f"bad input: {e}"
    except Exception as e:  # noqa: BLE001 - a failing cell must never lose the others
        rec.status, rec.error = classify(e)
        log.debug("cell failed", exc_info=True)
    finally:
        for lm in _loaded.values():
            cfg.cache.teardown(lm.model)
        gc.collect()
        if rec.device == "cuda":
            torch.cuda.empty_cache()
    return rec
