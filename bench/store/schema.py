"""One results row: the conditions that made a measurement, its figures (units in the names) and raw samples.

A strategy's own settings (e.g. nbits) and its own measured columns (e.g. kv_quantized_share) are not fields
here: the strategy supplies them (`settings`, `extra`), and `as_row` flattens them into the row beside these.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from bench.store import identity

SCHEMA_VERSION = 2  # 2: raw samples, adaptive repeats, disturbed flag, strategy columns, identity after loading
STATUSES = ("ok", "unavailable", "oom", "error")


@dataclass
class Record:
    # --- the cell: conditions as they ran (bench.store.identity) ---
    run_id: str = ""                      # one id per `bench run` invocation (a sweep shares it)
    cell_id: str = ""                     # hash of the conditions (bench.store.identity.cell_id), set once loaded
    model: str = ""                       # short model name (conf/model/<name>.yaml)
    model_source: str = ""                # hub id, local dir, gguf file or 'architecture config'
    weights: str = ""                     # 'real' or 'random' as loaded (random: timings of the real shapes, no quality)
    dtype: str = ""                       # parameter dtype as loaded (float32, float16, bfloat16)
    kv_heads: Optional[int] = None        # key/value heads of the loaded architecture (MHA = attention heads, MQA = 1)
    device: str = ""                      # cpu or cuda
    gpu: str = ""                         # GPU model name ('' on the CPU)
    cache: str = ""                       # strategy name (bench/strategies/<name>.py)
    strategy: str = ""                    # strategy label with its settings, e.g. 'quantized int4 (quanto)'
    strategy_keys: list = field(default_factory=list)  # names of the strategy's setting columns in this row
    reference: bool = False               # the strategy others are measured against (the dynamic cache)
    holds_cache: bool = True              # False: every step recomputes the whole context (use_cache=False)
    attn: str = ""                        # attention implementation requested
    sdpa_backend: str = ""                # SDPA backend requested: auto, flash, efficient, cudnn, math ('' when attn != sdpa)
    compile: str = ""                     # compile switch requested: auto (transformers' default), off
    batch: int = 0
    prompt_len: int = 0                   # prompt tokens per sequence
    new_tokens: int = 0                   # generated tokens per sequence (forced: min == max)
    seed: int = 0
    # --- how it was measured ---
    warmup: int = 0                       # untimed calls before the repeats
    repeats: int = 0                      # timed calls that ran
    repeats_mode: str = ""                # auto (until precision or budget) or fixed
    precision_target: Optional[float] = None  # repeats=auto: the target relative half-width of the median's 95% interval
    precision: Optional[float] = None     # relative half-width of the 95% interval of the e2e median reached
    stop_reason: str = ""                 # why the repeats stopped: precision, budget, max_repeats, fixed
    attn_used: str = ""                   # model.config._attn_implementation after loading/switching
    sdpa_backend_used: str = ""           # SDPA kernels the profiler saw in an untimed call (prefill + 4 steps); '' if none
    compiled: Optional[bool] = None       # whether generate compiled the forward (dynamo produced graphs)
    graph_breaks: Optional[int] = None    # graph breaks dynamo met while this cell ran (0: nothing broke the graph)
    recompile_limit_hits: Optional[int] = None  # times dynamo hit its recompile limit (past it: frames run uncompiled)
    status: str = "ok"                    # ok | unavailable | oom | error
    error: str = ""                       # reason when status != ok (or a note, e.g. quality skipped)
    disturbed: bool = False               # the repeats disagreed with themselves even after re-measuring
    disturbed_why: str = ""               # which signs: spread, tpot vs median step, host speed moved
    remeasured: int = 0                   # times the cell was measured again because it looked disturbed
    # --- timings: medians over the timed calls, and every call's raw figure ---
    ttft_ms: Optional[float] = None       # generate() start -> first new token (prefill + 1 step)
    tpot_ms: Optional[float] = None       # (e2e - ttft) / (new_tokens - 1): time per decode step
    e2e_ms: Optional[float] = None        # whole generate() call, device synchronised
    ttft_samples_ms: Optional[list] = None  # each timed call's ttft, in order
    tpot_samples_ms: Optional[list] = None
    e2e_samples_ms: Optional[list] = None
    decode_tok_s: Optional[float] = None  # batch * 1000 / tpot_ms
    e2e_tok_s: Optional[float] = None     # batch * new_tokens * 1000 / e2e_ms
    cold_e2e_ms: Optional[float] = None   # first warm-up call: includes compile, plan building, allocator growth
    launch_us: Optional[float] = None     # host time to issue one tiny op (CUDA: a kernel launch), before the timed calls
    launch_end_us: Optional[float] = None  # the same, after them: a host that changed speed shows here
    step_ms: Optional[list] = None        # median time of each decode step over the calls, by position (new_tokens - 1)
    # --- memory ---
    weights_mib: Optional[float] = None        # parameters + buffers of the loaded model
    kv_cache_mib: Optional[float] = None       # bytes the cache holds after the last timed call (its own payload)
    kv_host_mib: Optional[float] = None        # part of kv_cache_mib held in host memory (offloaded caches)
    kv_theory_mib: Optional[float] = None      # predicted from the architecture's own code (bench.predict.geometry)
    kv_formula_mib: Optional[float] = None     # layers x kv_heads x head dims x bytes: the textbook figure
    peak_mem_mib: Optional[float] = None       # CUDA: max_memory_allocated; CPU: process peak RSS (VmHWM)
    peak_reserved_mib: Optional[float] = None  # CUDA: max_memory_reserved (allocator cache included)
    other_peak_mib: Optional[float] = None     # peak_mem_mib - weights_mib - device KV (activations, workspace, ...)
    peak_predicted_mib: Optional[float] = None  # the planner's predicted peak allocated (weights + KV + activations)
    # --- bandwidth floor ---
    bandwidth_gb_s: Optional[float] = None     # device copy bandwidth measured once per process (bytes read + written)
    bandwidth_floor_ms: Optional[float] = None  # (weights + KV at the mean decode length) / bandwidth: a step's floor
    mbu: Optional[float] = None                # bandwidth_floor_ms / tpot_ms (memory-bandwidth utilisation)
    # --- quality (real weights only; empty for random weights) ---
    ppl: Optional[float] = None                # perplexity of the shipped text, decoded token by token through the cache
    ppl_delta: Optional[float] = None          # ppl - ppl of the reference (dynamic) cache, same attention
    agreement: Optional[float] = None          # share of greedy tokens identical to the reference cache's
    first_divergence: Optional[int] = None     # earliest differing position (= quality new tokens if none)
    quality_tokens: Optional[int] = None       # tokens scored for ppl
    # --- environment (describes the row, never identifies the cell) ---
    cpu: str = ""
    driver: str = ""
    cuda: str = ""
    cudnn: str = ""
    cuda_alloc_conf: str = ""              # PYTORCH_CUDA_ALLOC_CONF as the cell ran ('' = PyTorch's defaults)
    torch: str = ""
    transformers: str = ""
    quanto: str = ""
    hqq: str = ""
    flash_attn: str = ""
    python: str = ""
    host: str = ""
    git_sha: str = ""
    code_hash: str = ""                    # hash of bench/**/*.py and conf/**/*.yaml as they ran
    timestamp: str = ""
    schema_version: int = SCHEMA_VERSION
    # --- the strategy's own columns, flattened into the row by as_row ---
    settings: dict = field(default_factory=dict)  # its settings (identify the cell)
    extra: dict = field(default_factory=dict)     # its measured extras

    def as_row(self) -> dict:
        row = asdict(self)
        settings, extra = row.pop("settings"), row.pop("extra")
        row.update(settings)
        row.update(extra)
        row["strategy_keys"] = sorted(settings)
        row["cell_id"] = identity.cell_id(row)
        return row


COLUMNS = [f.name for f in fields(Record) if f.name not in ("settings", "extra")]


def conditions(cfg, device: str, gpu: str = "") -> Record:
    """A Record holding the conditions as requested (weights and dtype are replaced by what loaded)."""
    s = cfg.cache
    return Record(
        model=cfg.model.name, weights=cfg.weights, dtype=cfg.model.dtype, device=device, gpu=gpu,
        cache=s.name, strategy=s.label(), reference=s.reference, holds_cache=s.holds_cache,
        attn=cfg.attn.name, sdpa_backend=cfg.attn.sdpa_backend if cfg.attn.name == "sdpa" else "",
        compile=cfg.compile, batch=cfg.batch, prompt_len=cfg.prompt_len, new_tokens=cfg.new_tokens,
        warmup=cfg.warmup, seed=cfg.seed, settings=s.settings(),
        repeats_mode="auto" if cfg.repeats == "auto" else "fixed",
        precision_target=cfg.precision if cfg.repeats == "auto" else None,
        timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def failed_row(cfg, device: str, run_id: str, reason: str, status: str = "error", known: dict | None = None) -> dict:
    """The row of a cell that left no result of its own; `known` holds the conditions the worker had
    already resolved (loaded dtype and weights, GPU) when it died."""
    row = conditions(cfg, device).as_row()
    row.update(known or {})
    row.update(run_id=run_id, status=status, error=reason,
               timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    row["cell_id"] = identity.cell_id(row)
    return row
