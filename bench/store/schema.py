"""One results row: the conditions that made a measurement, its figures (units in the names) and raw samples.

`Record` is the row schema: every column, its type and (in its comment) its meaning, one home. A strategy's own
settings (e.g. nbits) and measured columns (e.g. kv_quantized_share) are not fields here: the strategy supplies
them (`settings`, `extra`), and `as_row` flattens them into the row beside these. `problems(row)` checks a row
against the schema, with pydantic in strict mode (no coercion: "1" is not a batch, "fast" is not a time), when
the store writes it and when it reads it.
"""
from __future__ import annotations

import functools
import math
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Literal, Optional

from bench.store import identity

SCHEMA_VERSION = 3  # 3: rounds in separate worker processes, rerun interval, race, compile mode, threads
STATUSES = ("ok", "unavailable", "oom", "error")
Status = Literal["ok", "unavailable", "oom", "error"]


@dataclass
class Record:
    # --- the cell: conditions as they ran (bench.store.identity) ---
    run_id: str = ""                      # one id per `bench run` invocation (a sweep shares it)
    cell_id: str = ""                     # hash of the conditions (bench.store.identity.cell_id), set once loaded
    model: str = ""                       # short model name (conf/model/<name>.yaml)
    model_source: str = ""                # hub id, local dir, gguf file or 'architecture config'
    weights: str = ""                     # 'real' or 'random' as loaded (random: timings of the real shapes, no quality)
    dtype: str = ""                       # parameter dtype as loaded (float32, float16, bfloat16)
    kv_heads: Optional[int] = None        # key/value heads the cache holds per layer, read from the architecture's code
    head_dim_k: Optional[int] = None      # width of a cached key (per head; MLA: the latent + rope key)
    head_dim_v: Optional[int] = None      # width of a cached value (per head)
    kv_layers: Optional[int] = None       # layers whose cache grows with the tokens
    window_tokens: Optional[int] = None   # tokens a sliding / chunked layer keeps (the smallest window; null: none)
    window_layers: Optional[int] = None   # layers with such a window
    kv_token_bytes: Optional[int] = None  # one sequence's cache bytes per token over all layers (until a window fills)
    state_bytes: Optional[int] = None     # one sequence's fixed-size states (linear attention, SSM layers)
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
    compile_mode: str = ""                # torch.compile mode with compile=auto: auto (transformers'), or a mode
    batch: int = 0
    prompt_len: int = 0                   # prompt tokens per sequence
    new_tokens: int = 0                   # generated tokens per sequence (forced: min == max)
    seed: int = 0
    # --- how it was measured ---
    warmup: int = 0                       # untimed calls before the repeats
    repeats: int = 0                      # timed calls that ran
    repeats_mode: str = ""                # auto (until precision or budget) or fixed
    precision_target: Optional[float] = None  # repeats=auto: the target relative half-width of the median's 95% interval
    precision: Optional[float] = None     # relative half-width of the 95% interval of the e2e median as a rerun sees it
    precision_basis: str = ""             # what that interval rests on: rounds in separate processes, or one round + prior
    precision_within: Optional[float] = None  # the widest of the rounds' own half-widths (calls of one process)
    round_sd_rel: Optional[float] = None  # spread of one round's median between worker processes (relative sd, moderated)
    run_sd_rel: Optional[float] = None    # the run's pooled spread of round medians (the prior of every cell's)
    run_sd_df: Optional[float] = None     # the degrees of freedom of that prior (fitted to the cells' spreads)
    stop_reason: str = ""                 # why the repeats of the last round stopped: precision, budget, max_repeats, fixed
    rounds: int = 0                       # worker processes that timed this cell (one round each, interleaved with others)
    rounds_stop: str = ""                 # why no more rounds: planned, behind (the leader), decided, budget, not ok, round failed
    race: str = ""                        # the cell's place in its question: leader, contender, behind; '' outside a race
    round_e2e_ms: Optional[list] = None   # median e2e of each round, in order
    round_tpot_ms: Optional[list] = None  # median tpot of each round, in order
    sample_round: Optional[list] = None   # for each timed call in *_samples_ms, the round (1, 2, ...) it ran in
    warmup_s: Optional[float] = None      # seconds the untimed warm-up calls took (compile, plans, allocator growth)
    threads: Optional[int] = None         # torch intra-op threads in the worker (CPU timings depend on it)
    gpu_index: str = ""                   # CUDA_VISIBLE_DEVICES of the worker that ran the last round ('' = all / CPU)
    attn_used: str = ""                   # model.config._attn_implementation after loading/switching
    sdpa_backend_used: str = ""           # SDPA kernels the profiler saw in an untimed call (prefill + 4 steps); '' if none
    compiled: Optional[bool] = None       # whether generate compiled the forward (dynamo produced graphs)
    graph_breaks: Optional[int] = None    # graph breaks dynamo met while this cell ran (0: nothing broke the graph)
    recompile_limit_hits: Optional[int] = None  # times dynamo hit its recompile limit (past it: frames run uncompiled)
    status: Status = "ok"                 # ok | unavailable | oom | error
    error: str = ""                       # reason when status != ok (or a note, e.g. quality skipped)
    disturbed: bool = False               # the repeats disagreed with themselves even after re-measuring (with rounds:
                                          # in more than half of them; a minority shows in the rerun interval)
    disturbed_rounds: int = 0             # rounds whose calls disagreed with themselves
    disturbed_why: str = ""               # which signs: spread, tpot vs median step, host speed moved
    remeasured: int = 0                   # times the cell was measured again because it looked disturbed
    # --- timings: medians over the timed calls, and every call's raw figure ---
    ttft_ms: Optional[float] = None       # generate() start -> first new token (setup and the prefill)
    tpot_ms: Optional[float] = None       # (e2e - ttft) / (new_tokens - 1): time per decode step
    e2e_ms: Optional[float] = None        # whole generate() call, device synchronised
    ttft_samples_ms: Optional[list] = None  # each timed call's ttft, in order (rounds in sample_round)
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
    peak_mem_mib: Optional[float] = None       # CUDA: max_memory_allocated; CPU: the worker process's peak RSS (VmHWM)
    peak_rss_cell_mib: Optional[float] = None  # CPU: peak RSS during the timed calls minus RSS right before them
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
SCALAR = (str, int, float, bool, type(None))


@functools.lru_cache(maxsize=1)
def _model():
    from pydantic import ConfigDict, create_model

    hints = typing.get_type_hints(Record, globalns={**globals(), "Status": Status})
    return create_model("Row", __config__=ConfigDict(strict=True, extra="allow"),
                        **{c: (hints[c], None) for c in COLUMNS})


def problems(row) -> list[str]:
    """What is wrong with a row, one short text per field ([] = a valid row of today's schema)."""
    from pydantic import ValidationError

    if not isinstance(row, dict):
        return ["not a JSON object"]
    out = []
    try:
        _model().model_validate(row)
    except ValidationError as e:
        for err in e.errors():
            name = ".".join(str(x) for x in err["loc"][:1])
            out.append(f"{name}={_show(err.get('input'))}: {err['msg'][0].lower()}{err['msg'][1:]}")
    keys = row.get("strategy_keys")
    for k in keys if isinstance(keys, list) else ():
        if not isinstance(k, str) or not isinstance(row.get(k), SCALAR):
            out.append(f"{k}: a strategy setting must be a single value, not {_show(row.get(k))}")
    for k in ("batch", "prompt_len", "new_tokens"):
        if isinstance(row.get(k), int) and not isinstance(row.get(k), bool) and row[k] < 1:
            out.append(f"{k}={row[k]}: must be at least 1")
    for k in ("e2e_ms", "ttft_ms", "tpot_ms"):
        v = row.get(k)
        if isinstance(v, float) and not (math.isfinite(v) and v >= 0):
            out.append(f"{k}={v}: a time must be a finite number >= 0")
    return out


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
