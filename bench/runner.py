"""One sweep cell: load (reused across cells), run, and turn the result into a Record."""
from __future__ import annotations

import datetime as dt
import gc
import json
import logging
from dataclasses import asdict
from typing import Optional

import torch

from . import kvmath, measure, models, quality, strategies
from .cachebytes import cache_payload
from .config import RunConfig, quant_cache_config, validate
from .env import environment, resolve_device
from .record import Record, conditions

log = logging.getLogger("bench")
logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)  # per-call chatter of generate_batch
MIB = measure.MIB

# One loaded model per process: a sweep over caches and attention paths loads it once.
_loaded: dict = {}


def get_model(cfg: RunConfig, device: str) -> models.Loaded:
    key = (json.dumps(asdict(cfg.model), sort_keys=True), device, cfg.dtype, cfg.weights, cfg.seed, cfg.device_map)
    if key not in _loaded:
        _loaded.clear()
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        _loaded[key] = models.load(cfg.model, device, cfg.dtype, cfg.weights, cfg.seed, cfg.device_map)
    return _loaded[key]


def kv_theory_bytes(cfg: RunConfig, config, dtype: str, tokens: Optional[int] = None) -> Optional[float]:
    """What kvmath predicts the cache holds after one generate() call of this cell (or at `tokens`)."""
    c = cfg.cache.name
    if c == "none":
        return 0.0
    if c == "paged" and tokens is None:
        return None  # a block pool sized up front, not by the sequence
    # generate feeds back every new token but the last, and sizes static caches to that same length.
    tokens = cfg.prompt_len + cfg.new_tokens - 1 if tokens is None else tokens
    if c == "quantized":
        qc = quant_cache_config(cfg.cache)
        return kvmath.kv_cache_bytes(config, tokens, cfg.batch, dtype=dtype, nbits=qc["nbits"],
                                     q_group_size=qc["q_group_size"], residual_length=qc["residual_length"],
                                     backend=qc["backend"], prompt_len=cfg.prompt_len)
    return kvmath.kv_cache_bytes(config, tokens, cfg.batch, dtype=dtype)


def _paged_cache(model):
    manager = getattr(model, "_cached_continuous_batching_manager", None)
    return getattr(getattr(manager, "batch_processor", None), "cache", None) if manager else None


def _quality(rec: Record, cfg: RunConfig, loaded: models.Loaded) -> None:
    """Fill the quality columns; a failure here is noted but keeps the cell's timings."""
    if loaded.weights != "real":
        rec.error = "quality=on skipped: random weights have no meaningful quality"
        return
    try:
        if loaded.tokenizer is None:
            loaded.tokenizer = models.load_tokenizer(cfg.model)
        with strategies.sdpa_context(cfg):
            figures = quality.measure(loaded.model, loaded.tokenizer, cfg,
                                      lambda: strategies.generate_kwargs(cfg),
                                      lambda: {"cache_implementation": "dynamic"})
        for k, v in figures.items():
            setattr(rec, k, v)
    except quality.NotApplicable as e:
        rec.error = f"quality: {e}"
    except Exception as e:  # noqa: BLE001
        rec.error = f"quality failed: {_classify(e)[1]}"


def _spy(obj, name: str) -> list:
    """Shadow obj.name with a wrapper recording each call's positional args (undo with `del obj.name`)."""
    calls, target = [], getattr(obj, name)

    def wrapper(*a, **k):
        calls.append(a)
        return target(*a, **k)

    setattr(obj, name, wrapper)
    return calls


def _classify(e: BaseException) -> tuple[str, str]:
    msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
    # continuous batching refuses a block pool that will not fit ("Memory footprint N is more than available
    # memory M") inside its thread: that is an OOM too, not a bug
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)) or any(
            s in str(e).lower() for s in ("out of memory", "more than available memory")):
        return "oom", msg
    if "No available kernel" in str(e) or isinstance(e, (ImportError, NotImplementedError)):
        return "unavailable", msg
    return "error", msg


def run_cell(cfg: RunConfig, run_id: str) -> Record:
    """Measure one cell. Never raises for a failing cell: the row says what happened."""
    device = resolve_device(cfg.device)
    rec = conditions(cfg, device)
    rec.run_id = run_id
    rec.timestamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for k, v in environment(device).items():
        setattr(rec, k, v)
    out = None
    try:
        loaded = get_model(cfg, device)
        model = loaded.model
        rec.model_source, rec.weights, rec.dtype = loaded.source, loaded.weights, loaded.dtype
        weight_bytes = measure.model_bytes(model)
        rec.weights_mib = weight_bytes / MIB
        rec.kv_heads = kvmath.kv_heads_and_dims(model.config)[1]
        validate(cfg, models.max_positions(model.config))
        reason = strategies.unavailable_reason(cfg, model, device)
        if reason is None:
            try:
                rec.attn_used = strategies.set_attention(model, strategies.attention_for(cfg))
            except (ImportError, ValueError) as e:
                reason = str(e).strip().splitlines()[0]
        if reason:
            rec.status, rec.error = "unavailable", reason
            return rec
        # transformers sizes a static cache to the longest any earlier call used; cells must not inherit that
        model.__dict__.pop("_previous_max_cache_length", None)
        theory = kv_theory_bytes(cfg, model.config, loaded.dtype)
        rec.kv_theory_mib = None if theory is None else theory / MIB

        ids = models.prompt_ids(model.config.get_text_config().vocab_size, cfg.batch, cfg.prompt_len, cfg.seed).to(device)
        paged = cfg.cache.name == "paged"
        timed = measure.time_generate_batch if paged else measure.time_generate

        def call():
            return timed(model, ids, cfg.new_tokens, strategies.generate_kwargs(cfg), device)

        # Spies, not guesses: generate calls get_compiled_call only when it compiles, and continuous
        # batching swaps the attention implementation through set_attn_implementation.
        compiled, attn_switched = _spy(model, "get_compiled_call"), _spy(model, "set_attn_implementation")
        try:
            with torch.inference_mode(), strategies.sdpa_context(cfg), measure.compile_watch() as dynamo:
                for i in range(cfg.warmup):  # exact shapes: every decode length is seen before timing
                    t, out = call()
                    if i == 0:
                        rec.cold_e2e_ms = t.e2e_ms
                    out = None
                rec.launch_us = measure.launch_us(device)  # the host's speed right before the timed calls
                measure.reset_peak(device)
                timings = []
                for _ in range(cfg.repeats):
                    out = None  # the previous call's cache is freed before the next allocates
                    t, out = call()
                    timings.append(t)
                peak, reserved = measure.peak_bytes(device)
                payload = cache_payload(_paged_cache(model) if paged else getattr(out, "past_key_values", None), device)
                out = None
                # profiled after the timed runs, so it cannot slow them. Continuous batching runs its
                # steps in a thread of its own, which the profiler does not see: not profiled.
                if cfg.attn.name == "sdpa" and not paged:
                    rec.sdpa_backend_used = measure.sdpa_backends_seen(lambda: call()[1])
                    out = None
        finally:
            del model.get_compiled_call, model.set_attn_implementation
        rec.compiled = bool(compiled)
        rec.graph_breaks, rec.recompile_limit_hits = dynamo["graph_breaks"], dynamo["recompile_limit_hits"]
        if attn_switched:  # something inside generate changed the attention path: record the last
            rec.attn_used = str(attn_switched[-1][0])
        for k, v in measure.summarise(timings, cfg.batch).items():
            setattr(rec, k, v)
        rec.kv_cache_mib = payload.total_bytes / MIB
        rec.kv_host_mib = payload.host_bytes / MIB if device == "cuda" else None
        if cfg.cache.name == "quantized" and payload.cached_tokens:
            rec.kv_quantized_share = payload.quantized_tokens / payload.cached_tokens
        rec.peak_mem_mib = peak / MIB
        rec.peak_reserved_mib = reserved / MIB if reserved is not None else None
        rec.other_peak_mib = rec.peak_mem_mib - rec.weights_mib - (rec.kv_cache_mib - (rec.kv_host_mib or 0))
        # A decode step must read every weight and the cache at its current length: the mean length's
        # bytes over the measured copy bandwidth is the step's floor.
        rec.bandwidth_gb_s = measure.copy_bandwidth_gb_s(device)
        kv_mean = kv_theory_bytes(cfg, model.config, loaded.dtype, tokens=cfg.prompt_len + cfg.new_tokens // 2)
        rec.bandwidth_floor_ms = kvmath.bandwidth_floor_ms(weight_bytes, kv_mean or 0.0, rec.bandwidth_gb_s)
        rec.mbu = rec.bandwidth_floor_ms / rec.tpot_ms
        if cfg.quality == "on" or (cfg.quality == "auto" and loaded.weights == "real"):
            _quality(rec, cfg, loaded)
    except Exception as e:  # noqa: BLE001 - a failing cell must never lose the others
        rec.status, rec.error = _classify(e)
        log.debug("cell failed", exc_info=True)
    finally:
        out = None
        if cfg.cache.name == "paged" and _loaded:
            for lm in _loaded.values():
                if hasattr(lm.model, "destroy_cached_continuous_batching_manager"):
                    lm.model.destroy_cached_continuous_batching_manager()
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return rec
