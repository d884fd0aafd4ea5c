"""One results row: the conditions that made a measurement and its figures, units in the names."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Optional

from .config import RunConfig, quant_cache_config

SCHEMA_VERSION = 1
STATUSES = ("ok", "unavailable", "oom", "error")


@dataclass
class Record:
    # --- identity and conditions (what was requested) ---
    run_id: str = ""                      # one id per `bench run` invocation (a sweep shares it)
    cell_id: str = ""                     # stable hash of the conditions below; equal cells compare across runs
    model: str = ""                       # short model name (conf/model/<name>.yaml)
    model_source: str = ""                # hub id, local dir, gguf file or 'architecture config'
    weights: str = ""                     # 'real' or 'random' (random: timings of the real shapes, no quality)
    dtype: str = ""                       # parameter dtype as loaded (float32, float16, bfloat16)
    kv_heads: Optional[int] = None        # key/value heads of the loaded architecture (MHA = attention heads, MQA = 1)
    device: str = ""                      # cpu or cuda
    cache: str = ""                       # strategy name: none, dynamic, static, offloaded, offloaded_static, quantized, paged
    nbits: Optional[int] = None           # quantized caches only
    quant_backend: Optional[str] = None   # quanto or hqq (quantized caches only)
    residual_length: Optional[int] = None
    q_group_size: Optional[int] = None
    axis_key: Optional[int] = None
    axis_value: Optional[int] = None
    block_size: Optional[int] = None      # paged only: tokens per block of the pool
    attn: str = ""                        # attention implementation requested
    sdpa_backend: str = ""                # SDPA backend requested: auto, flash, efficient, cudnn, math ('' when attn != sdpa)
    compile: str = ""                     # compile switch requested: auto (transformers' default), off
    batch: int = 0
    prompt_len: int = 0                   # prompt tokens per sequence
    new_tokens: int = 0                   # generated tokens per sequence (forced: min == max)
    warmup: int = 0                       # untimed runs before the repeats
    repeats: int = 0                      # timed runs
    seed: int = 0
    # --- what actually ran ---
    attn_used: str = ""                   # model.config._attn_implementation after loading/switching
    sdpa_backend_used: str = ""           # SDPA kernels the profiler saw in an untimed call (prefill + 4 steps); '' if none
    compiled: Optional[bool] = None       # whether generate compiled the forward (dynamo produced graphs)
    graph_breaks: Optional[int] = None    # graph breaks dynamo met while this cell ran (0: nothing broke the graph)
    recompile_limit_hits: Optional[int] = None  # times dynamo hit its recompile limit (past it: frames run uncompiled)
    status: str = "ok"                    # ok | unavailable | oom | error
    error: str = ""                       # reason when status != ok
    # --- timings (median over repeats, p10/p90 spread) ---
    ttft_ms: Optional[float] = None       # generate() start -> first new token on the host (prefill + 1 step)
    ttft_p10_ms: Optional[float] = None
    ttft_p90_ms: Optional[float] = None
    tpot_ms: Optional[float] = None       # (e2e - ttft) / (new_tokens - 1): time per decode step
    tpot_p10_ms: Optional[float] = None
    tpot_p90_ms: Optional[float] = None
    e2e_ms: Optional[float] = None        # whole generate() call, device synchronised
    e2e_p10_ms: Optional[float] = None
    e2e_p90_ms: Optional[float] = None
    decode_tok_s: Optional[float] = None  # batch * (new_tokens - 1) / (e2e - ttft)
    e2e_tok_s: Optional[float] = None     # batch * new_tokens / e2e
    cold_e2e_ms: Optional[float] = None   # first warm-up call: includes compile, plan building, allocator growth
    launch_us: Optional[float] = None     # host time to issue one tiny op (CUDA: a kernel launch), just before the timed calls
    step_ms: Optional[list] = None        # median time of each decode step, by position (len new_tokens - 1)
    # --- memory ---
    weights_mib: Optional[float] = None        # parameters + buffers of the loaded model
    kv_cache_mib: Optional[float] = None       # bytes the cache holds after the last timed run (its own payload)
    kv_host_mib: Optional[float] = None        # part of kv_cache_mib held in host memory (offloaded caches)
    kv_quantized_share: Optional[float] = None # share of cached tokens stored quantized (quantized caches)
    kv_theory_mib: Optional[float] = None      # kvmath's prediction for the same cache, length and batch
    peak_mem_mib: Optional[float] = None       # CUDA: max_memory_allocated; CPU: process peak RSS (VmHWM)
    peak_reserved_mib: Optional[float] = None  # CUDA: max_memory_reserved (allocator cache included)
    other_peak_mib: Optional[float] = None     # peak_mem_mib - weights_mib - kv_cache_mib (activations, workspace, ...)
    # --- bandwidth floor (kvmath) ---
    bandwidth_gb_s: Optional[float] = None     # device copy bandwidth measured once per process (bytes read + written)
    bandwidth_floor_ms: Optional[float] = None # (weights + KV at the mean decode length) / bandwidth: a step's floor
    mbu: Optional[float] = None                # bandwidth_floor_ms / tpot_ms (memory-bandwidth utilisation)
    # --- quality (real weights only; empty for random weights) ---
    ppl: Optional[float] = None                # perplexity of the shipped text, decoded token by token through the cache
    ppl_delta: Optional[float] = None          # ppl - ppl of the dynamic (full-precision) cache, same attention
    agreement: Optional[float] = None          # share of greedy tokens identical to the dynamic cache's
    first_divergence: Optional[int] = None     # earliest differing position (= quality new tokens if none)
    quality_tokens: Optional[int] = None       # tokens scored for ppl
    # --- environment ---
    gpu: str = ""
    cpu: str = ""                          # host CPU model (launch-bound decode depends on it)
    driver: str = ""
    cuda: str = ""
    cudnn: str = ""
    cuda_alloc_conf: str = ""              # PYTORCH_CUDA_ALLOC_CONF as the cell ran ('' = PyTorch's defaults)
    torch: str = ""
    transformers: str = ""
    quanto: str = ""
    flash_attn: str = ""
    python: str = ""
    host: str = ""
    git_sha: str = ""
    code_hash: str = ""                    # hash of bench/*.py and conf/**/*.yaml as they ran
    timestamp: str = ""
    schema_version: int = SCHEMA_VERSION

    def as_row(self) -> dict:
        return asdict(self)


COLUMNS = [f.name for f in fields(Record)]


def conditions(cfg: RunConfig, device: str) -> Record:
    quant = cfg.cache.name == "quantized"
    qc = quant_cache_config(cfg.cache) if quant else {}
    r = Record(
        model=cfg.model.name, device=device, cache=cfg.cache.name, attn=cfg.attn.name,
        sdpa_backend=cfg.attn.sdpa_backend if cfg.attn.name == "sdpa" else "",
        compile=cfg.compile, batch=cfg.batch, prompt_len=cfg.prompt_len, new_tokens=cfg.new_tokens,
        warmup=cfg.warmup, repeats=cfg.repeats, seed=cfg.seed,
        nbits=qc.get("nbits"), quant_backend=qc.get("backend"), residual_length=qc.get("residual_length"),
        q_group_size=qc.get("q_group_size"), axis_key=qc.get("axis_key"), axis_value=qc.get("axis_value"),
        block_size=cfg.cache.block_size if cfg.cache.name == "paged" else None,
    )
    r.weights = cfg.weights  # requested; replaced by what loaded (real/random) once the model is in
    r.cell_id = cell_id(r, cfg.dtype)
    return r


CELL_KEYS = ("model", "weights", "device", "cache", "nbits", "quant_backend", "residual_length", "q_group_size", "axis_key",
             "axis_value", "block_size", "attn", "sdpa_backend", "compile", "batch", "prompt_len", "new_tokens", "seed")
LATER_KEYS = ("block_size",)  # added after rows existed: hashed only where set, so those rows keep their ids


def cell_id(r: Record, dtype: str) -> str:
    """Stable id of a cell's conditions (not of its environment): equal cells compare across runs."""
    key = {k: getattr(r, k) for k in CELL_KEYS if k not in LATER_KEYS or getattr(r, k) is not None}
    key = json.dumps({**key, "dtype": dtype}, sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:12]
